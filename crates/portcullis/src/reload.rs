//! Live reload of the whole configuration: the [`ServeHandle`] the serve helper returns.
//!
//! A reload (on `SIGHUP`, on a change of the configuration file or of any file it references, or through
//! [`ServeHandle::reload`] / [`ServeHandle::apply`]) parses, validates and builds the new configuration
//! completely, and only then swaps it in:
//!
//! 1. the TLS virtual hosts, keystores and truststores, in one swap of the running set
//!    ([`VirtualHosts::replace_with`]): new handshakes use them, and every open TLS connection re-checks
//!    its handshake against them ([`VirtualHosts::recheck`]): one whose virtual host was deleted, or whose
//!    client the new truststore, revocation lists, policy or allowed identities refuse, is closed after its
//!    requests in flight, within its listener's drain time (`drain_ms`);
//! 2. each listener's accept path (limits, deadlines, PROXY trust, connection filter), in one swap per
//!    listener: connections accepted from then on use it;
//! 3. every request-level rule (hosts, client address, private networks and endpoint connections, public
//!    access, IP rules), in one swap ([`Gateway::store`]): the next request is decided by them, and gets
//!    the new generation number.
//!
//! A configuration that fails any check changes nothing: the error (`file:line:col: key: message`) is
//! logged, counted (`portcullis_config_reloads_total{outcome="failed"}`) and returned. Open connections
//! keep running (but see 1.); the listeners' deadlines, limits, drain time and shutdown grace apply from
//! the next connection, and the drain time and shutdown grace also to open ones. Changing or adding listener addresses, or the ops listener's, needs a restart and is
//! refused as such.
//!
//! Files are watched by polling their contents (every second by default): this follows Kubernetes'
//! ConfigMap and Secret volumes, which change by swapping a `..data` symlink, as well as editors that
//! write a new file and rename it over the old one.
//!
//! [`VirtualHosts::replace_with`]: portcullis_mtls::VirtualHosts::replace_with
//! [`VirtualHosts::recheck`]: portcullis_mtls::VirtualHosts::recheck

use std::collections::BTreeMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use portcullis_core::telemetry;
use portcullis_ip::IpRulesHandle;
use portcullis_mtls::{MtlsAcceptor, VirtualHosts};

use crate::access_log::AccessLog;
use crate::config::{ConfigError, GatewayConfig, Source};
use crate::gateway::Gateway;
use crate::serve::{ListenerSpec, SpecCell};

/// How often watched files are looked at by default.
pub const DEFAULT_WATCH_INTERVAL: Duration = Duration::from_secs(1);

/// A handle on a running server: its readiness, its configuration generation, and reload.
///
/// Clones share the server. Reloads are serialised: two at once run one after the other.
#[derive(Clone)]
pub struct ServeHandle {
    inner: Arc<Inner>,
}

struct Inner {
    /// The configuration file reloads read, when the server was started from one.
    path: Option<PathBuf>,
    gateway: Gateway,
    listeners: Vec<Slot>,
    ops: Option<SocketAddr>,
    ready: AtomicBool,
    access_log: AccessLog,
    /// Held for a whole reload.
    state: Mutex<State>,
    /// What a reload of the file does instead of applying it as it is (the management API merges its state).
    hook: std::sync::OnceLock<ReloadHook>,
}

/// What a reload does with the configuration file it read, instead of [`ServeHandle::apply`]ing it as it is:
/// the management API (`crate::management`) merges its state into it, then applies the result.
pub type ReloadHook =
    Arc<dyn Fn(&ServeHandle, &GatewayConfig, &Source) -> Result<u64, ConfigError> + Send + Sync>;

/// One listener: its configured name and address, and the spec its accept loop reads.
pub(crate) struct Slot {
    pub(crate) name: String,
    pub(crate) address: SocketAddr,
    pub(crate) cell: SpecCell,
}

struct State {
    virtual_hosts: Option<VirtualHosts>,
    ip_rules: BTreeMap<String, IpRulesHandle>,
    files: Vec<PathBuf>,
    last_error: Option<ConfigError>,
}

impl std::fmt::Debug for ServeHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServeHandle")
            .field("path", &self.inner.path)
            .field("generation", &self.generation())
            .field("ready", &self.is_ready())
            .finish_non_exhaustive()
    }
}

impl ServeHandle {
    pub(crate) fn new(
        path: Option<PathBuf>,
        built: &crate::build::Built,
        listeners: Vec<Slot>,
    ) -> ServeHandle {
        ServeHandle {
            inner: Arc::new(Inner {
                path,
                gateway: built.gateway.clone(),
                listeners,
                ops: built.ops,
                ready: AtomicBool::new(false),
                access_log: AccessLog::default(),
                state: Mutex::new(State {
                    virtual_hosts: built.virtual_hosts.clone(),
                    ip_rules: built.ip_rules.clone(),
                    files: built.files.clone(),
                    last_error: None,
                }),
                hook: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Sets what reloads of the configuration file do with the file they read (once; later calls are
    /// ignored and return `false`).
    pub fn set_reload_hook(&self, hook: ReloadHook) -> bool {
        self.inner.hook.set(hook).is_ok()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // Every swap is a single store: a panic while holding the lock cannot leave half a configuration.
        self.inner.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The generation of the request rules in force (1 for the first configuration, one more per reload).
    pub fn generation(&self) -> u64 {
        self.inner.gateway.rules().generation()
    }

    /// Whether the server is ready: its configuration is built and its listeners accept, and it is not
    /// draining for a shutdown.
    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::Acquire)
    }

    pub(crate) fn ready_flag(&self) -> &AtomicBool {
        &self.inner.ready
    }

    /// The access log's switch and rate (off unless the configuration has `[access_log]`; a reload sets
    /// it from the configuration).
    pub fn access_log(&self) -> &AccessLog {
        &self.inner.access_log
    }

    /// The gateway every listener serves behind.
    pub fn gateway(&self) -> &Gateway {
        &self.inner.gateway
    }

    /// The configuration file reloads read, if the server was started from one.
    pub fn config_path(&self) -> Option<&Path> {
        self.inner.path.as_deref()
    }

    /// The running TLS virtual hosts (changes through this handle are live, until the next reload replaces
    /// them with the configuration's).
    pub fn virtual_hosts(&self) -> Option<VirtualHosts> {
        self.lock().virtual_hosts.clone()
    }

    /// The current generation's live IP rule sets, by name (`global`, `connection`, `endpoint.<name>`).
    pub fn ip_rules(&self) -> BTreeMap<String, IpRulesHandle> {
        self.lock().ip_rules.clone()
    }

    /// The files a reload watches: the configuration file, then every file it references.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        let files = self.lock().files.clone();
        self.inner.path.iter().cloned().chain(files).collect()
    }

    /// Why the last reload was refused, if it was (cleared by a successful one).
    pub fn last_error(&self) -> Option<ConfigError> {
        self.lock().last_error.clone()
    }

    /// Reads the configuration file again and applies it (see [`apply`](Self::apply)).
    ///
    /// # Errors
    /// The [`ConfigError`] that refused it; nothing was changed.
    pub fn reload(&self) -> Result<u64, ConfigError> {
        let Some(path) = &self.inner.path else {
            let e = ConfigError {
                file: "-".into(),
                line: 0,
                column: 0,
                key: "-".into(),
                message: "this server was not started from a configuration file: use `apply`".into(),
            };
            return Err(self.refused(e));
        };
        match GatewayConfig::load(path) {
            Ok((config, source)) => match self.inner.hook.get() {
                Some(hook) => hook(self, &config, &source),
                None => self.apply(&config, &source),
            },
            Err(e) => Err(self.refused(e)),
        }
    }

    /// Builds `config` completely, then puts it in force at once: virtual hosts, each listener's accept
    /// path, then every request rule. Returns the new generation.
    ///
    /// # Errors
    /// The [`ConfigError`] that refused it (any check of [`GatewayConfig::build`], or a change that needs
    /// a restart: a listener added, removed, renamed or moved, or the ops listener changed). Nothing was
    /// changed.
    pub fn apply(&self, config: &GatewayConfig, source: &Source) -> Result<u64, ConfigError> {
        self.apply_then(config, source, || Ok(()))
    }

    /// As [`apply`](Self::apply), running `commit` after everything is built and checked and before the
    /// first swap: when `commit` fails (for example, persisting the change), nothing is changed.
    ///
    /// # Errors
    /// As [`apply`](Self::apply), or `commit`'s error.
    pub fn apply_then(
        &self,
        config: &GatewayConfig,
        source: &Source,
        commit: impl FnOnce() -> Result<(), ConfigError>,
    ) -> Result<u64, ConfigError> {
        let mut state = self.lock();
        let prepared = match self.prepare(config, source).and_then(|p| commit().map(|()| p)) {
            Ok(p) => p,
            Err(e) => {
                drop(state);
                return Err(self.refused(e));
            }
        };
        let crate::build::Prepared { mut builder, listeners, ip_rules, virtual_hosts, ops: _, files } =
            prepared;
        // 1. The virtual hosts: the running set takes the new one's contents in one swap, so that the
        //    acceptors and the gateway's TLS binding, which hold the running set, change together.
        let running = match (state.virtual_hosts.take(), virtual_hosts) {
            (Some(running), Some(fresh)) => {
                running.replace_with(&fresh);
                Some(running)
            }
            (Some(running), None) => {
                running.replace_with(&VirtualHosts::new());
                None
            }
            (None, fresh) => fresh,
        };
        if let Some(v) = &running {
            builder = builder.virtual_hosts(v.clone());
        }
        // 2. Each listener's accept path.
        for ((_, mut spec), slot) in listeners.into_iter().zip(&self.inner.listeners) {
            let old = slot.cell.load_full();
            spec.tls = match (spec.tls.take(), &running) {
                (Some(_), Some(v)) => {
                    Some(MtlsAcceptor::new(v.clone()).handshake_timeout(spec.timeouts.tls_handshake))
                }
                _ => None,
            };
            keep_counts(&old, &mut spec);
            slot.cell.store(Arc::new(spec));
        }
        // 3. Every request rule, in one swap.
        let generation = self.inner.gateway.store(builder.build_rules());
        // Checked by `prepare`.
        self.inner.access_log.set(config.access_log_rate(source).unwrap_or_default());
        state.virtual_hosts = running;
        state.ip_rules = ip_rules;
        state.files = files;
        state.last_error = None;
        drop(state);
        metrics::counter!(telemetry::CONFIG_RELOADS, "outcome" => "ok").increment(1);
        #[allow(clippy::cast_precision_loss)]
        metrics::gauge!(telemetry::CONFIG_GENERATION).set(generation as f64);
        tracing::info!(generation, file = %source.file(), "portcullis: configuration reloaded");
        log_summary(config, generation);
        Ok(generation)
    }

    fn prepare(
        &self,
        config: &GatewayConfig,
        source: &Source,
    ) -> Result<crate::build::Prepared, ConfigError> {
        let prepared = config.prepare(source)?;
        let restart = |span, key: String, what: String| {
            source.error(
                span,
                key,
                format!("{what}: changing listeners needs a restart (the running configuration stays)"),
            )
        };
        let running: Vec<(&str, SocketAddr)> =
            self.inner.listeners.iter().map(|s| (s.name.as_str(), s.address)).collect();
        for (i, l) in config.listeners.iter().enumerate() {
            let lc = l.get_ref();
            match running.get(i) {
                Some((name, addr)) if *name == lc.name && *addr == *lc.address.get_ref() => {}
                Some((name, addr)) if *name == lc.name => {
                    return Err(restart(
                        lc.address.span(),
                        format!("listener.{}.address", lc.name),
                        format!("`{}` listens on {addr}, not {}", lc.name, lc.address.get_ref()),
                    ));
                }
                Some((name, addr)) => {
                    return Err(restart(
                        l.span(),
                        format!("listener.{}", lc.name),
                        format!("listener {} is `{name}` on {addr}", i + 1),
                    ));
                }
                None => {
                    return Err(restart(l.span(), format!("listener.{}", lc.name), "a new listener".into()));
                }
            }
        }
        if let Some((name, addr)) = running.get(config.listeners.len()) {
            return Err(restart(0..0, "listener".into(), format!("listener `{name}` on {addr} was removed")));
        }
        if prepared.ops != self.inner.ops {
            let span = config.ops.as_ref().map_or(0..0, |o| o.listen.span());
            return Err(source.error(
                span,
                "ops.listen",
                format!(
                    "the ops listener is {}: changing it needs a restart (the running configuration stays)",
                    self.inner.ops.map_or("off".to_owned(), |a| a.to_string())
                ),
            ));
        }
        Ok(prepared)
    }

    /// Logs, counts and keeps `e` as the last reload error; returns it.
    pub(crate) fn refused(&self, e: ConfigError) -> ConfigError {
        metrics::counter!(telemetry::CONFIG_RELOADS, "outcome" => "failed").increment(1);
        tracing::error!(
            generation = self.generation(),
            file = %e.file,
            line = e.line,
            key = %e.key,
            "portcullis: configuration refused, the running one stays: {e}"
        );
        self.lock().last_error = Some(e.clone());
        e
    }
}

/// Connections accepted under the old spec hold slots of its limiter and budgets: when the limits did not
/// change, the new spec keeps them, so the counts go on across the reload.
fn keep_counts(old: &ListenerSpec, new: &mut ListenerSpec) {
    if old.limits.limits() == new.limits.limits() {
        new.limits = old.limits.clone();
    }
    if (old.untrusted.total(), old.untrusted.per_peer()) == (new.untrusted.total(), new.untrusted.per_peer())
    {
        new.untrusted = old.untrusted.clone();
    }
    if (old.handshakes.total(), old.handshakes.per_peer())
        == (new.handshakes.total(), new.handshakes.per_peer())
        && old.limits.limits().ipv6_prefix == new.limits.limits().ipv6_prefix
    {
        new.handshakes = old.handshakes.clone();
    }
}

/// Logs, at info, what a configuration puts in force: endpoints and host names, virtual hosts and their
/// policies, origin and public access, IP rule sets, and the generation.
pub(crate) fn log_summary(config: &GatewayConfig, generation: u64) {
    let hosts = config.hosts.get_ref();
    if let Some(s) = &hosts.service {
        tracing::info!(generation, service = %s.name, domain = %s.domain, private_link = s.private_link,
            "portcullis: endpoints gateway, portal, management, scm");
    }
    for (name, e) in &hosts.endpoint {
        let names: Vec<&str> = e.get_ref().names.iter().map(|n| n.get_ref().as_str()).collect();
        tracing::info!(generation, endpoint = %name, names = ?names, shadow = hosts.shadow, "portcullis: endpoint");
    }
    for v in &config.virtual_hosts {
        let vc = v.get_ref();
        let names: Vec<&str> = vc.hosts.iter().map(|h| h.get_ref().as_str()).collect();
        tracing::info!(
            generation,
            virtual_host = %vc.name,
            hosts = ?names,
            client_auth = vc.client_auth.as_ref().map_or("off", |c| c.get_ref().as_str()),
            policy = vc.policy.as_ref().map_or("default", |p| p.get_ref().as_str()),
            truststore = vc.truststore.as_ref().map_or("-", |t| t.get_ref().as_str()),
            "portcullis: virtual host"
        );
    }
    let networks: Vec<&str> = config.private_networks.networks.keys().map(String::as_str).collect();
    let presets: Vec<&str> = config.private_networks.presets.iter().map(|p| p.get_ref().as_str()).collect();
    tracing::info!(
        generation,
        public_access = *config.public_access.enabled.get_ref(),
        shadow = config.public_access.shadow,
        private_networks = ?networks,
        presets = ?presets,
        private_endpoint_connections = config.private_endpoint_connections.len(),
        "portcullis: origin"
    );
    let mut sets: Vec<String> = config.ip.endpoint.keys().map(|e| format!("endpoint.{e}")).collect();
    if config.ip.rules.is_some() {
        sets.insert(0, "global".into());
    }
    if config.ip.connection.is_some() {
        sets.push("connection".into());
    }
    tracing::info!(generation, ip_rule_sets = ?sets, "portcullis: IP rules");
}

// === watching ===

/// What the watched files hold now: a hash of each one's contents (`None`: unreadable).
fn fingerprint(files: &[PathBuf]) -> Vec<Option<u64>> {
    files
        .iter()
        .map(|f| {
            std::fs::read(f).ok().map(|bytes| {
                let mut h = DefaultHasher::new();
                bytes.hash(&mut h);
                h.finish()
            })
        })
        .collect()
}

/// Polls the watched files every `interval` and reloads when any of them changed. Runs until dropped.
pub(crate) async fn watch(handle: ServeHandle, interval: Duration) {
    let look = {
        let handle = handle.clone();
        move || {
            let files = handle.watched_files();
            let print = fingerprint(&files);
            (files, print)
        }
    };
    let Ok(mut seen) = tokio::task::spawn_blocking(look.clone()).await else { return };
    loop {
        tokio::time::sleep(interval).await;
        let Ok(now) = tokio::task::spawn_blocking(look.clone()).await else { return };
        if now == seen {
            continue;
        }
        tracing::info!("portcullis: a watched file changed; reloading");
        seen = now;
        let h = handle.clone();
        let _ = tokio::task::spawn_blocking(move || h.reload()).await;
        // Whatever the outcome, wait for the next change; a change made while the reload read the files is
        // seen then. A new configuration may reference other files: look at those from now on.
        let Ok(after) = tokio::task::spawn_blocking(look.clone()).await else { return };
        if after.0 != seen.0 {
            seen = after;
        }
    }
}

/// Reloads on every `SIGHUP`. Runs until dropped.
#[cfg(unix)]
pub(crate) async fn on_sighup(handle: ServeHandle) {
    use tokio::signal::unix::{SignalKind, signal};
    let mut hup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(
                "portcullis: cannot listen for SIGHUP, reload through the file or the handle: {e}"
            );
            return;
        }
    };
    while hup.recv().await.is_some() {
        tracing::info!("portcullis: SIGHUP; reloading");
        let h = handle.clone();
        let _ = tokio::task::spawn_blocking(move || h.reload()).await;
    }
}

/// No SIGHUP off Unix.
#[cfg(not(unix))]
pub(crate) async fn on_sighup(_handle: ServeHandle) {}

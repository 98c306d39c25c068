//! Virtual hosts: named keystores and truststores, one TLS configuration per host name, swapped atomically
//! at runtime.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use portcullis_core::TlsInfo;
use rustls::ServerConfig;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, UnixTime};
use rustls::server::{
    NoServerSessionStorage, ProducesTickets, ServerSessionMemoryCache, StoresServerSessions,
};
use rustls::sign::{CertifiedKey, SingleCertAndKey};

use crate::identity::AllowedIdentity;
use crate::policy::{ChainPolicy, ChainRefusal};
use crate::store::{ConfigError, Keystore, Truststore};
use crate::verifier::{ClientAuth, ConnVerifier, PolicyVerifier, Revocation};

/// Session cache entries kept per virtual host.
const SESSION_CACHE_SIZE: usize = 1024;

/// The configuration of one virtual host.
///
/// ```
/// use portcullis_mtls::{ChainPolicy, ClientAuth, VirtualHost};
/// let vhost = VirtualHost::new("api", ["api.example.com"], "api-keys")
///     .client_auth(ClientAuth::Required)
///     .truststore("partners")
///     .policy(ChainPolicy::new("strict").min_rsa_bits(3072));
/// assert_eq!(vhost.host_names, ["api.example.com"]);
/// ```
#[derive(Debug, Clone)]
pub struct VirtualHost {
    /// The virtual host's name (appears in [`TlsInfo::vhost`](portcullis_core::TlsInfo::vhost)).
    pub name: String,
    /// The host names (SNI) it serves: exact names, or `*.example.com` for one label under a domain.
    /// Compared without case and without a trailing dot.
    pub host_names: Vec<String>,
    /// The name of the keystore holding its certificate chain and key.
    pub keystore: String,
    /// Whether a client certificate is asked for (default [`ClientAuth::Off`]).
    pub client_auth: ClientAuth,
    /// The name of the truststore client chains must lead to (needed unless client auth is off).
    pub truststore: Option<String>,
    /// The client-chain policy.
    pub policy: ChainPolicy,
    /// Revocation checking.
    pub revocation: Revocation,
    /// If not empty, only these client identities are let through (at most 10).
    pub allowed_identities: Vec<AllowedIdentity>,
    /// "Refuse at HTTP": complete the handshake without identity when the chain is refused, and answer every
    /// request 403 with the reason ([`RefusedAtHttpLayer`](crate::RefusedAtHttpLayer)). Session resumption
    /// is disabled for such a host.
    pub refuse_at_http: bool,
    /// ALPN protocols offered (default `h2`, `http/1.1`).
    pub alpn: Vec<Vec<u8>>,
}

impl VirtualHost {
    /// A virtual host `name` serving `host_names` with the certificate of `keystore`, client auth off.
    pub fn new<I, S>(name: impl Into<String>, host_names: I, keystore: impl Into<String>) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        VirtualHost {
            name: name.into(),
            host_names: host_names.into_iter().map(Into::into).collect(),
            keystore: keystore.into(),
            client_auth: ClientAuth::Off,
            truststore: None,
            policy: ChainPolicy::default(),
            revocation: Revocation::default(),
            allowed_identities: Vec::new(),
            refuse_at_http: false,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
        }
    }

    /// Sets [`client_auth`](Self::client_auth).
    #[must_use]
    pub fn client_auth(mut self, auth: ClientAuth) -> Self {
        self.client_auth = auth;
        self
    }

    /// Sets [`truststore`](Self::truststore).
    #[must_use]
    pub fn truststore(mut self, name: impl Into<String>) -> Self {
        self.truststore = Some(name.into());
        self
    }

    /// Sets [`policy`](Self::policy).
    #[must_use]
    pub fn policy(mut self, policy: ChainPolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets [`revocation`](Self::revocation).
    #[must_use]
    pub fn revocation(mut self, revocation: Revocation) -> Self {
        self.revocation = revocation;
        self
    }

    /// Sets [`allowed_identities`](Self::allowed_identities).
    #[must_use]
    pub fn allowed_identities(mut self, ids: Vec<AllowedIdentity>) -> Self {
        self.allowed_identities = ids;
        self
    }

    /// Sets [`refuse_at_http`](Self::refuse_at_http).
    #[must_use]
    pub fn refuse_at_http(mut self, on: bool) -> Self {
        self.refuse_at_http = on;
        self
    }

    /// Sets [`alpn`](Self::alpn).
    #[must_use]
    pub fn alpn(mut self, protocols: Vec<Vec<u8>>) -> Self {
        self.alpn = protocols;
        self
    }
}

/// A host name in the normal form the host rule and the virtual hosts share
/// ([`portcullis_host::normalize_name`]: UTS #46, A-labels, lower case, no trailing dot); `None` for text
/// that is no host name, which then matches no virtual host by name.
pub fn normalize_host(host: &str) -> Option<String> {
    portcullis_host::normalize_name(host).ok()
}

/// A virtual host ready to serve: its certificate, verifier and its own session cache and ticket keys
/// (new ones each time the host is configured, so a session resumed after a change cannot skip the new
/// policy).
pub(crate) struct CompiledVhost {
    pub(crate) name: Arc<str>,
    pub(crate) config: VirtualHost,
    certified: Arc<CertifiedKey>,
    pub(crate) verifier: Option<Arc<PolicyVerifier>>,
    sessions: Arc<dyn StoresServerSessions>,
    ticketer: Option<Arc<dyn ProducesTickets>>,
    provider: Arc<CryptoProvider>,
}

/// A per-connection configuration and the slot where its verifier records a refusal.
pub(crate) type ConnConfig = (Arc<ServerConfig>, Arc<Mutex<Option<ChainRefusal>>>);

impl CompiledVhost {
    fn compile(
        config: &VirtualHost,
        keystores: &HashMap<String, Keystore>,
        truststores: &HashMap<String, Truststore>,
        provider: &Arc<CryptoProvider>,
    ) -> Result<CompiledVhost, ConfigError> {
        let vhost_err = |detail: String| ConfigError::VirtualHost { vhost: config.name.clone(), detail };
        if config.host_names.is_empty() {
            return Err(vhost_err("no host names".into()));
        }
        let keystore = keystores.get(&config.keystore).ok_or_else(|| ConfigError::UnknownStore {
            vhost: config.name.clone(),
            kind: "keystore",
            name: config.keystore.clone(),
        })?;
        let certified = keystore.certified_key(provider)?;
        let verifier = match config.client_auth {
            ClientAuth::Off => {
                if !config.allowed_identities.is_empty() {
                    return Err(vhost_err("allowed identities need client auth".into()));
                }
                None
            }
            auth => {
                let name = config
                    .truststore
                    .as_ref()
                    .ok_or_else(|| vhost_err("client auth needs a truststore".into()))?;
                let truststore = truststores.get(name).ok_or_else(|| ConfigError::UnknownStore {
                    vhost: config.name.clone(),
                    kind: "truststore",
                    name: name.clone(),
                })?;
                let verifier = PolicyVerifier::builder(config.policy.clone(), truststore.clone())
                    .provider(provider.clone())
                    .client_auth(auth)
                    .revocation(config.revocation.clone())
                    .identities(config.allowed_identities.clone())
                    .build()
                    .map_err(|e| match e {
                        ConfigError::VirtualHost { detail, .. } => vhost_err(detail),
                        other => other,
                    })?;
                Some(Arc::new(verifier))
            }
        };
        let (sessions, ticketer): (Arc<dyn StoresServerSessions>, _) = if config.refuse_at_http {
            (Arc::new(NoServerSessionStorage {}), None)
        } else {
            let ticketer = crate::provider::ticketer().map_err(|e| ConfigError::Rustls(e.to_string()))?;
            (ServerSessionMemoryCache::new(SESSION_CACHE_SIZE), Some(ticketer))
        };
        let compiled = CompiledVhost {
            name: config.name.as_str().into(),
            config: config.clone(),
            certified,
            verifier,
            sessions,
            ticketer,
            provider: provider.clone(),
        };
        // Build one configuration now so that every error surfaces at configuration time.
        compiled.connection_config()?;
        Ok(compiled)
    }

    /// The configuration for one connection, with its own verifier slot.
    pub(crate) fn connection_config(&self) -> Result<ConnConfig, ConfigError> {
        let slot = Arc::new(Mutex::new(None));
        let builder = ServerConfig::builder_with_provider(self.provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| ConfigError::Rustls(e.to_string()))?;
        let builder = match &self.verifier {
            None => builder.with_no_client_auth(),
            Some(v) => builder.with_client_cert_verifier(Arc::new(ConnVerifier {
                inner: v.clone(),
                slot: slot.clone(),
                refuse_at_http: self.config.refuse_at_http,
            })),
        };
        let mut cfg = builder.with_cert_resolver(Arc::new(SingleCertAndKey::from(self.certified.clone())));
        cfg.alpn_protocols = self.config.alpn.clone();
        cfg.session_storage = self.sessions.clone();
        match &self.ticketer {
            Some(t) => cfg.ticketer = t.clone(),
            None => cfg.send_tls13_tickets = 0,
        }
        Ok((Arc::new(cfg), slot))
    }
}

/// The published, immutable view the acceptor reads: host name → virtual host.
#[derive(Default)]
pub(crate) struct Snapshot {
    exact: HashMap<String, Arc<CompiledVhost>>,
    wildcard: HashMap<String, Arc<CompiledVhost>>,
    default: Option<Arc<CompiledVhost>>,
}

impl Snapshot {
    /// The virtual host for a normalised SNI: exact name, then `*.parent`, then the default one.
    pub(crate) fn lookup(&self, sni: Option<&str>) -> Option<&Arc<CompiledVhost>> {
        if let Some(sni) = sni {
            if let Some(v) = self.exact.get(sni) {
                return Some(v);
            }
            if let Some((_, parent)) = sni.split_once('.')
                && let Some(v) = self.wildcard.get(parent)
            {
                return Some(v);
            }
        }
        self.default.as_ref()
    }
}

#[derive(Default)]
struct State {
    keystores: HashMap<String, Keystore>,
    truststores: HashMap<String, Truststore>,
    vhosts: BTreeMap<String, Arc<CompiledVhost>>,
    default: Option<String>,
}

struct Shared {
    edit: Mutex<State>,
    live: ArcSwap<Snapshot>,
    provider: Arc<CryptoProvider>,
    /// Counts publications, for connections that re-check themselves when the set changes.
    changes: tokio::sync::watch::Sender<u64>,
}

/// Why a connection accepted earlier would not be accepted by the virtual hosts in force now
/// ([`VirtualHosts::recheck`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Invalidated {
    /// No virtual host answers the connection's server name any more.
    #[error("no virtual host serves `{sni}` any more")]
    Gone {
        /// The server name the client sent (`-` without SNI).
        sni: String,
    },
    /// The server name now selects another virtual host.
    #[error("the server name now selects virtual host `{now}`, not `{was}`")]
    Moved {
        /// The virtual host the connection was accepted by.
        was: String,
        /// The one its server name selects now.
        now: String,
    },
    /// The virtual host now requires a client certificate (or lists allowed identities) and the
    /// connection has none.
    #[error("virtual host `{vhost}` now requires a client certificate")]
    CertificateRequired {
        /// The virtual host.
        vhost: String,
    },
    /// The virtual host no longer asks for client certificates; the connection's identity no longer
    /// means anything.
    #[error("virtual host `{vhost}` no longer authenticates clients")]
    ClientAuthOff {
        /// The virtual host.
        vhost: String,
    },
    /// The connection's client chain is refused by the virtual host's truststore, revocation lists,
    /// policy or allowed identities now.
    #[error("{0}")]
    Chain(ChainRefusal),
}

/// The set of virtual hosts and the named stores they use, changed at runtime.
///
/// Every change is validated first and then published with one atomic swap: handshakes that already
/// started keep the configuration they picked, open connections are unaffected. A change that fails
/// leaves everything as it was.
///
/// Cheap to clone (one `Arc`).
#[derive(Clone)]
pub struct VirtualHosts {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for VirtualHosts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<String> = self.names();
        f.debug_struct("VirtualHosts").field("vhosts", &names).finish()
    }
}

impl Default for VirtualHosts {
    fn default() -> Self {
        VirtualHosts::new()
    }
}

impl VirtualHosts {
    /// No virtual hosts, the default crypto provider.
    pub fn new() -> Self {
        VirtualHosts::with_provider(crate::default_provider())
    }

    /// No virtual hosts, using `provider`.
    pub fn with_provider(provider: Arc<CryptoProvider>) -> Self {
        VirtualHosts {
            shared: Arc::new(Shared {
                edit: Mutex::new(State::default()),
                live: ArcSwap::from_pointee(Snapshot::default()),
                provider,
                changes: tokio::sync::watch::Sender::new(0),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while editing cannot leave a half-published state (publishing is one swap), so a poisoned
        // lock is recovered.
        self.shared.edit.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The names of the configured virtual hosts.
    pub fn names(&self) -> Vec<String> {
        self.lock().vhosts.keys().cloned().collect()
    }

    /// The name of the default virtual host.
    pub fn default_host(&self) -> Option<String> {
        self.lock().default.clone()
    }

    pub(crate) fn snapshot(&self) -> Arc<Snapshot> {
        self.shared.live.load_full()
    }

    /// The virtual host a TLS client naming `host` would reach, and its client authentication: by exact
    /// name, then `*.` wildcard, then the default virtual host (with `host` `None`, as without SNI, only the
    /// default). `host` is normalised here (case, one trailing dot).
    ///
    /// The gateway uses this to bind a request's `Host` to the connection's virtual host, and to refuse
    /// over plain HTTP the host names of a virtual host that requires client certificates.
    pub fn select(&self, host: Option<&str>) -> Option<(Arc<str>, ClientAuth)> {
        let snapshot = self.snapshot();
        let found = match host {
            Some(host) => snapshot.lookup(Some(normalize_host(host)?.as_str())),
            None => snapshot.lookup(None),
        };
        found.map(|v| (v.name.clone(), v.config.client_auth))
    }

    /// Like [`select`](Self::select), by exact name or wildcard only: `None` when `host` would only reach
    /// the default virtual host.
    pub fn select_named(&self, host: &str) -> Option<(Arc<str>, ClientAuth)> {
        let host = normalize_host(host)?;
        let snapshot = self.snapshot();
        let found = snapshot
            .exact
            .get(host.as_str())
            .or_else(|| host.split_once('.').and_then(|(_, parent)| snapshot.wildcard.get(parent)));
        found.map(|v| (v.name.clone(), v.config.client_auth))
    }

    /// Adds or replaces a keystore; every virtual host using it is reconfigured.
    ///
    /// # Errors
    /// The error of a virtual host that cannot use the new keystore (nothing is changed).
    pub fn put_keystore(&self, keystore: Keystore) -> Result<(), ConfigError> {
        let mut state = self.lock();
        let name = keystore.name().to_owned();
        let old = state.keystores.insert(name.clone(), keystore);
        let result = self.recompile(&mut state, |v| v.keystore == name);
        if result.is_err() {
            match old {
                Some(old) => state.keystores.insert(name, old),
                None => state.keystores.remove(&name),
            };
        }
        result
    }

    /// Adds or replaces a truststore; every virtual host using it is reconfigured (and audited again).
    ///
    /// # Errors
    /// The error of a virtual host that cannot use the new truststore, for example a weak anchor for its
    /// policy (nothing is changed).
    pub fn put_truststore(&self, truststore: Truststore) -> Result<(), ConfigError> {
        let mut state = self.lock();
        let name = truststore.name().to_owned();
        let old = state.truststores.insert(name.clone(), truststore);
        let result = self.recompile(&mut state, |v| v.truststore.as_deref() == Some(name.as_str()));
        if result.is_err() {
            match old {
                Some(old) => state.truststores.insert(name, old),
                None => state.truststores.remove(&name),
            };
        }
        result
    }

    /// Removes a keystore no virtual host uses.
    ///
    /// # Errors
    /// [`ConfigError::Refused`] when a virtual host still uses it.
    pub fn remove_keystore(&self, name: &str) -> Result<(), ConfigError> {
        let mut state = self.lock();
        if let Some(v) = state.vhosts.values().find(|v| v.config.keystore == name) {
            return Err(ConfigError::Refused(format!(
                "keystore `{name}` is used by virtual host `{}`",
                v.name
            )));
        }
        state.keystores.remove(name);
        Ok(())
    }

    /// Removes a truststore no virtual host uses.
    ///
    /// # Errors
    /// [`ConfigError::Refused`] when a virtual host still uses it.
    pub fn remove_truststore(&self, name: &str) -> Result<(), ConfigError> {
        let mut state = self.lock();
        if let Some(v) = state.vhosts.values().find(|v| v.config.truststore.as_deref() == Some(name)) {
            return Err(ConfigError::Refused(format!(
                "truststore `{name}` is used by virtual host `{}`",
                v.name
            )));
        }
        state.truststores.remove(name);
        Ok(())
    }

    /// Creates or updates a virtual host. An update gets a new session cache and new ticket keys, so no
    /// session resumed afterwards skips its new policy.
    ///
    /// # Errors
    /// [`ConfigError`] when a store is missing, the truststore fails the audit for the host's policy, or a
    /// host name is already served by another virtual host.
    pub fn put(&self, vhost: VirtualHost) -> Result<(), ConfigError> {
        let mut state = self.lock();
        for h in &vhost.host_names {
            if let Err(e) = portcullis_host::normalize_name(h) {
                return Err(ConfigError::VirtualHost { vhost: vhost.name.clone(), detail: e.to_string() });
            }
        }
        for other in state.vhosts.values().filter(|v| v.config.name != vhost.name) {
            for h in &vhost.host_names {
                let h = normalize_host(h);
                if other.config.host_names.iter().any(|o| normalize_host(o) == h) {
                    let h = h.unwrap_or_default();
                    return Err(ConfigError::VirtualHost {
                        vhost: vhost.name.clone(),
                        detail: format!("host name `{h}` is already served by `{}`", other.name),
                    });
                }
            }
        }
        let compiled =
            CompiledVhost::compile(&vhost, &state.keystores, &state.truststores, &self.shared.provider)?;
        state.vhosts.insert(vhost.name.clone(), Arc::new(compiled));
        self.publish(&state);
        Ok(())
    }

    /// Deletes a virtual host. Connections it serves keep running.
    ///
    /// # Errors
    /// [`ConfigError::Refused`] for the default virtual host (choose another default first) or an unknown
    /// name.
    pub fn delete(&self, name: &str) -> Result<(), ConfigError> {
        let mut state = self.lock();
        if state.default.as_deref() == Some(name) {
            return Err(ConfigError::Refused(format!(
                "virtual host `{name}` is the default virtual host and serves connections without a known SNI; \
                 set another default first"
            )));
        }
        if state.vhosts.remove(name).is_none() {
            return Err(ConfigError::Refused(format!("no virtual host `{name}`")));
        }
        self.publish(&state);
        Ok(())
    }

    /// Chooses the default virtual host (for clients without SNI or with an unknown one), or none: such
    /// clients then fail the handshake with `unrecognized_name`.
    ///
    /// # Errors
    /// [`ConfigError::Refused`] for an unknown name.
    pub fn set_default(&self, name: Option<&str>) -> Result<(), ConfigError> {
        let mut state = self.lock();
        if let Some(n) = name
            && !state.vhosts.contains_key(n)
        {
            return Err(ConfigError::Refused(format!("no virtual host `{n}`")));
        }
        state.default = name.map(str::to_owned);
        self.publish(&state);
        Ok(())
    }

    /// Replaces every keystore, truststore and virtual host, and the default, with those of `other`, in one
    /// atomic swap: a handshake starting now sees either the whole old set or the whole new one. `other` was
    /// validated when it was filled (each of its changes is checked), so this cannot fail. Open connections
    /// keep running; every virtual host gets `other`'s session caches and ticket keys, so no session resumed
    /// afterwards skips a new policy.
    pub fn replace_with(&self, other: &VirtualHosts) {
        // `other`'s lock is released before this one is taken (they may be the same handle).
        let fresh = {
            let o = other.lock();
            State {
                keystores: o.keystores.clone(),
                truststores: o.truststores.clone(),
                vhosts: o.vhosts.clone(),
                default: o.default.clone(),
            }
        };
        let mut state = self.lock();
        *state = fresh;
        self.publish(&state);
    }

    /// A receiver that sees every change of the running set (each publication bumps the count), so that
    /// open connections can [`recheck`](Self::recheck) themselves.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.shared.changes.subscribe()
    }

    /// Whether a connection accepted earlier, with the handshake facts `tls`, would be accepted by the
    /// virtual hosts in force now: its server name still selects the same virtual host, and its client
    /// chain (or the lack of one) passes that host's truststore, revocation lists, chain policy and
    /// allowed identities, judged at `now` by the same verifier a handshake runs. A connection refused in
    /// "refuse at HTTP" mode already answers every request 403 and is left as it is.
    ///
    /// The serve helper closes connections that fail this (after their requests in flight) when the
    /// set changes: a revoked or distrusted client does not keep a keep-alive connection.
    ///
    /// # Errors
    /// The reason the connection would not be accepted now.
    pub fn recheck(&self, tls: &TlsInfo, now: UnixTime) -> Result<(), Invalidated> {
        if tls.refused.is_some() {
            return Ok(());
        }
        let snapshot = self.snapshot();
        let sni = || tls.sni.as_deref().unwrap_or("-").to_owned();
        let Some(vhost) = snapshot.lookup(tls.sni.as_deref()) else {
            return Err(Invalidated::Gone { sni: sni() });
        };
        if tls.vhost.as_deref() != Some(&*vhost.name) {
            let was = tls.vhost.as_deref().unwrap_or("-").to_owned();
            return Err(Invalidated::Moved { was, now: vhost.name.to_string() });
        }
        let vhost_name = || vhost.name.to_string();
        match (&vhost.verifier, &tls.client_cert) {
            (None, None) => Ok(()),
            (None, Some(_)) => Err(Invalidated::ClientAuthOff { vhost: vhost_name() }),
            (Some(_), None) => {
                if vhost.config.client_auth == ClientAuth::Required
                    || !vhost.config.allowed_identities.is_empty()
                {
                    Err(Invalidated::CertificateRequired { vhost: vhost_name() })
                } else {
                    Ok(())
                }
            }
            (Some(verifier), Some(cert)) => {
                let Some((leaf, rest)) = cert.chain.split_first() else {
                    return Err(Invalidated::CertificateRequired { vhost: vhost_name() });
                };
                let leaf = CertificateDer::from(leaf.as_ref());
                let rest: Vec<CertificateDer<'_>> =
                    rest.iter().map(|c| CertificateDer::from(c.as_ref())).collect();
                verifier
                    .verify(&leaf, &rest, now)
                    .map(|_| ())
                    .map_err(|(refusal, _)| Invalidated::Chain(refusal))
            }
        }
    }

    fn recompile(&self, state: &mut State, uses: impl Fn(&VirtualHost) -> bool) -> Result<(), ConfigError> {
        let mut fresh = Vec::new();
        for v in state.vhosts.values().filter(|v| uses(&v.config)) {
            let c = CompiledVhost::compile(
                &v.config,
                &state.keystores,
                &state.truststores,
                &self.shared.provider,
            )?;
            fresh.push(Arc::new(c));
        }
        for c in fresh {
            state.vhosts.insert(c.config.name.clone(), c);
        }
        self.publish(state);
        Ok(())
    }

    fn publish(&self, state: &State) {
        let mut snap = Snapshot::default();
        for v in state.vhosts.values() {
            // Every name was checked by `put`.
            for h in v.config.host_names.iter().filter_map(|h| normalize_host(h)) {
                match h.strip_prefix("*.") {
                    Some(parent) => snap.wildcard.insert(parent.to_owned(), v.clone()),
                    None => snap.exact.insert(h, v.clone()),
                };
            }
        }
        snap.default = state.default.as_ref().and_then(|d| state.vhosts.get(d).cloned());
        self.shared.live.store(Arc::new(snap));
        self.shared.changes.send_modify(|n| *n = n.wrapping_add(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_names_are_normalised() {
        assert_eq!(normalize_host("API.Example.COM.").as_deref(), Some("api.example.com"));
        assert_eq!(normalize_host("a.b").as_deref(), Some("a.b"));
        assert_eq!(normalize_host("Bücher.example").as_deref(), Some("xn--bcher-kva.example"));
        assert_eq!(normalize_host("no spaces.example"), None);
    }

    #[test]
    fn unknown_store_is_a_config_error() {
        let hosts = VirtualHosts::new();
        let err = hosts.put(VirtualHost::new("a", ["a.test"], "missing")).unwrap_err();
        assert!(matches!(err, ConfigError::UnknownStore { kind: "keystore", .. }), "{err}");
        assert!(hosts.names().is_empty());
    }

    #[test]
    fn default_must_exist() {
        let hosts = VirtualHosts::new();
        assert!(matches!(hosts.set_default(Some("nope")), Err(ConfigError::Refused(_))));
        assert!(matches!(hosts.delete("nope"), Err(ConfigError::Refused(_))));
    }
}

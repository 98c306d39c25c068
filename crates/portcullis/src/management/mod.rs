//! The management API: virtual hosts, key and trust stores, private endpoint connections, public network
//! access and IP rules, changed at runtime by the right people, recorded, and kept across restarts.
//!
//! # Design
//!
//! The API keeps a **state**: what it changed, by resource ([`State`]). The configuration in force is
//! always *the configuration file with the state merged over it*, built by the same
//! [`GatewayConfig::build`] checks as the file alone. Every accepted write:
//!
//! 1. takes the API's lock (writes are serialised), checks `If-Match` against the resource's current ETag
//!    (`412` when stale);
//! 2. computes the next state and the merged configuration, and builds it completely (a refused build is
//!    `422` and changes nothing);
//! 3. writes the next state to the state file atomically (temporary file, fsync, rename, mode 0600) —
//!    still before anything is swapped, so a failed write changes nothing either;
//! 4. swaps the built configuration in with [`ServeHandle::apply_then`]: virtual hosts, listeners'
//!    accept paths and request rules, the same one swap as a reload; the next handshake and the next request
//!    see the change, none sees half of it;
//! 5. writes one audit line (time, identity, operation, resource, result, digests before and after).
//!
//! **How the state file and the configuration file combine**: by resource name, the state wins. A virtual
//! host, keystore, truststore or IP rule set the API wrote replaces the file's of the same name; one the API
//! deleted stays deleted (the state keeps a tombstone) while the file still defines it; a private endpoint
//! connection's status from the API overrides the file's `state`; public network access from the API
//! overrides `[public_access] enabled`; a named IP set from the API replaces the file's. Everything the
//! state does not name comes from the file, so a reloaded file (SIGHUP, file change) changes whatever the
//! API did not; its reload is merged with the same state, and refused as a whole if the merge does not build
//! (the running configuration stays). To hand a resource back to the file, delete the state entry's
//! effect through the API (for example `PUT` the file's value) or stop the server and edit the state file.
//!
//! At start, a state file that cannot be read, or that does not build over the configuration file, stops
//! the start with the error (fail closed); a missing one is an empty state.
//!
//! **Modes** (`[management] mode`): `single` (one instance) persists to `state_file`, which is loaded at
//! start. `fleet` (several replicas reading one ConfigMap) serves the API read-only (writes are `405`):
//! a state file per replica would diverge, so changes go through the configuration file every replica
//! reloads.
//!
//! **Who may call**: the request must come through the gateway stack on the management endpoint (by host
//! name; other hosts never reach the API), from an address in `allow_from` (loopback only by default),
//! with a granted client-certificate identity or bearer token (tokens compared as SHA-256 digests in
//! constant time; a grant naming both an identity and a token needs both). `GET` needs the `reader` role, everything else `admin`. Refusals are typed
//! [`Denial`]s answered by the [`Responder`] (problem+json): `management.endpoint` (421),
//! `management.address` (403), `management.unauthenticated` (401), `management.forbidden` (403),
//! `management.read-only` (405), `management.tls-required` (403: a call over a connection without TLS,
//! unless `require_tls = false`, for a proxy that terminates TLS in front). A write (`POST`, `PUT`) must send `Content-Type: application/json`, else
//! `management.media-type` (415): a web page can make the operator's browser send a cross-site form or
//! text POST without asking, with the operator's client certificate, but never a JSON one.
//!
//! A change applies to the API's own callers too: an IP rule, a public-access switch or a virtual host
//! change that shuts the caller out is applied like any other (`?validate=true` checks that a change
//! builds, not whom it lets in). Undo it through another granted path, or stop the server and edit the
//! state file.
//!
//! **Uploaded stores** are written as PEM files (mode 0600) into `<state file>.d/`, named by their content's
//! digest, and referenced by path from the state; private keys are never returned, only the fingerprint
//! (SHA-256 of the public key) of the key pair. A keystore's private key must belong to its leaf
//! certificate (`422` otherwise), and certificate PEM holding a private key is refused (`422`). Files
//! no store references any more are removed after each write, and only the API's own (`keystore-*`,
//! `truststore-*`): other files in that directory are left alone.
//!
//! **SAP API Management compatibility**: `POST /apiportal/operations/1.0/Configuration.svc/VirtualHostRequests`
//! takes SAP's body as it is (`accountId`, `virtualHostUrl`, `isDefaultVirtualHostRequest`,
//! `isClientAuthEnabled`, `keyStore`, `trustStore` by name or `ref://<reference>`, `virtualHostId`,
//! `operation`), and `GET /apiportal/api/1.0/Management.svc/VirtualHosts` lists the ids. SAP's
//! `APIManagement.SelfService.Administrator` role is the `admin` role here. Answers are JSON (the listing in
//! OData's `{"d": {"results": [...]}}` shape), where SAP answers the listing in Atom XML by default.
//!
//! The routes are in [`Management::router`]; `examples/demo.toml` enables the API and the demo prints the
//! curl commands.
//!
//! The serve helper mounts the router on the management endpoint by itself. An application that composes
//! its own service takes the router from the bound server and serves it behind the gateway, where the
//! router still checks the endpoint, address and role of every call:
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! use portcullis::config::GatewayConfig;
//! use portcullis::serve::Bound;
//!
//! let (config, source) = GatewayConfig::load("gateway.toml")?;
//! let bound = Bound::from_config(&config, &source).await?; // the file with the API's state over it
//! if let Some(management) = bound.management() {
//!     let api: axum::Router = management.router();
//!     let _ = api; // e.g. Endpoints::new().route("management", api)
//! }
//! # Ok(()) }
//! ```

mod api;
pub mod state;

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use http_body_util::Full;
use portcullis_core::{Decisions, Denial, IpRange, Responder};
use portcullis_mtls::{AllowedIdentity, ClientIdentity};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;
use toml::Table;

use crate::config::{ConfigError, GatewayConfig, Source};
use crate::reload::ServeHandle;
pub use state::State;

/// A role granted to a caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Role {
    /// May read every resource.
    Reader,
    /// May read and change every resource (SAP's `APIManagement.SelfService.Administrator`).
    Admin,
}

/// Whether this instance persists API changes or serves the API read-only.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// One instance: API changes are persisted to the state file.
    Single,
    /// Several replicas of one configuration: the API is read-only.
    Fleet,
}

struct Grant {
    name: Option<String>,
    role: Role,
    identity: Option<AllowedIdentity>,
    token: Option<[u8; 32]>,
}

/// `[management]`, checked.
pub struct Settings {
    endpoint: String,
    mode: Mode,
    state_file: Option<PathBuf>,
    audit_file: Option<PathBuf>,
    allow_from: Vec<IpRange>,
    require_tls: bool,
    grants: Vec<Grant>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("endpoint", &self.endpoint)
            .field("mode", &self.mode)
            .field("state_file", &self.state_file)
            .field("audit_file", &self.audit_file)
            .field("grants", &self.grants.len())
            .finish_non_exhaustive()
    }
}

/// A path from the configuration, relative to the configuration file's directory.
fn config_path(source: &Source, p: &Path) -> PathBuf {
    let file = Path::new(source.file());
    match file.parent() {
        Some(dir) if p.is_relative() && file.is_file() => dir.join(p),
        _ => p.to_path_buf(),
    }
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

impl Settings {
    /// `[management]` of `config`, checked (`None` when absent or disabled): endpoint, mode, state file,
    /// roles and their tokens (read now from their files or the environment).
    ///
    /// # Errors
    /// A [`ConfigError`] naming the key.
    pub fn from_config(config: &GatewayConfig, source: &Source) -> Result<Option<Settings>, ConfigError> {
        let Some(m) = config.management.as_ref().filter(|m| m.enabled) else { return Ok(None) };
        let mode = match m.mode.as_ref().map(|s| (s.get_ref().as_str(), s.span())) {
            None | Some(("single", _)) => Mode::Single,
            Some(("fleet", _)) => Mode::Fleet,
            Some((other, span)) => {
                return Err(source.error(span, "management.mode", format!("`{other}`: single or fleet")));
            }
        };
        let state_file = m.state_file.as_ref().map(|p| config_path(source, p.get_ref()));
        if mode == Mode::Single && state_file.is_none() {
            return Err(source.error(
                0..0,
                "management.state_file",
                "mode = \"single\" persists API changes: name the state file (or use mode = \"fleet\")",
            ));
        }
        let allow_from = match &m.allow_from {
            None => vec![
                "127.0.0.0/8".parse::<IpRange>().map_err(|e| source.error(0..0, "management", e))?,
                "::1".parse::<IpRange>().map_err(|e| source.error(0..0, "management", e))?,
            ],
            Some(list) => list
                .iter()
                .map(|r| {
                    r.get_ref()
                        .parse::<IpRange>()
                        .map_err(|e| source.error(r.span(), "management.allow_from", e))
                })
                .collect::<Result<_, _>>()?,
        };
        let mut grants = Vec::new();
        for g in &m.grants {
            let gc = g.get_ref();
            let role = match gc.role.get_ref().as_str() {
                "reader" => Role::Reader,
                "admin" => Role::Admin,
                other => {
                    return Err(source.error(
                        gc.role.span(),
                        "management.grant.role",
                        format!("`{other}`: reader or admin"),
                    ));
                }
            };
            let identity = match &gc.identity {
                None => None,
                Some(fields) => Some(
                    crate::build::allowed_identity(fields)
                        .map_err(|e| source.error(g.span(), "management.grant.identity", e))?,
                ),
            };
            let token = match (&gc.token_file, &gc.token_env) {
                (Some(_), Some(_)) => {
                    return Err(source.error(
                        g.span(),
                        "management.grant",
                        "one of token_file and token_env, not both",
                    ));
                }
                (Some(file), None) => {
                    let path = config_path(source, file);
                    let text = std::fs::read_to_string(&path).map_err(|e| {
                        source.error(
                            g.span(),
                            "management.grant.token_file",
                            format!("{}: {e}", path.display()),
                        )
                    })?;
                    Some(text.trim().to_owned())
                }
                // Trimmed like a file's: a secret mounted from a file into the environment keeps its
                // newline, and a presented token never carries one.
                (None, Some(var)) => Some(
                    std::env::var(var)
                        .map_err(|e| {
                            source.error(g.span(), "management.grant.token_env", format!("`{var}`: {e}"))
                        })?
                        .trim()
                        .to_owned(),
                ),
                (None, None) => None,
            };
            if token.as_deref().is_some_and(|t| t.len() < 16) {
                return Err(source.error(
                    g.span(),
                    "management.grant",
                    "a token needs at least 16 characters",
                ));
            }
            if identity.is_none() && token.is_none() {
                return Err(source.error(
                    g.span(),
                    "management.grant",
                    "a grant needs an identity, a token_file or a token_env",
                ));
            }
            grants.push(Grant {
                name: gc.name.clone(),
                role,
                identity,
                token: token.map(|t| digest(t.as_bytes())),
            });
        }
        Ok(Some(Settings {
            endpoint: m.endpoint.as_ref().map_or_else(|| "management".to_owned(), |e| e.get_ref().clone()),
            mode,
            state_file,
            audit_file: m.audit_file.as_ref().map(|p| config_path(source, p)),
            allow_from,
            require_tls: m.require_tls,
            grants,
        }))
    }

    /// The mode.
    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// The endpoint serving the API.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }
}

/// Who called, as the API knows them.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub(crate) identity: String,
    pub(crate) role: Role,
}

/// Whether `[hosts]` defines endpoint `name` (by `[hosts.service]` or `[hosts.endpoint.<name>]`).
pub(crate) fn endpoint_exists(config: &GatewayConfig, name: &str) -> bool {
    let hosts = config.hosts.get_ref();
    hosts.endpoint.contains_key(name)
        || (hosts.service.is_some() && ["gateway", "portal", "management", "scm"].contains(&name))
}

/// A refusal or failure of the API, answered in problem+json.
#[derive(Debug)]
pub(crate) struct ApiError(pub(crate) Denial);

impl ApiError {
    pub(crate) fn new(code: &'static str, status: StatusCode, detail: impl Into<String>) -> ApiError {
        ApiError(Denial::new("management", code, status, detail))
    }
}

/// What one store holds: the file as parsed, the state, and the configuration they make.
pub(crate) struct Store {
    base: Table,
    base_dir: Option<PathBuf>,
    base_file: String,
    pub(crate) state: State,
    /// The merged configuration in force.
    pub(crate) effective: Table,
    pub(crate) config: GatewayConfig,
    pub(crate) source: Source,
}

fn table_of(source: &Source) -> Result<Table, ConfigError> {
    source.text().parse::<Table>().map_err(|e| source.error(0..0, "-", e.message().trim()))
}

impl Store {
    fn new(source: &Source, state: State) -> Result<Store, ConfigError> {
        let base = table_of(source)?;
        let file = Path::new(source.file());
        let base_dir = file.is_file().then(|| file.parent().map(Path::to_path_buf)).flatten();
        let mut store = Store {
            base,
            base_dir,
            base_file: source.file().to_owned(),
            state: State::default(),
            effective: Table::new(),
            config: GatewayConfig::parse(source)?,
            source: source.clone(),
        };
        let (effective, config, source) = store.merged(&state)?;
        store.state = state;
        store.effective = effective;
        store.config = config;
        store.source = source;
        Ok(store)
    }

    /// The configuration `state` makes over the file: its table, parsed, and its text as a source.
    pub(crate) fn merged(&self, state: &State) -> Result<(Table, GatewayConfig, Source), ConfigError> {
        let effective = state.merge(&self.base, self.base_dir.as_deref());
        let text = toml::to_string(&effective).map_err(|e| ConfigError {
            file: self.base_file.clone(),
            line: 0,
            column: 0,
            key: "-".into(),
            message: format!("the merged configuration cannot be written: {e}"),
        })?;
        let source = Source::new(format!("{} (merged with the management state)", self.base_file), text);
        let config = GatewayConfig::parse(&source)?;
        Ok((effective, config, source))
    }
}

/// The management API of one running server: a handle on its configuration plus the API's state.
/// Clones share it. Serve [`router`](Self::router) behind the gateway (the serve helper does so on the
/// management endpoint when `[management]` enables it).
#[derive(Clone)]
pub struct Management {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) settings: Settings,
    pub(crate) handle: ServeHandle,
    pub(crate) store: Mutex<Store>,
    pub(crate) responder: Responder,
}

impl std::fmt::Debug for Management {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Management").field("settings", &self.inner.settings).finish_non_exhaustive()
    }
}

/// A management API whose configuration is known but whose server is not bound yet: the serve helper builds
/// [`effective`](Self::effective) (the file with the loaded state over it), binds it, then
/// [`start`](Self::start)s the API on the server's handle.
pub struct Prepared {
    settings: Settings,
    store: Store,
}

impl std::fmt::Debug for Prepared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Prepared").field("settings", &self.settings).finish_non_exhaustive()
    }
}

impl Prepared {
    /// Checks `[management]` of the configuration file, loads the state file (`single` mode) and merges it
    /// over the file. `None` when the API is not enabled.
    ///
    /// # Errors
    /// [`ConfigError`]: `[management]` is wrong, or the state file cannot be read or does not build with
    /// this configuration file.
    pub fn new(config: &GatewayConfig, source: &Source) -> Result<Option<Prepared>, ConfigError> {
        let Some(settings) = Settings::from_config(config, source)? else { return Ok(None) };
        let state = match (&settings.state_file, settings.mode) {
            (Some(path), Mode::Single) => state::load(path).map_err(|message| ConfigError {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                key: "-".into(),
                message,
            })?,
            _ => State::default(),
        };
        if !endpoint_exists(config, &settings.endpoint) {
            let span =
                config.management.as_ref().and_then(|m| m.endpoint.as_ref()).map_or(0..0, |e| e.span());
            return Err(source.error(
                span,
                "management.endpoint",
                format!(
                    "no endpoint `{}` in [hosts]: the API is served on an endpoint's host names",
                    settings.endpoint
                ),
            ));
        }
        let store = Store::new(source, state)?;
        Ok(Some(Prepared { settings, store }))
    }

    /// The configuration to build and serve: the file with the state over it.
    pub fn effective(&self) -> (&GatewayConfig, &Source) {
        (&self.store.config, &self.store.source)
    }

    /// Starts the API on the running server `handle`: from now on reloads of the configuration file merge
    /// the state, and [`Management::router`] serves the API.
    pub fn start(self, handle: ServeHandle) -> Management {
        let m = Management {
            inner: Arc::new(Inner {
                settings: self.settings,
                handle: handle.clone(),
                store: Mutex::new(self.store),
                responder: Responder::default(),
            }),
        };
        let weak = Arc::downgrade(&m.inner);
        handle.set_reload_hook(Arc::new(move |handle, config, source| match weak.upgrade() {
            Some(inner) => Management { inner }.reload(config, source),
            None => handle.apply(config, source),
        }));
        tracing::info!(
            endpoint = %m.inner.settings.endpoint,
            mode = ?m.inner.settings.mode,
            state_file = ?m.inner.settings.state_file,
            "portcullis: management API"
        );
        m
    }
}

impl Management {
    /// The checked settings.
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// The API's routes (see the module docs), to serve behind the gateway on the management endpoint.
    pub fn router(&self) -> axum::Router {
        api::router(self.clone())
    }

    /// The API's state now.
    pub fn state(&self) -> State {
        self.lock().state.clone()
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, Store> {
        // A write changes the store only after everything else succeeded, with plain assignments.
        self.inner.store.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// A reload of the configuration file: the new file with the same state over it, applied whole.
    fn reload(&self, config: &GatewayConfig, source: &Source) -> Result<u64, ConfigError> {
        let mut store = self.lock();
        let base = table_of(source).map_err(|e| self.inner.handle.refused(e))?;
        // Grants, tokens, addresses and the mode were read at start: a reload that changes them is refused
        // rather than half-applied (a revoked grant must not look revoked while it still works).
        if base.get("management") != store.base.get("management") {
            let span =
                config.management.as_ref().and_then(|m| m.endpoint.as_ref()).map_or(0..0, |e| e.span());
            let e = source.error(
                span,
                "management",
                "changing [management] needs a restart (the running configuration stays)",
            );
            return Err(self.inner.handle.refused(e));
        }
        let old = std::mem::replace(&mut store.base, base);
        let merged = store.merged(&store.state.clone());
        let applied = merged.and_then(|(effective, config, merged_source)| {
            let generation = self.inner.handle.apply(&config, &merged_source)?;
            store.effective = effective;
            store.config = config;
            store.source = merged_source;
            Ok(generation)
        });
        if applied.is_err() {
            store.base = old;
        }
        applied
    }

    /// Who is calling, refused unless on the management endpoint, from an allowed address, with a granted
    /// identity or token and the role `needed`.
    pub(crate) fn authorize(&self, parts: &http::request::Parts, needed: Role) -> Result<Caller, ApiError> {
        let settings = &self.inner.settings;
        let decisions = Decisions::get(&parts.extensions);
        let endpoint = decisions.and_then(|d| d.host.as_ref()).map(|h| h.endpoint.clone());
        if endpoint.as_deref() != Some(settings.endpoint.as_str()) {
            return Err(ApiError::new(
                "management.endpoint",
                StatusCode::MISDIRECTED_REQUEST,
                format!("the management API is served on the `{}` endpoint only", settings.endpoint),
            ));
        }
        let tls = portcullis_core::ConnInfo::lookup(&parts.extensions).is_some_and(|c| c.tls.is_some());
        if settings.require_tls && !tls {
            return Err(ApiError::new(
                "management.tls-required",
                StatusCode::FORBIDDEN,
                "the management API is served over TLS only",
            ));
        }
        let client: Option<IpAddr> = Decisions::client_of(&parts.extensions).map(|c| c.ip);
        if !client.is_some_and(|ip| settings.allow_from.iter().any(|r| r.contains(ip))) {
            return Err(ApiError::new(
                "management.address",
                StatusCode::FORBIDDEN,
                "this client address may not call the management API",
            ));
        }
        let mut role: Option<(Role, String)> = None;
        let mut grant = |r: Role, who: String| {
            if role.as_ref().is_none_or(|(have, _)| r > *have) {
                role = Some((r, who));
            }
        };
        // The presented token's digest (an `Authorization` that is not a bearer token is an empty one).
        let presented = parts.headers.get(header::AUTHORIZATION).map(|auth| {
            // The scheme is case-insensitive (RFC 9110 11.1).
            let token = auth
                .to_str()
                .ok()
                .and_then(|a| a.split_once(' '))
                .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
                .map(|(_, token)| token.trim());
            digest(token.unwrap_or("").as_bytes())
        });
        let cert = ClientIdentity::from_extensions(&parts.extensions).map(|ClientIdentity(c)| c);
        let mut token_known = false;
        for (i, g) in settings.grants.iter().enumerate() {
            // What the grant names must all be presented: a grant with an identity and a token needs both.
            let token_ok = g.token.as_ref().map(|t| presented.is_some_and(|p| bool::from(t.ct_eq(&p))));
            let cert_ok = g.identity.as_ref().map(|id| cert.as_ref().is_some_and(|c| id.matches(c)));
            token_known |= token_ok == Some(true);
            if token_ok == Some(false) || cert_ok == Some(false) {
                continue;
            }
            let name = g.name.clone();
            let who = match (cert_ok, &cert) {
                (Some(true), Some(c)) => {
                    let by = if token_ok.is_some() { "cert+token" } else { "cert" };
                    format!(
                        "{by}:{}",
                        name.map_or_else(|| c.subject.clone(), |n| format!("{n} ({})", c.subject))
                    )
                }
                _ => format!("token:{}", name.unwrap_or_else(|| format!("grant #{}", i + 1))),
            };
            grant(g.role, who);
        }
        // A wrong token is refused even with a good certificate: it is somebody's mistake or guess.
        if presented.is_some() && !token_known {
            return Err(unauthenticated("the bearer token is not granted"));
        }
        let Some((role, identity)) = role else {
            return Err(unauthenticated("present a granted client certificate or bearer token"));
        };
        if role < needed {
            return Err(ApiError::new(
                "management.forbidden",
                StatusCode::FORBIDDEN,
                format!("`{identity}` has the reader role; this needs the admin role"),
            ));
        }
        Ok(Caller { identity, role })
    }

    /// The problem+json answer of `error`, for a request with `headers`.
    pub(crate) fn refusal(&self, error: ApiError, headers: &http::HeaderMap) -> http::Response<Full<Bytes>> {
        let unauthenticated = error.0.code() == "management.unauthenticated";
        let mut res = self.inner.responder.respond_headers(error.0, headers);
        if unauthenticated {
            res.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        res
    }

    /// Writes one audit line: to the log, and to the audit file when configured.
    pub(crate) fn audit(
        &self,
        caller: &Caller,
        operation: &str,
        resource: &str,
        result: &str,
        before: Option<&str>,
        after: Option<&str>,
    ) {
        let line = serde_json::json!({
            "time": rfc3339(std::time::SystemTime::now()),
            "identity": caller.identity,
            "role": format!("{:?}", caller.role).to_lowercase(),
            "operation": operation,
            "resource": resource,
            "result": result,
            "before": before,
            "after": after,
        })
        .to_string();
        let outcome = if result == "ok" { "ok" } else { "refused" };
        metrics::counter!(
            portcullis_core::telemetry::MANAGEMENT_CHANGES,
            "operation" => operation.to_owned(),
            "result" => outcome
        )
        .increment(1);
        tracing::info!(target: "portcullis::audit", "{line}");
        if let Some(path) = &self.inner.settings.audit_file {
            let mut options = std::fs::OpenOptions::new();
            options.append(true).create(true);
            #[cfg(unix)]
            {
                use std::os::unix::fs::OpenOptionsExt;
                options.mode(0o600);
            }
            let written = options.open(path).and_then(|mut f| {
                use std::io::Write;
                f.write_all(format!("{line}\n").as_bytes())?;
                f.sync_data()
            });
            if let Err(e) = written {
                tracing::error!(file = %path.display(), "portcullis: cannot write the audit file: {e}");
            }
        }
    }
}

/// `app` with the management API on the management endpoint: requests whose host the gateway matched to
/// that endpoint go to [`Management::router`], every other request to `app`. Put it behind the gateway
/// (`gateway.layer().layer(mount(&m, app))`): the endpoint is the one the host rule recorded.
pub fn mount<S>(management: &Management, app: S) -> Mounted<S> {
    Mounted {
        endpoint: Arc::from(management.inner.settings.endpoint.as_str()),
        api: management.router(),
        app,
    }
}

/// The service of [`mount`].
#[derive(Clone)]
pub struct Mounted<S> {
    endpoint: Arc<str>,
    api: axum::Router,
    app: S,
}

impl<S> std::fmt::Debug for Mounted<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Mounted").field("endpoint", &self.endpoint).finish_non_exhaustive()
    }
}

impl<S, ReqBody, B> tower::Service<http::Request<ReqBody>> for Mounted<S>
where
    S: tower::Service<http::Request<ReqBody>, Response = http::Response<B>, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send + 'static,
    ReqBody: http_body::Body<Data = Bytes> + Send + 'static,
    ReqBody::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    type Response = http::Response<axum::body::Body>;
    type Error = std::convert::Infallible;
    type Future = std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Self::Response, std::convert::Infallible>> + Send>,
    >;

    fn poll_ready(&mut self, _cx: &mut std::task::Context<'_>) -> std::task::Poll<Result<(), Self::Error>> {
        // Both services are cloned and driven to readiness per call.
        std::task::Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<ReqBody>) -> Self::Future {
        use tower::ServiceExt;
        let endpoint =
            Decisions::get(req.extensions()).and_then(|d| d.host.as_ref()).map(|h| h.endpoint.clone());
        if endpoint.as_deref() == Some(&*self.endpoint) {
            let api = self.api.clone();
            Box::pin(async move { api.oneshot(req).await })
        } else {
            let app = self.app.clone();
            Box::pin(async move { Ok(app.oneshot(req).await?.map(axum::body::Body::new)) })
        }
    }
}

fn unauthenticated(detail: &str) -> ApiError {
    ApiError::new("management.unauthenticated", StatusCode::UNAUTHORIZED, detail)
}

/// `2026-12-05T22:47:01Z` (whole seconds, UTC).
fn rfc3339(t: std::time::SystemTime) -> String {
    let t = time::OffsetDateTime::from(t).replace_nanosecond(0).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_from_the_environment_is_trimmed_like_one_from_a_file() {
        const VAR: &str = "PORTCULLIS_TEST_MANAGEMENT_TOKEN";
        const NAME: &str = "management::tests::a_token_from_the_environment_is_trimmed_like_one_from_a_file";
        let Some(value) = std::env::var_os(VAR) else {
            // The variable is set for a child running this test alone: setting it here would touch the
            // environment every other test reads.
            let exe = std::env::current_exe().expect("test binary");
            let status = std::process::Command::new(exe)
                .args(["--exact", NAME, "--quiet", "--test-threads", "1"])
                .env(VAR, "env-token-0123456789abcdef\n")
                .status()
                .expect("child");
            assert!(status.success(), "the child run failed");
            return;
        };
        assert!(value.to_string_lossy().ends_with('\n'), "a secret mounted from a file keeps its newline");
        let text = format!(
            "resource = \"r\"\n[hosts.endpoint.gateway]\nnames = [\"a.example\"]\n[management]\nmode = \"fleet\"\n\
             [[management.grant]]\nrole = \"admin\"\ntoken_env = \"{VAR}\"\n"
        );
        let source = Source::new("gw.toml", text);
        let config = GatewayConfig::parse(&source).expect("parses");
        let settings = Settings::from_config(&config, &source).expect("checked").expect("enabled");
        assert_eq!(settings.grants[0].token, Some(digest(b"env-token-0123456789abcdef")));
    }

    #[test]
    fn an_empty_or_malformed_grant_identity_is_refused() {
        let settings = |identity: &str| {
            let text = format!(
                "resource = \"r\"\n[hosts.endpoint.gateway]\nnames = [\"a.example\"]\n[management]\nmode = \"fleet\"\n[[management.grant]]\nrole = \"admin\"\nidentity = {identity}\n"
            );
            let source = Source::new("gw.toml", text);
            let config = GatewayConfig::parse(&source).unwrap_or_else(|e| panic!("{identity}: {e}"));
            Settings::from_config(&config, &source).map(|s| s.map(|s| s.grants.len()))
        };
        for identity in ["{}", "{ subject = \"\" }", "{ san = \"\", sha256 = \"ab\" }", "{ sha256 = \"zz\" }"]
        {
            let e = settings(identity).expect_err(identity);
            assert_eq!(e.key, "management.grant.identity", "{identity}: {e}");
        }
        let good = format!("{{ sha256 = \"{}\" }}", "AB:".repeat(31) + "AB");
        assert_eq!(settings(&good).expect("a thumbprint"), Some(1));
        assert_eq!(settings("{ subject = \"CN=operator\" }").expect("a subject"), Some(1));
    }

    #[test]
    fn rfc3339_dates() {
        let at = |s| rfc3339(std::time::UNIX_EPOCH + std::time::Duration::from_secs(s));
        assert_eq!(at(0), "1970-01-01T00:00:00Z");
        assert_eq!(at(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(at(1_796_510_821), "2026-12-05T22:47:01Z");
    }
}

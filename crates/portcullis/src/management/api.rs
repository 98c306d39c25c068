//! The routes and handlers of the management API.

use std::collections::BTreeMap;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Request, State as AxumState};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::request::Parts;
use http::{HeaderValue, Method, StatusCode, header};
use serde::Deserialize;
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use toml::Value as Toml;

use super::state::{self, ConnectionSpec, IpRulesSpec, KeystoreSpec, State, TruststoreSpec, VirtualHostSpec};
use super::{ApiError, Caller, Management, Mode, Role, Store};

/// The largest request body the API reads (a PEM bundle fits many times over).
const MAX_BODY: usize = 1024 * 1024;

/// What a handler answers.
pub(crate) struct Reply {
    status: StatusCode,
    body: Option<Value>,
    toml: Option<String>,
    etag: Option<String>,
}

impl Reply {
    fn json(status: StatusCode, body: Value) -> Reply {
        let etag = Some(etag(&body));
        Reply { status, body: Some(body), toml: None, etag }
    }
}

/// A strong ETag: the first 128 bits of the SHA-256 of the resource's JSON.
pub(crate) fn etag(v: &Value) -> String {
    let d = Sha256::digest(v.to_string().as_bytes());
    format!("\"{}\"", hex(&d[..16]))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn not_found(what: &str, name: &str) -> ApiError {
    ApiError::new("management.not-found", StatusCode::NOT_FOUND, format!("no {what} named `{name}`"))
}

fn invalid(detail: impl Into<String>) -> ApiError {
    ApiError::new("management.invalid", StatusCode::UNPROCESSABLE_ENTITY, detail)
}

fn conflict(code: &'static str, detail: impl Into<String>) -> ApiError {
    ApiError::new(code, StatusCode::CONFLICT, detail)
}

fn body<T: serde::de::DeserializeOwned>(bytes: &Bytes) -> Result<T, ApiError> {
    serde_json::from_slice(bytes).map_err(|e| {
        ApiError::new("management.bad-body", StatusCode::BAD_REQUEST, format!("the JSON body: {e}"))
    })
}

/// A resource name: 1 to 64 of `A-Z a-z 0-9 . _ -`, not starting with `.` or `-`.
fn check_name(name: &str) -> Result<(), ApiError> {
    let ok = (1..=64).contains(&name.len())
        && !name.starts_with(['.', '-'])
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!("`{name}`: a name is 1 to 64 letters, digits, `.`, `_` or `-`")))
    }
}

/// The routes. Every one needs the `reader` role for `GET` and `admin` otherwise, and is served only on the
/// management endpoint (see the module docs).
///
/// | path | methods |
/// |---|---|
/// | `/v1/virtual-hosts` | GET |
/// | `/v1/virtual-hosts/{name}` | GET, PUT, DELETE |
/// | `/v1/keystores`, `/v1/truststores` | GET |
/// | `/v1/keystores/{name}`, `/v1/truststores/{name}` | GET, PUT (PEM), DELETE |
/// | `/v1/references`, `/v1/references/{name}` | GET; PUT, DELETE |
/// | `/v1/private-endpoint-connections` | GET |
/// | `/v1/private-endpoint-connections/{name}` | GET, PUT |
/// | `/v1/public-network-access` | GET, PUT |
/// | `/v1/ip/sets`, `/v1/ip/sets/{name}` | GET; GET, PUT |
/// | `/v1/ip/rules`, `/v1/ip/rules/{set}` | GET; GET, PUT, DELETE |
/// | `/v1/effective-config` | GET (`?format=toml` or JSON) |
/// | `/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests` | POST (SAP) |
/// | `/apiportal/api/1.0/Management.svc/VirtualHosts` | GET (SAP) |
///
/// Writes take `If-Match` (`412` when stale) and `?validate=true` (check only, nothing changes; `validate`
/// is `true` or `false` in any case, another value is `400`).
pub(crate) fn router(m: Management) -> Router {
    Router::new()
        .route("/v1/virtual-hosts", get(h_list_vhosts))
        .route("/v1/virtual-hosts/{name}", get(h_get_vhost).put(h_put_vhost).delete(h_delete_vhost))
        .route("/v1/keystores", get(h_list_keystores))
        .route("/v1/keystores/{name}", get(h_get_keystore).put(h_put_keystore).delete(h_delete_keystore))
        .route("/v1/truststores", get(h_list_truststores))
        .route(
            "/v1/truststores/{name}",
            get(h_get_truststore).put(h_put_truststore).delete(h_delete_truststore),
        )
        .route("/v1/references", get(h_list_references))
        .route("/v1/references/{name}", get(h_get_reference).put(h_put_reference).delete(h_delete_reference))
        .route("/v1/private-endpoint-connections", get(h_list_connections))
        .route("/v1/private-endpoint-connections/{name}", get(h_get_connection).put(h_put_connection))
        .route("/v1/public-network-access", get(h_get_public).put(h_put_public))
        .route("/v1/ip/sets", get(h_list_sets))
        .route("/v1/ip/sets/{name}", get(h_get_set).put(h_put_set))
        .route("/v1/ip/rules", get(h_list_rules))
        .route("/v1/ip/rules/{set}", get(h_get_rules).put(h_put_rules).delete(h_delete_rules))
        .route("/v1/effective-config", get(h_effective))
        .route("/apiportal/operations/1.0/Configuration.svc/VirtualHostRequests", post(h_sap_request))
        .route("/apiportal/api/1.0/Management.svc/VirtualHosts", get(h_sap_list))
        .fallback(h_fallback)
        .with_state(m)
}

type Handler = dyn FnOnce(&Management, &Caller, &Parts, &Bytes) -> Result<Reply, ApiError> + Send;

/// Authorizes the request, reads its body, runs `f` off the async threads and answers.
async fn run(m: Management, req: Request, f: Box<Handler>) -> Response {
    let (parts, body) = req.into_parts();
    let needed = if matches!(parts.method, Method::GET | Method::HEAD) { Role::Reader } else { Role::Admin };
    let caller = match m.authorize(&parts, needed) {
        Ok(c) => c,
        Err(e) => {
            // The body is read (up to the cap) before the refusal is sent, so an HTTP/2 client still
            // uploading gets the answer rather than a reset stream.
            let _ = axum::body::to_bytes(body, MAX_BODY).await;
            return m.refusal(e, &parts.headers).map(Body::new);
        }
    };
    // A browser sends a cross-site POST with a text/plain or form body without asking first, and presents
    // the operator's client certificate by itself: a write must say its body is JSON, which no page can
    // make a browser send to another site without the site's consent (CORS preflight).
    if matches!(parts.method, Method::POST | Method::PUT | Method::PATCH) && !is_json(&parts.headers) {
        let e = ApiError::new(
            "management.media-type",
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a write takes a JSON body: send Content-Type: application/json",
        );
        let _ = axum::body::to_bytes(body, MAX_BODY).await;
        return m.refusal(e, &parts.headers).map(Body::new);
    }
    let bytes = match axum::body::to_bytes(body, MAX_BODY).await {
        Ok(b) => b,
        Err(_) => {
            let e = ApiError::new(
                "management.bad-body",
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("the body is larger than {MAX_BODY} bytes, or was cut"),
            );
            return m.refusal(e, &parts.headers).map(Body::new);
        }
    };
    if let Err(e) = check_query(&parts) {
        return m.refusal(e, &parts.headers).map(Body::new);
    }
    let headers = parts.headers.clone();
    let m2 = m.clone();
    let done = tokio::task::spawn_blocking(move || f(&m2, &caller, &parts, &bytes)).await;
    match done {
        Ok(Ok(reply)) => {
            let mut res = match (reply.toml, reply.body) {
                (Some(text), _) => {
                    ([(header::CONTENT_TYPE, "application/toml; charset=utf-8")], text).into_response()
                }
                (None, Some(v)) => axum::Json(v).into_response(),
                (None, None) => StatusCode::NO_CONTENT.into_response(),
            };
            *res.status_mut() = reply.status;
            if let Some(tag) = reply.etag.and_then(|t| HeaderValue::from_str(&t).ok()) {
                res.headers_mut().insert(header::ETAG, tag);
            }
            res
        }
        Ok(Err(e)) => m.refusal(e, &headers).map(Body::new),
        Err(_) => m
            .refusal(
                ApiError::new("management.internal", StatusCode::INTERNAL_SERVER_ERROR, "the change failed"),
                &headers,
            )
            .map(Body::new),
    }
}

/// Whether the request's `Content-Type` is JSON (`application/json` or `application/<x>+json`).
fn is_json(headers: &http::HeaderMap) -> bool {
    let media = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = media.split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

async fn h_fallback(AxumState(m): AxumState<Management>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(|_, _, parts, _| {
            Err(ApiError::new(
                "management.no-route",
                StatusCode::NOT_FOUND,
                format!("no management resource at {} {}", parts.method, parts.uri.path()),
            ))
        }),
    )
    .await
}

// === writes ===

/// One change: the resource it is about (for `If-Match` and the audit), and what it does to the state.
struct Change<'a> {
    operation: &'static str,
    resource: String,
    view: &'a dyn Fn(&Store) -> Option<Value>,
}

fn if_match(parts: &Parts) -> Option<String> {
    parts.headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok()).map(|s| s.trim().to_owned())
}

/// The values of the `validate` query parameters: `true` (or none) asks for a check only.
fn validate_values(parts: &Parts) -> impl Iterator<Item = &str> {
    let query = parts.uri.query().unwrap_or("");
    query.split('&').filter_map(|kv| match kv.split_once('=') {
        Some(("validate", v)) => Some(v),
        None if kv == "validate" => Some("true"),
        _ => None,
    })
}

fn validate_only(parts: &Parts) -> bool {
    validate_values(parts).any(|v| v.eq_ignore_ascii_case("true"))
}

/// A `validate` value other than `true` or `false` is refused: a check asked for in another spelling must
/// not apply the change.
fn check_query(parts: &Parts) -> Result<(), ApiError> {
    match validate_values(parts).find(|v| !v.eq_ignore_ascii_case("true") && !v.eq_ignore_ascii_case("false"))
    {
        Some(v) => Err(ApiError::new(
            "management.bad-query",
            StatusCode::BAD_REQUEST,
            format!("validate={v}: true or false"),
        )),
        None => Ok(()),
    }
}

impl Management {
    /// Applies one change: If-Match, the next state, the merged configuration built, the state persisted,
    /// one swap, one audit line. Answers whether the resource existed and what it is after the change.
    fn write(
        &self,
        caller: &Caller,
        parts: &Parts,
        change: Change<'_>,
        apply: impl FnOnce(&mut State, &Store) -> Result<(), ApiError>,
    ) -> Result<Written, ApiError> {
        if self.inner.settings.mode == Mode::Fleet {
            return Err(ApiError::new(
                "management.read-only",
                StatusCode::METHOD_NOT_ALLOWED,
                "this gateway runs as a fleet: the management API is read-only; change the configuration \
                 file every replica reloads",
            ));
        }
        let mut store = self.lock();
        let result = self.write_locked(&mut store, caller, parts, &change, apply);
        // Files of refused or replaced uploads (and of validate-only ones) are not referenced: removed.
        self.clean_files(&store);
        result
    }

    fn write_locked(
        &self,
        store: &mut Store,
        caller: &Caller,
        parts: &Parts,
        change: &Change<'_>,
        apply: impl FnOnce(&mut State, &Store) -> Result<(), ApiError>,
    ) -> Result<Written, ApiError> {
        let Change { operation, resource, view } = change;
        let before = view(store);
        let before_tag = before.as_ref().map(etag);
        let refuse = |e: ApiError| {
            self.audit(
                caller,
                operation,
                resource,
                &format!("refused: {}", e.0.code()),
                before_tag.as_deref(),
                before_tag.as_deref(),
            );
            e
        };
        if let Some(expected) = if_match(parts) {
            let current = before_tag.as_deref();
            // `*`, or a list of ETags of which one must be current (RFC 9110 13.1.1).
            let fresh = if expected == "*" {
                current.is_some()
            } else {
                expected.split(',').map(str::trim).any(|tag| current == Some(tag))
            };
            if !fresh {
                return Err(refuse(ApiError::new(
                    "management.stale",
                    StatusCode::PRECONDITION_FAILED,
                    format!("If-Match {expected}: the resource's ETag is {}", current.unwrap_or("(none)")),
                )));
            }
        }
        let mut next = store.state.clone();
        apply(&mut next, store).map_err(&refuse)?;
        next.version = 1;
        next.changes += 1;
        let (effective, config, source) =
            store.merged(&next).map_err(|e| refuse(invalid(format!("{}: {}", e.key, e.message))))?;
        if validate_only(parts) {
            config.prepare(&source).map_err(|e| refuse(invalid(format!("{}: {}", e.key, e.message))))?;
            return Ok(Written { existed: before.is_some(), after: Some(json!({"valid": true})) });
        }
        let state_file = self.inner.settings.state_file.clone();
        let persisted = serde_json::to_vec_pretty(&next);
        let persist = || match (&state_file, persisted) {
            (None, _) => Ok(()),
            (Some(path), Ok(bytes)) => {
                state::write_atomic(path, &bytes).map_err(|e| crate::config::ConfigError {
                    file: path.display().to_string(),
                    line: 0,
                    column: 0,
                    key: "management.state_file".into(),
                    message: format!("cannot write the state: {e}"),
                })
            }
            (Some(path), Err(e)) => Err(crate::config::ConfigError {
                file: path.display().to_string(),
                line: 0,
                column: 0,
                key: "management.state_file".into(),
                message: e.to_string(),
            }),
        };
        match self.inner.handle.apply_then(&config, &source, persist) {
            Ok(_) => {
                store.state = next;
                store.effective = effective;
                store.config = config;
                store.source = source;
                let after = view(store);
                let after_tag = after.as_ref().map(etag);
                self.audit(caller, operation, resource, "ok", before_tag.as_deref(), after_tag.as_deref());
                Ok(Written { existed: before.is_some(), after })
            }
            Err(e) if e.key == "management.state_file" => {
                Err(refuse(ApiError::new("management.persist", StatusCode::INTERNAL_SERVER_ERROR, e.message)))
            }
            Err(e) => Err(refuse(invalid(format!("{}: {}", e.key, e.message)))),
        }
    }

    /// Removes uploaded files no store references any more (left by replaced or refused uploads).
    fn clean_files(&self, store: &Store) {
        let Some(state_file) = &self.inner.settings.state_file else { return };
        let dir = state::files_dir(state_file);
        let Ok(entries) = std::fs::read_dir(&dir) else { return };
        let mut used: Vec<&std::path::Path> = Vec::new();
        for k in store.state.keystores.values().flatten() {
            used.push(&k.cert);
            used.push(&k.key);
        }
        for t in store.state.truststores.values().flatten() {
            used.push(&t.certs);
        }
        for e in entries.flatten() {
            let path = e.path();
            // Only the API's own files (see `write_pem`, and the temporary files of a crashed write): the
            // directory may hold an operator's files too.
            let name = e.file_name().to_string_lossy().trim_start_matches('.').to_owned();
            let ours = name.starts_with("keystore-") || name.starts_with("truststore-");
            if ours && !used.iter().any(|u| *u == path) {
                let _ = std::fs::remove_file(&path);
            }
        }
    }

    /// Writes an uploaded PEM into the files directory, named by its digest (mode 0600).
    fn write_pem(
        &self,
        kind: &str,
        name: &str,
        ext: &str,
        pem: &str,
    ) -> Result<std::path::PathBuf, ApiError> {
        let Some(state_file) = &self.inner.settings.state_file else {
            return Err(ApiError::new(
                "management.persist",
                StatusCode::INTERNAL_SERVER_ERROR,
                "no state file: uploads need one",
            ));
        };
        let dir = state::files_dir(state_file);
        let d = Sha256::digest(pem.as_bytes());
        let path = dir.join(format!("{kind}-{name}-{}.{ext}", hex(&d[..8])));
        state::make_files_dir(&dir).and_then(|()| state::write_atomic(&path, pem.as_bytes())).map_err(
            |e| ApiError::new("management.persist", StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        )?;
        Ok(path)
    }
}

/// What a write did: whether the resource existed before, and the resource after (`None`: deleted).
struct Written {
    existed: bool,
    after: Option<Value>,
}

/// The answer to a write: `200` (validated, or changed), `201` (created) or `204` (deleted).
fn written(parts: &Parts, w: Written) -> Reply {
    if validate_only(parts) {
        // `{"valid": true}` is not the resource: no ETag that a later If-Match could take for its.
        return Reply { status: StatusCode::OK, body: w.after, toml: None, etag: None };
    }
    match w.after {
        Some(v) => Reply::json(if w.existed { StatusCode::OK } else { StatusCode::CREATED }, v),
        None => Reply { status: StatusCode::NO_CONTENT, body: None, toml: None, etag: None },
    }
}

fn read(v: Option<Value>, what: &str, name: &str) -> Result<Reply, ApiError> {
    v.map(|v| Reply::json(StatusCode::OK, v)).ok_or_else(|| not_found(what, name))
}

// === views ===

fn entries<'a>(store: &'a Store, key: &str) -> impl Iterator<Item = &'a toml::Table> {
    store.effective.get(key).and_then(Toml::as_array).into_iter().flatten().filter_map(Toml::as_table)
}

fn entry<'a>(store: &'a Store, key: &str, name: &str) -> Option<&'a toml::Table> {
    entries(store, key).find(|t| t.get("name").and_then(Toml::as_str) == Some(name))
}

fn to_json(v: &Toml) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

fn s<'a>(t: &'a toml::Table, key: &str) -> Option<&'a str> {
    t.get(key).and_then(Toml::as_str)
}

fn source_of<T>(map: &BTreeMap<String, Option<T>>, name: &str) -> &'static str {
    if matches!(map.get(name), Some(Some(_))) { "api" } else { "file" }
}

/// The endpoint a virtual host's names are routed on.
fn vhost_endpoint(store: &Store, name: &str, hosts: &[String]) -> String {
    if let Some(Some(spec)) = store.state.virtual_hosts.get(name) {
        return spec.endpoint.clone();
    }
    let endpoints = store.effective.get("hosts").and_then(|h| h.get("endpoint")).and_then(Toml::as_table);
    for (ep, t) in endpoints.into_iter().flatten() {
        let tagged = t.get("virtual_host").and_then(Toml::as_str) == Some(name);
        let routes = t.get("names").and_then(Toml::as_array).is_some_and(|names| {
            names.iter().filter_map(Toml::as_str).any(|n| hosts.iter().any(|h| h.eq_ignore_ascii_case(n)))
        });
        if tagged || routes {
            return ep.clone();
        }
    }
    "gateway".into()
}

fn keystore_alias(store: &Store, name: &str) -> String {
    match store.state.keystores.get(name) {
        Some(Some(k)) => k.alias.clone(),
        _ => name.to_owned(),
    }
}

fn vhost_view(store: &Store, name: &str) -> Option<Value> {
    let t = entry(store, "virtual_host", name)?;
    let hosts: Vec<String> = t
        .get("hosts")
        .and_then(Toml::as_array)
        .into_iter()
        .flatten()
        .filter_map(Toml::as_str)
        .map(str::to_owned)
        .collect();
    let keystore = s(t, "keystore").unwrap_or_default();
    Some(json!({
        "name": name,
        "hosts": hosts,
        "keystore": keystore,
        "keyAlias": keystore_alias(store, keystore),
        "truststore": s(t, "truststore"),
        "clientAuth": s(t, "client_auth").unwrap_or("off"),
        "policy": s(t, "policy").unwrap_or("default"),
        "identities": t.get("identities").map(to_json).unwrap_or_else(|| json!([])),
        "default": t.get("default").and_then(Toml::as_bool).unwrap_or(false),
        "refuseAtHttp": t.get("refuse_at_http").and_then(Toml::as_bool).unwrap_or(false),
        "endpoint": vhost_endpoint(store, name, &hosts),
        "source": source_of(&store.state.virtual_hosts, name),
    }))
}

fn names_of(store: &Store, key: &str) -> Vec<String> {
    entries(store, key).filter_map(|t| s(t, "name")).map(str::to_owned).collect()
}

fn list(store: &Store, key: &str, view: fn(&Store, &str) -> Option<Value>) -> Value {
    Value::Array(names_of(store, key).iter().filter_map(|n| view(store, n)).collect())
}

fn cert_infos(pem: &[u8]) -> Vec<Value> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .filter_map(Result::ok)
        .map(|der| {
            let info = portcullis_mtls::client_cert(std::slice::from_ref(&der));
            let spki = x509_parser::parse_x509_certificate(der.as_ref())
                .ok()
                .map(|(_, c)| hex(&Sha256::digest(c.public_key().raw)));
            match info {
                Some(c) => json!({
                    "subject": c.subject,
                    "issuer": c.issuer,
                    "sha256": c.sha256,
                    "notAfter": super::rfc3339(c.not_after),
                    "publicKeySha256": spki,
                }),
                None => json!({"error": "cannot be parsed"}),
            }
        })
        .collect()
}

fn keystore_view(store: &Store, name: &str) -> Option<Value> {
    let t = entry(store, "keystore", name)?;
    let certs =
        s(t, "cert").and_then(|p| std::fs::read(p).ok()).map(|pem| cert_infos(&pem)).unwrap_or_default();
    // The key pair's fingerprint is its public key's: the private key itself is never read back.
    let fingerprint = certs.first().and_then(|c| c.get("publicKeySha256")).cloned();
    Some(json!({
        "name": name,
        "alias": keystore_alias(store, name),
        "certificates": certs,
        "keyFingerprint": fingerprint,
        "source": source_of(&store.state.keystores, name),
    }))
}

fn truststore_view(store: &Store, name: &str) -> Option<Value> {
    let t = entry(store, "truststore", name)?;
    let mut certs = Vec::new();
    for p in t.get("certs").and_then(Toml::as_array).into_iter().flatten().filter_map(Toml::as_str) {
        if let Ok(pem) = std::fs::read(p) {
            certs.extend(cert_infos(&pem));
        }
    }
    Some(json!({"name": name, "certificates": certs, "source": source_of(&store.state.truststores, name)}))
}

fn connection_view(store: &Store, name: &str) -> Option<Value> {
    let t = entry(store, "private_endpoint_connection", name)?;
    let spec = store.state.private_endpoint_connections.get(name);
    let status = match spec {
        Some(c) => c.status.clone(),
        None => {
            let st = s(t, "state").unwrap_or("pending");
            let mut c = st.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        }
    };
    let link = if let Some(id) = t.get("azure_link_id") {
        json!({"azure": to_json(id)})
    } else if let Some(id) = t.get("aws_vpc_endpoint_id") {
        json!({"aws": to_json(id)})
    } else {
        json!({"gcp": t.get("gcp_psc_connection_id").map(to_json)})
    };
    Some(json!({
        "name": name,
        "linkId": link,
        "status": status,
        "description": spec.map_or("", |c| c.description.as_str()),
        "targets": t.get("targets").map_or_else(|| json!(["gateway"]), to_json),
        "groupId": s(t, "group_id").unwrap_or("Gateway"),
    }))
}

fn public_view(store: &Store) -> Value {
    let enabled = store
        .effective
        .get("public_access")
        .and_then(|p| p.get("enabled"))
        .and_then(Toml::as_bool)
        .unwrap_or(true);
    json!({"publicNetworkAccess": if enabled { "Enabled" } else { "Disabled" }})
}

fn ip(store: &Store) -> Option<&toml::Table> {
    store.effective.get("ip").and_then(Toml::as_table)
}

fn set_view(store: &Store, name: &str) -> Option<Value> {
    let entries = ip(store)?.get("sets")?.get(name)?;
    Some(json!({"name": name, "entries": to_json(entries)}))
}

fn rules_toml<'a>(store: &'a Store, set: &str) -> Option<&'a Toml> {
    let ip = ip(store)?;
    match set.strip_prefix("endpoint.") {
        Some(e) => ip.get("endpoint")?.get(e),
        None if set == "global" => ip.get("rules"),
        None if set == "connection" => ip.get("connection"),
        None => None,
    }
}

fn rules_view(store: &Store, set: &str) -> Option<Value> {
    let t = rules_toml(store, set)?.as_table()?;
    let list = |k: &str| t.get(k).map_or_else(|| json!([]), to_json);
    Some(json!({
        "set": set,
        "default": s(t, "default"),
        "allow": list("allow"),
        "deny": list("deny"),
        "directPeer": t.get("direct_peer").and_then(Toml::as_bool).unwrap_or(false),
        "shadow": t.get("shadow").and_then(Toml::as_bool).unwrap_or(false),
    }))
}

fn rule_set_names(store: &Store) -> Vec<String> {
    let mut names = Vec::new();
    if let Some(ip) = ip(store) {
        if ip.contains_key("rules") {
            names.push("global".to_owned());
        }
        if ip.contains_key("connection") {
            names.push("connection".to_owned());
        }
        for e in ip.get("endpoint").and_then(Toml::as_table).into_iter().flat_map(|t| t.keys()) {
            names.push(format!("endpoint.{e}"));
        }
    }
    names
}

fn check_rule_set_name(set: &str) -> Result<(), ApiError> {
    match set.strip_prefix("endpoint.") {
        Some(e) => check_name(e),
        None if set == "global" || set == "connection" => Ok(()),
        None => Err(not_found("IP rule set (global, connection, endpoint.<name>)", set)),
    }
}

/// Refuses certificate PEM (`field`) that carries a private key: it would be written to a certificate
/// file, where nothing expects a secret.
fn no_private_key(field: &str, pem: &str) -> Result<(), ApiError> {
    if pem.contains("PRIVATE KEY-----") {
        return Err(invalid(format!("{field} holds a private key: send certificates only")));
    }
    Ok(())
}

// === policy audit of uploaded certificates ===

/// The chain policies of the virtual hosts using store `name` (`default` when none does).
fn policies_for(store: &Store, field: &str, name: &str) -> Vec<portcullis_mtls::ChainPolicy> {
    let cx = crate::build::Ctx { source: &store.source };
    let mut names: Vec<String> = entries(store, "virtual_host")
        .filter(|v| s(v, field) == Some(name))
        .map(|v| s(v, "policy").unwrap_or("default").to_owned())
        .collect();
    if names.is_empty() {
        names.push("default".into());
    }
    names.sort();
    names.dedup();
    names.iter().filter_map(|p| store.config.policy(&cx, p, 0..0, "policy").ok()).collect()
}

/// Every certificate of `pem` checked against `policies` (algorithms, key sizes, validity, CA
/// constraints; a leaf may be a non-CA certificate when `leaf_ok`): one finding per certificate and rule.
fn audit_pem(pem: &str, policies: &[portcullis_mtls::ChainPolicy], leaf_ok: bool) -> Result<usize, ApiError> {
    use portcullis_mtls::{AuditAllowances, ConfigError, Truststore};
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<_, _>>()
        .map_err(|e| invalid(format!("PEM: {e}")))?;
    if certs.is_empty() {
        return Err(invalid("no certificate in the PEM"));
    }
    let mut findings = Vec::new();
    for (i, der) in certs.iter().enumerate() {
        let label = format!("certificate {}", i + 1);
        for policy in policies {
            let mut one = Truststore::new("upload")
                .allow(AuditAllowances { non_ca_anchors: leaf_ok && i == 0, ..AuditAllowances::default() });
            if let Err(e) = one.add_der(der.clone(), &label) {
                findings.push(format!("{label}: {e}"));
                continue;
            }
            match one.audit(policy, rustls_pki_types::UnixTime::now()) {
                Ok(()) => {}
                Err(ConfigError::WeakAnchor(a)) => {
                    findings.push(format!("{label} ({}): {} (policy `{}`)", a.subject, a.rule, a.policy));
                }
                Err(e) => findings.push(format!("{label}: {e}")),
            }
        }
    }
    if findings.is_empty() {
        Ok(certs.len())
    } else {
        Err(ApiError::new(
            "management.weak-certificate",
            StatusCode::UNPROCESSABLE_ENTITY,
            findings.join("; "),
        ))
    }
}

// === virtual hosts ===

async fn h_list_vhosts(AxumState(m): AxumState<Management>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(|m, _, _, _| Ok(Reply::json(StatusCode::OK, list(&m.lock(), "virtual_host", vhost_view)))),
    )
    .await
}

async fn h_get_vhost(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(m, req, Box::new(move |m, _, _, _| read(vhost_view(&m.lock(), &name), "virtual host", &name))).await
}

/// Checks a virtual host the API is about to write: names, values, and the key alias.
fn check_vhost(store: &Store, name: &str, spec: &VirtualHostSpec) -> Result<(), ApiError> {
    check_name(name)?;
    check_name(&spec.endpoint)?;
    if !super::endpoint_exists(&store.config, &spec.endpoint) {
        return Err(invalid(format!("no endpoint `{}` in [hosts]", spec.endpoint)));
    }
    if spec.hosts.is_empty() {
        return Err(invalid("a virtual host needs at least one host name"));
    }
    if !matches!(spec.client_auth.as_str(), "off" | "optional" | "required") {
        return Err(invalid(format!("clientAuth `{}`: off, optional or required", spec.client_auth)));
    }
    if let Some(alias) = &spec.key_alias {
        let have = keystore_alias(store, &spec.keystore);
        if *alias != have {
            return Err(invalid(format!(
                "keystore `{}` holds the key alias `{have}`, not `{alias}`",
                spec.keystore
            )));
        }
    }
    Ok(())
}

fn base_defines(store: &Store, key: &str, name: &str) -> bool {
    store
        .base
        .get(key)
        .and_then(Toml::as_array)
        .into_iter()
        .flatten()
        .any(|v| v.get("name").and_then(Toml::as_str) == Some(name))
}

fn put_vhost(state: &mut State, store: &Store, name: &str, spec: VirtualHostSpec) -> Result<(), ApiError> {
    check_vhost(store, name, &spec)?;
    // One default: the one made the default last. (The merge applies the state's virtual hosts by name, so
    // two defaults in the state would leave the last by name the default, not the last written.)
    if spec.default {
        for other in state.virtual_hosts.values_mut().flatten() {
            other.default = false;
        }
    }
    state.virtual_hosts.insert(name.to_owned(), Some(spec));
    Ok(())
}

fn delete_vhost(state: &mut State, store: &Store, name: &str) -> Result<(), ApiError> {
    let Some(t) = entry(store, "virtual_host", name) else { return Err(not_found("virtual host", name)) };
    if t.get("default").and_then(Toml::as_bool).unwrap_or(false) {
        return Err(conflict(
            "management.default-virtual-host",
            format!("`{name}` is the default virtual host: make another one the default first"),
        ));
    }
    if base_defines(store, "virtual_host", name) {
        state.virtual_hosts.insert(name.to_owned(), None);
    } else {
        state.virtual_hosts.remove(name);
    }
    Ok(())
}

async fn h_put_vhost(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(
        m,
        req,
        Box::new(move |m, caller, parts, bytes| {
            let spec: VirtualHostSpec = body(bytes)?;
            let create_only = parts.headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == "*");
            let view = |st: &Store| vhost_view(st, &name);
            let change = Change {
                operation: "virtual-host.put",
                resource: format!("virtual-hosts/{name}"),
                view: &view,
            };
            let after = m.write(caller, parts, change, |state, store| {
                if create_only && entry(store, "virtual_host", &name).is_some() {
                    return Err(ApiError::new(
                        "management.exists",
                        StatusCode::PRECONDITION_FAILED,
                        format!("virtual host `{name}` exists (If-None-Match: *)"),
                    ));
                }
                put_vhost(state, store, &name, spec)
            })?;
            Ok(written(parts, after))
        }),
    )
    .await
}

async fn h_delete_vhost(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(
        m,
        req,
        Box::new(move |m, caller, parts, _| {
            let view = |st: &Store| vhost_view(st, &name);
            let change = Change {
                operation: "virtual-host.delete",
                resource: format!("virtual-hosts/{name}"),
                view: &view,
            };
            let after = m.write(caller, parts, change, |state, store| delete_vhost(state, store, &name))?;
            Ok(written(parts, after))
        }),
    )
    .await
}

// === stores ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct KeystoreUpload {
    certificate_pem: String,
    private_key_pem: String,
    #[serde(default)]
    alias: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct TruststoreUpload {
    certificates_pem: String,
}

async fn h_list_keystores(AxumState(m): AxumState<Management>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(|m, _, _, _| Ok(Reply::json(StatusCode::OK, list(&m.lock(), "keystore", keystore_view)))),
    )
    .await
}

async fn h_get_keystore(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(m, req, Box::new(move |m, _, _, _| read(keystore_view(&m.lock(), &name), "keystore", &name))).await
}

async fn h_list_truststores(AxumState(m): AxumState<Management>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(|m, _, _, _| {
            Ok(Reply::json(StatusCode::OK, list(&m.lock(), "truststore", truststore_view)))
        }),
    )
    .await
}

async fn h_get_truststore(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(m, req, Box::new(move |m, _, _, _| read(truststore_view(&m.lock(), &name), "truststore", &name)))
        .await
}

async fn h_put_keystore(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(
        m,
        req,
        Box::new(move |m, caller, parts, bytes| {
            check_name(&name)?;
            let upload: KeystoreUpload = body(bytes)?;
            no_private_key("certificatePem", &upload.certificate_pem)?;
            portcullis_mtls::Keystore::from_pem(
                name.as_str(),
                &upload.certificate_pem,
                &upload.private_key_pem,
            )
            .and_then(|k| k.check_key())
            .map_err(|e| invalid(e.to_string()))?;
            let alias = upload.alias.clone().unwrap_or_else(|| name.clone());
            check_name(&alias)?;
            let view = |st: &Store| keystore_view(st, &name);
            let change =
                Change { operation: "keystore.put", resource: format!("keystores/{name}"), view: &view };
            let after = m.write(caller, parts, change, |state, store| {
                audit_pem(&upload.certificate_pem, &policies_for(store, "keystore", &name), true)?;
                let cert = m.write_pem("keystore", &name, "crt", &upload.certificate_pem)?;
                let key = m.write_pem("keystore", &name, "key", &upload.private_key_pem)?;
                state.keystores.insert(name.clone(), Some(KeystoreSpec { alias, cert, key }));
                Ok(())
            })?;
            Ok(written(parts, after))
        }),
    )
    .await
}

async fn h_put_truststore(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(
        m,
        req,
        Box::new(move |m, caller, parts, bytes| {
            check_name(&name)?;
            let upload: TruststoreUpload = body(bytes)?;
            no_private_key("certificatesPem", &upload.certificates_pem)?;
            let view = |st: &Store| truststore_view(st, &name);
            let change =
                Change { operation: "truststore.put", resource: format!("truststores/{name}"), view: &view };
            let after = m.write(caller, parts, change, |state, store| {
                audit_pem(&upload.certificates_pem, &policies_for(store, "truststore", &name), false)?;
                let certs = m.write_pem("truststore", &name, "crt", &upload.certificates_pem)?;
                state.truststores.insert(name.clone(), Some(TruststoreSpec { certs }));
                Ok(())
            })?;
            Ok(written(parts, after))
        }),
    )
    .await
}

fn delete_store(state: &mut State, store: &Store, key: &'static str, name: &str) -> Result<(), ApiError> {
    if entry(store, key, name).is_none() {
        return Err(not_found(key, name));
    }
    let users: Vec<String> = entries(store, "virtual_host")
        .filter(|v| s(v, key) == Some(name))
        .filter_map(|v| s(v, "name").map(str::to_owned))
        .collect();
    if !users.is_empty() {
        return Err(conflict(
            "management.store-in-use",
            format!("{key} `{name}` is used by virtual host(s) {}", users.join(", ")),
        ));
    }
    let in_base = base_defines(store, key, name);
    if key == "keystore" {
        tombstone(&mut state.keystores, name, in_base);
    } else {
        tombstone(&mut state.truststores, name, in_base);
    }
    Ok(())
}

/// Deletes `name`: a tombstone when the file defines it, else the state entry goes.
fn tombstone<T>(map: &mut BTreeMap<String, Option<T>>, name: &str, in_base: bool) {
    if in_base {
        map.insert(name.to_owned(), None);
    } else {
        map.remove(name);
    }
}

async fn h_delete_keystore(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(
        m,
        req,
        Box::new(move |m, caller, parts, _| {
            let view = |st: &Store| keystore_view(st, &name);
            let change =
                Change { operation: "keystore.delete", resource: format!("keystores/{name}"), view: &view };
            Ok(written(
                parts,
                m.write(caller, parts, change, |state, store| delete_store(state, store, "keystore", &name))?,
            ))
        }),
    )
    .await
}

async fn h_delete_truststore(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(
        m,
        req,
        Box::new(move |m, caller, parts, _| {
            let view = |st: &Store| truststore_view(st, &name);
            let change = Change {
                operation: "truststore.delete",
                resource: format!("truststores/{name}"),
                view: &view,
            };
            Ok(written(
                parts,
                m.write(caller, parts, change, |state, store| {
                    delete_store(state, store, "truststore", &name)
                })?,
            ))
        }),
    )
    .await
}

// === references ===

fn reference_view(store: &Store, name: &str) -> Option<Value> {
    store.state.references.get(name).map(|target| json!({"name": name, "store": target}))
}

async fn h_list_references(AxumState(m): AxumState<Management>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(|m, _, _, _| {
            let store = m.lock();
            let all: Vec<Value> =
                store.state.references.keys().filter_map(|n| reference_view(&store, n)).collect();
            Ok(Reply::json(StatusCode::OK, Value::Array(all)))
        }),
    )
    .await
}

async fn h_get_reference(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(m, req, Box::new(move |m, _, _, _| read(reference_view(&m.lock(), &name), "reference", &name))).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReferenceBody {
    store: String,
}

async fn h_put_reference(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(
        m,
        req,
        Box::new(move |m, caller, parts, bytes| {
            check_name(&name)?;
            let b: ReferenceBody = body(bytes)?;
            check_name(&b.store)?;
            let view = |st: &Store| reference_view(st, &name);
            let change =
                Change { operation: "reference.put", resource: format!("references/{name}"), view: &view };
            Ok(written(
                parts,
                m.write(caller, parts, change, |state, _| {
                    state.references.insert(name.clone(), b.store);
                    Ok(())
                })?,
            ))
        }),
    )
    .await
}

async fn h_delete_reference(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(
        m,
        req,
        Box::new(move |m, caller, parts, _| {
            let view = |st: &Store| reference_view(st, &name);
            let change =
                Change { operation: "reference.delete", resource: format!("references/{name}"), view: &view };
            Ok(written(
                parts,
                m.write(caller, parts, change, |state, _| {
                    state.references.remove(&name).map(|_| ()).ok_or_else(|| not_found("reference", &name))
                })?,
            ))
        }),
    )
    .await
}

// === private endpoint connections ===

async fn h_list_connections(AxumState(m): AxumState<Management>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(|m, _, _, _| {
            Ok(Reply::json(StatusCode::OK, list(&m.lock(), "private_endpoint_connection", connection_view)))
        }),
    )
    .await
}

async fn h_get_connection(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(
        m,
        req,
        Box::new(move |m, _, _, _| {
            read(connection_view(&m.lock(), &name), "private endpoint connection", &name)
        }),
    )
    .await
}

async fn h_put_connection(
    AxumState(m): AxumState<Management>,
    Path(name): Path<String>,
    req: Request,
) -> Response {
    run(
        m,
        req,
        Box::new(move |m, caller, parts, bytes| {
            check_name(&name)?;
            let spec: ConnectionSpec = body(bytes)?;
            if state::config_state(&spec.status).is_none() {
                return Err(invalid(format!(
                    "status `{}`: Pending, Approved, Rejected or Disconnected",
                    spec.status
                )));
            }
            let view = |st: &Store| connection_view(st, &name);
            let change = Change {
                operation: "private-endpoint-connection.put",
                resource: format!("private-endpoint-connections/{name}"),
                view: &view,
            };
            let after = m.write(caller, parts, change, |state, store| {
                let link_given = spec.azure_link_id.is_some()
                    || spec.aws_vpc_endpoint_id.is_some()
                    || spec.gcp_psc_connection_id.is_some();
                let in_file = store
                    .base
                    .get("private_endpoint_connection")
                    .and_then(Toml::as_array)
                    .into_iter()
                    .flatten()
                    .any(|c| c.get("name").and_then(Toml::as_str) == Some(name.as_str()));
                let mut spec = spec;
                if in_file && link_given {
                    return Err(invalid(
                        "the configuration file gives this connection's link id: leave it out",
                    ));
                }
                if !in_file && !link_given {
                    // An update of a connection the API added keeps its link id.
                    match state.private_endpoint_connections.get(&name) {
                        Some(old) => {
                            spec.azure_link_id = old.azure_link_id;
                            spec.aws_vpc_endpoint_id = old.aws_vpc_endpoint_id.clone();
                            spec.gcp_psc_connection_id = old.gcp_psc_connection_id;
                        }
                        None => return Err(invalid("a new connection needs its link id")),
                    }
                }
                state.private_endpoint_connections.insert(name.clone(), spec);
                Ok(())
            })?;
            Ok(written(parts, after))
        }),
    )
    .await
}

// === public network access ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct PublicBody {
    public_network_access: String,
}

async fn h_get_public(AxumState(m): AxumState<Management>, req: Request) -> Response {
    run(m, req, Box::new(|m, _, _, _| Ok(Reply::json(StatusCode::OK, public_view(&m.lock()))))).await
}

async fn h_put_public(AxumState(m): AxumState<Management>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(|m, caller, parts, bytes| {
            let b: PublicBody = body(bytes)?;
            let enabled = match b.public_network_access.as_str() {
                "Enabled" => true,
                "Disabled" => false,
                other => return Err(invalid(format!("publicNetworkAccess `{other}`: Enabled or Disabled"))),
            };
            let view = |st: &Store| Some(public_view(st));
            let change = Change {
                operation: "public-network-access.put",
                resource: "public-network-access".into(),
                view: &view,
            };
            Ok(written(
                parts,
                m.write(caller, parts, change, |state, _| {
                    state.public_network_access = Some(enabled);
                    Ok(())
                })?,
            ))
        }),
    )
    .await
}

// === IP sets and rules ===

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetBody {
    entries: Vec<String>,
}

async fn h_list_sets(AxumState(m): AxumState<Management>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(|m, _, _, _| {
            let store = m.lock();
            let names: Vec<String> = ip(&store)
                .and_then(|ip| ip.get("sets"))
                .and_then(Toml::as_table)
                .map(|t| t.keys().cloned().collect())
                .unwrap_or_default();
            let all: Vec<Value> = names.iter().filter_map(|n| set_view(&store, n)).collect();
            Ok(Reply::json(StatusCode::OK, Value::Array(all)))
        }),
    )
    .await
}

async fn h_get_set(AxumState(m): AxumState<Management>, Path(name): Path<String>, req: Request) -> Response {
    run(m, req, Box::new(move |m, _, _, _| read(set_view(&m.lock(), &name), "IP set", &name))).await
}

async fn h_put_set(AxumState(m): AxumState<Management>, Path(name): Path<String>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(move |m, caller, parts, bytes| {
            check_name(&name)?;
            let b: SetBody = body(bytes)?;
            for e in &b.entries {
                e.parse::<portcullis_core::IpRange>().map_err(|err| invalid(format!("`{e}`: {err}")))?;
            }
            let view = |st: &Store| set_view(st, &name);
            let change = Change { operation: "ip-set.put", resource: format!("ip/sets/{name}"), view: &view };
            let after = m.write(caller, parts, change, |state, _| {
                state.ip_sets.insert(name.clone(), b.entries);
                Ok(())
            })?;
            Ok(written(parts, after))
        }),
    )
    .await
}

async fn h_list_rules(AxumState(m): AxumState<Management>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(|m, _, _, _| {
            let store = m.lock();
            let all: Vec<Value> =
                rule_set_names(&store).iter().filter_map(|n| rules_view(&store, n)).collect();
            Ok(Reply::json(StatusCode::OK, Value::Array(all)))
        }),
    )
    .await
}

async fn h_get_rules(AxumState(m): AxumState<Management>, Path(set): Path<String>, req: Request) -> Response {
    run(m, req, Box::new(move |m, _, _, _| read(rules_view(&m.lock(), &set), "IP rule set", &set))).await
}

async fn h_put_rules(AxumState(m): AxumState<Management>, Path(set): Path<String>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(move |m, caller, parts, bytes| {
            check_rule_set_name(&set)?;
            let spec: IpRulesSpec = body(bytes)?;
            let view = |st: &Store| rules_view(st, &set);
            let change =
                Change { operation: "ip-rules.put", resource: format!("ip/rules/{set}"), view: &view };
            let after = m.write(caller, parts, change, |state, _| {
                state.ip_rules.insert(set.clone(), Some(spec));
                Ok(())
            })?;
            Ok(written(parts, after))
        }),
    )
    .await
}

async fn h_delete_rules(
    AxumState(m): AxumState<Management>,
    Path(set): Path<String>,
    req: Request,
) -> Response {
    run(
        m,
        req,
        Box::new(move |m, caller, parts, _| {
            check_rule_set_name(&set)?;
            let view = |st: &Store| rules_view(st, &set);
            let change =
                Change { operation: "ip-rules.delete", resource: format!("ip/rules/{set}"), view: &view };
            Ok(written(
                parts,
                m.write(caller, parts, change, |state, store| {
                    if rules_toml(store, &set).is_none() {
                        return Err(not_found("IP rule set", &set));
                    }
                    state.ip_rules.insert(set.clone(), None);
                    Ok(())
                })?,
            ))
        }),
    )
    .await
}

// === the effective configuration ===

async fn h_effective(AxumState(m): AxumState<Management>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(|m, _, parts, _| {
            let store = m.lock();
            let json = serde_json::to_value(&store.effective).unwrap_or(Value::Null);
            let tag = etag(&json);
            let wants_toml = parts.uri.query().is_some_and(|q| q.split('&').any(|kv| kv == "format=toml"))
                || parts
                    .headers
                    .get(header::ACCEPT)
                    .and_then(|a| a.to_str().ok())
                    .is_some_and(|a| a.contains("toml"));
            if wants_toml {
                let text = toml::to_string(&store.effective).unwrap_or_default();
                return Ok(Reply { status: StatusCode::OK, body: None, toml: Some(text), etag: Some(tag) });
            }
            Ok(Reply::json(StatusCode::OK, json))
        }),
    )
    .await
}

// === SAP API Management ===

/// SAP's `VirtualHostRequests` body, as SAP's documentation gives it. Unknown fields are ignored, so scripts
/// written for SAP work unchanged.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct SapRequest {
    #[serde(default)]
    account_id: Option<String>,
    #[serde(default)]
    virtual_host_url: Option<String>,
    #[serde(default)]
    is_default_virtual_host_request: Option<bool>,
    #[serde(default)]
    is_client_auth_enabled: Option<bool>,
    #[serde(default)]
    key_store: Option<String>,
    #[serde(default)]
    key_alias: Option<String>,
    #[serde(default)]
    trust_store: Option<String>,
    #[serde(default)]
    virtual_host_id: Option<String>,
    operation: String,
}

/// `https://api.example.com:443/` → `api.example.com`.
fn host_of_url(url: &str) -> String {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = if authority.starts_with('[') {
        authority.split_once(']').map_or(authority, |(h, _)| h).trim_start_matches('[')
    } else {
        authority.split(':').next().unwrap_or("")
    };
    host.to_ascii_lowercase()
}

/// A store given by name or as `ref://<reference>`.
fn resolve_store(state: &State, given: &str) -> Result<String, ApiError> {
    match given.strip_prefix("ref://") {
        Some(r) => {
            state.references.get(r).cloned().ok_or_else(|| {
                invalid(format!("no reference `{r}` (PUT /v1/references/{r} names its store)"))
            })
        }
        None => Ok(given.to_owned()),
    }
}

fn sap_id_of(host: &str) -> String {
    let id: String = host.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '-' }).collect();
    id.trim_matches('-').chars().take(64).collect()
}

async fn h_sap_request(AxumState(m): AxumState<Management>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(|m, caller, parts, bytes| {
            let r: SapRequest = body(bytes)?;
            let host = r.virtual_host_url.as_deref().map(host_of_url);
            let op = r.operation.to_ascii_uppercase();
            let id = match (&r.virtual_host_id, &host, op.as_str()) {
                (Some(id), _, _) => id.clone(),
                (None, Some(h), "CREATE") => sap_id_of(h),
                _ => return Err(invalid("virtualHostId is needed for UPDATE and DELETE")),
            };
            check_name(&id)?;
            let view = |st: &Store| vhost_view(st, &id);
            let operation = match op.as_str() {
                "CREATE" => "sap.virtual-host.create",
                "UPDATE" => "sap.virtual-host.update",
                "DELETE" => "sap.virtual-host.delete",
                other => return Err(invalid(format!("operation `{other}`: CREATE, UPDATE or DELETE"))),
            };
            let change = Change { operation, resource: format!("virtual-hosts/{id}"), view: &view };
            // `accountId` names the SAP subaccount; one gateway is one account here.
            let _ = &r.account_id;
            let after = m.write(caller, parts, change, |state, store| {
                let current = state.virtual_hosts.get(&id).cloned().flatten();
                let exists = entry(store, "virtual_host", &id).is_some();
                match op.as_str() {
                    "DELETE" => delete_vhost(state, store, &id),
                    "CREATE" if exists => {
                        Err(conflict("management.exists", format!("virtual host `{id}` exists")))
                    }
                    "UPDATE" if !exists => Err(not_found("virtual host", &id)),
                    _ => {
                        // UPDATE starts from the virtual host as it is (from the API or the file).
                        let mut spec = match (current, vhost_view(store, &id)) {
                            (Some(s), _) => s,
                            (None, Some(v)) => serde_json::from_value::<VhostFromView>(v)
                                .map(VirtualHostSpec::from)
                                .map_err(|e| invalid(e.to_string()))?,
                            (None, None) => VirtualHostSpec {
                                hosts: Vec::new(),
                                keystore: String::new(),
                                key_alias: None,
                                truststore: None,
                                client_auth: "off".into(),
                                policy: None,
                                identities: Vec::new(),
                                default: false,
                                refuse_at_http: false,
                                endpoint: "gateway".into(),
                            },
                        };
                        if let Some(h) = &host {
                            spec.hosts = vec![h.clone()];
                        }
                        if let Some(k) = &r.key_store {
                            spec.keystore = resolve_store(state, k)?;
                        }
                        if r.key_alias.is_some() {
                            spec.key_alias.clone_from(&r.key_alias);
                        }
                        if let Some(t) = &r.trust_store {
                            spec.truststore = Some(resolve_store(state, t)?);
                        }
                        if let Some(on) = r.is_client_auth_enabled {
                            spec.client_auth = if on { "required".into() } else { "off".into() };
                        }
                        if let Some(d) = r.is_default_virtual_host_request {
                            spec.default = d;
                        }
                        if spec.keystore.is_empty() {
                            return Err(invalid("keyStore is needed to create a virtual host"));
                        }
                        put_vhost(state, store, &id, spec)
                    }
                }
            })?;
            let url = after.after.as_ref().and_then(|v| v["hosts"][0].as_str().map(str::to_owned)).or(host);
            Ok(Reply::json(
                if op == "CREATE" { StatusCode::CREATED } else { StatusCode::OK },
                json!({
                    "virtualHostId": id,
                    "virtualHostUrl": url,
                    "operation": op,
                    "status": "COMPLETED",
                }),
            ))
        }),
    )
    .await
}

/// A virtual host as [`vhost_view`] shows it, read back to start an update from.
#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct VhostFromView {
    hosts: Vec<String>,
    keystore: String,
    truststore: Option<String>,
    client_auth: String,
    policy: String,
    identities: Vec<BTreeMap<String, String>>,
    default: bool,
    refuse_at_http: bool,
    endpoint: String,
}

impl From<VhostFromView> for VirtualHostSpec {
    fn from(v: VhostFromView) -> Self {
        VirtualHostSpec {
            hosts: v.hosts,
            keystore: v.keystore,
            key_alias: None,
            truststore: v.truststore,
            client_auth: v.client_auth,
            policy: Some(v.policy).filter(|p| p != "default"),
            identities: v.identities,
            default: v.default,
            refuse_at_http: v.refuse_at_http,
            endpoint: v.endpoint,
        }
    }
}

async fn h_sap_list(AxumState(m): AxumState<Management>, req: Request) -> Response {
    run(
        m,
        req,
        Box::new(|m, _, _, _| {
            let store = m.lock();
            let results: Vec<Value> = names_of(&store, "virtual_host")
                .iter()
                .filter_map(|n| vhost_view(&store, n))
                .map(|v| {
                    json!({
                        "id": v["name"],
                        "virtualHostUrl": v["hosts"][0],
                        "virtualHostPort": 443,
                        "isDefault": v["default"],
                        "isClientAuthEnabled": v["clientAuth"] == "required",
                        "keyStore": v["keystore"],
                        "keyAlias": v["keyAlias"],
                        "trustStore": v["truststore"],
                    })
                })
                .collect();
            Ok(Reply::json(StatusCode::OK, json!({"d": {"results": results}})))
        }),
    )
    .await
}

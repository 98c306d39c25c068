//! The metrics portcullis records, through the [`metrics`](https://docs.rs/metrics) facade.
//!
//! Libraries record; the binary chooses the exporter (for example `metrics-exporter-prometheus`, whose
//! handle the serve helper's ops listener renders at `/metrics`). Without an installed recorder every
//! record is a no-op. Every label value comes from the code or the configuration (layer, denial code,
//! listener, virtual host, reason): never from a client, so the number of series is bounded.
//!
//! | name | type | labels | what |
//! |---|---|---|---|
//! | `portcullis_requests_allowed_total` | counter | | requests a gate let through (one per gate: the gateway is one gate; three layers stacked alone count three) |
//! | `portcullis_requests_refused_total` | counter | `layer`, `code` | requests refused, by the refusing layer and the denial code |
//! | `portcullis_requests_shadow_refused_total` | counter | `layer`, `code` | requests a shadow-mode rule would have refused |
//! | `portcullis_tls_handshakes_total` | counter | `vhost`, `outcome`, `rule` | TLS handshakes by virtual host and outcome (`ok`, `chain-refused`, `unknown-host`, `failed`, `timeout`, `client-hello`), with the chain rule on refusal |
//! | `portcullis_proxy_headers_total` | counter | `outcome`, `tlv` | PROXY headers by outcome (`ok`, `refused`, `local`, `none`) and vendor TLV (`azure`, `aws`, `gcp`, `none`) |
//! | `portcullis_proxy_headers_pending` | gauge | | connections waiting for their PROXY header |
//! | `portcullis_connections_accepted_total` | counter | `listener` | connections accepted |
//! | `portcullis_connections_refused_total` | counter | `listener`, `reason` | connections closed before HTTP, by reason |
//! | `portcullis_connections_open` | gauge | `listener` | connections open |
//! | `portcullis_config_reloads_total` | counter | `outcome` | configuration reloads (`ok`, `failed`) |
//! | `portcullis_config_generation` | gauge | | the generation of the rules in force |
//! | `portcullis_management_changes_total` | counter | `operation`, `result` | management API writes by operation (`virtual-host.put`, ...) and result (`ok`, `refused`) |

use crate::Denial;

/// Requests a gate let through.
pub const REQUESTS_ALLOWED: &str = "portcullis_requests_allowed_total";
/// Requests refused, labelled `layer` and `code`.
pub const REQUESTS_REFUSED: &str = "portcullis_requests_refused_total";
/// Requests a shadow-mode rule would have refused, labelled `layer` and `code`.
pub const REQUESTS_SHADOW_REFUSED: &str = "portcullis_requests_shadow_refused_total";
/// TLS handshakes, labelled `vhost`, `outcome` and `rule`.
pub const TLS_HANDSHAKES: &str = "portcullis_tls_handshakes_total";
/// PROXY headers, labelled `outcome` and `tlv`.
pub const PROXY_HEADERS: &str = "portcullis_proxy_headers_total";
/// Connections waiting for their PROXY header (gauge).
pub const PROXY_HEADERS_PENDING: &str = "portcullis_proxy_headers_pending";
/// Connections accepted, labelled `listener`.
pub const CONNECTIONS_ACCEPTED: &str = "portcullis_connections_accepted_total";
/// Connections closed before HTTP, labelled `listener` and `reason`.
pub const CONNECTIONS_REFUSED: &str = "portcullis_connections_refused_total";
/// Served connections the serve helper closed, labelled `listener` and `reason` (`shutdown`, `idle`,
/// `max-age`, `tls-invalidated`: its virtual host changed so that its handshake would be refused now,
/// `drain-timeout`: requests were still in flight at the end of the drain time).
pub const CONNECTIONS_CLOSED: &str = "portcullis_connections_closed_total";
/// Connections open, labelled `listener` (gauge).
pub const CONNECTIONS_OPEN: &str = "portcullis_connections_open";
/// Configuration reloads, labelled `outcome`.
pub const CONFIG_RELOADS: &str = "portcullis_config_reloads_total";
/// The generation of the rules in force (gauge).
pub const CONFIG_GENERATION: &str = "portcullis_config_generation";
/// Management API writes, labelled `operation` and `result`.
pub const MANAGEMENT_CHANGES: &str = "portcullis_management_changes_total";

/// Records a refusal.
pub fn refused(denial: &Denial) {
    ::metrics::counter!(REQUESTS_REFUSED, "layer" => denial.layer(), "code" => denial.code()).increment(1);
}

/// Records a request let through.
pub fn allowed() {
    ::metrics::counter!(REQUESTS_ALLOWED).increment(1);
}

/// The counter of requests let through, registered once per service: every [`Gate`](crate::Gate) takes
/// it when it is built and counts each request it lets through on it, which spares a registry lookup per
/// request. Install the metrics recorder before building the services (as `main` does first).
pub fn allowed_counter() -> ::metrics::Counter {
    ::metrics::counter!(REQUESTS_ALLOWED)
}

/// Records a shadow-mode refusal ([`Decisions::push_shadow`](crate::Decisions::push_shadow), the one place
/// they are recorded, calls it).
pub fn shadow_refused(denial: &Denial) {
    ::metrics::counter!(REQUESTS_SHADOW_REFUSED, "layer" => denial.layer(), "code" => denial.code())
        .increment(1);
}

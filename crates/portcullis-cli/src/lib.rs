//! # portcullis-cli
//!
//! The `portcullis` command (`cargo install portcullis-cli`):
//!
//! | command | what |
//! |---|---|
//! | `portcullis serve --config FILE` | the whole stack of the file in front of the endpoints' `upstream`s |
//! | `portcullis check-config FILE` | the configuration check; exit status 0 or 1, errors as `file:line:col: key: message` |
//! | `portcullis check-chain [--truststore PEM]… [--policy NAME \| --config FILE --virtual-host NAME] CHAIN.pem` | a chain policy's verdict on a client chain, certificate by certificate |
//! | `portcullis explain --config FILE --peer IP[:PORT] …` | what every step of the stack decides about one described request, and why |
//!
//! ## The sidecar ([`proxy`])
//!
//! `serve` is the library's serve helper ([`portcullis::serve::Bound`]: listeners, PROXY protocol, TLS
//! virtual hosts, limits and deadlines, reload on `SIGHUP` and file changes, the ops listener with
//! Prometheus metrics) with a streaming reverse proxy as the application: a service in any language gets
//! every guarantee of the stack by listening on loopback (or a pod-local address) behind it. The proxy
//! replaces the forwarded headers with what the stack resolved and sets the origin and client-certificate
//! headers, removing the client's copies first (see [`proxy`]). Upstreams are read at start: a reload
//! changes the rules, not where requests go.
//!
//! ## One implementation of every decision
//!
//! `explain` and `check-chain` judge with the objects `serve` runs, built by the same code from the same
//! file: [`GatewayRules::check_step`](portcullis::GatewayRules::check_step) runs the gateway's rules one at
//! a time and reads what each recorded in the request's [`Decisions`](portcullis::Decisions);
//! [`MtlsAcceptor::explain`](portcullis::mtls::MtlsAcceptor::explain) is the acceptor's own choice of
//! virtual host and its verifier; the PROXY header is read by the listener's reader; `check-chain` prints
//! [`ChainPolicy::check_leaf`](portcullis::mtls::ChainPolicy::check_leaf) and
//! [`check_issuer`](portcullis::mtls::ChainPolicy::check_issuer) per certificate and the verdict of
//! [`PolicyVerifier::verify`](portcullis::mtls::PolicyVerifier::verify). A change to a rule changes the
//! explanation with it.
#![forbid(unsafe_code)]

pub mod args;
pub mod chain;
pub mod check;
pub mod explain;
pub mod proxy;
pub mod sidecar;

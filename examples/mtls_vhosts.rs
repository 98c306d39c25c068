//! Two TLS virtual hosts by SNI, one requiring client certificates under a strict policy.
//!
//! ```text
//! cargo run -p portcullis-examples --example mtls_vhosts [-- --listen 127.0.0.1:8443]
//! ```
//!
//! Certificates are generated at start; the server CA and a partner's client certificate are written to a
//! temporary directory for curl. The code is in `examples/src/mtls_vhosts.rs`.
#![forbid(unsafe_code)]

use portcullis::serve::shutdown_signal;
use portcullis_examples::mtls_vhosts::{self, API_HOST, PARTNERS_HOST, Pki};
use portcullis_examples::{BoxError, init_tracing, listen_addr};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    init_tracing();
    let pki = Pki::generate()?;
    let dir = std::env::temp_dir().join(format!("portcullis-mtls-vhosts-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("server-ca.crt"), pki.server_ca.cert_pem())?;
    std::fs::write(dir.join("client.crt"), &pki.client.cert_pem)?;
    std::fs::write(dir.join("client.key"), &pki.client.key_pem)?;

    let listener = TcpListener::bind(listen_addr("127.0.0.1:8443")).await?;
    let addr = listener.local_addr()?;
    let (port, ip, d) = (addr.port(), addr.ip(), dir.display());
    let curl = |host: &str, extra: &str| {
        format!(
            "curl -s --cacert {d}/server-ca.crt --resolve {host}:{port}:{ip}{extra} https://{host}:{port}/"
        )
    };
    let cert = format!(" --cert {d}/client.crt --key {d}/client.key");
    println!("two TLS virtual hosts listening on {addr}; certificates in {d}\n");
    println!("# the open host, no client certificate: 200");
    println!("{}\n", curl(API_HOST, ""));
    println!("# the partners' host with a partner certificate: 200, the handler shows its subject");
    println!("{}\n", curl(PARTNERS_HOST, &cert));
    println!("# the partners' host without a certificate: the handshake fails");
    println!("{}\n", curl(PARTNERS_HOST, ""));
    println!("# the partners' host named over the open host's connection: 421");
    println!("{}\n", curl(API_HOST, &format!(" -H 'Host: {PARTNERS_HOST}'")));
    println!("Ctrl-C stops the server.");
    let served = mtls_vhosts::run(listener, &pki, shutdown_signal()).await;
    let _ = std::fs::remove_dir_all(&dir);
    served
}

//! An internal-VNet gateway: four endpoints by host name, management only from the admin subnet.
//!
//! ```text
//! cargo run -p portcullis-examples --example internal_vnet [-- --listen 127.0.0.1:8080]
//! ```
//!
//! On one machine, loopback addresses stand in for the network: 127.0.0.1 and 127.0.0.2 are the virtual
//! network, 127.0.0.1 is also the admin subnet, 127.0.0.3 is outside. The code is in
//! `examples/src/internal_vnet.rs`.
#![forbid(unsafe_code)]

use portcullis::serve::shutdown_signal;
use portcullis_examples::internal_vnet::{self, Options, SERVICE};
use portcullis_examples::{BoxError, init_tracing, listen_addr};
use tokio::net::TcpListener;

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    init_tracing();
    let listener = TcpListener::bind(listen_addr("127.0.0.1:8080")).await?;
    let addr = listener.local_addr()?;
    let (service, domain) = SERVICE;
    let host = |label: &str| match label {
        "" => format!("{service}.{domain}"),
        l => format!("{service}.{l}.{domain}"),
    };
    let curl = |from: &str, label: &str, path: &str| {
        let h = host(label);
        format!(
            "curl -s --interface {from} --resolve {h}:{port}:{ip} http://{h}:{port}{path}",
            port = addr.port(),
            ip = addr.ip()
        )
    };
    println!("internal-VNet gateway listening on {addr}\n");
    println!("# the gateway, from inside the virtual network: 200");
    println!("{}\n", curl("127.0.0.2", "", "/echo"));
    println!("# the developer portal and scm endpoints, by host name: 200");
    println!("{}", curl("127.0.0.2", "developer", "/"));
    println!("{}\n", curl("127.0.0.2", "scm", "/"));
    println!("# management from the admin subnet: 200");
    println!("{}\n", curl("127.0.0.1", "management", "/subscriptions"));
    println!("# management from elsewhere in the virtual network: 403");
    println!("{}\n", curl("127.0.0.2", "management", "/subscriptions"));
    println!("# anything from outside the virtual network: 403");
    println!("{}\n", curl("127.0.0.3", "", "/echo"));
    println!("# the bare IP address (a scanner): 421");
    println!("curl -s http://{addr}/echo\n");
    println!("Ctrl-C stops the gateway.");
    internal_vnet::run(listener, &Options::loopback(), shutdown_signal()).await
}

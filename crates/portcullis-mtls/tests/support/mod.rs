//! Shared test helpers of the mTLS crate: stores, virtual hosts and loopback TLS servers and clients over the
//! workspace's certificate factory (`portcullis_test_support::pki`). Every helper panics on failure.
#![allow(dead_code, unreachable_pub, missing_docs, unused_imports)]

use std::io;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use portcullis_mtls::{
    AcceptError, ChainPolicy, ClientAuth, Keystore, MtlsAcceptor, MtlsStream, Truststore, VirtualHost,
    VirtualHosts,
};
use rustls::client::ResolvesClientCert;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::sign::CertifiedKey;
use rustls::{AlertDescription, ClientConfig, RootCertStore, SignatureScheme};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;

pub use portcullis_test_support::pki::{CA_EXT, Issued, LEAF_EXT, Pki, openssl_available};

/// A server certificate for `hosts`, issued by a fresh server CA; returns (keystore, server CA).
pub fn server_keystore(pki: &Pki, store_name: &str, hosts: &[&str]) -> (Keystore, Issued) {
    let ca = pki.ca_of(&format!("{store_name}-server-ca"), "ec:P-256", None);
    let sans: Vec<String> =
        hosts.iter().map(|h| if h.starts_with("IP:") { h.to_string() } else { format!("DNS:{h}") }).collect();
    let ext = format!(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
         subjectAltName={}\n",
        sans.join(",")
    );
    let leaf = pki.issue_named(&format!("{store_name}-server"), "ec:P-256", Some(&ca), &["-sha256"], &ext);
    let ks = Keystore::new(store_name, vec![leaf.der.clone()], leaf.key());
    (ks, ca)
}

/// A truststore holding `anchors`.
pub fn truststore(name: &str, anchors: &[&Issued]) -> Truststore {
    let mut ts = Truststore::new(name);
    for a in anchors {
        ts.add_pem(&a.cert_pem, &a.cert.display().to_string()).expect("anchor");
    }
    ts
}

/// One virtual host `a.test` requiring client auth with `policy`, trusting `client_ca`; returns the hosts
/// and the server CA.
pub fn single_host(pki: &Pki, client_ca: &Issued, policy: ChainPolicy) -> (VirtualHosts, Issued) {
    let hosts = VirtualHosts::new();
    let (ks, server_ca) = server_keystore(pki, "a", &["a.test"]);
    hosts.put_keystore(ks).expect("keystore");
    hosts.put_truststore(truststore("clients", &[client_ca])).expect("truststore");
    hosts
        .put(
            VirtualHost::new("a", ["a.test"], "a")
                .client_auth(ClientAuth::Required)
                .truststore("clients")
                .policy(policy),
        )
        .expect("vhost");
    (hosts, server_ca)
}

/// A resolver that always presents one certificate chain, whatever its key.
#[derive(Debug)]
struct Fixed(Arc<CertifiedKey>);

impl ResolvesClientCert for Fixed {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A client configuration trusting `server_ca`, presenting `chain` with `key` (leaf first). When rustls
/// cannot load the key (RSA-1024, DSA), a throwaway P-256 key signs instead: the server refuses the chain
/// when it receives the Certificate message, before any signature of the client is checked.
pub fn client_config(server_ca: &Issued, chain: &[&Issued], key: Option<&Issued>) -> Arc<ClientConfig> {
    let provider = portcullis_mtls::default_provider();
    let mut roots = RootCertStore::empty();
    roots.add(server_ca.der.clone()).expect("root");
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots);
    let mut cfg = match key {
        None => builder.with_no_client_auth(),
        Some(k) => {
            let certs: Vec<CertificateDer<'static>> = chain.iter().map(|c| c.der.clone()).collect();
            let signer = provider.key_provider.load_private_key(k.key()).or_else(|_| {
                let dummy = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("dummy");
                let der = PrivateKeyDer::from_pem_slice(dummy.serialize_pem().as_bytes()).expect("dummy pem");
                provider.key_provider.load_private_key(der)
            });
            let ck = CertifiedKey::new(certs, signer.expect("signer"));
            builder.with_client_cert_resolver(Arc::new(Fixed(Arc::new(ck))))
        }
    };
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

/// A loopback server: accepts `n` connections with `acceptor`, answers each established one with `ok` and
/// reports every accept result.
pub async fn spawn_server(
    acceptor: MtlsAcceptor,
    n: usize,
) -> (SocketAddr, tokio::sync::mpsc::Receiver<Result<Arc<portcullis_core::TlsInfo>, AcceptError>>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let (tx, rx) = tokio::sync::mpsc::channel(n.max(1));
    tokio::spawn(async move {
        for _ in 0..n {
            let Ok((tcp, _)) = listener.accept().await else { return };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                match acceptor.accept(tcp).await {
                    Ok(mut stream) => {
                        let info = stream.tls_info().clone();
                        let _ = tx.send(Ok(info)).await;
                        serve_ok(&mut stream).await;
                    }
                    Err(e) => {
                        let _ = tx.send(Err(e)).await;
                    }
                }
            });
        }
    });
    (addr, rx)
}

async fn serve_ok(stream: &mut MtlsStream<TcpStream>) {
    let _ = stream.write_all(b"ok").await;
    let _ = stream.shutdown().await;
}

/// What the client saw.
#[derive(Debug)]
pub enum Seen {
    /// The server answered `ok`.
    Ok,
    /// The server sent this alert.
    Alert(AlertDescription),
    /// Another error.
    Other(String),
}

fn seen_of(e: &io::Error) -> Seen {
    match e.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls::Error::AlertReceived(a)) => Seen::Alert(*a),
        _ => Seen::Other(e.to_string()),
    }
}

/// Connects to `addr` with `sni` (an IP address sends no SNI) and reads the server's answer.
pub async fn connect(addr: SocketAddr, cfg: Arc<ClientConfig>, sni: &str) -> Seen {
    connect_with_kind(addr, cfg, sni).await.0
}

/// [`connect`], also returning whether the handshake was full or resumed.
pub async fn connect_with_kind(
    addr: SocketAddr,
    cfg: Arc<ClientConfig>,
    sni: &str,
) -> (Seen, Option<rustls::HandshakeKind>) {
    let tcp = TcpStream::connect(addr).await.expect("connect");
    let name = ServerName::try_from(sni.to_string()).expect("server name");
    let mut tls = match TlsConnector::from(cfg).connect(name, tcp).await {
        Ok(t) => t,
        Err(e) => return (seen_of(&e), None),
    };
    let kind = tls.get_ref().1.handshake_kind();
    let mut buf = Vec::new();
    let seen = match tls.read_to_end(&mut buf).await {
        Ok(_) if buf == b"ok" => Seen::Ok,
        Ok(_) => Seen::Other(format!("unexpected answer {buf:?}")),
        Err(e) => seen_of(&e),
    };
    (seen, kind)
}

/// Runs one handshake of `cfg` against `acceptor` and returns what both sides saw.
pub async fn handshake(
    acceptor: &MtlsAcceptor,
    cfg: Arc<ClientConfig>,
    sni: &str,
) -> (Seen, Result<Arc<portcullis_core::TlsInfo>, AcceptError>) {
    let (addr, mut rx) = spawn_server(acceptor.clone(), 1).await;
    let seen = connect(addr, cfg, sni).await;
    let server = rx.recv().await.expect("server result");
    (seen, server)
}

pub fn cert_path(p: &Path) -> String {
    p.display().to_string()
}

//! Shared test helpers: certificate factories (the `openssl` CLI and rcgen) and loopback TLS servers and
//! clients. Every helper panics with the tool's output on failure.
#![allow(dead_code, unreachable_pub, missing_docs)]

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

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

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// A scratch directory for one test's certificates, removed on drop.
pub struct Pki {
    pub dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A certificate and its key.
#[derive(Clone, Debug)]
pub struct Issued {
    pub name: String,
    pub cert_path: PathBuf,
    pub key_path: PathBuf,
    pub der: CertificateDer<'static>,
    pub cert_pem: String,
    pub key_pem: String,
}

impl Issued {
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key pem")
    }
}

pub fn openssl_available() -> bool {
    Command::new("openssl").arg("version").output().is_ok_and(|o| o.status.success())
}

/// The CA extensions.
pub const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
                          subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";
/// The client leaf extensions.
pub const LEAF_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                            extendedKeyUsage=clientAuth\nsubjectAltName=DNS:client.test,email:alice@client.test\n\
                            subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";

impl Pki {
    pub fn new() -> Pki {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("portcullis-mtls-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        Pki { dir }
    }

    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl").args(args).current_dir(&self.dir).output().expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// A private key: `rsa:2048`, `rsa:1024`, `ec:P-256`, `ec:P-384`, `ec:secp256k1`, `ed25519`, `dsa:2048`.
    pub fn key(&self, name: &str, kind: &str) -> PathBuf {
        let file = format!("{name}.key");
        let (alg, param) = kind.split_once(':').unwrap_or((kind, ""));
        match alg {
            "rsa" => self.openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &format!("rsa_keygen_bits:{param}"),
                "-out",
                &file,
            ]),
            "ec" => self.openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                &format!("ec_paramgen_curve:{param}"),
                "-pkeyopt",
                "ec_param_enc:named_curve",
                "-out",
                &file,
            ]),
            "ed25519" => self.openssl(&["genpkey", "-algorithm", "ED25519", "-out", &file]),
            "dsa" => {
                let params = format!("{name}.dsaparam");
                self.openssl(&[
                    "genpkey",
                    "-genparam",
                    "-algorithm",
                    "DSA",
                    "-pkeyopt",
                    &format!("dsa_paramgen_bits:{param}"),
                    "-out",
                    &params,
                ]);
                self.openssl(&["genpkey", "-paramfile", &params, "-out", &file]);
            }
            other => panic!("unknown key kind {other}"),
        }
        self.path(&file)
    }

    fn finish(&self, name: &str) -> Issued {
        let cert_path = self.path(&format!("{name}.crt"));
        let key_path = self.path(&format!("{name}.key"));
        let cert_pem = std::fs::read_to_string(&cert_path).expect("cert");
        let key_pem = std::fs::read_to_string(&key_path).expect("key");
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("cert pem");
        Issued { name: name.into(), cert_path, key_path, der, cert_pem, key_pem }
    }

    /// A certificate for `name` with a fresh `key_kind` key, signed by `issuer` (self-signed when `None`)
    /// with `sign_opts` (for example `["-sha256"]`, `["-sha1"]`, `["-md5"]`,
    /// `["-sha256", "-sigopt", "rsa_padding_mode:pss", "-sigopt", "rsa_pss_saltlen:digest"]`) and the
    /// extensions `ext` (openssl extension-file lines).
    pub fn issue(
        &self,
        name: &str,
        key_kind: &str,
        issuer: Option<&Issued>,
        sign_opts: &[&str],
        ext: &str,
    ) -> Issued {
        self.key(name, key_kind);
        let (csr, key, crt, extfile) =
            (format!("{name}.csr"), format!("{name}.key"), format!("{name}.crt"), format!("{name}.ext"));
        std::fs::write(self.path(&extfile), ext).expect("ext file");
        self.openssl(&[
            "req",
            "-new",
            "-key",
            &key,
            "-subj",
            &format!("/O=Portcullis Test/CN={name}"),
            "-out",
            &csr,
        ]);
        let serial = format!("0x{:x}", 0x1000 + COUNTER.fetch_add(1, Ordering::Relaxed));
        let mut args: Vec<String> = [
            "x509",
            "-req",
            "-in",
            &csr,
            "-days",
            "30",
            "-set_serial",
            &serial,
            "-extfile",
            &extfile,
            "-out",
            &crt,
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        match issuer {
            Some(ca) => {
                args.extend(["-CA".into(), ca.cert_path.display().to_string()]);
                args.extend(["-CAkey".into(), ca.key_path.display().to_string()]);
            }
            None => args.extend(["-signkey".into(), key.clone()]),
        }
        args.extend(sign_opts.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.openssl(&args);
        self.finish(name)
    }

    /// A CA (self-signed when `issuer` is `None`), SHA-256, with [`CA_EXT`].
    pub fn ca(&self, name: &str, key_kind: &str, issuer: Option<&Issued>) -> Issued {
        self.issue(name, key_kind, issuer, &["-sha256"], CA_EXT)
    }

    /// A client leaf, SHA-256, with [`LEAF_EXT`].
    pub fn leaf(&self, name: &str, key_kind: &str, issuer: &Issued) -> Issued {
        self.issue(name, key_kind, Some(issuer), &["-sha256"], LEAF_EXT)
    }

    /// An rcgen certificate (P-256) with explicit validity, signed by `issuer` (an openssl P-256 CA) or
    /// self-signed. `not_before`/`not_after` are (year, month, day).
    pub fn rcgen_issue(
        &self,
        name: &str,
        issuer: Option<&Issued>,
        is_ca: bool,
        not_before: (i32, u8, u8),
        not_after: (i32, u8, u8),
    ) -> Issued {
        use rcgen::{
            BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
            Issuer, KeyPair, KeyUsagePurpose,
        };
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).expect("key");
        let mut params = CertificateParams::new(if is_ca { vec![] } else { vec!["client.test".to_string()] })
            .expect("params");
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, "Portcullis Test");
        dn.push(DnType::CommonName, name);
        params.distinguished_name = dn;
        params.not_before = rcgen::date_time_ymd(not_before.0, not_before.1, not_before.2);
        params.not_after = rcgen::date_time_ymd(not_after.0, not_after.1, not_after.2);
        if is_ca {
            params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
            params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        } else {
            params.is_ca = IsCa::ExplicitNoCa;
            params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
            params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        }
        let cert = match issuer {
            Some(ca) => {
                let ca_key = KeyPair::from_pem(&ca.key_pem).expect("ca key");
                let issuer = Issuer::from_ca_cert_pem(&ca.cert_pem, ca_key).expect("issuer");
                params.signed_by(&key, &issuer).expect("sign")
            }
            None => params.self_signed(&key).expect("self sign"),
        };
        std::fs::write(self.path(&format!("{name}.crt")), cert.pem()).expect("write");
        std::fs::write(self.path(&format!("{name}.key")), key.serialize_pem()).expect("write");
        self.finish(name)
    }
}

/// A server certificate for `hosts`, issued by a fresh server CA; returns (keystore, server CA).
pub fn server_keystore(pki: &Pki, store_name: &str, hosts: &[&str]) -> (Keystore, Issued) {
    let ca = pki.ca(&format!("{store_name}-server-ca"), "ec:P-256", None);
    let sans: Vec<String> =
        hosts.iter().map(|h| if h.starts_with("IP:") { h.to_string() } else { format!("DNS:{h}") }).collect();
    let ext = format!(
        "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n\
         subjectAltName={}\n",
        sans.join(",")
    );
    let leaf = pki.issue(&format!("{store_name}-server"), "ec:P-256", Some(&ca), &["-sha256"], &ext);
    let ks = Keystore::new(store_name, vec![leaf.der.clone()], leaf.key());
    (ks, ca)
}

/// A truststore holding `anchors`.
pub fn truststore(name: &str, anchors: &[&Issued]) -> Truststore {
    let mut ts = Truststore::new(name);
    for a in anchors {
        ts.add_pem(&a.cert_pem, &a.cert_path.display().to_string()).expect("anchor");
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

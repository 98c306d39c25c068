//! Certificates made with the `openssl` CLI in a scratch directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Extensions of a CA certificate.
pub const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
                          subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";

/// Extensions of a client certificate.
pub const CLIENT_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                              extendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\n\
                              authorityKeyIdentifier=keyid\n";

/// A certificate and its key, as files and PEM text.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The certificate file (PEM).
    pub cert: PathBuf,
    /// The key file (PEM, PKCS#8).
    pub key: PathBuf,
}

impl Issued {
    /// The certificate's PEM text.
    pub fn cert_pem(&self) -> String {
        std::fs::read_to_string(&self.cert).expect("read certificate")
    }

    /// The key's PEM text.
    pub fn key_pem(&self) -> String {
        std::fs::read_to_string(&self.key).expect("read key")
    }
}

/// A scratch directory of certificates, removed on drop.
#[derive(Debug)]
pub struct Pki {
    dir: PathBuf,
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Default for Pki {
    fn default() -> Self {
        Pki::new()
    }
}

impl Pki {
    /// A fresh, empty directory.
    pub fn new() -> Pki {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("portcullis-tests-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create the scratch directory");
        Pki { dir }
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// A path in the directory.
    pub fn path(&self, file: &str) -> PathBuf {
        self.dir.join(file)
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .env("OPENSSL_CONF", "/dev/null")
            .current_dir(&self.dir)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Makes a key `<name>.key`: `ec` (P-256), `rsa:1024`, `rsa:2048`.
    fn key(&self, name: &str, kind: &str) -> String {
        let file = format!("{name}.key");
        match kind.split_once(':') {
            Some(("rsa", bits)) => self.openssl(&[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                &format!("rsa_keygen_bits:{bits}"),
                "-out",
                &file,
            ]),
            None if kind == "ec" => self.openssl(&[
                "genpkey",
                "-algorithm",
                "EC",
                "-pkeyopt",
                "ec_paramgen_curve:P-256",
                "-pkeyopt",
                "ec_param_enc:named_curve",
                "-out",
                &file,
            ]),
            _ => panic!("unknown key kind {kind}"),
        }
        file
    }

    /// A certificate `<name>.crt` for subject `subj` with a fresh `key_kind` key, signed by `issuer` (self-signed
    /// when `None`) with `digest` (`-sha256`, `-sha1`), with the extension lines `ext`.
    pub fn issue(
        &self,
        name: &str,
        key_kind: &str,
        subj: &str,
        issuer: Option<&Issued>,
        digest: &str,
        ext: &str,
    ) -> Issued {
        let key = self.key(name, key_kind);
        let (csr, crt, extfile) = (format!("{name}.csr"), format!("{name}.crt"), format!("{name}.ext"));
        std::fs::write(self.path(&extfile), ext).expect("write the extension file");
        self.openssl(&["req", "-new", "-key", &key, "-subj", subj, "-out", &csr]);
        let serial = format!("0x{:x}", 0x5000 + COUNTER.fetch_add(1, Ordering::Relaxed));
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
                args.extend(["-CA".into(), ca.cert.display().to_string()]);
                args.extend(["-CAkey".into(), ca.key.display().to_string()]);
            }
            None => args.extend(["-signkey".into(), key.clone()]),
        }
        args.push(digest.into());
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.openssl(&args);
        Issued { cert: self.path(&crt), key: self.path(&key) }
    }

    /// A self-signed P-256 SHA-256 CA.
    pub fn ca(&self, name: &str) -> Issued {
        self.issue(name, "ec", &format!("/O=Portcullis Tests/CN={name}"), None, "-sha256", CA_EXT)
    }

    /// A P-256 server certificate for the DNS names `names`, signed by `ca`.
    pub fn server(&self, name: &str, ca: &Issued, names: &[&str]) -> Issued {
        let sans = names.iter().map(|n| format!("DNS:{n}")).collect::<Vec<_>>().join(",");
        let ext = format!(
            "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
             extendedKeyUsage=serverAuth\nsubjectAltName={sans}\n"
        );
        self.issue(name, "ec", &format!("/CN={}", names[0]), Some(ca), "-sha256", &ext)
    }

    /// A client certificate for `/O=Fabrikam/CN=<cn>` with a `key_kind` key, signed by `ca` with `digest`.
    pub fn client(&self, name: &str, cn: &str, ca: &Issued, key_kind: &str, digest: &str) -> Issued {
        self.issue(name, key_kind, &format!("/O=Fabrikam/CN={cn}"), Some(ca), digest, CLIENT_EXT)
    }

    /// An OpenSSL configuration at security level 0, so that `curl` agrees to send an RSA-1024 or SHA-1
    /// client certificate (the refusal a test sees is then the gateway's, not the client library's).
    pub fn seclevel0_conf(&self) -> PathBuf {
        let path = self.path("seclevel0.cnf");
        std::fs::write(
            &path,
            "openssl_conf = init\n[init]\nssl_conf = ssl\n[ssl]\nsystem_default = sys\n\
             [sys]\nCipherString = DEFAULT@SECLEVEL=0\n",
        )
        .expect("write the openssl configuration");
        path
    }
}

//! The one certificate factory of portcullis' tests: the `openssl` CLI (any key kind, digest and extension,
//! weak ones included) and rcgen (explicit validity dates), in a scratch directory removed on drop.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

static COUNTER: AtomicU64 = AtomicU64::new(0);

/// Extensions of a CA certificate.
pub const CA_EXT: &str = "basicConstraints=critical,CA:TRUE\nkeyUsage=critical,keyCertSign,cRLSign\n\
                          subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";

/// Extensions of a client certificate.
pub const CLIENT_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                              extendedKeyUsage=clientAuth\nsubjectKeyIdentifier=hash\n\
                              authorityKeyIdentifier=keyid\n";

/// The extensions of a client leaf with names (the mTLS crate's tests read them back as identities).
pub const LEAF_EXT: &str = "basicConstraints=critical,CA:FALSE\nkeyUsage=critical,digitalSignature\n\
                            extendedKeyUsage=clientAuth\nsubjectAltName=DNS:client.test,email:alice@client.test\n\
                            subjectKeyIdentifier=hash\nauthorityKeyIdentifier=keyid\n";

/// A certificate and its key, as files, PEM text and DER.
#[derive(Debug, Clone)]
pub struct Issued {
    /// The name it was issued under (its files are `<name>.crt` and `<name>.key`).
    pub name: String,
    /// The certificate file (PEM).
    pub cert: PathBuf,
    /// The key file (PEM, PKCS#8).
    pub key: PathBuf,
    /// The certificate, DER.
    pub der: CertificateDer<'static>,
    /// The certificate, PEM.
    pub cert_pem: String,
    /// The key, PEM.
    pub key_pem: String,
}

impl Issued {
    /// The certificate's PEM text.
    pub fn cert_pem(&self) -> String {
        self.cert_pem.clone()
    }

    /// The key's PEM text.
    pub fn key_pem(&self) -> String {
        self.key_pem.clone()
    }

    /// The key, DER.
    pub fn key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::from_pem_slice(self.key_pem.as_bytes()).expect("key pem")
    }
}

/// Whether the `openssl` command runs.
pub fn openssl_available() -> bool {
    crate::tool_available("openssl")
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

    /// Makes a key `<name>.key` and returns its file name: `ec` (P-256), `ec:P-384` (any named curve),
    /// `rsa:1024`, `rsa:2048`, `ed25519`, `dsa:2048`.
    fn key(&self, name: &str, kind: &str) -> String {
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
                &format!("ec_paramgen_curve:{}", if param.is_empty() { "P-256" } else { param }),
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
        file
    }

    /// A private key file `<name>.key` of `kind` (see [`issue`](Self::issue)), for tests that need a key
    /// alone.
    pub fn key_file(&self, name: &str, kind: &str) -> PathBuf {
        self.path(&self.key(name, kind))
    }

    /// The [`Issued`] of the files `<name>.crt` and `<name>.key` in the directory.
    pub fn finish(&self, name: &str) -> Issued {
        let (cert, key) = (self.path(&format!("{name}.crt")), self.path(&format!("{name}.key")));
        let cert_pem = std::fs::read_to_string(&cert).expect("read the certificate");
        let key_pem = std::fs::read_to_string(&key).expect("read the key");
        let der = CertificateDer::from_pem_slice(cert_pem.as_bytes()).expect("certificate pem");
        Issued { name: name.into(), cert, key, der, cert_pem, key_pem }
    }

    /// A certificate `<name>.crt` for subject `subj` with a fresh `key_kind` key (see [`key_file`](Self::key_file)),
    /// signed by `issuer` (self-signed when `None`) with `digest` (`-sha256`, `-sha1`), with the extension
    /// lines `ext`.
    pub fn issue(
        &self,
        name: &str,
        key_kind: &str,
        subj: &str,
        issuer: Option<&Issued>,
        digest: &str,
        ext: &str,
    ) -> Issued {
        self.issue_with(name, key_kind, subj, issuer, &[digest], ext)
    }

    /// [`issue`](Self::issue) with any signing options (`["-sha256", "-sigopt", "rsa_padding_mode:pss"]`).
    pub fn issue_with(
        &self,
        name: &str,
        key_kind: &str,
        subj: &str,
        issuer: Option<&Issued>,
        sign_opts: &[&str],
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
        args.extend(sign_opts.iter().map(|s| s.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.openssl(&args);
        self.finish(name)
    }

    /// A certificate for `/O=Portcullis Test/CN=<name>` (see [`issue_with`](Self::issue_with)).
    pub fn issue_named(
        &self,
        name: &str,
        key_kind: &str,
        issuer: Option<&Issued>,
        sign_opts: &[&str],
        ext: &str,
    ) -> Issued {
        self.issue_with(name, key_kind, &format!("/O=Portcullis Test/CN={name}"), issuer, sign_opts, ext)
    }

    /// A CA of `key_kind`, SHA-256, self-signed when `issuer` is `None`, with [`CA_EXT`].
    pub fn ca_of(&self, name: &str, key_kind: &str, issuer: Option<&Issued>) -> Issued {
        self.issue_named(name, key_kind, issuer, &["-sha256"], CA_EXT)
    }

    /// A client leaf of `key_kind`, SHA-256, with [`LEAF_EXT`].
    pub fn leaf(&self, name: &str, key_kind: &str, issuer: &Issued) -> Issued {
        self.issue_named(name, key_kind, Some(issuer), &["-sha256"], LEAF_EXT)
    }

    /// An rcgen certificate (P-256) with explicit validity, signed by `issuer` (a P-256 CA) or self-signed:
    /// for validity dates openssl cannot set. `not_before` / `not_after` are (year, month, day).
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
        let names = if is_ca { vec![] } else { vec!["client.test".to_string()] };
        let mut params = CertificateParams::new(names).expect("params");
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

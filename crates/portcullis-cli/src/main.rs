//! The `portcullis` command. See the crate documentation of `portcullis-cli`.
#![forbid(unsafe_code)]

use std::io::Write;
use std::path::Path;
use std::process::ExitCode;

use portcullis::config::GatewayConfig;
use portcullis::serve::{Bound, shutdown_signal};
use portcullis_cli::args::{Args, Usage};
use portcullis_cli::explain::ExplainError;
use portcullis_cli::sidecar::Settings;
use portcullis_cli::{chain, check, explain, proxy};

const USAGE: &str = "usage:
  portcullis serve --config FILE [--workers N]
  portcullis check-config FILE
  portcullis check-chain [--truststore PEM]... [--policy NAME | --config FILE --virtual-host NAME] [--at UNIX_SECONDS] [--json] CHAIN.pem
  portcullis explain --config FILE --peer IP[:PORT] [--listener NAME]
                     [--proxy v1|v2 --source IP[:PORT] [--link-id ID --vendor azure|aws|gcp]]
                     [--sni NAME] [--cert CHAIN.pem] [--host NAME] [--header 'Name: value']...
                     [--method METHOD] [--path PATH] [--at UNIX_SECONDS] [--json]

exit status: 0 ok (config valid, chain accepted, request served), 1 refused or invalid, 2 usage or input error";

fn main() -> ExitCode {
    let argv: Vec<String> = match std::env::args_os().skip(1).map(|a| a.into_string()).collect() {
        Ok(argv) => argv,
        Err(bad) => {
            eprintln!("portcullis: the argument `{}` is not UTF-8\n\n{USAGE}", bad.to_string_lossy());
            return ExitCode::from(2);
        }
    };
    let Some((command, rest)) = argv.split_first() else {
        eprintln!("{USAGE}");
        return ExitCode::from(2);
    };
    let result = match command.as_str() {
        "serve" => serve(rest),
        "check-config" => check_config(rest),
        "check-chain" => check_chain(rest),
        "explain" => run_explain(rest),
        "help" | "--help" | "-h" => {
            println!("{USAGE}");
            Ok(ExitCode::SUCCESS)
        }
        other => Err(Usage(format!("unknown command `{other}`"))),
    };
    match result {
        Ok(code) => code,
        Err(usage) => {
            eprintln!("portcullis: {usage}\n\n{USAGE}");
            ExitCode::from(2)
        }
    }
}

fn check_config(rest: &[String]) -> Result<ExitCode, Usage> {
    let args = Args::parse(rest, &[], &[])?;
    let file = args.one_positional("configuration file")?;
    Ok(match check::check_config(Path::new(file)) {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    })
}

fn check_chain(rest: &[String]) -> Result<ExitCode, Usage> {
    let args = Args::parse(rest, &["truststore", "policy", "config", "virtual-host", "at"], &["json"])?;
    let file = args.one_positional("chain file")?;
    let now = args.now()?;
    let input = |e: String| {
        eprintln!("portcullis: {e}");
        ExitCode::from(2)
    };
    let chain_certs = match chain::read_chain(Path::new(file)) {
        Ok(c) => c,
        Err(e) => return Ok(input(e)),
    };
    let (policy, mut truststore) =
        match (args.value("config"), args.value("virtual-host"), args.value("policy")) {
            (Some(_), _, Some(_)) => return Err(Usage("--policy and --config exclude each other".into())),
            (Some(config), Some(vhost), None) => {
                let loaded = GatewayConfig::load(config).and_then(|(c, s)| c.virtual_host_policy(&s, vhost));
                match loaded {
                    Ok(p) => p,
                    Err(e) => return Ok(input(e.to_string())),
                }
            }
            (Some(_), None, None) | (None, Some(_), _) => {
                return Err(Usage("--config and --virtual-host go together".into()));
            }
            (None, None, policy) => {
                let name = policy.unwrap_or("default");
                let policy = match name {
                    "default" => portcullis::mtls::ChainPolicy::new("default"),
                    preset => match portcullis::mtls::ChainPolicy::preset(preset) {
                        Some(p) => p,
                        None => {
                            return Err(Usage(format!("--policy {preset}: modern, strict, cnsa or default")));
                        }
                    },
                };
                (policy, None)
            }
        };
    let files = args.values("truststore");
    if !files.is_empty() {
        let mut store = portcullis::mtls::Truststore::new("--truststore");
        for f in files {
            if let Err(e) = store.add_pem_file(f) {
                return Ok(input(e.to_string()));
            }
        }
        truststore = Some(store);
    }
    let Some(truststore) = truststore else {
        return Err(Usage("a truststore is needed: --truststore PEM, or a virtual host with one".into()));
    };
    let report = chain::check_chain(file, &chain_certs, policy, truststore, now);
    print(if args.has("json") { pretty(&report.json()) } else { report.text() });
    Ok(if report.accepted() { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

fn pretty(v: &serde_json::Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default() + "\n"
}

fn print(text: String) {
    let mut out = std::io::stdout().lock();
    let _ = out.write_all(text.as_bytes());
    let _ = out.flush();
}

fn runtime(multi: bool) -> std::io::Result<tokio::runtime::Runtime> {
    if multi {
        tokio::runtime::Builder::new_multi_thread().enable_all().build()
    } else {
        tokio::runtime::Builder::new_current_thread().enable_all().build()
    }
}

fn run_explain(rest: &[String]) -> Result<ExitCode, Usage> {
    let args = Args::parse(rest, explain::VALUED, &["json"])?;
    if let Some(extra) = args.positional.first() {
        return Err(Usage(format!("unexpected argument `{extra}`")));
    }
    let rt = match runtime(false) {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    match rt.block_on(explain::explain(&args)) {
        Ok(x) => {
            print(if args.has("json") { pretty(&x.json()) } else { x.text() });
            Ok(if x.served() { ExitCode::SUCCESS } else { ExitCode::from(1) })
        }
        Err(ExplainError::Usage(u)) => Err(u),
        Err(ExplainError::Input(e)) => {
            eprintln!("{e}");
            Ok(ExitCode::from(2))
        }
    }
}

fn serve(rest: &[String]) -> Result<ExitCode, Usage> {
    let args = Args::parse(rest, &["config", "workers"], &[])?;
    if let Some(extra) = args.positional.first() {
        return Err(Usage(format!("unexpected argument `{extra}`")));
    }
    let config = args.value("config").ok_or_else(|| Usage("--config FILE is required".into()))?.to_owned();
    // Worker threads: one runs everything on the main thread (NGINX's `worker_processes 1`); more use
    // tokio's multi-threaded scheduler. Default: one per CPU.
    let workers = match args.value("workers") {
        None => None,
        Some(n) => match n.parse::<usize>() {
            Ok(n) if (1..=1024).contains(&n) => Some(n),
            _ => return Err(Usage(format!("--workers {n}: 1 to 1024"))),
        },
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "portcullis=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let rt = match workers {
        Some(1) => runtime(false),
        Some(n) => tokio::runtime::Builder::new_multi_thread().worker_threads(n).enable_all().build(),
        None => runtime(true),
    };
    let rt = match rt {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("portcullis: cannot start: {e}");
            return Ok(ExitCode::from(2));
        }
    };
    Ok(match rt.block_on(run_serve(&config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{e}");
            ExitCode::from(1)
        }
    })
}

async fn run_serve(path: &str) -> Result<(), String> {
    let (config, source) = GatewayConfig::load(path).map_err(|e| e.to_string())?;
    let settings = Settings::from_config(&config, &source).map_err(|e| e.to_string())?;
    if settings.upstreams.is_empty() {
        return Err(format!("{path}: no endpoint has an `upstream`: nothing to serve"));
    }
    let bound = Bound::from_config(&config, &source).await.map_err(|e| e.to_string())?;
    let responder = bound.built().listeners.first().map(|(_, s)| s.responder.clone()).unwrap_or_default();
    // The binary chooses the exporter: Prometheus text, rendered by the ops listener at /metrics.
    let prometheus = metrics_exporter_prometheus::PrometheusBuilder::new()
        .install_recorder()
        .map_err(|e| format!("metrics: {e}"))?;
    let bound = bound.metrics(move || prometheus.render());
    let mut lines = String::new();
    for (name, addr) in bound.local_addrs() {
        lines.push_str(&format!("portcullis: listener `{name}` on {addr}\n"));
    }
    if let Some(addr) = bound.ops_addr() {
        lines.push_str(&format!("portcullis: ops listener on {addr}\n"));
    }
    for (endpoint, upstream) in &settings.upstreams {
        lines.push_str(&format!("portcullis: endpoint `{endpoint}` -> {upstream}\n"));
    }
    print(lines);
    bound.serve(proxy::Proxy::new(settings, responder), shutdown_signal()).await.map_err(|e| e.to_string())
}

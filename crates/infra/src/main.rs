//! The `infra` binary: argument parsing and dispatch only.

use clap::{CommandFactory, Parser, Subcommand};

// The proxies allocate per request on several threads; mimalloc keeps that
// cheaper than glibc's allocator under contention (measured in
// docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `infra --version`: the release and the commit it was built from.
const VERSION: &str = concat!(env!("CARGO_PKG_VERSION"), " (commit ", env!("INFRA_COMMIT"), ")");

/// Infra: identity-aware access to Kubernetes, PostgreSQL, SSH and HTTP
/// services, with short-lived credentials and a complete audit trail.
#[derive(Debug, Parser)]
#[command(
    name = "infra",
    version = VERSION,
    propagate_version = true,
    after_help = "Start a server: infra server\nThen log in:    infra login localhost:4443 --tls-trusted-fingerprint <printed fingerprint>"
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Run the Infra server (control plane).
    Server(Box<infra_server::ServerArgs>),
    /// Run a connector next to your infrastructure (data plane).
    Connector(infra_connector::ConnectorArgs),
    /// Print shell completions: infra completions bash > /etc/bash_completion.d/infra
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    #[command(flatten)]
    Client(infra_cli::Command),
}

/// Logs for the long-running commands, on stderr: `INFRA_LOG` filters
/// (default `info`), JSON lines when asked.
fn init_logs(json: bool) {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_env("INFRA_LOG").unwrap_or_else(|_| EnvFilter::new("info"));
    let b = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = if json { b.json().try_init() } else { b.try_init() };
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let result = rt.block_on(async {
        match cli.command {
            Cmd::Server(a) => infra_server::run(*a, init_logs).await,
            Cmd::Connector(a) => infra_connector::run(a, init_logs).await,
            Cmd::Completions { shell } => {
                clap_complete::generate(shell, &mut Cli::command(), "infra", &mut std::io::stdout());
                Ok(())
            }
            Cmd::Client(c) => infra_cli::run(c).await,
        }
    });
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

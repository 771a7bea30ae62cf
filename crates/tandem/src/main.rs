//! The `tandem` binary: command line, config loading, daemon wiring, admin API.

mod admin;
mod alerts;
mod cluster;
mod config;
mod ctl;
mod daemon;
mod demo;
mod demo_backend;
mod drill_cmd;
mod faults;
mod logging;
mod notify;
mod vip;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "tandem",
    version,
    about = "High availability and failover for real services, in one binary"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Human)]
    log_format: logging::Format,
    /// Log filter, e.g. "info", "debug", "tandem_proxy=debug" (RUST_LOG also works).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a node: the sections present in the config decide what runs.
    Run {
        #[arg(long, short)]
        config: PathBuf,
    },
    /// Validate a config file; nothing is started or bound. Exit 0 when valid, 2 when not.
    /// With --keepalived, print the [[vip]] sections equivalent to a keepalived.conf instead.
    Check {
        #[arg(long, short, required_unless_present = "keepalived")]
        config: Option<PathBuf>,
        /// A keepalived.conf whose vrrp_instance blocks are printed as [[vip]] TOML.
        #[arg(long, conflicts_with = "config")]
        keepalived: Option<PathBuf>,
    },
    /// Talk to a running node's admin API.
    Ctl {
        /// Admin API address (default: from --config, else 127.0.0.1:9000).
        #[arg(long, env = "TANDEM_ADMIN")]
        admin: Option<String>,
        /// File with the admin bearer token.
        #[arg(long, env = "TANDEM_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        /// Read the admin address and token from this node config.
        #[arg(long, short)]
        config: Option<PathBuf>,
        #[command(subcommand)]
        command: ctl::CtlCommand,
    },
    /// Run a failover drill: workload, fault, report (exit 1 when objectives are missed).
    Drill {
        #[arg(long)]
        scenario: PathBuf,
        #[arg(long, default_value_t = 1)]
        repeat: u32,
        /// Write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Write a self-contained HTML report with a timeline chart here.
        #[arg(long)]
        html: Option<PathBuf>,
        /// Check the scenario and print a chaos schedule (with its seed) without running
        /// anything.
        #[arg(long)]
        dry_run: bool,
    },
    /// A whole HA cluster on this machine, then a kill-primary drill and its report.
    Demo {
        /// Stop by itself after this many seconds (default: run until Ctrl-C).
        #[arg(long)]
        duration: Option<u64>,
        /// Keep the demo's directory (configs, logs, reports) after it stops.
        #[arg(long)]
        keep: bool,
        /// Add a three-node PostgreSQL cluster.
        #[arg(long)]
        postgres: bool,
    },
    /// Print Prometheus alerting rules (YAML).
    Alerts,
    /// Print the version.
    Version,
    /// The PostgreSQL fencing watchdog (started by `tandem run`; reads deadlines on stdin).
    #[command(hide = true)]
    Watchdog {
        /// Time between the fast shutdown and SIGKILL, in milliseconds.
        #[arg(long, default_value_t = 250)]
        grace_ms: u64,
    },
    /// A small HTTP service to put behind tandem in demos, tutorials and tests.
    #[command(hide = true)]
    DemoBackend {
        #[arg(long, default_value = "127.0.0.1:0")]
        listen: SocketAddr,
        #[arg(long, default_value = "demo")]
        name: String,
        /// Keep sequenced writes (POST /writes/N) in this file as well as in memory.
        #[arg(long)]
        store: Option<std::path::PathBuf>,
        /// Copy every write to these demo backends before acknowledging it (IP:PORT, comma
        /// separated): synchronous replication.
        #[arg(long, value_delimiter = ',')]
        replicate_to: Vec<String>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Ok(exe) = std::env::current_exe() {
        tandem_cluster::postgres::set_watchdog_exe(exe);
    }
    logging::init(cli.log_format, cli.log_level.as_deref());
    match cli.command {
        Command::Alerts => alerts::print(),
        Command::Version => {
            println!("tandem {}", env!("CARGO_PKG_VERSION"));
            ExitCode::SUCCESS
        }
        Command::Check {
            keepalived: Some(file),
            ..
        } => import_keepalived(&file),
        Command::Check {
            config: Some(config),
            ..
        } => match Config::load(&config) {
            Ok(_) => {
                println!("{}: ok", config.display());
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("{e}");
                ExitCode::from(2)
            }
        },
        Command::Check { .. } => {
            eprintln!("tandem check: give --config FILE or --keepalived FILE");
            ExitCode::from(2)
        }
        Command::Run { config: path } => {
            let config = match Config::load(&path) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("{e}");
                    return ExitCode::from(2);
                }
            };
            report(daemon::run(&path, config))
        }
        Command::Ctl {
            admin,
            token_file,
            config,
            command,
        } => {
            let ep = match ctl::Endpoint::resolve(admin, token_file, config) {
                Ok(ep) => ep,
                Err(e) => {
                    eprintln!("tandem ctl: {e:#}");
                    return ExitCode::from(2);
                }
            };
            report(current_thread().and_then(|rt| rt.block_on(ctl::run(ep, command))))
        }
        Command::Drill {
            scenario,
            repeat,
            json,
            html,
            dry_run,
        } => {
            let s = match drill_cmd::load(&scenario) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("tandem drill: {e}");
                    return ExitCode::from(2);
                }
            };
            if dry_run {
                return match drill_cmd::dry_run(&s) {
                    Ok(()) => ExitCode::SUCCESS,
                    Err(e) => {
                        eprintln!("tandem drill: {e:#}");
                        ExitCode::from(2)
                    }
                };
            }
            let rt = match multi_thread() {
                Ok(rt) => rt,
                Err(e) => return report(Err(e)),
            };
            match rt.block_on(drill_cmd::run(&s, repeat, json.as_deref(), html.as_deref())) {
                Ok(drill_cmd::Verdict::Passed) => ExitCode::SUCCESS,
                Ok(drill_cmd::Verdict::Missed) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("tandem drill: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Demo {
            duration,
            keep,
            postgres,
        } => {
            let rt = match multi_thread() {
                Ok(rt) => rt,
                Err(e) => return report(Err(e)),
            };
            match rt.block_on(demo::run(
                duration.map(std::time::Duration::from_secs),
                keep,
                postgres,
            )) {
                Ok(true) => ExitCode::SUCCESS,
                Ok(false) => ExitCode::FAILURE,
                Err(e) => {
                    eprintln!("tandem demo: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Watchdog { grace_ms } => {
            match tandem_cluster::postgres::watchdog::run(std::time::Duration::from_millis(
                grace_ms,
            )) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("tandem watchdog: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::DemoBackend {
            listen,
            name,
            store,
            replicate_to,
        } => {
            let opts = demo_backend::Options {
                listen,
                name,
                store,
                replicate_to,
            };
            report(current_thread().and_then(|rt| rt.block_on(demo_backend::run(opts))))
        }
    }
}

fn multi_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn current_thread() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?)
}

fn report(r: anyhow::Result<()>) -> ExitCode {
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tandem: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// `tandem check --keepalived FILE`: print the equivalent `[[vip]]` sections, checked by the
/// same validation as a config file.
fn import_keepalived(file: &std::path::Path) -> ExitCode {
    let text = match std::fs::read_to_string(file) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}: cannot read: {e}", file.display());
            return ExitCode::from(2);
        }
    };
    let toml = match tandem_vrrp::import::keepalived_to_toml(&text) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{}:{}: {}", file.display(), e.line, e.message);
            return ExitCode::from(2);
        }
    };
    if let Err(e) = Config::parse(std::path::Path::new("imported.toml"), &toml) {
        eprintln!(
            "{}: the imported configuration is not valid:\n{e}\n{toml}",
            file.display()
        );
        return ExitCode::from(2);
    }
    print!("{toml}");
    ExitCode::SUCCESS
}

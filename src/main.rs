//! The `doris-fe-proxy` command.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use doris_fe_proxy::config::Config;
use doris_fe_proxy::server::{self, RunOptions};

/// Serve Apache Doris small files from S3 or a local folder and forward all other FE traffic.
#[derive(Debug, Parser)]
#[command(name = "doris-fe-proxy", version)]
struct Cli {
    /// Path of the YAML config file.
    #[arg(short = 'c', long = "conf", value_name = "FILE")]
    conf: PathBuf,

    /// Check the config file, the token source and the store, then exit: 0 if valid.
    #[arg(short = 't', long = "test")]
    test: bool,

    /// Take the listeners over from a running instance that got SIGQUIT (zero-downtime
    /// upgrade); needs `server.upgrade_sock` to be the same in both.
    #[arg(short = 'u', long = "upgrade")]
    upgrade: bool,

    /// Detach and run in the background.
    #[arg(short = 'd', long = "daemon")]
    daemon: bool,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let cli = Cli::parse();

    let config = match Config::load(&cli.conf) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("doris-fe-proxy: {e}");
            return ExitCode::from(2);
        }
    };

    if cli.test {
        return match server::check(&config) {
            Ok(()) => {
                println!(
                    "doris-fe-proxy: config file `{}` is valid",
                    cli.conf.display()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("doris-fe-proxy: {e}");
                ExitCode::from(2)
            }
        };
    }

    let options = RunOptions {
        upgrade: cli.upgrade,
        daemon: cli.daemon,
    };
    match server::build(config, options) {
        Ok(server) => server.run_forever(),
        Err(e) => {
            eprintln!("doris-fe-proxy: {e}");
            ExitCode::from(2)
        }
    }
}

//! The command line: `serve`, and the admin commands that work on the configured database.

mod admin;

use clap::{Parser, Subcommand};

use crate::config::Options;

/// Veza: an audio-streaming media server with a gRPC control plane.
#[derive(Parser, Debug)]
#[command(name = "veza", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run the server.
    Serve(Options),
    /// Manage user accounts in the configured database.
    #[command(subcommand)]
    User(admin::UserCommand),
    /// Manage API keys in the configured database.
    #[command(subcommand)]
    Apikey(admin::ApiKeyCommand),
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(opts) => serve(opts).await,
        Command::User(cmd) => admin::user(cmd).await,
        Command::Apikey(cmd) => admin::api_key(cmd).await,
    }
}

async fn serve(opts: Options) -> anyhow::Result<()> {
    let config = opts.resolve()?;
    crate::telemetry::init_logging(config.log_json);
    let server = crate::server::start(config).await?;
    println!("veza: gRPC on {}, HTTP on http://{}", server.grpc_addr, server.http_addr);
    wait_for_signal().await?;
    tracing::info!("shutting down");
    server.shutdown().await
}

async fn wait_for_signal() -> anyhow::Result<()> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r?,
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    tokio::signal::ctrl_c().await?;
    Ok(())
}

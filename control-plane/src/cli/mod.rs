//! The command line: `serve`, and the admin commands that work on the configured database.

mod admin;
mod chat;
pub mod client;
mod info;
mod listen;
mod live;
mod transcode;
mod upload;

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
    /// Run the media core on one file: renditions, waveform and seek index into a directory.
    Transcode(transcode::TranscodeArgs),
    /// Join a chat room from the terminal: prints it live and sends each line you type.
    Chat {
        room_id: i64,
        #[command(flatten)]
        client: client::ClientArgs,
    },
    /// Upload an audio file as a track (resumes by itself after a dropped connection).
    Upload(upload::UploadArgs),
    /// Publish a file (decoded, at real-time pace) or raw pcm_s16le from standard input (`-`)
    /// as a live stream.
    Live(live::LiveArgs),
    /// Play a track or live stream into a file (`-o out.opus`) or standard output (`-o -`).
    Listen(listen::ListenArgs),
    /// Show a track's or live stream's details.
    Info {
        id: i64,
        #[command(flatten)]
        client: client::ClientArgs,
    },
}

/// Runs one command to completion.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(opts) => serve(opts).await,
        Command::User(cmd) => admin::user(cmd).await,
        Command::Apikey(cmd) => admin::api_key(cmd).await,
        Command::Chat { room_id, client } => chat::run(room_id, client).await,
        Command::Transcode(args) => transcode::run(args).await,
        Command::Upload(args) => upload::run(args).await,
        Command::Listen(args) => listen::run(args).await,
        Command::Live(args) => live::run(args).await,
        Command::Info { id, client } => info::run(id, client).await,
    }
}

async fn serve(opts: Options) -> anyhow::Result<()> {
    let config = opts.resolve()?;
    crate::telemetry::init_logging(config.log_json);
    // Handlers go in before the server announces itself, so an early SIGTERM still drains.
    let signals = Signals::install()?;
    let server = crate::server::start(config).await?;
    println!(
        "veza: gRPC on {}, HTTP on http://{}",
        server.grpc_addr, server.http_addr
    );
    signals.wait().await?;
    tracing::info!("shutting down");
    server.shutdown().await
}

/// SIGINT and SIGTERM.
struct Signals {
    #[cfg(unix)]
    term: tokio::signal::unix::Signal,
    #[cfg(unix)]
    int: tokio::signal::unix::Signal,
}

impl Signals {
    fn install() -> anyhow::Result<Signals> {
        #[cfg(unix)]
        {
            use tokio::signal::unix::{SignalKind, signal};
            Ok(Signals {
                term: signal(SignalKind::terminate())?,
                int: signal(SignalKind::interrupt())?,
            })
        }
        #[cfg(not(unix))]
        Ok(Signals {})
    }

    async fn wait(mut self) -> anyhow::Result<()> {
        #[cfg(unix)]
        tokio::select! {
            _ = self.term.recv() => {}
            _ = self.int.recv() => {}
        }
        #[cfg(not(unix))]
        tokio::signal::ctrl_c().await?;
        Ok(())
    }
}

//! The `veza` binary: parses the command line and dispatches to `serve` or a client command.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = veza_control_plane::cli::Cli::parse();
    match veza_control_plane::cli::run(cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

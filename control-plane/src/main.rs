//! The `veza` binary: parses the command line and dispatches to `serve` or a client command.

use clap::Parser;

mod allocator;

fn main() -> std::process::ExitCode {
    allocator::tune();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return std::process::ExitCode::FAILURE;
        }
    };
    let cli = veza_control_plane::cli::Cli::parse();
    match runtime.block_on(veza_control_plane::cli::run(cli)) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

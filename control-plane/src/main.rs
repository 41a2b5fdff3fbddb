//! The `veza` binary: parses the command line and dispatches to `serve` or a client command.

use clap::Parser;

fn main() -> std::process::ExitCode {
    tune_allocator();
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

/// glibc's defaults (up to 8 allocator arenas per core, memory returned to the system only above
/// 128 KiB–32 MiB of free top space) cost about 15 % of a live server's memory at thousands of
/// listeners (docs/BENCHMARKS.md). One arena per core and a 128 KiB trim threshold keep it lower
/// at no measured CPU cost; `MALLOC_ARENA_MAX` / `MALLOC_TRIM_THRESHOLD_` still win when set.
/// Runs before any thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn tune_allocator() {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let arenas = i32::try_from(cores).unwrap_or(i32::MAX);
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: mallopt only adjusts allocator parameters; no other thread is running yet.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, arenas) };
    }
    if std::env::var_os("MALLOC_TRIM_THRESHOLD_").is_none() {
        // SAFETY: as above.
        unsafe { libc::mallopt(libc::M_TRIM_THRESHOLD, 128 << 10) };
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn tune_allocator() {}

//! The binary's allocator: jemalloc with one arena, or else glibc's malloc tuned for many
//! long-lived listeners.
//!
//! Thousands of live listeners each hold a few small, long-lived allocations beside h2's
//! short-lived buffers. glibc keeps the freed buffers' pages resident between them; jemalloc
//! keeps size classes apart and returns freed pages on its own (docs/BENCHMARKS.md, "jemalloc
//! repeated"). One arena measured lightest, at no CPU cost, on two cores.

#[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "msvc")))]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's compiled-in options; `_RJEM_MALLOC_CONF` in the environment still wins. This
/// strong symbol replaces the weak, empty default of tikv-jemalloc-sys's prefixed build.
#[cfg(all(feature = "jemalloc", target_os = "linux", not(target_env = "msvc")))]
#[unsafe(export_name = "_rjem_malloc_conf")]
pub static MALLOC_CONF: &[u8; 10] = b"narenas:1\0";

/// glibc's malloc (all of Rust's allocations without jemalloc; with it, only the C libraries':
/// SQLite's page caches, libopus) gets one arena per core, or a single one beside jemalloc, not
/// eight per core: each thread that allocates (SQLite's connection threads) otherwise grows an
/// arena of its own, about 15 % of a live server's memory at thousands of listeners
/// (docs/BENCHMARKS.md). Its trim threshold is 128 KiB. `MALLOC_ARENA_MAX` and
/// `MALLOC_TRIM_THRESHOLD_` still win when set. Runs before any thread exists.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn tune() {
    let arenas = if cfg!(feature = "jemalloc") {
        1
    } else {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        i32::try_from(cores).unwrap_or(i32::MAX)
    };
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
pub fn tune() {}

//! Gives the heap's free pages back to the system after connections let go of large buffers.
//!
//! glibc keeps the pages of a freed chunk resident when the chunk sits between live ones, so
//! the h2 buffers of thousands of listeners detached from hyper (about 28 KiB each) would stay
//! in RSS. Every [`BATCH`] bytes released, one `malloc_trim` runs on a blocking thread, a
//! moment later (so the batch's last connections have ended); one at a time. With the `veza`
//! binary's jemalloc (the `jemalloc` feature) this does nothing: jemalloc returns empty pages
//! itself after its decay.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

/// Bytes released between two trims.
const BATCH: usize = 8 << 20;
/// How long a trim waits after its batch filled.
const DELAY: Duration = Duration::from_secs(1);

static RELEASED: AtomicUsize = AtomicUsize::new(0);
static RUNNING: AtomicBool = AtomicBool::new(false);

/// Records that about `bytes` of heap were (or are about to be) freed.
pub fn released(bytes: usize) {
    if cfg!(feature = "jemalloc") {
        return;
    }
    if RELEASED.fetch_add(bytes, Ordering::Relaxed) + bytes < BATCH
        || RUNNING.swap(true, Ordering::AcqRel)
    {
        return;
    }
    RELEASED.store(0, Ordering::Relaxed);
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        RUNNING.store(false, Ordering::Release);
        return;
    };
    rt.spawn_blocking(|| {
        std::thread::sleep(DELAY);
        trim();
        RUNNING.store(false, Ordering::Release);
    });
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn trim() {
    // SAFETY: malloc_trim only returns free memory to the system; it is thread-safe.
    unsafe { libc::malloc_trim(0) };
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn trim() {}

//! argon2id password hashing, run on the blocking pool and bounded to the number of cores, with
//! a bounded queue: beyond [`MAX_WAITING`] waiting computations a new one is refused ([`Busy`]).

use std::sync::{
    Arc, LazyLock,
    atomic::{AtomicUsize, Ordering},
};

use argon2::{
    Argon2, PasswordHash, PasswordHasher, PasswordVerifier,
    password_hash::{SaltString, rand_core::OsRng},
};
use tokio::sync::Semaphore;

/// Computations that may wait for a core; more are refused with [`Busy`].
pub const MAX_WAITING: usize = 128;

static CORES: LazyLock<usize> =
    LazyLock::new(|| std::thread::available_parallelism().map_or(2, |n| n.get()));

/// At most one argon2 computation per core at a time (each takes ~19 MiB).
static PERMITS: LazyLock<Arc<Semaphore>> = LazyLock::new(|| Arc::new(Semaphore::new(*CORES)));

/// Computations running or waiting.
static QUEUED: AtomicUsize = AtomicUsize::new(0);

/// A hash to verify against when the account does not exist, so both paths cost the same.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash_blocking("not-a-real-password").unwrap_or_default());

/// The argon2 queue is full: the computation was not started.
#[derive(Debug, thiserror::Error)]
#[error("too many password checks waiting")]
pub struct Busy;

/// A place in the queue (running or waiting), given back when dropped.
struct Place;

impl Place {
    fn take() -> Result<Place, Busy> {
        if QUEUED.fetch_add(1, Ordering::AcqRel) >= *CORES + MAX_WAITING {
            QUEUED.fetch_sub(1, Ordering::AcqRel);
            return Err(Busy);
        }
        Ok(Place)
    }
}

impl Drop for Place {
    fn drop(&mut self) {
        QUEUED.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Hashes `password` with argon2id (OWASP parameters) off the async runtime; [`Busy`] (inside
/// the error) when the queue is full.
pub async fn hash(password: String) -> anyhow::Result<String> {
    let _place = Place::take()?;
    let _permit = PERMITS.clone().acquire_owned().await?;
    tokio::task::spawn_blocking(move || hash_blocking(&password)).await?
}

/// Checks `password` against `hash` off the async runtime; a `None` hash burns the same time.
/// [`Busy`] (inside the error) when the queue is full.
pub async fn verify(password: String, hash: Option<String>) -> anyhow::Result<bool> {
    let _place = Place::take()?;
    let _permit = PERMITS.clone().acquire_owned().await?;
    tokio::task::spawn_blocking(move || {
        let real = hash.is_some();
        let hash = hash.unwrap_or_else(|| DUMMY_HASH.clone());
        let parsed = PasswordHash::new(&hash).map_err(|e| anyhow::anyhow!("stored hash: {e}"))?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        Ok(ok && real)
    })
    .await?
}

fn hash_blocking(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("argon2: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn the_queue_is_bounded() {
        let hash = hash("right password".into()).await.unwrap();
        let calls: Vec<_> = (0..400)
            .map(|_| tokio::spawn(verify("wrong".into(), Some(hash.clone()))))
            .collect();
        let (mut checked, mut busy) = (0, 0);
        for c in calls {
            match c.await.unwrap() {
                Ok(ok) => {
                    assert!(!ok);
                    checked += 1;
                }
                Err(e) => {
                    assert!(e.is::<Busy>(), "{e:#}");
                    busy += 1;
                }
            }
        }
        assert!(busy > 0, "{checked} checked, none refused");
        assert!(checked >= MAX_WAITING, "{checked} checked");
    }
}

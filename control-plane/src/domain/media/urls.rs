//! Signed media URLs: `<public>/media/<id>/<file>?exp=<unix seconds>&sig=<hex>` where `sig` is
//! HMAC-SHA256 over `<id>:<exp>` with a secret shared by every instance (stored in the database).
//! One signature opens every file of that media (audio renditions, waveform JSON and `.dat`), so
//! a client can switch the extension; it stops working at `exp`.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

/// Signs and checks media URLs.
#[derive(Clone)]
pub struct UrlSigner {
    key: Vec<u8>,
    base: String,
    ttl: Duration,
}

impl UrlSigner {
    /// A signer with `key`, building URLs on `base` (no trailing slash) valid for `ttl`.
    pub fn new(key: Vec<u8>, base: &str, ttl: Duration) -> UrlSigner {
        UrlSigner {
            key,
            base: base.trim_end_matches('/').to_string(),
            ttl,
        }
    }

    fn mac(&self, id: i64, exp: i64) -> HmacSha256 {
        // HMAC takes keys of any length.
        let mut mac = HmacSha256::new_from_slice(&self.key)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        mac.update(format!("{id}:{exp}").as_bytes());
        mac
    }

    /// The query string (`exp=…&sig=…`) opening media `id` until `now + ttl`.
    pub fn query(&self, id: i64) -> String {
        let exp = now_secs() + self.ttl.as_secs() as i64;
        self.query_until(id, exp)
    }

    /// The query string opening media `id` until `exp` (seconds since the epoch).
    pub fn query_until(&self, id: i64, exp: i64) -> String {
        let sig = hex::encode(self.mac(id, exp).finalize().into_bytes());
        format!("exp={exp}&sig={sig}")
    }

    /// The signed URL of `file` (e.g. `audio.opus`, `waveform.json`) of media `id`.
    pub fn url(&self, id: i64, file: &str) -> String {
        format!("{}/media/{id}/{file}?{}", self.base, self.query(id))
    }

    /// The URL of live stream `id` on the HTTP port (`/live/<id>`), signed when `private`.
    pub fn live_url(&self, id: i64, private: bool) -> String {
        match private {
            true => format!("{}/live/{id}?{}", self.base, self.query(id)),
            false => format!("{}/live/{id}", self.base),
        }
    }

    /// Whether `sig` is the valid, unexpired signature of media `id` until `exp`.
    pub fn verify(&self, id: i64, exp: i64, sig: &str) -> bool {
        if exp < now_secs() {
            return false;
        }
        let Ok(sig) = hex::decode(sig) else {
            return false;
        };
        self.mac(id, exp).verify_slice(&sig).is_ok()
    }
}

fn now_secs() -> i64 {
    veza_storage::now_ms() / 1000
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_expire_and_resist_tampering() {
        let s = UrlSigner::new(b"secret".to_vec(), "http://h/", Duration::from_secs(60));
        let url = s.url(7, "audio.opus");
        assert!(url.starts_with("http://h/media/7/audio.opus?exp="));
        let exp = now_secs() + 10;
        let q = s.query_until(7, exp);
        let sig = q.split("sig=").nth(1).unwrap();
        assert!(s.verify(7, exp, sig));
        assert!(!s.verify(8, exp, sig));
        assert!(!s.verify(7, exp + 1, sig));
        assert!(!s.verify(7, exp, "zz"));
        let old = now_secs() - 1;
        let q = s.query_until(7, old);
        assert!(!s.verify(7, old, q.split("sig=").nth(1).unwrap()));
    }
}

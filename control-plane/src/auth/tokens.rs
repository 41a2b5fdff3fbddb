//! Access tokens: JWT issuing and checking with EdDSA (default) or HS256, and the JWKS document.

use std::path::Path;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use veza_storage::{Db, SigningKeyRecord};

use crate::config::JwtConfig;

/// The issuer every Veza token names.
pub const ISSUER: &str = "veza";

/// The PKCS#8 v1 DER prefix of an Ed25519 private key; the 32-byte seed follows it.
const ED25519_PKCS8_PREFIX: [u8; 16] = [
    0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
];

/// The file in the data directory holding the Ed25519 key (PKCS#8 DER).
pub const KEY_FILE: &str = "jwt-ed25519.pk8";

/// The claims of a Veza access token.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Claims {
    pub sub: String,
    pub email: String,
    pub roles: Vec<String>,
    pub sid: i64,
    pub jti: String,
    pub exp: i64,
    pub iat: i64,
    pub iss: String,
}

/// Why a token was refused.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("token expired")]
    Expired,
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The keys that sign and check access tokens.
pub struct TokenKeys {
    alg: Algorithm,
    kid: String,
    encoding: EncodingKey,
    decoding: DecodingKey,
    validation: Validation,
    jwks: serde_json::Value,
}

impl TokenKeys {
    /// Loads or creates the signing key for `config`, shared by every instance through `db`.
    pub async fn load(config: &JwtConfig, db: &Db, data_dir: &Path) -> anyhow::Result<TokenKeys> {
        match config {
            JwtConfig::Hs256(secret) => Ok(Self::hs256(secret.as_bytes())),
            JwtConfig::EdDsa => {
                let seed = ed25519_seed(db, data_dir).await?;
                Ok(Self::ed25519(&seed))
            }
        }
    }

    /// HMAC-SHA256 keys from a shared secret.
    pub fn hs256(secret: &[u8]) -> TokenKeys {
        TokenKeys {
            alg: Algorithm::HS256,
            kid: "hs256".into(),
            encoding: EncodingKey::from_secret(secret),
            decoding: DecodingKey::from_secret(secret),
            validation: validation(Algorithm::HS256),
            jwks: serde_json::json!({ "keys": [] }),
        }
    }

    /// Ed25519 keys from a 32-byte seed.
    pub fn ed25519(seed: &[u8; 32]) -> TokenKeys {
        let public = ed25519_dalek::SigningKey::from_bytes(seed)
            .verifying_key()
            .to_bytes();
        let kid = crate::auth::secrets::hash_secret(&hex::encode(public))[..16].to_string();
        let x = URL_SAFE_NO_PAD.encode(public);
        TokenKeys {
            alg: Algorithm::EdDSA,
            encoding: EncodingKey::from_ed_der(&pkcs8_der(seed)),
            decoding: DecodingKey::from_ed_der(&public),
            validation: validation(Algorithm::EdDSA),
            jwks: serde_json::json!({ "keys": [{
                "kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": "EdDSA", "use": "sig"
            }]}),
            kid,
        }
    }

    /// Signs `claims`.
    pub fn issue(&self, claims: &Claims) -> anyhow::Result<String> {
        let mut header = Header::new(self.alg);
        header.kid = Some(self.kid.clone());
        Ok(jsonwebtoken::encode(&header, claims, &self.encoding)?)
    }

    /// Checks signature, algorithm, issuer, expiry and not-before.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        use jsonwebtoken::errors::ErrorKind;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &self.validation)
            .map(|d| d.claims)
            .map_err(|e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid(e.to_string()),
            })
    }

    /// Like [`verify`](Self::verify) but accepts expired tokens (for revocation).
    pub fn verify_ignoring_expiry(&self, token: &str) -> Result<Claims, TokenError> {
        let mut v = self.validation.clone();
        v.validate_exp = false;
        jsonwebtoken::decode::<Claims>(token, &self.decoding, &v)
            .map(|d| d.claims)
            .map_err(|e| TokenError::Invalid(e.to_string()))
    }

    /// The public keys as a JWKS document.
    pub fn jwks(&self) -> &serde_json::Value {
        &self.jwks
    }
}

fn validation(alg: Algorithm) -> Validation {
    let mut v = Validation::new(alg);
    v.leeway = 0;
    v.validate_nbf = true;
    v.set_issuer(&[ISSUER]);
    v.set_required_spec_claims(&["exp", "sub", "iat", "iss"]);
    v
}

fn pkcs8_der(seed: &[u8; 32]) -> Vec<u8> {
    [&ED25519_PKCS8_PREFIX[..], seed].concat()
}

/// The deployment's Ed25519 seed: the database's if any instance stored one, else this data
/// directory's key file, else a new one. The key file is written when missing.
async fn ed25519_seed(db: &Db, data_dir: &Path) -> anyhow::Result<[u8; 32]> {
    let path = data_dir.join(KEY_FILE);
    // A key file left group- or world-readable (copied in, older versions) is made 0600.
    veza_storage::private::tighten(&path, veza_storage::private::FILE_MODE)
        .map_err(|e| anyhow::anyhow!("restricting {}: {e}", path.display()))?;
    let from_file =
        match std::fs::read(&path) {
            Ok(der) => Some(seed_from_der(&der).ok_or_else(|| {
                anyhow::anyhow!("{} is not an Ed25519 PKCS#8 key", path.display())
            })?),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        };
    let candidate = from_file.unwrap_or_else(crate::auth::secrets::random_bytes::<32>);
    let record = SigningKeyRecord {
        kid: hex::encode(&candidate[..8]),
        alg: "EdDSA".into(),
        secret_hex: hex::encode(candidate),
    };
    let stored = db.get_or_insert_signing_key(&record).await?;
    let seed: [u8; 32] = hex::decode(&stored.secret_hex)?
        .try_into()
        .map_err(|_| anyhow::anyhow!("stored signing key has the wrong length"))?;
    if from_file.is_none() {
        write_key_file(&path, &pkcs8_der(&seed))?;
    } else if from_file != Some(seed) {
        tracing::warn!(path = %path.display(), "key file differs from the deployment's key in the database; using the database's");
    }
    Ok(seed)
}

fn seed_from_der(der: &[u8]) -> Option<[u8; 32]> {
    der.strip_prefix(&ED25519_PKCS8_PREFIX[..])?.try_into().ok()
}

fn write_key_file(path: &Path, der: &[u8]) -> anyhow::Result<()> {
    use std::io::Write;
    let mut opts = std::fs::OpenOptions::new();
    opts.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut opts, 0o600);
    match opts.open(path) {
        Ok(mut f) => Ok(f.write_all(der)?),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(anyhow::anyhow!("writing {}: {e}", path.display())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims(exp_offset: i64) -> Claims {
        let now = veza_storage::now_ms() / 1000;
        Claims {
            sub: "1".into(),
            email: "a@b.c".into(),
            roles: vec!["user".into()],
            sid: 1,
            jti: "j".into(),
            exp: now + exp_offset,
            iat: now,
            iss: ISSUER.into(),
        }
    }

    #[test]
    fn ed25519_round_trip_and_rejections() {
        let keys = TokenKeys::ed25519(&[7; 32]);
        let token = keys.issue(&claims(60)).unwrap();
        assert_eq!(keys.verify(&token).unwrap(), claims(60));
        let other = TokenKeys::ed25519(&[8; 32]);
        assert!(matches!(other.verify(&token), Err(TokenError::Invalid(_))));
        let expired = keys.issue(&claims(-5)).unwrap();
        assert!(matches!(keys.verify(&expired), Err(TokenError::Expired)));
        assert!(keys.verify_ignoring_expiry(&expired).is_ok());
        let hs = TokenKeys::hs256(&[1; 32]).issue(&claims(60)).unwrap();
        assert!(keys.verify(&hs).is_err());
        assert!(seed_from_der(&pkcs8_der(&[9; 32])) == Some([9; 32]));
    }
}

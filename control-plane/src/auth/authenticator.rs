//! Turns call metadata (`authorization: Bearer …` or `x-api-key: …`) into a [`Caller`].

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use http::HeaderMap;
use veza_storage::Db;

use super::{
    ApiKeyCaller, Caller, Revocations, TokenKeys, UserCaller,
    secrets::hash_secret,
    tokens::{Claims, TokenError},
};

/// How long a checked API key is trusted before the database is asked again.
const API_KEY_TTL: Duration = Duration::from_secs(60);
/// Bound on each cache.
const CACHE_MAX: usize = 10_000;

/// Why a call was refused; every variant is `UNAUTHENTICATED` except `Backend`.
#[derive(Debug, thiserror::Error)]
pub enum AuthFailure {
    #[error("missing credentials: send `authorization: Bearer <token>` or `x-api-key`")]
    Missing,
    #[error("malformed authorization header: expected `Bearer <token>`")]
    Malformed,
    #[error("access token expired")]
    Expired,
    #[error("invalid access token")]
    InvalidToken,
    #[error("access token revoked")]
    Revoked,
    #[error("invalid API key")]
    InvalidApiKey,
    #[error("API key revoked")]
    ApiKeyRevoked,
    #[error("authentication backend unavailable")]
    Backend(#[from] veza_storage::StorageError),
}

/// Checks credentials; shared by the auth layer and the services.
pub struct Authenticator {
    pub tokens: TokenKeys,
    pub revocations: Arc<Revocations>,
    db: Db,
    verified: Mutex<HashMap<String, Claims>>,
    api_keys: Mutex<HashMap<String, (ApiKeyCaller, Instant)>>,
}

impl Authenticator {
    /// An authenticator over these keys, revocations and database.
    pub fn new(tokens: TokenKeys, revocations: Arc<Revocations>, db: Db) -> Authenticator {
        Authenticator {
            tokens,
            revocations,
            db,
            verified: Mutex::default(),
            api_keys: Mutex::default(),
        }
    }

    /// The caller named by `headers`.
    pub async fn authenticate(&self, headers: &HeaderMap) -> Result<Caller, AuthFailure> {
        if let Some(value) = headers.get(http::header::AUTHORIZATION) {
            let value = value.to_str().map_err(|_| AuthFailure::Malformed)?;
            let token = bearer(value).ok_or(AuthFailure::Malformed)?;
            return self.user_from_token(token).map(Caller::User);
        }
        if let Some(value) = headers.get("x-api-key") {
            let key = value.to_str().map_err(|_| AuthFailure::InvalidApiKey)?;
            return self.api_key(key).await.map(Caller::ApiKey);
        }
        Err(AuthFailure::Missing)
    }

    /// Checks an access token: signature, expiry, revocation.
    pub fn user_from_token(&self, token: &str) -> Result<UserCaller, AuthFailure> {
        let claims = self.verify_cached(token)?;
        if self.revocations.token_revoked(claims.sid, &claims.jti) {
            return Err(AuthFailure::Revoked);
        }
        let user_id = claims.sub.parse().map_err(|_| AuthFailure::InvalidToken)?;
        Ok(UserCaller {
            user_id,
            email: claims.email,
            roles: claims.roles,
            session_id: claims.sid,
            jti: claims.jti,
            exp: claims.exp,
        })
    }

    /// Whether credentials checked earlier still hold: the token has not expired and neither
    /// its session nor the token or API key has been revoked since.
    pub fn still_valid(&self, caller: &Caller) -> Result<(), AuthFailure> {
        match caller {
            Caller::User(u) if u.exp <= veza_storage::now_ms() / 1000 => Err(AuthFailure::Expired),
            Caller::User(u) if self.revocations.token_revoked(u.session_id, &u.jti) => {
                Err(AuthFailure::Revoked)
            }
            Caller::ApiKey(k) if self.revocations.api_key_revoked(k.key_id) => {
                Err(AuthFailure::ApiKeyRevoked)
            }
            _ => Ok(()),
        }
    }

    fn verify_cached(&self, token: &str) -> Result<Claims, AuthFailure> {
        let now = veza_storage::now_ms() / 1000;
        let mut cache = lock(&self.verified);
        if let Some(c) = cache.get(token) {
            if c.exp > now {
                return Ok(c.clone());
            }
            cache.remove(token);
            return Err(AuthFailure::Expired);
        }
        drop(cache);
        let claims = self.tokens.verify(token).map_err(|e| match e {
            TokenError::Expired => AuthFailure::Expired,
            TokenError::Invalid(e) => {
                tracing::debug!(error = %e, "token refused");
                AuthFailure::InvalidToken
            }
        })?;
        let mut cache = lock(&self.verified);
        if cache.len() >= CACHE_MAX {
            cache.retain(|_, c| c.exp > now);
            if cache.len() >= CACHE_MAX {
                cache.clear();
            }
        }
        cache.insert(token.to_string(), claims.clone());
        Ok(claims)
    }

    async fn api_key(&self, key: &str) -> Result<ApiKeyCaller, AuthFailure> {
        if !key.starts_with("vz_") || key.len() > 128 {
            return Err(AuthFailure::InvalidApiKey);
        }
        let hash = hash_secret(key);
        let cached = lock(&self.api_keys)
            .get(&hash)
            .filter(|(_, at)| at.elapsed() < API_KEY_TTL)
            .cloned();
        let caller = match cached {
            Some((caller, _)) => caller,
            None => self.load_api_key(hash).await?,
        };
        if self.revocations.api_key_revoked(caller.key_id) {
            return Err(AuthFailure::ApiKeyRevoked);
        }
        Ok(caller)
    }

    async fn load_api_key(&self, hash: String) -> Result<ApiKeyCaller, AuthFailure> {
        let record = self
            .db
            .api_key_by_hash(&hash)
            .await?
            .ok_or(AuthFailure::InvalidApiKey)?;
        if record.revoked {
            return Err(AuthFailure::ApiKeyRevoked);
        }
        let _ = self.db.touch_api_key(record.id).await;
        let caller = ApiKeyCaller {
            key_id: record.id,
            name: record.name,
            scopes: record.scopes,
        };
        let mut cache = lock(&self.api_keys);
        if cache.len() >= CACHE_MAX {
            cache.clear();
        }
        cache.insert(hash, (caller.clone(), Instant::now()));
        Ok(caller)
    }
}

fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

//! Accounts and sessions: registration, login with throttling, token rotation and revocation,
//! user info and the live view of a user's sessions.

use std::{sync::Arc, time::Duration};

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use veza_storage::{Db, NewSession, NewUser, RefreshUse, SessionRecord, UserRecord, now_ms};

use super::{
    error::{DomainError, Result},
    limits::{self, LocalLimiter, LoginAttempt, LoginPolicy, LoginThrottle},
    validate,
};
use crate::{
    auth::{Authenticator, Claims, password, revocations::Revocation, secrets},
    bus::{Bus, BusEvent},
    caller::Caller,
};

/// A freshly issued token pair.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub access_token: String,
    pub refresh_token: String,
    pub expires_in: i32,
    pub user: UserRecord,
}

/// The fields of an account to create.
#[derive(Debug, Clone, Default)]
pub struct NewAccount {
    pub email: String,
    pub password: String,
    pub username: String,
    pub first_name: String,
    pub last_name: String,
    pub admin: bool,
}

/// A change to one of a user's sessions, as streamed and as carried on the bus.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct SessionEvent {
    /// `current` (initial snapshot), `created`, `refreshed` or `revoked`.
    pub event: String,
    pub session: SessionRecord,
}

/// The accounts service of the domain.
pub struct Accounts {
    db: Db,
    bus: Bus,
    auth: Arc<Authenticator>,
    access_ttl: Duration,
    refresh_ttl: Duration,
    analytics: Option<super::Analytics>,
    limits: AccountLimits,
}

impl Accounts {
    /// Accounts over this database, bus and authenticator.
    pub fn new(
        db: Db,
        bus: Bus,
        auth: Arc<Authenticator>,
        access_ttl: Duration,
        refresh_ttl: Duration,
    ) -> Self {
        Accounts {
            db,
            bus,
            auth,
            access_ttl,
            refresh_ttl,
            analytics: None,
            limits: AccountLimits::new(0),
        }
    }

    /// Limits `Register` to `per_hour` calls per client IP (0 = no limit).
    pub fn with_register_limit(mut self, per_hour: u32) -> Self {
        self.limits = AccountLimits::new(per_hour);
        self
    }

    /// Emits `login_succeeded` / `login_failed` analytics events.
    pub fn with_analytics(mut self, analytics: super::Analytics) -> Self {
        self.analytics = Some(analytics);
        self
    }

    fn emit(&self, event_type: &str, user_id: i64, properties: Vec<(String, String)>) {
        if let Some(a) = &self.analytics {
            a.emit(event_type, user_id, properties);
        }
    }

    /// Creates an account after checking every field; counted per client IP `peer`.
    pub async fn register(&self, a: NewAccount, peer: &str) -> Result<UserRecord> {
        limits::check(&self.limits.register, limits::ip_key(peer), "Register")?;
        create_account(&self.db, a).await
    }

    /// Checks a password and opens a session. The attempt is counted (per account and per
    /// client IP `peer`) before the password is checked, the same whether or not the account
    /// exists; `ip` is only recorded with the session.
    pub async fn login(
        &self,
        email: &str,
        pw: &str,
        device_id: &str,
        ip: &str,
        peer: &str,
    ) -> Result<Tokens> {
        let email = validate::email(email)?;
        if pw.is_empty() || pw.len() > 1024 {
            return Err(DomainError::invalid("password", "must be 1 to 1024 bytes"));
        }
        let device_id = validate::text("device_id", device_id, 200)?;
        let ip = validate::text("ip_address", ip, 64)?;
        let attempt = match self.limits.begin_login(&email, peer) {
            Ok(a) => a,
            Err(e) => {
                self.emit(
                    "login_failed",
                    0,
                    vec![("reason".into(), "throttled".into())],
                );
                return Err(e);
            }
        };
        let user = self.db.user_by_email(&email).await?;
        let ok = password::verify(
            pw.to_string(),
            user.as_ref().map(|u| u.password_hash.clone()),
        )
        .await
        .map_err(password_error)?;
        let user = match user {
            Some(u) if ok => u,
            Some(u) => {
                attempt.failed();
                self.emit(
                    "login_failed",
                    u.id,
                    vec![("reason".into(), "bad_password".into())],
                );
                return Err(bad_login());
            }
            None => {
                attempt.failed();
                self.emit(
                    "login_failed",
                    0,
                    vec![("reason".into(), "unknown_account".into())],
                );
                return Err(bad_login());
            }
        };
        attempt.succeeded();
        let refresh = secrets::random_token();
        let new = NewSession {
            user_id: user.id,
            device_id: &device_id,
            ip_address: &ip,
            expires_at: self.refresh_expiry(),
        };
        let session = self
            .db
            .create_session(&new, &secrets::hash_secret(&refresh))
            .await?;
        self.publish_session("created", &session).await;
        self.emit(
            "login_succeeded",
            user.id,
            vec![("session_id".into(), session.id.to_string())],
        );
        self.tokens_for(user, &session, refresh)
    }

    /// Rotates a refresh token; reuse of a spent one revokes its session.
    pub async fn refresh(&self, refresh_token: &str) -> Result<Tokens> {
        if refresh_token.is_empty() || refresh_token.len() > 256 {
            return Err(DomainError::invalid(
                "refresh_token",
                "must be 1 to 256 bytes",
            ));
        }
        let next = secrets::random_token();
        let used = self
            .db
            .use_refresh_token(
                &secrets::hash_secret(refresh_token),
                &secrets::hash_secret(&next),
                self.refresh_expiry(),
            )
            .await?;
        match used {
            RefreshUse::Invalid => Err(DomainError::Unauthenticated(
                "invalid or expired refresh token".into(),
            )),
            RefreshUse::Reused(session) => {
                self.revoked_session(&session).await;
                Err(DomainError::Unauthenticated(
                    "refresh token reuse detected: the session is revoked".into(),
                ))
            }
            RefreshUse::Rotated(session) => {
                let user = self.db.user_by_id(session.user_id).await?.ok_or_else(|| {
                    DomainError::Unauthenticated("the account no longer exists".into())
                })?;
                self.publish_session("refreshed", &session).await;
                self.tokens_for(user, &session, next)
            }
        }
    }

    /// RFC 7009 revocation of an access or refresh token; unknown tokens succeed silently.
    pub async fn revoke(&self, caller: &Caller, token: &str, hint: &str) -> Result<()> {
        if token.is_empty() || token.len() > 8192 {
            return Err(DomainError::invalid("token", "must be 1 to 8192 bytes"));
        }
        let looks_like_jwt = token.matches('.').count() == 2;
        if hint != "refresh_token"
            && looks_like_jwt
            && let Ok(claims) = self.auth.tokens.verify_ignoring_expiry(token)
        {
            return self.revoke_access(caller, claims).await;
        }
        if let Some(session) = self
            .db
            .session_of_refresh_token(&secrets::hash_secret(token))
            .await?
        {
            if !caller.may_act_for(session.user_id) {
                return Err(DomainError::denied("not your token"));
            }
            if let Some(s) = self.db.revoke_session(session.id).await? {
                self.revoked_session(&s).await;
            }
        }
        Ok(())
    }

    async fn revoke_access(&self, caller: &Caller, claims: Claims) -> Result<()> {
        let owner: i64 = claims.sub.parse().unwrap_or(-1);
        if !caller.may_act_for(owner) {
            return Err(DomainError::denied("not your token"));
        }
        self.db.revoke_jti(&claims.jti, claims.exp * 1000).await?;
        self.auth
            .revocations
            .publish(&self.bus, Revocation::Token(claims.jti))
            .await;
        Ok(())
    }

    /// Checks a token on behalf of a caller: `None` when it is not valid now.
    pub async fn validate(&self, token: &str) -> Result<Option<(UserRecord, i64, i64)>> {
        let Ok(user) = self.auth.user_from_token(token) else {
            return Ok(None);
        };
        let record = self.db.user_by_id(user.user_id).await?;
        Ok(record.map(|r| (r, user.exp, user.session_id)))
    }

    /// A user's profile: the caller's own (`user_id` 0), or anyone's for an admin.
    pub async fn user_info(&self, caller: &Caller, user_id: i64) -> Result<UserRecord> {
        let id = target_user(caller, user_id)?;
        if !caller.may_act_for(id) && !caller.has_scope("users:read") {
            return Err(DomainError::denied("you may only read your own user info"));
        }
        self.db
            .user_by_id(id)
            .await?
            .ok_or_else(|| DomainError::NotFound(format!("user {id} not found")))
    }

    /// The user's current sessions, then every change as it happens.
    pub async fn session_events(
        &self,
        caller: &Caller,
        user_id: i64,
    ) -> Result<impl Stream<Item = SessionEvent> + Send + 'static + use<>> {
        let id = target_user(caller, user_id)?;
        if !caller.may_act_for(id) {
            return Err(DomainError::denied("you may only watch your own sessions"));
        }
        if self.db.user_by_id(id).await?.is_none() {
            return Err(DomainError::NotFound(format!("user {id} not found")));
        }
        let live = self
            .bus
            .subscribe(&session_subject(id))
            .await
            .map_err(anyhow::Error::from)?;
        let current = self.db.sessions_of_user(id).await?;
        let snapshot = current.into_iter().map(|session| SessionEvent {
            event: "current".into(),
            session,
        });
        let live = live.filter_map(|e| async move {
            match e {
                BusEvent::Message(m) => serde_json::from_slice::<SessionEvent>(&m.payload).ok(),
                BusEvent::Lagged(_) => None,
            }
        });
        Ok(futures::stream::iter(snapshot).chain(live))
    }

    pub(super) fn db(&self) -> &Db {
        &self.db
    }

    pub(super) fn bus(&self) -> &Bus {
        &self.bus
    }

    pub(super) fn auth(&self) -> &Authenticator {
        &self.auth
    }

    fn tokens_for(
        &self,
        user: UserRecord,
        session: &SessionRecord,
        refresh: String,
    ) -> Result<Tokens> {
        let now = now_ms() / 1000;
        let claims = Claims {
            sub: user.id.to_string(),
            email: user.email.clone(),
            roles: user.roles.clone(),
            sid: session.id,
            jti: hex::encode(secrets::random_bytes::<16>()),
            exp: now + self.access_ttl.as_secs() as i64,
            iat: now,
            iss: crate::auth::ISSUER.into(),
        };
        let access_token = self.auth.tokens.issue(&claims)?;
        Ok(Tokens {
            access_token,
            refresh_token: refresh,
            expires_in: self.access_ttl.as_secs() as i32,
            user,
        })
    }

    fn refresh_expiry(&self) -> i64 {
        now_ms() + self.refresh_ttl.as_millis() as i64
    }

    async fn revoked_session(&self, session: &SessionRecord) {
        self.auth
            .revocations
            .publish(&self.bus, Revocation::Session(session.id))
            .await;
        let mut s = session.clone();
        s.revoked = true;
        self.publish_session("revoked", &s).await;
    }

    async fn publish_session(&self, event: &str, session: &SessionRecord) {
        let e = SessionEvent {
            event: event.into(),
            session: session.clone(),
        };
        if let Ok(payload) = serde_json::to_vec(&e)
            && let Err(err) = self
                .bus
                .publish(session_subject(session.user_id), payload.into())
                .await
        {
            tracing::error!(error = %err, "publishing a session event");
        }
    }
}

/// Creates an account after checking every field (also used by the CLI and the demo seed).
pub async fn create_account(db: &Db, a: NewAccount) -> Result<UserRecord> {
    let email = validate::email(&a.email)?;
    validate::password(&a.password)?;
    let username = if a.username.trim().is_empty() {
        validate::username_from_email(&email)
    } else {
        validate::username(&a.username)?
    };
    let first = validate::text("first_name", &a.first_name, 100)?;
    let last = validate::text("last_name", &a.last_name, 100)?;
    if db.user_by_email(&email).await?.is_some() {
        return Err(DomainError::AlreadyExists {
            field: "email".into(),
        });
    }
    let hash = password::hash(a.password).await.map_err(password_error)?;
    let mut roles = vec!["user".to_string()];
    if a.admin {
        roles.push("admin".into());
    }
    let new = NewUser {
        email: &email,
        username: &username,
        first_name: &first,
        last_name: &last,
        password_hash: &hash,
        roles: &roles,
    };
    Ok(db.create_user(&new).await?)
}

fn bad_login() -> DomainError {
    DomainError::Unauthenticated("invalid email or password".into())
}

/// A full argon2 queue is a limit (retry shortly); anything else is internal.
fn password_error(e: anyhow::Error) -> DomainError {
    if e.is::<password::Busy>() {
        limits::rate_limited("too many logins being checked", Duration::from_secs(1))
    } else {
        DomainError::Internal(e)
    }
}

/// The login throttles (per account and per client IP) and the `Register` limit.
struct AccountLimits {
    accounts: LoginThrottle,
    ips: LoginThrottle,
    register: limits::SharedLimiter,
}

impl AccountLimits {
    fn new(register_per_hour: u32) -> AccountLimits {
        AccountLimits {
            accounts: LoginThrottle::new(LoginPolicy::ACCOUNT),
            ips: LoginThrottle::new(LoginPolicy::CLIENT_IP),
            register: LocalLimiter::per_hour(register_per_hour),
        }
    }

    /// Reserves a login attempt for both keys, or the longer wait of the two.
    fn begin_login(&self, email: &str, peer: &str) -> Result<LoginPair<'_>> {
        let throttled = |wait| limits::rate_limited("too many failed logins", wait);
        let account = self.accounts.begin(email).map_err(throttled)?;
        let ip = self.ips.begin(&limits::ip_key(peer)).map_err(throttled)?;
        Ok(LoginPair { account, ip })
    }
}

/// One login attempt reserved on both throttles.
struct LoginPair<'a> {
    account: LoginAttempt<'a>,
    ip: LoginAttempt<'a>,
}

impl LoginPair<'_> {
    fn failed(self) {
        self.account.failed();
        self.ip.failed();
    }

    fn succeeded(self) {
        self.account.succeeded();
        self.ip.succeeded();
    }
}

fn target_user(caller: &Caller, user_id: i64) -> Result<i64> {
    match (user_id, caller.user_id()) {
        (0, Some(me)) => Ok(me),
        (0, None) => Err(DomainError::invalid(
            "user_id",
            "required when calling with an API key",
        )),
        (id, _) if id < 0 => Err(DomainError::invalid("user_id", "must be positive")),
        (id, _) => Ok(id),
    }
}

fn session_subject(user_id: i64) -> String {
    format!("veza.auth.session.{user_id}")
}

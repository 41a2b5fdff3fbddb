//! The typed identity the auth layer hands to every handler.

/// A user authenticated by an access token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UserCaller {
    pub user_id: i64,
    pub email: String,
    pub roles: Vec<String>,
    pub session_id: i64,
    pub jti: String,
    /// Expiry of the access token, seconds since the epoch.
    pub exp: i64,
}

/// A service authenticated by an API key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ApiKeyCaller {
    pub key_id: i64,
    pub name: String,
    pub scopes: Vec<String>,
}

/// Who is making a call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Caller {
    User(UserCaller),
    ApiKey(ApiKeyCaller),
}

impl Caller {
    /// Users with the `admin` role and keys with the `admin` scope.
    pub fn is_admin(&self) -> bool {
        match self {
            Caller::User(u) => u.roles.iter().any(|r| r == "admin"),
            Caller::ApiKey(k) => k.scopes.iter().any(|s| s == "admin"),
        }
    }

    /// Whether an API key carries `scope` (or `admin`); admins have every scope.
    pub fn has_scope(&self, scope: &str) -> bool {
        match self {
            Caller::ApiKey(k) => k.scopes.iter().any(|s| s == scope || s == "admin"),
            Caller::User(_) => self.is_admin(),
        }
    }

    /// The calling user's id, when a user is calling.
    pub fn user_id(&self) -> Option<i64> {
        match self {
            Caller::User(u) => Some(u.user_id),
            Caller::ApiKey(_) => None,
        }
    }

    /// Whether this caller may act on `user_id`'s own data.
    pub fn may_act_for(&self, user_id: i64) -> bool {
        self.user_id() == Some(user_id) || self.is_admin()
    }
}

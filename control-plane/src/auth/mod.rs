//! Authentication: who is calling, how tokens and keys are issued and checked, and the layer that
//! enforces it on every call.

mod authenticator;
mod layer;
mod lease;
pub mod password;
pub mod revocations;
pub mod secrets;
mod tokens;

use crate::caller::{ApiKeyCaller, Caller, UserCaller};
pub use authenticator::{AuthFailure, Authenticator};
pub use layer::AuthLayer;
pub use revocations::Revocations;
pub use tokens::{Claims, ISSUER, KEY_FILE, TokenError, TokenKeys};

/// Scopes an API key may carry.
pub const SCOPES: &[&str] = &[
    "admin",
    "notifications:send",
    "analytics:write",
    "analytics:read",
    "chat:write",
    "stream:publish",
    "users:read",
];

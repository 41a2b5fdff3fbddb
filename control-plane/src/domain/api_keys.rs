//! API keys: created by admins, shown once, stored hashed, revocable everywhere at once.

use veza_storage::{ApiKeyRecord, NewApiKey};

use super::{
    Accounts,
    error::{DomainError, Result},
    validate,
};
use crate::auth::{SCOPES, revocations::Revocation, secrets};
use crate::caller::Caller;

impl Accounts {
    /// Creates a key; returns the key itself (never stored) and its record.
    pub async fn create_api_key(
        &self,
        caller: Option<&Caller>,
        name: &str,
        scopes: &[String],
    ) -> Result<(String, ApiKeyRecord)> {
        require_admin(caller)?;
        let name = validate::text("name", name, 100)?;
        if name.is_empty() {
            return Err(DomainError::invalid("name", "must not be empty"));
        }
        if scopes.is_empty() {
            return Err(DomainError::invalid(
                "scopes",
                "at least one scope is required",
            ));
        }
        if let Some(bad) = scopes.iter().find(|s| !SCOPES.contains(&s.as_str())) {
            return Err(DomainError::invalid(
                "scopes",
                format!("unknown scope {bad:?}; known: {}", SCOPES.join(", ")),
            ));
        }
        let key = format!("vz_{}", secrets::random_token());
        let created_by = caller.and_then(Caller::user_id).unwrap_or(0);
        let new = NewApiKey {
            name: &name,
            key_hash: &secrets::hash_secret(&key),
            prefix: &key[..10],
            scopes,
            created_by,
        };
        let record = self.db().create_api_key(&new).await?;
        Ok((key, record))
    }

    /// Every key (without the secrets).
    pub async fn list_api_keys(
        &self,
        caller: Option<&Caller>,
        include_revoked: bool,
    ) -> Result<Vec<ApiKeyRecord>> {
        require_admin(caller)?;
        Ok(self.db().list_api_keys(include_revoked).await?)
    }

    /// Revokes a key on every instance.
    pub async fn revoke_api_key(&self, caller: Option<&Caller>, id: i64) -> Result<()> {
        require_admin(caller)?;
        if !self.db().revoke_api_key(id).await? {
            return Err(DomainError::NotFound(format!("API key {id} not found")));
        }
        self.auth()
            .revocations
            .publish(self.bus(), Revocation::ApiKey(id))
            .await;
        Ok(())
    }
}

/// `None` is the local admin CLI, which has the database itself.
fn require_admin(caller: Option<&Caller>) -> Result<()> {
    match caller {
        Some(c) if !c.is_admin() => Err(DomainError::denied(
            "API key management needs the admin role",
        )),
        _ => Ok(()),
    }
}

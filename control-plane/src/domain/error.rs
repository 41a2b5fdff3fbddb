//! The domain error: one variant per public failure, mapped to a gRPC status at the service edge.

use veza_storage::StorageError;

/// Why a domain operation failed.
#[derive(Debug, thiserror::Error)]
pub enum DomainError {
    #[error("{0}")]
    Unauthenticated(String),
    #[error("{0}")]
    PermissionDenied(String),
    #[error("{field}: {reason}")]
    InvalidArgument { field: &'static str, reason: String },
    #[error("{0}")]
    NotFound(String),
    #[error("{field} already exists")]
    AlreadyExists { field: String },
    #[error("{0}")]
    FailedPrecondition(String),
    #[error("{0}")]
    ResourceExhausted(String),
    #[error("{0}")]
    Unavailable(String),
    /// A rate limit or quota of SPEC §13, with the time to wait before trying again.
    #[error("{reason}")]
    RateLimited {
        reason: String,
        retry_after: std::time::Duration,
    },
    /// Anything else; the message is logged, never sent.
    #[error("internal: {0:#}")]
    Internal(anyhow::Error),
}

impl DomainError {
    /// A bad field.
    pub fn invalid(field: &'static str, reason: impl Into<String>) -> DomainError {
        DomainError::InvalidArgument {
            field,
            reason: reason.into(),
        }
    }

    /// `{what} {id} not found`, the wording of the seed's errors (`track 42 not found`).
    pub fn not_found(what: &str, id: i64) -> DomainError {
        DomainError::NotFound(format!("{what} {id} not found"))
    }

    /// Caller lacks the right.
    pub fn denied(reason: impl Into<String>) -> DomainError {
        DomainError::PermissionDenied(reason.into())
    }
}

impl From<StorageError> for DomainError {
    fn from(e: StorageError) -> Self {
        match e {
            StorageError::Conflict(field) => DomainError::AlreadyExists { field },
            StorageError::Unavailable(_) => DomainError::Unavailable("database unavailable".into()),
            other => DomainError::Internal(other.into()),
        }
    }
}

impl From<anyhow::Error> for DomainError {
    fn from(e: anyhow::Error) -> Self {
        DomainError::Internal(e)
    }
}

/// Domain results.
pub type Result<T> = std::result::Result<T, DomainError>;

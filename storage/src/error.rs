//! The storage error type.

/// What can go wrong below the domain layer.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A unique constraint refused the row; the payload names the constraint's column when known.
    #[error("already exists: {0}")]
    Conflict(String),
    /// The database cannot be reached right now.
    #[error("database unavailable: {0}")]
    Unavailable(String),
    /// The database failed.
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
    /// The blob store failed.
    #[error("blob store: {0}")]
    Blob(#[from] object_store::Error),
    /// The configuration names something unusable.
    #[error("configuration: {0}")]
    Config(String),
}

impl From<sqlx::Error> for StorageError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e
            && db.is_unique_violation()
        {
            let msg = db.message().to_ascii_lowercase();
            let field = ["email", "username", "key_hash", "kid", "name"]
                .into_iter()
                .find(|f| msg.contains(f))
                .unwrap_or("unique");
            return StorageError::Conflict(field.to_string());
        }
        match e {
            sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) => {
                StorageError::Unavailable(e.to_string())
            }
            e => StorageError::Database(e),
        }
    }
}

impl StorageError {
    /// Whether the database refused the rows themselves (bad data, a constraint), so that the
    /// same write would fail again and a batch holding them is worth splitting; not for errors
    /// of the connection or the server, which a retry may cure.
    pub fn is_bad_row(&self) -> bool {
        match self {
            StorageError::Conflict(_) => true,
            StorageError::Database(sqlx::Error::Database(db)) => {
                let code = db.code().unwrap_or_default();
                // PostgreSQL SQLSTATE classes 22 (data exception) and 23 (integrity constraint);
                // SQLite primary result codes 18 (too big), 19 (constraint) and 20 (mismatch).
                code.starts_with("22")
                    || code.starts_with("23")
                    || code
                        .parse::<u32>()
                        .is_ok_and(|c| matches!(c & 0xff, 18..=20))
            }
            StorageError::Database(sqlx::Error::Encode(_)) => true,
            _ => false,
        }
    }
}

pub type Result<T> = std::result::Result<T, StorageError>;

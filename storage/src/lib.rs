//! Veza storage: typed repositories over SQLite or PostgreSQL, and the blob store.

mod api_keys;
mod batch;
mod blob;
mod db;
mod error;
mod event_record;
mod events;
mod live;
mod media;
mod messages;
mod migrate;
mod notifications;
pub mod private;
mod quota;
mod rollup;
mod rooms;
mod sessions;
mod signing_keys;
mod users;

pub use api_keys::{ApiKeyRecord, NewApiKey};
pub use blob::BlobStore;
pub use db::{Backend, Db};
pub use error::StorageError;
pub use event_record::EventRecord;
pub use events::{BucketQuery, BucketRow};
pub use live::NewLive;
pub use media::{MediaRecord, NewMedia, ProbedMedia};
pub use messages::{MessageRecord, NewMessage, Rejected};
pub use notifications::{NewNotification, NotificationCounts, NotificationRecord};
pub use quota::MediaUsage;
pub use rooms::{NewRoom, RoomRecord};
pub use sessions::{NewSession, RefreshUse, SessionRecord};
pub use signing_keys::SigningKeyRecord;
pub use users::{NewUser, UserRecord};

/// Milliseconds since the Unix epoch: the one time unit stored in the database.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

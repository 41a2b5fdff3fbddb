//! The rules of Veza, free of protobuf and SQL: accounts and sessions, API keys, chat, media and
//! live streams, notifications, analytics and the limits that bound them.

mod accounts;
pub mod analytics;
mod api_keys;
pub mod chat;
mod error;
pub mod limits;
pub mod live;
pub mod media;
pub mod notify;
pub mod validate;

pub use accounts::{Accounts, NewAccount, SessionEvent, Tokens, create_account};
pub use analytics::Analytics;
pub use error::DomainError;
pub use live::Live;
pub use media::Media;
pub use notify::Notifier;

//! One analytics event as stored: the row type shared by the event writer and the hourly rollup.

/// An analytics event as stored.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct EventRecord {
    pub id: i64,
    pub event_type: String,
    /// 0 for anonymous events.
    pub user_id: i64,
    /// When the event happened, ms since the epoch.
    pub ts: i64,
    pub source: String,
    pub properties: Vec<(String, String)>,
}

//! The gap-free message feed of one room: stored messages after a cursor, then live ones, each
//! exactly once and in id order, whatever the bus drops or reorders. A viewer's feed ends when
//! the viewer leaves the room.

use std::collections::VecDeque;

use futures::Stream;
use tokio::sync::broadcast::{self, error::RecvError};
use veza_storage::{Db, MessageRecord};

use super::hub::RoomEvent;
use crate::domain::error::Result;

/// Messages read from the database at a time while catching up.
const PAGE: i64 = 256;

struct Feed {
    db: Db,
    rx: broadcast::Receiver<RoomEvent>,
    room_id: i64,
    last: i64,
    backlog: VecDeque<MessageRecord>,
    catching_up: bool,
    /// The user reading (0: one whose leaving cannot end the feed, e.g. an admin key).
    viewer: i64,
}

/// Messages of `room_id` after `after`, then live, until `viewer` (when not 0) leaves the room.
/// `rx` must be subscribed before this is called.
pub fn room_feed(
    db: Db,
    rx: broadcast::Receiver<RoomEvent>,
    room_id: i64,
    after: i64,
    viewer: i64,
) -> impl Stream<Item = Result<MessageRecord>> + Send + 'static {
    let feed = Feed {
        db,
        rx,
        room_id,
        last: after,
        backlog: VecDeque::new(),
        catching_up: true,
        viewer,
    };
    futures::stream::unfold(feed, |mut f| async move {
        match f.next().await {
            Ok(Some(m)) => Some((Ok(m), f)),
            Ok(None) => None,
            Err(e) => Some((Err(e), f)),
        }
    })
}

impl Feed {
    async fn next(&mut self) -> Result<Option<MessageRecord>> {
        loop {
            if let Some(m) = self.backlog.pop_front() {
                if m.id > self.last {
                    self.last = m.id;
                    return Ok(Some(m));
                }
                continue;
            }
            if self.catching_up {
                let page = self
                    .db
                    .messages_after(self.room_id, self.last, PAGE)
                    .await?;
                self.catching_up = page.len() as i64 == PAGE;
                self.backlog.extend(page);
                continue;
            }
            match self.rx.recv().await {
                Ok(RoomEvent::Message(m)) if m.id <= self.last => {}
                Ok(RoomEvent::Message(m)) if m.id == self.last + 1 => {
                    self.last = m.id;
                    return Ok(Some((*m).clone()));
                }
                // A gap (another instance published out of order) or lost events: the database
                // has everything up to what arrived, since ids are assigned in commit order.
                Ok(RoomEvent::Message(_)) => self.catching_up = true,
                // Lost events may hide the viewer's leave: ask the database.
                Ok(RoomEvent::Lagged) | Err(RecvError::Lagged(_)) => {
                    if self.viewer != 0 && !self.db.is_member(self.room_id, self.viewer).await? {
                        return Ok(None);
                    }
                    self.catching_up = true
                }
                Ok(RoomEvent::Activity(a)) if left(&a, self.viewer) => return Ok(None),
                Ok(RoomEvent::Activity(_)) => {}
                Err(RecvError::Closed) => return Ok(None),
            }
        }
    }
}

/// Whether `a` is `viewer` (not 0) leaving the room.
pub fn left(a: &super::Activity, viewer: i64) -> bool {
    viewer != 0 && a.kind == "left" && a.user_id == viewer
}

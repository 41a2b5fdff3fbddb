//! The feed behind `ChatStream`: the gap-free feeds of every room a user belongs to, merged, with
//! rooms added and dropped as the user joins and leaves while the stream is open.

use std::pin::Pin;

use futures::{Stream, StreamExt};
use tokio_stream::StreamMap;
use veza_storage::{Db, MessageRecord};

use super::{Membership, feed::room_feed, hub::RoomHub, membership_subject};
use crate::{
    bus::{Bus, BusEvent, Subscription},
    domain::error::Result,
};

type RoomStream = Pin<Box<dyn Stream<Item = Result<MessageRecord>> + Send>>;

struct UserFeed {
    db: Db,
    hub: RoomHub,
    rooms: StreamMap<i64, RoomStream>,
    membership: Subscription,
}

/// Starts the merged feed of `user_id`'s rooms from their current last message.
pub async fn start(
    db: Db,
    bus: Bus,
    hub: RoomHub,
    user_id: i64,
) -> Result<impl Stream<Item = Result<MessageRecord>> + Send + 'static> {
    let membership = bus
        .subscribe(&membership_subject(user_id))
        .await
        .map_err(anyhow::Error::from)?;
    let mut feed = UserFeed {
        db: db.clone(),
        hub,
        rooms: StreamMap::new(),
        membership,
    };
    for (room_id, _) in db.rooms_of_user(user_id).await? {
        feed.add(room_id).await?;
    }
    Ok(futures::stream::unfold(feed, |mut f| async move {
        f.next().await.map(|m| (m, f))
    }))
}

impl UserFeed {
    /// Subscribes to the room first, then starts after its newest stored message.
    async fn add(&mut self, room_id: i64) -> Result<()> {
        if self.rooms.contains_key(&room_id) {
            return Ok(());
        }
        let rx = self.hub.subscribe(room_id).await?;
        let last = self
            .db
            .room(room_id)
            .await?
            .map_or(0, |r| r.last_message_id);
        self.rooms.insert(
            room_id,
            Box::pin(room_feed(self.db.clone(), rx, room_id, last, 0)),
        );
        Ok(())
    }

    async fn next(&mut self) -> Option<Result<MessageRecord>> {
        loop {
            tokio::select! {
                Some((_, item)) = self.rooms.next(), if !self.rooms.is_empty() => return Some(item),
                event = self.membership.next() => match event? {
                    BusEvent::Message(m) => {
                        let Ok(change) = serde_json::from_slice::<Membership>(&m.payload) else { continue };
                        if change.joined {
                            if let Err(e) = self.add(change.room_id).await {
                                return Some(Err(e));
                            }
                        } else {
                            self.rooms.remove(&change.room_id);
                        }
                    }
                    BusEvent::Lagged(_) => {}
                },
            }
        }
    }
}

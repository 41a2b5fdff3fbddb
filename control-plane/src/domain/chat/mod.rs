//! Chat: rooms and membership, sending with server-assigned ids, cursor pages, and live feeds
//! (one room's messages, its activity, or every room of a user).

mod feed;
mod hub;
mod members;
mod mentions;
mod user_feed;
mod writer;

use futures::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use veza_storage::{Db, MessageRecord, NewMessage, NewRoom, Rejected, RoomRecord, now_ms};

pub use hub::{RoomEvent, RoomHub};
use members::Members;
pub use writer::MessageWriter;

use super::{
    Analytics, Notifier,
    error::{DomainError, Result},
    validate,
};
use crate::{bus::Bus, caller::Caller};

/// Longest message, in characters.
pub const MAX_CONTENT: usize = 4000;
/// Default and largest page of `GetMessages`.
pub const DEFAULT_LIMIT: i64 = 50;
pub const MAX_LIMIT: i64 = 200;
/// Largest opaque metadata attached to a message.
const MAX_METADATA: usize = 16 * 1024;

/// Something that happened in a room (not stored).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Activity {
    pub room_id: i64,
    /// `joined`, `left`, `message` or `typing`.
    pub kind: String,
    pub user_id: i64,
    pub data: Vec<u8>,
    pub at: i64,
}

/// A change of one user's rooms, carried to that user's open `ChatStream`s.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Membership {
    pub room_id: i64,
    pub joined: bool,
}

/// A message to send, as the caller gave it.
#[derive(Debug, Clone, Default)]
pub struct Outgoing {
    pub room_id: i64,
    pub content: String,
    pub message_type: String,
    pub metadata: Vec<u8>,
    pub reply_to_id: i64,
}

/// One page of `GetMessages`.
#[derive(Debug, Clone)]
pub struct Page {
    pub messages: Vec<MessageRecord>,
    pub has_more: bool,
    pub last_message_id: i64,
}

/// The chat service of the domain.
pub struct Chat {
    db: Db,
    bus: Bus,
    hub: RoomHub,
    members: Members,
    writer: MessageWriter,
    analytics: Analytics,
    notifier: Notifier,
}

impl Chat {
    /// Chat over this database and bus; starts the message writer.
    pub fn new(db: Db, bus: Bus, analytics: Analytics, notifier: Notifier) -> Chat {
        let writer = MessageWriter::start(db.clone(), bus.clone());
        Chat {
            hub: RoomHub::new(bus.clone()),
            members: Members::new(bus.clone()),
            db,
            bus,
            writer,
            analytics,
            notifier,
        }
    }

    /// Creates a room owned by the caller, its only member; `member_ids` are invited and become
    /// members when they join (nobody is put in a room without their consent).
    pub async fn create_room(
        &self,
        caller: &Caller,
        name: &str,
        description: &str,
        is_private: bool,
        member_ids: &[i64],
    ) -> Result<RoomRecord> {
        let owner = user_of(caller)?;
        let name = validate::text("name", name, 100)?;
        if name.is_empty() {
            return Err(DomainError::invalid("name", "must not be empty"));
        }
        let description = validate::body("description", description, 1000)?;
        let member_ids = &validate::ids("member_ids", member_ids, 1000, "user")?;
        let found = self.db.existing_users(member_ids).await?;
        if let Some(missing) = member_ids.iter().find(|id| !found.contains(id)) {
            return Err(DomainError::invalid(
                "member_ids",
                format!("user {missing} does not exist"),
            ));
        }
        let new = NewRoom {
            name: &name,
            description: &description,
            is_private,
            owner_id: owner,
            member_ids,
        };
        let room = self.db.create_room(&new).await?;
        self.publish_membership(owner, room.id, true).await;
        Ok(room)
    }

    /// Joins a public room, or a private one the caller was invited to (accepting the
    /// invitation).
    pub async fn join(&self, caller: &Caller, room_id: i64) -> Result<RoomRecord> {
        let user = user_of(caller)?;
        let room = self.find_room(room_id).await?;
        if room.is_private
            && !self.db.is_member(room_id, user).await?
            && !self.db.is_invited(room_id, user).await?
        {
            return Err(not_found(room_id));
        }
        if self.db.add_member(room_id, user).await? {
            self.analytics.emit(
                "room_joined",
                user,
                vec![("room_id".into(), room_id.to_string())],
            );
            self.publish_activity(room_id, "joined", user, Vec::new())
                .await;
            self.publish_membership(user, room_id, true).await;
        }
        self.find_room(room_id).await
    }

    /// Leaves a room.
    pub async fn leave(&self, caller: &Caller, room_id: i64) -> Result<()> {
        let user = user_of(caller)?;
        self.find_room(room_id).await?;
        if !self.db.remove_member(room_id, user).await? {
            return Err(DomainError::FailedPrecondition(format!(
                "you are not a member of room {room_id}"
            )));
        }
        self.members.forget(room_id, user);
        self.publish_activity(room_id, "left", user, Vec::new())
            .await;
        self.publish_membership(user, room_id, false).await;
        Ok(())
    }

    /// Stores and publishes a message; the author is the caller.
    pub async fn send(&self, caller: &Caller, m: Outgoing) -> Result<MessageRecord> {
        let content_len = m.content.chars().count();
        if content_len == 0 || m.content.trim().is_empty() {
            return Err(DomainError::invalid("content", "must not be empty"));
        }
        if content_len > MAX_CONTENT {
            return Err(DomainError::invalid(
                "content",
                format!("must be at most {MAX_CONTENT} characters"),
            ));
        }
        validate::body_chars("content", &m.content)?;
        let message_type = message_type(&m.message_type)?;
        if m.metadata.len() > MAX_METADATA {
            return Err(DomainError::invalid(
                "metadata",
                format!("must be at most {MAX_METADATA} bytes"),
            ));
        }
        if m.reply_to_id < 0 {
            return Err(DomainError::invalid("reply_to_id", "must not be negative"));
        }
        let author = self.sender(caller, m.room_id).await?;
        let new = NewMessage {
            room_id: m.room_id,
            user_id: author,
            content: m.content,
            message_type,
            metadata: m.metadata,
            reply_to_id: m.reply_to_id,
        };
        let stored = match self.writer.write(new).await? {
            Ok(stored) => stored,
            Err(Rejected::ReplyNotInRoom) => {
                return Err(DomainError::invalid(
                    "reply_to_id",
                    format!("no message {} in room {}", m.reply_to_id, m.room_id),
                ));
            }
            Err(Rejected::NoSuchRoom) => return Err(not_found(m.room_id)),
        };
        self.analytics.emit(
            "message_sent",
            stored.user_id,
            vec![("room_id".into(), stored.room_id.to_string())],
        );
        mentions::notify(&self.db, &self.notifier, &stored);
        Ok(stored)
    }

    /// Relays a typing notice to the room (not stored).
    pub async fn typing(&self, caller: &Caller, room_id: i64) -> Result<()> {
        let user = self.reader(caller, room_id).await?.1;
        self.publish_activity(room_id, "typing", user, Vec::new())
            .await;
        Ok(())
    }

    /// A page of messages, newest first.
    pub async fn messages(
        &self,
        caller: &Caller,
        room_id: i64,
        limit: i32,
        before: i64,
        after: i64,
    ) -> Result<Page> {
        let limit = match limit {
            0 => DEFAULT_LIMIT,
            l if l < 0 => return Err(DomainError::invalid("limit", "must not be negative")),
            l => (l as i64).min(MAX_LIMIT),
        };
        if before < 0 {
            return Err(DomainError::invalid(
                "before_message_id",
                "must not be negative",
            ));
        }
        if after < 0 {
            return Err(DomainError::invalid(
                "after_message_id",
                "must not be negative",
            ));
        }
        let room = self.reader(caller, room_id).await?.0;
        let (messages, has_more) = self.db.messages_page(room_id, before, after, limit).await?;
        Ok(Page {
            messages,
            has_more,
            last_message_id: room.last_message_id,
        })
    }

    /// Stored messages after `after`, then live ones, gap-free, until the caller leaves the room.
    pub async fn message_feed(
        &self,
        caller: &Caller,
        room_id: i64,
        after: i64,
    ) -> Result<impl Stream<Item = Result<MessageRecord>> + Send + 'static + use<>> {
        if after < 0 {
            return Err(DomainError::invalid(
                "last_message_id",
                "must not be negative",
            ));
        }
        let viewer = self.reader(caller, room_id).await?.1;
        let rx = self.hub.subscribe(room_id).await?;
        Ok(feed::room_feed(self.db.clone(), rx, room_id, after, viewer))
    }

    /// The room's activity from now on, until the caller leaves the room.
    pub async fn activity_feed(
        &self,
        caller: &Caller,
        room_id: i64,
    ) -> Result<impl Stream<Item = Activity> + Send + 'static + use<>> {
        let viewer = self.reader(caller, room_id).await?.1;
        let rx = self.hub.subscribe(room_id).await?;
        let events = tokio_stream::wrappers::BroadcastStream::new(rx).filter_map(|e| async move {
            match e {
                Ok(RoomEvent::Activity(a)) => Some((*a).clone()),
                Ok(RoomEvent::Message(m)) => Some(Activity {
                    room_id: m.room_id,
                    kind: "message".into(),
                    user_id: m.user_id,
                    data: m.id.to_string().into_bytes(),
                    at: m.created_at,
                }),
                _ => None,
            }
        });
        // The viewer's own `left` is the last event it sees.
        Ok(futures::stream::unfold(
            (Box::pin(events), false),
            move |(mut events, ended)| async move {
                if ended {
                    return None;
                }
                let a = events.next().await?;
                let ended = feed::left(&a, viewer);
                Some((a, (events, ended)))
            },
        ))
    }

    /// Every new message of every room the caller belongs to, following joins and leaves.
    pub async fn user_feed(
        &self,
        caller: &Caller,
    ) -> Result<impl Stream<Item = Result<MessageRecord>> + Send + 'static + use<>> {
        let user = user_of(caller)?;
        user_feed::start(self.db.clone(), self.bus.clone(), self.hub.clone(), user).await
    }

    async fn find_room(&self, room_id: i64) -> Result<RoomRecord> {
        if room_id <= 0 {
            return Err(DomainError::invalid("room_id", "must be positive"));
        }
        self.db
            .room(room_id)
            .await?
            .ok_or_else(|| not_found(room_id))
    }

    /// The room, if the caller may read it, and the caller's user id (0 for an API key).
    async fn reader(&self, caller: &Caller, room_id: i64) -> Result<(RoomRecord, i64)> {
        let room = self.find_room(room_id).await?;
        match caller {
            Caller::User(u) if self.db.is_member(room_id, u.user_id).await? => {
                Ok((room, u.user_id))
            }
            Caller::User(_) if room.is_private => Err(not_found(room_id)),
            Caller::User(_) => Err(DomainError::denied(format!(
                "you are not a member of room {room_id}"
            ))),
            Caller::ApiKey(_) if caller.is_admin() => Ok((room, 0)),
            Caller::ApiKey(_) => Err(DomainError::denied("reading rooms needs the admin scope")),
        }
    }

    /// The author id for a send into `room_id` (0 for a `chat:write` API key).
    async fn sender(&self, caller: &Caller, room_id: i64) -> Result<i64> {
        match caller {
            Caller::ApiKey(_) if caller.has_scope("chat:write") => {
                self.find_room(room_id).await?;
                Ok(0)
            }
            Caller::ApiKey(_) => Err(DomainError::denied("sending needs the chat:write scope")),
            Caller::User(u) if room_id > 0 && self.members.is_known(room_id, u.user_id) => {
                Ok(u.user_id)
            }
            Caller::User(u) => {
                let epoch = self.members.epoch();
                let user = self.reader(caller, room_id).await?.1;
                self.members.remember(room_id, u.user_id, epoch);
                Ok(user)
            }
        }
    }

    async fn publish_activity(&self, room_id: i64, kind: &str, user_id: i64, data: Vec<u8>) {
        let a = Activity {
            room_id,
            kind: kind.into(),
            user_id,
            data,
            at: now_ms(),
        };
        self.publish(format!("veza.chat.room.{room_id}.activity"), &a)
            .await;
    }

    async fn publish_membership(&self, user_id: i64, room_id: i64, joined: bool) {
        self.publish(membership_subject(user_id), &Membership { room_id, joined })
            .await;
    }

    async fn publish<T: Serialize>(&self, subject: String, value: &T) {
        match serde_json::to_vec(value) {
            Ok(p) => {
                if let Err(e) = self.bus.publish(subject, p.into()).await {
                    tracing::error!(error = %e, "publishing a chat event");
                }
            }
            Err(e) => tracing::error!(error = %e, "encoding a chat event"),
        }
    }

    /// Seeds room `id` named `name` with these members (for `--demo`).
    pub async fn seed_room(&self, id: i64, name: &str, members: &[i64]) -> Result<()> {
        let owner = members.first().copied().unwrap_or(0);
        self.db.ensure_room(id, name, owner).await?;
        for m in members {
            self.db.add_member(id, *m).await?;
        }
        Ok(())
    }
}

fn user_of(caller: &Caller) -> Result<i64> {
    caller
        .user_id()
        .ok_or_else(|| DomainError::denied("this call needs a user, not an API key"))
}

fn message_type(t: &str) -> Result<String> {
    match t {
        "" => Ok("text".into()),
        "typing" => Err(DomainError::invalid(
            "message_type",
            "typing notices go through ChatStream and are not stored",
        )),
        t if t.len() > 32
            || !t
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c)) =>
        {
            Err(DomainError::invalid(
                "message_type",
                "at most 32 of [A-Za-z0-9_.-]",
            ))
        }
        t => Ok(t.into()),
    }
}

fn not_found(room_id: i64) -> DomainError {
    DomainError::NotFound(format!("room {room_id} not found"))
}

/// Where a room's stored messages are published.
pub fn message_subject(room_id: i64) -> String {
    format!("veza.chat.room.{room_id}.message")
}

/// Where a user's membership changes are published.
pub fn membership_subject(user_id: i64) -> String {
    format!("veza.chat.user.{user_id}.membership")
}

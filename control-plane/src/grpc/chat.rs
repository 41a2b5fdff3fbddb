//! `veza.chat.ChatService`: protobuf in, domain call, protobuf out.

use std::sync::Arc;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use veza_proto::chat::{self as pb, chat_service_server::ChatService};
use veza_storage::{MessageRecord, RoomRecord};

use super::{caller, timestamp};
use crate::{
    domain::{
        DomainError,
        chat::{Activity, Chat, Outgoing},
    },
    shutdown::{BoxStream, Shutdown, guard},
};

/// The Chat service.
pub struct ChatApi {
    chat: Arc<Chat>,
    shutdown: Shutdown,
}

impl ChatApi {
    /// The service over the chat domain.
    pub fn new(chat: Arc<Chat>, shutdown: Shutdown) -> ChatApi {
        ChatApi { chat, shutdown }
    }
}

#[tonic::async_trait]
impl ChatService for ChatApi {
    async fn send_message(
        &self,
        req: Request<pb::SendMessageRequest>,
    ) -> Result<Response<pb::SendMessageResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let out = Outgoing {
            room_id: r.room_id,
            content: r.content,
            message_type: r.message_type,
            metadata: r.metadata,
            reply_to_id: r.reply_to_id,
        };
        let m = self.chat.send(&who, out).await?;
        Ok(Response::new(pb::SendMessageResponse {
            success: true,
            message: Some(message(&m)),
            error_message: String::new(),
        }))
    }

    async fn get_messages(
        &self,
        req: Request<pb::GetMessagesRequest>,
    ) -> Result<Response<pb::GetMessagesResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let page = self
            .chat
            .messages(
                &who,
                r.room_id,
                r.limit,
                r.before_message_id,
                r.after_message_id,
            )
            .await?;
        Ok(Response::new(pb::GetMessagesResponse {
            messages: page.messages.iter().map(message).collect(),
            has_more: page.has_more,
            last_message_id: page.last_message_id,
        }))
    }

    async fn create_room(
        &self,
        req: Request<pb::CreateRoomRequest>,
    ) -> Result<Response<pb::CreateRoomResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let room = self
            .chat
            .create_room(&who, &r.name, &r.description, r.is_private, &r.member_ids)
            .await?;
        Ok(Response::new(pb::CreateRoomResponse {
            success: true,
            room: Some(room_pb(&room)),
        }))
    }

    async fn join_room(
        &self,
        req: Request<pb::JoinRoomRequest>,
    ) -> Result<Response<pb::JoinRoomResponse>, Status> {
        let who = caller(&req)?;
        let room = self.chat.join(&who, req.into_inner().room_id).await?;
        Ok(Response::new(pb::JoinRoomResponse {
            success: true,
            room: Some(room_pb(&room)),
        }))
    }

    async fn leave_room(
        &self,
        req: Request<pb::LeaveRoomRequest>,
    ) -> Result<Response<pb::LeaveRoomResponse>, Status> {
        let who = caller(&req)?;
        self.chat.leave(&who, req.into_inner().room_id).await?;
        Ok(Response::new(pb::LeaveRoomResponse { success: true }))
    }

    async fn stream_messages(
        &self,
        req: Request<pb::StreamMessagesRequest>,
    ) -> Result<Response<BoxStream<pb::ChatMessage>>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let feed = self
            .chat
            .message_feed(&who, r.room_id, r.last_message_id)
            .await?;
        let out = feed.map(|m| m.map(into_message).map_err(Status::from));
        Ok(Response::new(guard(out, self.shutdown.clone())))
    }

    async fn stream_room_activity(
        &self,
        req: Request<pb::StreamRoomActivityRequest>,
    ) -> Result<Response<BoxStream<pb::RoomActivity>>, Status> {
        let who = caller(&req)?;
        let feed = self
            .chat
            .activity_feed(&who, req.into_inner().room_id)
            .await?;
        Ok(Response::new(guard(
            feed.map(|a| Ok(activity(a))),
            self.shutdown.clone(),
        )))
    }

    async fn chat_stream(
        &self,
        req: Request<Streaming<pb::ChatMessage>>,
    ) -> Result<Response<BoxStream<pb::ChatMessage>>, Status> {
        let who = caller(&req)?;
        let inbound = req.into_inner();
        let feed = self.chat.user_feed(&who).await?;
        let (errors_tx, errors_rx) = mpsc::channel(1);
        tokio::spawn(relay_inbound(self.chat.clone(), who, inbound, errors_tx));
        let out = feed.map(|m| m.map(into_message).map_err(Status::from));
        let merged = futures::stream::select(out, ReceiverStream::new(errors_rx).map(Err));
        Ok(Response::new(guard(merged, self.shutdown.clone())))
    }
}

/// Sends what the client writes on a `ChatStream`; the first refusal ends the stream with its
/// status. Stops as soon as the response side is gone (client left, or server draining).
async fn relay_inbound(
    chat: Arc<Chat>,
    who: crate::caller::Caller,
    mut inbound: Streaming<pb::ChatMessage>,
    errors: mpsc::Sender<Status>,
) {
    loop {
        let m = tokio::select! {
            m = inbound.next() => match m {
                Some(Ok(m)) => m,
                _ => return,
            },
            _ = errors.closed() => return,
        };
        let result = if m.message_type == "typing" {
            chat.typing(&who, m.room_id).await
        } else if m.message_id != 0 {
            Err(DomainError::invalid(
                "message_id",
                "must be 0: the server assigns ids",
            ))
        } else {
            let out = Outgoing {
                room_id: m.room_id,
                content: m.content,
                message_type: m.message_type,
                metadata: m.metadata,
                reply_to_id: m.reply_to_id,
            };
            chat.send(&who, out).await.map(|_| ())
        };
        if let Err(e) = result {
            let _ = errors.send(e.into()).await;
            return;
        }
    }
}

fn message(m: &MessageRecord) -> pb::ChatMessage {
    pb::ChatMessage {
        message_id: m.id,
        room_id: m.room_id,
        user_id: m.user_id,
        content: m.content.clone(),
        message_type: m.message_type.clone(),
        metadata: m.metadata.clone(),
        reply_to_id: m.reply_to_id,
        created_at: timestamp(m.created_at),
        updated_at: timestamp(m.updated_at),
    }
}

/// [`message`] without copying: live feeds own their records.
fn into_message(m: MessageRecord) -> pb::ChatMessage {
    pb::ChatMessage {
        message_id: m.id,
        room_id: m.room_id,
        user_id: m.user_id,
        content: m.content,
        message_type: m.message_type,
        metadata: m.metadata,
        reply_to_id: m.reply_to_id,
        created_at: timestamp(m.created_at),
        updated_at: timestamp(m.updated_at),
    }
}

fn room_pb(r: &RoomRecord) -> pb::Room {
    pb::Room {
        room_id: r.id,
        name: r.name.clone(),
        description: r.description.clone(),
        is_private: r.is_private,
        owner_id: r.owner_id,
        member_count: r.member_count as i32,
        created_at: timestamp(r.created_at),
    }
}

fn activity(a: Activity) -> pb::RoomActivity {
    pb::RoomActivity {
        room_id: a.room_id,
        activity_type: a.kind,
        user_id: a.user_id,
        data: a.data,
        timestamp: timestamp(a.at),
    }
}

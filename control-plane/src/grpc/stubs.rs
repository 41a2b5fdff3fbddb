//! Services whose RPCs later work implements: registered now, answering `UNIMPLEMENTED`
//! (after authentication) until then.

use veza_proto::{chat, stream};

/// Chat, until implemented.
pub struct ChatStub;
/// Stream, until implemented.
pub struct StreamStub;

#[tonic::async_trait]
impl chat::chat_service_server::ChatService for ChatStub {}
#[tonic::async_trait]
impl stream::stream_service_server::StreamService for StreamStub {}

//! Services whose RPCs later work implements: registered now, answering `UNIMPLEMENTED`
//! (after authentication) until then.

use veza_proto::stream;

/// Stream, until implemented.
pub struct StreamStub;

#[tonic::async_trait]
impl stream::stream_service_server::StreamService for StreamStub {}

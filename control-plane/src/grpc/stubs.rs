//! Services whose RPCs later work implements: registered now, answering `UNIMPLEMENTED`
//! (after authentication) until then.

use veza_proto::{analytics, chat, notification, stream};

/// Chat, until implemented.
pub struct ChatStub;
/// Stream, until implemented.
pub struct StreamStub;
/// Analytics, until implemented.
pub struct AnalyticsStub;
/// Notification, until implemented.
pub struct NotificationStub;

#[tonic::async_trait]
impl chat::chat_service_server::ChatService for ChatStub {}
#[tonic::async_trait]
impl stream::stream_service_server::StreamService for StreamStub {}
#[tonic::async_trait]
impl analytics::analytics_service_server::AnalyticsService for AnalyticsStub {}
#[tonic::async_trait]
impl notification::notification_service_server::NotificationService for NotificationStub {}

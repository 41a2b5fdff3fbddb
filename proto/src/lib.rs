//! Veza's gRPC contract: the messages and service stubs generated from `proto/veza.proto`.

#![allow(clippy::all, missing_docs)]

pub mod common {
    tonic::include_proto!("veza.common");
}
pub mod auth {
    tonic::include_proto!("veza.auth");
}
pub mod chat {
    tonic::include_proto!("veza.chat");
}
pub mod stream {
    tonic::include_proto!("veza.stream");
}
pub mod analytics {
    tonic::include_proto!("veza.analytics");
}
pub mod notification {
    tonic::include_proto!("veza.notification");
}

pub mod codec;

/// The encoded `FileDescriptorSet` of the whole API, for server reflection.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/veza_descriptor.bin"));

/// Fully qualified names of the five Veza services, as they appear on the wire.
pub const SERVICE_NAMES: [&str; 5] = [
    "veza.auth.AuthService",
    "veza.chat.ChatService",
    "veza.stream.StreamService",
    "veza.analytics.AnalyticsService",
    "veza.notification.NotificationService",
];

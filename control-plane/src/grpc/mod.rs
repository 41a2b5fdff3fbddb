//! The gRPC edge: one file per service turning protobuf into domain calls and back, and the one
//! mapping from domain errors to `tonic::Status`.

pub mod analytics;
pub mod auth;
pub mod catch_panic;
pub mod chat;
pub mod direct;
pub mod error_log;
pub mod health;
pub mod live_audio;
pub mod live_frame;
pub mod metrics_layer;
pub mod notification;
pub mod rate_limit;
pub mod status;
pub mod stream;
pub mod trailers;

use tonic::{Request, Status};

use crate::caller::Caller;

/// The caller the auth layer attached to this request.
pub fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions()
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| Status::unauthenticated("missing credentials"))
}

/// A protobuf timestamp from milliseconds since the epoch (`None` for 0: unset).
pub fn timestamp(ms: i64) -> Option<prost_types::Timestamp> {
    (ms > 0).then(|| timestamp_at(ms))
}

/// A protobuf timestamp from milliseconds, the epoch and negative times included.
pub fn timestamp_at(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: ms.div_euclid(1000),
        nanos: (ms.rem_euclid(1000) * 1_000_000) as i32,
    }
}

/// What the gRPC port knows of the connection a request came on (plain or TLS).
pub(crate) fn conn_info(ext: &http::Extensions) -> Option<&direct::ConnInfo> {
    ext.get::<direct::ConnInfo>().or_else(|| {
        ext.get::<tonic::transport::server::TlsConnectInfo<direct::ConnInfo>>()
            .map(|t| t.get_ref())
    })
}

/// The client address as the transport saw it.
pub fn peer_ip<T>(req: &Request<T>) -> String {
    conn_info(req.extensions())
        .and_then(|c| c.tcp.remote_addr)
        .or_else(|| req.remote_addr())
        .map(|a| a.ip().to_string())
        .unwrap_or_default()
}

//! Connect error bodies: the code names, their HTTP statuses, and details as `{type, value}`.

use base64::Engine;
use http::StatusCode;
use prost::Message;
use serde_json::{Value, json};
use tonic::{Code, Status};

/// The Connect name of a gRPC code (`not_found`, `unauthenticated`, …).
pub fn code_name(code: Code) -> &'static str {
    match code {
        Code::Ok => "ok",
        Code::Cancelled => "canceled",
        Code::Unknown => "unknown",
        Code::InvalidArgument => "invalid_argument",
        Code::DeadlineExceeded => "deadline_exceeded",
        Code::NotFound => "not_found",
        Code::AlreadyExists => "already_exists",
        Code::PermissionDenied => "permission_denied",
        Code::ResourceExhausted => "resource_exhausted",
        Code::FailedPrecondition => "failed_precondition",
        Code::Aborted => "aborted",
        Code::OutOfRange => "out_of_range",
        Code::Unimplemented => "unimplemented",
        Code::Internal => "internal",
        Code::Unavailable => "unavailable",
        Code::DataLoss => "data_loss",
        Code::Unauthenticated => "unauthenticated",
    }
}

/// The HTTP status a unary Connect error carries (Connect protocol, "Error Codes").
pub fn http_status(code: Code) -> StatusCode {
    let n = match code {
        Code::Ok => 200,
        Code::Cancelled => 499,
        Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => 400,
        Code::Unauthenticated => 401,
        Code::PermissionDenied => 403,
        Code::NotFound => 404,
        Code::AlreadyExists | Code::Aborted => 409,
        Code::ResourceExhausted => 429,
        Code::Unimplemented => 501,
        Code::Unavailable => 503,
        Code::DeadlineExceeded => 504,
        Code::Unknown | Code::Internal | Code::DataLoss => 500,
    };
    StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// `{"code": …, "message": …, "details": [{"type": …, "value": …}]}`.
pub fn error_json(status: &Status) -> Value {
    let mut error = json!({ "code": code_name(status.code()) });
    if !status.message().is_empty() {
        error["message"] = status.message().into();
    }
    let details = details(status.details());
    if !details.is_empty() {
        error["details"] = details.into();
    }
    error
}

/// The `google.protobuf.Any` entries of a `grpc-status-details-bin` (a `google.rpc.Status`).
fn details(bin: &[u8]) -> Vec<Value> {
    if bin.is_empty() {
        return Vec::new();
    }
    let Ok(rpc) = tonic_types::pb::Status::decode(bin) else {
        return Vec::new();
    };
    let b64 = base64::engine::general_purpose::STANDARD_NO_PAD;
    rpc.details
        .iter()
        .map(|any| {
            let name = any.type_url.rsplit('/').next().unwrap_or(&any.type_url);
            json!({ "type": name, "value": b64.encode(&any.value) })
        })
        .collect()
}

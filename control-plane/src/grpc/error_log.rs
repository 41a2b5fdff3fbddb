//! The one log line of every call that ends with a non-OK status: method, code, message, caller
//! and peer, at a level saying whose fault it was (`docs/ERRORS.md`). Written by
//! [`MetricsLayer`](super::metrics_layer::MetricsLayer) when it records the call's outcome, so
//! each failure is logged exactly once, whether its status came in the headers or the trailers.

use std::{fmt, net::SocketAddr};

use tracing::Level;

use crate::caller::Caller;

/// Who made a call, as the log names it. The auth layer puts it in the response extensions of
/// the calls it authenticated that failed at once or that stream (their status may come later,
/// in the trailers); successful unary calls carry nothing.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CallerTag {
    User(i64),
    ApiKey(i64),
}

impl From<&Caller> for CallerTag {
    fn from(c: &Caller) -> CallerTag {
        match c {
            Caller::User(u) => CallerTag::User(u.user_id),
            Caller::ApiKey(k) => CallerTag::ApiKey(k.key_id),
        }
    }
}

impl fmt::Display for CallerTag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CallerTag::User(id) => write!(f, "user:{id}"),
            CallerTag::ApiKey(id) => write!(f, "api_key:{id}"),
        }
    }
}

/// The level of a failed call, by its `grpc_code` name: the server's faults at `error`,
/// `Unavailable` (a backend down, or the server draining) at `warn`, the client's at `info`.
pub fn level(code: &str) -> Level {
    match code {
        "Unknown" | "Internal" | "DataLoss" => Level::ERROR,
        "Unavailable" => Level::WARN,
        _ => Level::INFO,
    }
}

/// One failed call.
pub(crate) struct Failure<'a> {
    /// The path, `/veza.chat.ChatService/JoinRoom`.
    pub method: &'a dyn fmt::Display,
    /// The `grpc_code` name, `NotFound`.
    pub code: &'static str,
    /// The status message sent to the client (ours, or tonic's: never a credential).
    pub message: &'a str,
    /// `None` when the call was not authenticated (a public method, refused credentials) or
    /// ended before it was (the server's default deadline).
    pub caller: Option<CallerTag>,
    pub peer: Option<SocketAddr>,
}

/// Writes the line of `f`.
pub(crate) fn log(f: &Failure<'_>) {
    let caller = Field(f.caller);
    let peer = Field(f.peer.map(|a| a.ip()));
    macro_rules! emit {
        ($lvl:ident) => {
            tracing::$lvl!(
                method = %f.method,
                code = f.code,
                status_message = f.message,
                caller = %caller,
                peer = %peer,
                "call failed"
            )
        };
    }
    match level(f.code) {
        Level::ERROR => emit!(error),
        Level::WARN => emit!(warn),
        _ => emit!(info),
    }
}

/// An optional field, `none` when absent.
struct Field<T>(Option<T>);

impl<T: fmt::Display> fmt::Display for Field<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.0 {
            Some(v) => v.fmt(f),
            None => f.write_str("none"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_say_whose_fault_it_was() {
        for code in ["Internal", "Unknown", "DataLoss"] {
            assert_eq!(level(code), Level::ERROR, "{code}");
        }
        assert_eq!(level("Unavailable"), Level::WARN);
        for code in [
            "Canceled",
            "InvalidArgument",
            "DeadlineExceeded",
            "NotFound",
            "AlreadyExists",
            "PermissionDenied",
            "ResourceExhausted",
            "FailedPrecondition",
            "Aborted",
            "OutOfRange",
            "Unimplemented",
            "Unauthenticated",
        ] {
            assert_eq!(level(code), Level::INFO, "{code}");
        }
    }

    #[test]
    fn callers_are_named_by_kind_and_id() {
        assert_eq!(CallerTag::User(3).to_string(), "user:3");
        assert_eq!(CallerTag::ApiKey(7).to_string(), "api_key:7");
        assert_eq!(Field::<CallerTag>(None).to_string(), "none");
    }
}

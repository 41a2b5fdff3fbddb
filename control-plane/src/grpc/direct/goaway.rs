//! Which clients may be sent a GOAWAY while their live stream plays on: the condition for
//! detaching a connection from hyper (see [`conn`](super::conn)).
//!
//! grpc-go, gRPC C-core (Python, C++, Ruby, …), grpc-java and browsers move their next calls to
//! a new connection when a GOAWAY arrives with a stream still open. Clients on hyper's HTTP/2
//! client (tonic's channel among them) do not notice the GOAWAY until their next call, which
//! they then fail with `CANCELLED` before reconnecting (hyperium/tonic#2185); a call waiting
//! behind the stream is the common case for them, so they are left on hyper unless the call
//! says its connection carries nothing else.

use http::HeaderMap;

/// Metadata by which a listener says its connection carries only this stream, so it may be
/// detached whatever the client library (`veza listen` sends it).
pub const DEDICATED: &str = "x-veza-connection";

/// `user-agent` tokens of clients that fail the first call after a GOAWAY.
const FAILS_AFTER_GOAWAY: [&str; 3] = ["tonic/", "hyper/", "connect-rust/"];

/// Whether the caller's connection may be detached once its live stream is alone on it.
pub fn may_detach(headers: &HeaderMap) -> bool {
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if text(DEDICATED).is_some_and(|v| v.trim().eq_ignore_ascii_case("dedicated")) {
        return true;
    }
    !text("user-agent").is_some_and(|ua| FAILS_AFTER_GOAWAY.iter().any(|t| ua.contains(t)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| (http::HeaderName::from_static(k), v.parse().unwrap()))
            .collect()
    }

    #[test]
    fn hyper_clients_stay_unless_dedicated() {
        assert!(may_detach(&headers(&[])), "no user agent");
        assert!(may_detach(&headers(&[("user-agent", "grpc-go/1.64.0")])));
        assert!(may_detach(&headers(&[(
            "user-agent",
            "grpc-python/1.66.1 grpc-c/43.0.0 (linux; chttp2)"
        )])));
        assert!(!may_detach(&headers(&[("user-agent", "tonic/0.14.9")])));
        assert!(!may_detach(&headers(&[(
            "user-agent",
            "my-app/2 tonic/0.14.9"
        )])));
        assert!(may_detach(&headers(&[
            ("user-agent", "tonic/0.14.9"),
            ("x-veza-connection", "Dedicated"),
        ])));
        assert!(!may_detach(&headers(&[
            ("user-agent", "tonic/0.14.9"),
            ("x-veza-connection", "shared"),
        ])));
    }
}

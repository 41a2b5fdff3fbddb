//! CORS for browsers on other origins (`--cors-origins`, SPEC §11): preflights for gRPC-Web and
//! Connect, and the status headers exposed to scripts.

use std::time::Duration;

use http::{HeaderName, HeaderValue, Method};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// Request headers a browser may send: auth, gRPC-Web and Connect protocol headers, metadata.
const ALLOWED: &[&str] = &[
    "authorization",
    "content-type",
    "x-api-key",
    "x-country",
    "x-grpc-web",
    "x-user-agent",
    "grpc-timeout",
    "connect-protocol-version",
    "connect-timeout-ms",
    "connect-accept-encoding",
    "connect-content-encoding",
    "range",
];

/// Response headers scripts may read: the gRPC status (gRPC-Web puts it in headers for
/// trailers-only answers), Connect's encodings, and the media URLs' ranges.
const EXPOSED: &[&str] = &[
    "grpc-status",
    "grpc-message",
    "grpc-status-details-bin",
    "grpc-encoding",
    "connect-content-encoding",
    "content-range",
    "accept-ranges",
    "retry-after",
];

/// The layer for `origins` (`*` = any), or `None` when cross-origin calls are off.
pub fn layer(origins: &[String]) -> anyhow::Result<Option<CorsLayer>> {
    if origins.is_empty() {
        return Ok(None);
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        let list = origins
            .iter()
            .map(|o| HeaderValue::from_str(o.trim_end_matches('/')))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| anyhow::anyhow!("--cors-origins: {e}"))?;
        AllowOrigin::list(list)
    };
    Ok(Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::HEAD])
            .allow_headers(names(ALLOWED))
            .expose_headers(names(EXPOSED))
            .max_age(Duration::from_secs(2 * 3600)),
    ))
}

fn names(list: &[&'static str]) -> Vec<HeaderName> {
    list.iter().map(|h| HeaderName::from_static(h)).collect()
}

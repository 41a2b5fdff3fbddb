//! `GET /live/{id}` through hyper's ordinary response body: the reference path (`--live-direct
//! false`) and the path of a live request that is not the first on its connection. The direct
//! path is in [`super::icecast`]; both answer with the same statuses.

use axum::{
    body::Body,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::{IntoResponse, Response},
};
use futures::StreamExt;

use super::{HttpState, Signed};
use crate::domain::{DomainError, Media};

/// The headers of a live listener's answer (besides the status line).
pub const HEADERS: [(&str, &str); 3] = [
    ("content-type", "audio/ogg"),
    ("cache-control", "no-cache, no-store"),
    ("x-content-type-options", "nosniff"),
];

/// A live listener served from its feed of shared pages.
pub async fn get(
    State(s): State<HttpState>,
    Path(id): Path<String>,
    Query(q): Query<Signed>,
    headers: HeaderMap,
) -> Response {
    let Ok(id) = id.parse::<i64>() else {
        return (StatusCode::NOT_FOUND, "no such live stream\n").into_response();
    };
    let signed = signed(&s.media, id, q.exp, q.sig.as_deref());
    let country = headers.get("x-country").and_then(|v| v.to_str().ok());
    let feed = match s.live.admit_http(id, signed, country).await {
        Ok(a) => a.into_feed(),
        Err(e) => Err(e),
    };
    let feed = match feed {
        Ok(f) => f,
        Err(e) => return refusal(&e).into_response(),
    };
    s.metrics.served("http", "hyper");
    let body = Body::from_stream(feed.map(|p| Ok::<_, std::convert::Infallible>(p.data.clone())));
    let mut r = Response::new(body);
    for (k, v) in HEADERS {
        r.headers_mut()
            .insert(k, header::HeaderValue::from_static(v));
    }
    r
}

/// Whether `exp` and `sig` are a valid signature of media `id`.
pub fn signed(media: &Media, id: i64, exp: Option<i64>, sig: Option<&str>) -> bool {
    match (exp, sig) {
        (Some(exp), Some(sig)) => media.signer().verify(id, exp, sig),
        _ => false,
    }
}

/// The HTTP status and message of a refused live request.
pub fn refusal(e: &DomainError) -> (StatusCode, String) {
    let code = match e {
        DomainError::NotFound(_) | DomainError::FailedPrecondition(_) => StatusCode::NOT_FOUND,
        DomainError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
        // Icecast answers 403 to a second source on a mount.
        DomainError::PermissionDenied(_) | DomainError::AlreadyExists { .. } => {
            StatusCode::FORBIDDEN
        }
        DomainError::InvalidArgument { .. } => StatusCode::BAD_REQUEST,
        DomainError::ResourceExhausted(_) | DomainError::Unavailable(_) => {
            StatusCode::SERVICE_UNAVAILABLE
        }
        DomainError::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
        DomainError::Internal(err) => {
            tracing::error!(error = %err, "live over HTTP");
            return (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n".into());
        }
    };
    (code, format!("{e}\n"))
}

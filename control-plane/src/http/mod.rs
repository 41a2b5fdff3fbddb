//! The plain HTTP port: `/healthz`, `/metrics`, `/.well-known/jwks.json`, and the signed media
//! URLs `/media/<id>/<file>?exp=…&sig=…` (audio with Range requests, waveform JSON and `.dat`),
//! and live streams for plain HTTP players and Icecast sources at `/live/<id>` (SPEC §12).

mod framing;
pub mod icecast;
mod keeper;
mod live;
mod raw;
mod sink;
mod source;

use std::sync::Arc;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use veza_storage::Db;

use crate::{
    auth::Authenticator,
    domain::{Media, live::Live},
    metrics::Metrics,
};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub db: Db,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
    pub media: Media,
    pub live: Live,
}

/// The HTTP routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/media/{id}/{file}", get(media_file))
        .route("/live/{id}", get(live::get))
        .with_state(state)
}

async fn healthz(State(s): State<HttpState>) -> impl IntoResponse {
    match s.db.ping().await {
        Ok(()) => (StatusCode::OK, "ok\n"),
        Err(e) => {
            tracing::error!(error = %e, "health check: database");
            (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n")
        }
    }
}

/// Prometheus text 0.0.4, or OpenMetrics text when the scraper asks for it.
async fn metrics(State(s): State<HttpState>, headers: axum::http::HeaderMap) -> impl IntoResponse {
    let openmetrics = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("application/openmetrics-text"));
    let (content_type, body) = if openmetrics {
        (
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
            s.metrics.render_openmetrics(),
        )
    } else {
        (
            "text/plain; version=0.0.4; charset=utf-8",
            s.metrics.render(),
        )
    };
    ([(axum::http::header::CONTENT_TYPE, content_type)], body)
}

async fn jwks(State(s): State<HttpState>) -> impl IntoResponse {
    Json(s.auth.tokens.jwks().clone())
}

/// The signature of a media URL.
#[derive(serde::Deserialize)]
pub(crate) struct Signed {
    pub exp: Option<i64>,
    pub sig: Option<String>,
}

/// `audio.opus` (highest rendition), `<kbps>k.opus`, `waveform.json`, `waveform.dat`.
async fn media_file(
    State(s): State<HttpState>,
    axum::extract::Path((id, file)): axum::extract::Path<(i64, String)>,
    axum::extract::Query(q): axum::extract::Query<Signed>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::http::header;
    let (Some(exp), Some(sig)) = (q.exp, q.sig) else {
        return (StatusCode::FORBIDDEN, "missing signature\n").into_response();
    };
    if !s.media.signer().verify(id, exp, &sig) {
        return (StatusCode::FORBIDDEN, "invalid or expired signature\n").into_response();
    }
    let result = match file.as_str() {
        "waveform.json" => s
            .media
            .file(id, "waveform.json")
            .await
            .map(|b| ([(header::CONTENT_TYPE, "application/json")], b).into_response()),
        "waveform.dat" => s
            .media
            .file(id, "waveform.dat")
            .await
            .map(|b| ([(header::CONTENT_TYPE, "application/octet-stream")], b).into_response()),
        name if name.ends_with(".opus") => {
            let kbps = match name.trim_end_matches(".opus") {
                "audio" => Some(0),
                k => k.strip_suffix('k').and_then(|k| k.parse::<u32>().ok()),
            };
            let Some(kbps) = kbps else {
                return (StatusCode::NOT_FOUND, "no such file\n").into_response();
            };
            match s.media.rendition(id, kbps).await {
                Ok(r) => Ok(ranged(r.data.clone(), headers.get(header::RANGE))),
                Err(e) => Err(e),
            }
        }
        _ => return (StatusCode::NOT_FOUND, "no such file\n").into_response(),
    };
    match result {
        Ok(r) => r,
        Err(crate::domain::DomainError::NotFound(_)) => {
            (StatusCode::NOT_FOUND, "not found\n").into_response()
        }
        Err(crate::domain::DomainError::FailedPrecondition(m)) => {
            (StatusCode::NOT_FOUND, format!("{m}\n")).into_response()
        }
        Err(e) => {
            tracing::error!(error = %e, media_id = id, "media URL");
            (StatusCode::INTERNAL_SERVER_ERROR, "internal error\n").into_response()
        }
    }
}

/// A whole-file 200 or a single-range 206 (`bytes=a-b`, `a-`, `-n`); 416 when unsatisfiable.
fn ranged(data: bytes::Bytes, range: Option<&axum::http::HeaderValue>) -> axum::response::Response {
    use axum::http::header;
    let len = data.len() as u64;
    let base = [
        (header::CONTENT_TYPE, "audio/ogg".to_string()),
        (header::ACCEPT_RANGES, "bytes".to_string()),
    ];
    let Some(range) = range.and_then(|r| r.to_str().ok()) else {
        return (base, data).into_response();
    };
    match parse_range(range, len) {
        Some((start, end)) => {
            let body = data.slice(start as usize..=end as usize);
            (
                StatusCode::PARTIAL_CONTENT,
                base,
                [(header::CONTENT_RANGE, format!("bytes {start}-{end}/{len}"))],
                body,
            )
                .into_response()
        }
        None => (
            StatusCode::RANGE_NOT_SATISFIABLE,
            [(header::CONTENT_RANGE, format!("bytes */{len}"))],
        )
            .into_response(),
    }
}

/// The first range of a `Range: bytes=…` header as inclusive (start, end) within `len`.
fn parse_range(header: &str, len: u64) -> Option<(u64, u64)> {
    let spec = header.trim().strip_prefix("bytes=")?;
    let first = spec.split(',').next()?.trim();
    let (a, b) = first.split_once('-')?;
    let (a, b) = (a.trim(), b.trim());
    if len == 0 {
        return None;
    }
    let (start, end) = if a.is_empty() {
        let n: u64 = b.parse().ok()?;
        if n == 0 {
            return None;
        }
        (len.saturating_sub(n), len - 1)
    } else {
        let start: u64 = a.parse().ok()?;
        let end = if b.is_empty() {
            len - 1
        } else {
            b.parse::<u64>().ok()?.min(len - 1)
        };
        (start, end)
    };
    (start <= end && start < len).then_some((start, end))
}

#[cfg(test)]
mod tests {
    use super::parse_range;

    #[test]
    fn ranges() {
        assert_eq!(parse_range("bytes=0-9", 100), Some((0, 9)));
        assert_eq!(parse_range("bytes=90-", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=-10", 100), Some((90, 99)));
        assert_eq!(parse_range("bytes=50-500", 100), Some((50, 99)));
        assert_eq!(parse_range("bytes=100-", 100), None);
        assert_eq!(parse_range("bytes=9-1", 100), None);
        assert_eq!(parse_range("items=0-1", 100), None);
        assert_eq!(parse_range("bytes=x-1", 100), None);
    }
}

//! The plain HTTP port: `/healthz`, `/metrics`, `/.well-known/jwks.json` (media URLs come later).

use std::sync::Arc;

use axum::{Json, Router, extract::State, http::StatusCode, response::IntoResponse, routing::get};
use veza_storage::Db;

use crate::{auth::Authenticator, metrics::Metrics};

/// What the HTTP handlers share.
#[derive(Clone)]
pub struct HttpState {
    pub db: Db,
    pub auth: Arc<Authenticator>,
    pub metrics: Arc<Metrics>,
}

/// The HTTP routes.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/.well-known/jwks.json", get(jwks))
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
        ("application/openmetrics-text; version=1.0.0; charset=utf-8", s.metrics.render_openmetrics())
    } else {
        ("text/plain; version=0.0.4; charset=utf-8", s.metrics.render())
    };
    ([(axum::http::header::CONTENT_TYPE, content_type)], body)
}

async fn jwks(State(s): State<HttpState>) -> impl IntoResponse {
    Json(s.auth.tokens.jwks().clone())
}

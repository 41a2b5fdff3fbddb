//! `veza.analytics.AnalyticsService`: protobuf in, domain call, protobuf out; metrics come from
//! the instance's one registry (the same figures as `/metrics`).

use std::{sync::Arc, time::Duration};

use futures::StreamExt;
use tonic::{Request, Response, Status};
use veza_proto::analytics::{self as pb, analytics_service_server::AnalyticsService};
use veza_storage::{EventRecord, now_ms};

use super::{caller, timestamp};
use crate::{
    domain::{
        Analytics, DomainError,
        analytics::{AnalyticsQuery, NewEvent},
    },
    metrics::{Metrics, Sample},
    shutdown::{BoxStream, Shutdown, guard},
};

/// Default and bounds of `StreamMetrics.interval_ms`.
const DEFAULT_INTERVAL_MS: i32 = 1000;
const MIN_INTERVAL_MS: i32 = 100;
const MAX_INTERVAL_MS: i32 = 3_600_000;

/// The Analytics service.
pub struct AnalyticsApi {
    analytics: Analytics,
    metrics: Arc<Metrics>,
    shutdown: Shutdown,
}

impl AnalyticsApi {
    /// The service over the analytics pipeline and the metrics registry.
    pub fn new(analytics: Analytics, metrics: Arc<Metrics>, shutdown: Shutdown) -> AnalyticsApi {
        AnalyticsApi {
            analytics,
            metrics,
            shutdown,
        }
    }
}

#[tonic::async_trait]
impl AnalyticsService for AnalyticsApi {
    async fn track_event(
        &self,
        req: Request<pb::TrackEventRequest>,
    ) -> Result<Response<pb::TrackEventResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let timestamp = r
            .timestamp
            .as_ref()
            .map(|t| millis("timestamp", t))
            .transpose()?;
        let event = NewEvent {
            event_type: r.event_type,
            user_id: r.user_id,
            properties: r.properties.into_iter().collect(),
            timestamp,
            source: r.source,
        };
        let id = self.analytics.track(&who, event)?;
        Ok(Response::new(pb::TrackEventResponse {
            success: true,
            event_id: id.to_string(),
        }))
    }

    async fn get_analytics(
        &self,
        req: Request<pb::GetAnalyticsRequest>,
    ) -> Result<Response<pb::GetAnalyticsResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let query = AnalyticsQuery {
            event_type: r.event_type,
            from: r.from.as_ref().map(|t| millis("from", t)).transpose()?,
            to: r.to.as_ref().map(|t| millis("to", t)).transpose()?,
            interval_seconds: r.interval_seconds,
            group_by: r.group_by,
        };
        let buckets = self.analytics.buckets(&who, query).await?;
        let total_count = buckets.iter().map(|b| b.count).sum();
        Ok(Response::new(pb::GetAnalyticsResponse {
            buckets: buckets
                .into_iter()
                .map(|b| pb::AnalyticsBucket {
                    start: Some(super::timestamp_at(b.start)),
                    end: Some(super::timestamp_at(b.end)),
                    count: b.count,
                    unique_users: b.unique_users,
                    group: b.group,
                })
                .collect(),
            total_count,
        }))
    }

    async fn get_metrics(
        &self,
        req: Request<pb::GetMetricsRequest>,
    ) -> Result<Response<pb::GetMetricsResponse>, Status> {
        let who = caller(&req)?;
        self.analytics.require_read(&who)?;
        let names = check_names(req.into_inner().names)?;
        Ok(Response::new(pb::GetMetricsResponse {
            metrics: metric_data(&self.metrics, &names),
        }))
    }

    async fn stream_metrics(
        &self,
        req: Request<pb::StreamMetricsRequest>,
    ) -> Result<Response<BoxStream<pb::MetricData>>, Status> {
        let who = caller(&req)?;
        self.analytics.require_read(&who)?;
        let r = req.into_inner();
        let interval = match r.interval_ms {
            0 => DEFAULT_INTERVAL_MS,
            ms if (MIN_INTERVAL_MS..=MAX_INTERVAL_MS).contains(&ms) => ms,
            _ => {
                return Err(DomainError::invalid(
                    "interval_ms",
                    format!("must be 0 (default {DEFAULT_INTERVAL_MS}) or {MIN_INTERVAL_MS} to {MAX_INTERVAL_MS}"),
                )
                .into());
            }
        };
        let names = check_names(r.names)?;
        let metrics = self.metrics.clone();
        let ticks = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(
            Duration::from_millis(interval as u64),
        ));
        let stream = ticks.flat_map(move |_| {
            futures::stream::iter(metric_data(&metrics, &names).into_iter().map(Ok))
        });
        Ok(Response::new(guard(stream, self.shutdown.clone())))
    }

    async fn stream_events(
        &self,
        req: Request<pb::StreamEventsRequest>,
    ) -> Result<Response<BoxStream<pb::EventData>>, Status> {
        let who = caller(&req)?;
        let events = self
            .analytics
            .events(&who, req.into_inner().event_types)
            .await?;
        Ok(Response::new(guard(
            events.map(|e| Ok(event_data(e))),
            self.shutdown.clone(),
        )))
    }
}

fn check_names(names: Vec<String>) -> Result<Vec<String>, Status> {
    if names.len() > 100 || names.iter().any(|n| n.is_empty() || n.len() > 200) {
        return Err(
            DomainError::invalid("names", "at most 100 metric names of 1 to 200 bytes").into(),
        );
    }
    Ok(names)
}

/// The registry's samples whose family or own name is in `names` (all when empty).
fn metric_data(metrics: &Metrics, names: &[String]) -> Vec<pb::MetricData> {
    let now = timestamp(now_ms());
    metrics
        .samples()
        .into_iter()
        .filter(|s: &Sample| {
            names.is_empty() || names.iter().any(|n| *n == s.family || *n == s.name)
        })
        .map(|s| pb::MetricData {
            name: s.name,
            value: s.value,
            labels: s.labels.into_iter().collect(),
            kind: s.kind.into(),
            timestamp: now,
        })
        .collect()
}

fn event_data(e: EventRecord) -> pb::EventData {
    pb::EventData {
        event_id: e.id.to_string(),
        event_type: e.event_type,
        user_id: e.user_id,
        properties: e.properties.into_iter().collect(),
        timestamp: Some(super::timestamp_at(e.ts)),
        source: e.source,
    }
}

/// Milliseconds since the epoch from a protobuf timestamp, refusing nonsense.
fn millis(field: &'static str, t: &prost_types::Timestamp) -> Result<i64, Status> {
    // Years 1 to 9999, as google.protobuf.Timestamp allows.
    if !(-62_135_596_800..=253_402_300_799).contains(&t.seconds)
        || !(0..1_000_000_000).contains(&t.nanos)
    {
        return Err(DomainError::invalid(field, "not a valid timestamp").into());
    }
    Ok(t.seconds * 1000 + i64::from(t.nanos / 1_000_000))
}

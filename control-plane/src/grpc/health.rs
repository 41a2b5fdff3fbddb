//! `grpc.health.v1.Health`: tonic-health's service, with Watch streams ended on shutdown so a
//! drain never waits on a health watcher.

use tonic::{Request, Response, Status};
use tonic_health::{
    pb::{HealthCheckRequest, HealthCheckResponse, health_server::Health},
    server::HealthService,
};

use crate::shutdown::{BoxStream, Shutdown, guard};

/// The standard health service, drained with the server.
pub struct DrainingHealth {
    inner: HealthService,
    shutdown: Shutdown,
}

impl DrainingHealth {
    /// Wraps tonic-health's service.
    pub fn new(inner: HealthService, shutdown: Shutdown) -> DrainingHealth {
        DrainingHealth { inner, shutdown }
    }
}

#[tonic::async_trait]
impl Health for DrainingHealth {
    type WatchStream = BoxStream<HealthCheckResponse>;

    async fn check(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<HealthCheckResponse>, Status> {
        self.inner.check(req).await
    }

    async fn watch(
        &self,
        req: Request<HealthCheckRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let stream = self.inner.watch(req).await?.into_inner();
        Ok(Response::new(guard(stream, self.shutdown.clone())))
    }
}

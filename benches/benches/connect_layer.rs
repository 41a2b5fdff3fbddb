//! What the clients issue put in front of every plain gRPC call on the gRPC port: the outer
//! axum fallback and the boxed, shared API service (`server::api_service`), and the Connect
//! layer's passthrough check. Measured over a trivial inner service, so the figures are the
//! layers' own cost per call, to set beside a real call's server CPU time.

use std::convert::Infallible;

use criterion::{Criterion, criterion_group, criterion_main};
use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer, Service, ServiceExt, service_fn, util::BoxCloneSyncService};
use veza_control_plane::connect::ConnectLayer;

/// A unary gRPC request as a client sends it.
fn grpc_request() -> Request<Body> {
    Request::post("/veza.auth.AuthService/GetUserInfo")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("authorization", "Bearer x")
        .body(Body::empty())
        .expect("a valid request")
}

fn inner()
-> impl Service<Request<Body>, Response = Response<Body>, Error = Infallible, Future: Send>
+ Clone
+ Send
+ Sync
+ 'static {
    service_fn(|_req: Request<Body>| async { Ok::<_, Infallible>(Response::new(Body::empty())) })
}

/// Calls `svc` once per iteration the way hyper does: ready, then call.
fn bench<S>(c: &mut Criterion, name: &str, svc: S)
where
    S: Service<Request<Body>, Error = Infallible> + Clone,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime");
    c.bench_function(name, |b| {
        b.iter(|| {
            let svc = svc.clone();
            rt.block_on(svc.oneshot(grpc_request()))
                .expect("infallible")
        })
    });
}

fn layers(c: &mut Criterion) {
    let connect = ConnectLayer::new().expect("the embedded descriptor set");
    bench(c, "grpc_call/bare", inner());
    bench(c, "grpc_call/connect_passthrough", connect.layer(inner()));
    let api = BoxCloneSyncService::new(connect.layer(inner()));
    let port = axum::Router::new().fallback_service(api);
    bench(c, "grpc_call/axum_fallback+boxed+connect", port);
}

criterion_group!(benches, layers);
criterion_main!(benches);

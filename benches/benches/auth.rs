//! Auth costs: JWT validation alone, and the auth layer's share of a minimal unary call measured
//! end to end on loopback (the same trivial service with and without the layer, in one run).

use std::{net::SocketAddr, sync::Arc, time::Duration};

use criterion::{Criterion, criterion_group, criterion_main};
use tokio::runtime::Runtime;
use tonic::{Request, Response, Status, transport::Server};
use veza_control_plane::auth::{AuthLayer, Authenticator, Claims, ISSUER, Revocations, TokenKeys};
use veza_proto::auth::{
    GetUserInfoRequest, GetUserInfoResponse,
    auth_service_client::AuthServiceClient,
    auth_service_server::{AuthService, AuthServiceServer},
};

fn claims() -> Claims {
    let now = veza_storage::now_ms() / 1000;
    Claims {
        sub: "1".into(),
        email: "bench@example.com".into(),
        roles: vec!["user".into()],
        sid: 1,
        jti: "bench".into(),
        exp: now + 3600,
        iat: now,
        iss: ISSUER.into(),
    }
}

fn jwt(c: &mut Criterion) {
    let keys = TokenKeys::ed25519(&[3; 32]);
    let token = keys.issue(&claims()).unwrap();
    c.bench_function("jwt_verify_eddsa", |b| {
        b.iter(|| keys.verify(&token).unwrap())
    });
    let hs = TokenKeys::hs256(&[4; 32]);
    let token = hs.issue(&claims()).unwrap();
    c.bench_function("jwt_verify_hs256", |b| {
        b.iter(|| hs.verify(&token).unwrap())
    });
}

/// The smallest possible handler: no storage, no work.
struct Trivial;

#[tonic::async_trait]
impl AuthService for Trivial {
    async fn get_user_info(
        &self,
        _: Request<GetUserInfoRequest>,
    ) -> Result<Response<GetUserInfoResponse>, Status> {
        Ok(Response::new(GetUserInfoResponse::default()))
    }
}

async fn serve(layer: Option<AuthLayer>) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let incoming = tokio_stream_from(listener);
    let svc = AuthServiceServer::new(Trivial);
    tokio::spawn(async move {
        match layer {
            Some(l) => {
                Server::builder()
                    .layer(l)
                    .add_service(svc)
                    .serve_with_incoming(incoming)
                    .await
            }
            None => {
                Server::builder()
                    .add_service(svc)
                    .serve_with_incoming(incoming)
                    .await
            }
        }
    });
    addr
}

fn tokio_stream_from(
    listener: tokio::net::TcpListener,
) -> impl futures::Stream<Item = std::io::Result<tokio::net::TcpStream>> {
    futures::stream::unfold(listener, |l| async move {
        let r = l.accept().await.map(|(s, _)| {
            let _ = s.set_nodelay(true);
            s
        });
        Some((r, l))
    })
}

fn layer_overhead(c: &mut Criterion) {
    let rt = Runtime::new().unwrap();
    let (layer, token) = rt.block_on(async {
        let dir = tempfile::tempdir().unwrap().keep();
        let db = veza_storage::Db::connect(&veza_storage::Db::sqlite_url(&dir))
            .await
            .unwrap();
        let bus = veza_control_plane::bus::Bus::local();
        let keys = TokenKeys::ed25519(&[3; 32]);
        let token = keys.issue(&claims()).unwrap();
        let revocations = Revocations::start(&bus, &db).await.unwrap();
        let auth = Arc::new(Authenticator::new(keys, revocations, db));
        (AuthLayer::new(auth), token)
    });
    let mut group = c.benchmark_group("unary_loopback");
    group.measurement_time(Duration::from_secs(8));
    for (name, layer) in [
        ("without_auth_layer", None),
        ("with_auth_layer", Some(layer)),
    ] {
        let mut client = rt.block_on(async {
            let addr = serve(layer).await;
            AuthServiceClient::connect(format!("http://{addr}"))
                .await
                .unwrap()
        });
        group.bench_function(name, |b| {
            b.iter(|| {
                rt.block_on(async {
                    let mut req = Request::new(GetUserInfoRequest::default());
                    req.metadata_mut()
                        .insert("authorization", format!("Bearer {token}").parse().unwrap());
                    client.get_user_info(req).await.unwrap()
                })
            })
        });
    }
    group.finish();
}

criterion_group!(benches, jwt, layer_overhead);
criterion_main!(benches);

//! Graceful shutdown ends open streams with UNAVAILABLE and stops accepting calls.

use std::time::{Duration, Instant};

use futures::StreamExt;
use tonic::Code;
use veza_proto::auth::StreamUserSessionsRequest;
use veza_tests::{Backend, TestServer, bearer};

#[tokio::test]
async fn open_streams_end_with_unavailable() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let (_, token) = s.user("sleeper").await;
    let mut auth = s.auth().await;
    let mut stream = auth
        .stream_user_sessions(bearer(&token, StreamUserSessionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stream.next().await.unwrap().unwrap().event, "current");
    let grpc_addr = s.grpc_url.clone();
    let started = Instant::now();
    let stopping = tokio::spawn(s.stop());
    let end = tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("stream ends promptly");
    assert_eq!(end.unwrap().unwrap_err().code(), Code::Unavailable);
    stopping.await.unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "no wait for the grace period"
    );
    let refused = tonic::transport::Endpoint::from_shared(grpc_addr)
        .unwrap()
        .connect()
        .await;
    assert!(refused.is_err(), "the port is closed after shutdown");
}

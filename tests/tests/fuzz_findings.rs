//! Findings of the fuzz targets (docs/FUZZING.md), replayed against the real server.

use veza_proto::auth::RegisterRequest;
use veza_proto::stream::UploadAudioResponse;
use veza_tests::{Backend, TestServer, bearer};

/// `grpc_requests` finding 1: a body that is not the method's message answered `INTERNAL`
/// (tonic-prost's mapping); it is the caller's mistake: `INVALID_ARGUMENT`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_undecodable_request_is_invalid_argument() {
    let s = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let (_, token) = s.user("fuzz").await;
    let mut grpc = tonic::client::Grpc::new(s.channel().await);
    grpc.ready().await.expect("ready");
    // Field 1 of UploadAudioRequest is an integer; RegisterRequest's field 1 is a string, so
    // this body has the wrong wire type for it (the minimised fuzz input).
    let body = RegisterRequest {
        email: "title".into(),
        ..Default::default()
    };
    let err = grpc
        .unary::<_, UploadAudioResponse, _>(
            bearer(&token, body),
            tonic::codegen::http::uri::PathAndQuery::from_static(
                "/veza.stream.StreamService/UploadAudio",
            ),
            veza_proto::codec::Codec::<RegisterRequest, UploadAudioResponse>::default(),
        )
        .await
        .expect_err("not an UploadAudioRequest");
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err:?}");
}

//! The standard services answer standard clients: health (Check, Watch) and reflection (v1, v1alpha).

use futures::StreamExt;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::{v1, v1alpha};
use veza_tests::{Backend, TestServer};

#[tokio::test]
async fn health_check_and_watch_per_service() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let mut health = HealthClient::new(s.channel().await);
    for service in std::iter::once("").chain(veza_proto::SERVICE_NAMES) {
        let r = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner();
        assert_eq!(r.status(), ServingStatus::Serving, "{service:?}");
    }
    let unknown = health
        .check(HealthCheckRequest {
            service: "nope.Service".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), tonic::Code::NotFound);

    let mut watch = health
        .watch(HealthCheckRequest {
            service: "veza.chat.ChatService".into(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        watch.next().await.unwrap().unwrap().status(),
        ServingStatus::Serving
    );
    let stopping = tokio::spawn(s.stop());
    let next = watch.next().await.unwrap().unwrap();
    assert_eq!(
        next.status(),
        ServingStatus::NotServing,
        "watchers see the drain"
    );
    stopping.await.unwrap();
}

/// The standard services reflection must list beside Veza's (SPEC §11).
const STANDARD: &[&str] = &[
    "grpc.health.v1.Health",
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
];

/// The service names reflection version `$v` lists on server `$s`.
macro_rules! list_services {
    ($v:ident, $s:expr) => {{
        let req = $v::ServerReflectionRequest {
            host: String::new(),
            message_request: Some($v::server_reflection_request::MessageRequest::ListServices(
                String::new(),
            )),
        };
        let mut client =
            $v::server_reflection_client::ServerReflectionClient::new($s.channel().await);
        let mut stream = client
            .server_reflection_info(futures::stream::iter([req]))
            .await
            .unwrap()
            .into_inner();
        let Some($v::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
            stream.next().await.unwrap().unwrap().message_response
        else {
            panic!("expected a service list")
        };
        list.service
            .into_iter()
            .map(|s| s.name)
            .collect::<Vec<String>>()
    }};
}

#[tokio::test]
async fn reflection_v1_and_v1alpha_list_every_service() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    // Both versions (v1alpha for older grpcurl) list the same services.
    let lists = [list_services!(v1, s), list_services!(v1alpha, s)];
    for names in lists {
        for name in veza_proto::SERVICE_NAMES.iter().chain(STANDARD) {
            assert!(names.iter().any(|n| n == name), "{name} in {names:?}");
        }
    }

    let req = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "veza.stream.StreamService".into(),
            ),
        ),
    };
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(s.channel().await);
    let mut stream = client
        .server_reflection_info(futures::stream::iter([req]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) =
        stream.next().await.unwrap().unwrap().message_response
    else {
        panic!("expected file descriptors")
    };
    let file = <prost_types_shim::FileDescriptorProto as prost::Message>::decode(
        &files.file_descriptor_proto[0][..],
    )
    .unwrap();
    assert_eq!(file.name.as_deref(), Some("veza/stream.proto"));
    s.stop().await;
}

/// Only the descriptor fields this test reads.
mod prost_types_shim {
    #[derive(Clone, PartialEq, prost::Message)]
    pub struct FileDescriptorProto {
        #[prost(string, optional, tag = "1")]
        pub name: Option<String>,
    }
}

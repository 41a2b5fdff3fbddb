//! TLS (rustls) when a certificate and key are configured.

use tonic::transport::{Certificate, ClientTlsConfig, Endpoint};
use veza_proto::auth::{RegisterRequest, auth_service_client::AuthServiceClient};
use veza_tests::{Backend, TestServer};

#[tokio::test]
async fn serves_grpc_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key, made) = veza_tests::self_signed(dir.path());
    match made {
        Ok(o) if o.status.success() => {}
        other => {
            assert!(
                !veza_tests::require_services(),
                "openssl is needed to make a test certificate: {other:?}"
            );
            eprintln!("SKIPPED: openssl unavailable to make a test certificate");
            return;
        }
    }
    let Some(s) = TestServer::start_with(Backend::Sqlite, |c| {
        c.tls = Some((cert.clone(), key.clone()))
    })
    .await
    else {
        return;
    };
    let port = s.grpc_url.rsplit(':').next().unwrap().to_string();

    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(std::fs::read(&cert).unwrap()))
        .domain_name("localhost");
    let channel = Endpoint::from_shared(format!("https://localhost:{port}"))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap();
    let r = AuthServiceClient::new(channel)
        .register(RegisterRequest {
            email: "tls@example.com".into(),
            password: "over the wire".into(),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(r.into_inner().user_info.unwrap().email, "tls@example.com");

    let plain = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
        .unwrap()
        .connect()
        .await;
    if let Ok(ch) = plain {
        let e = AuthServiceClient::new(ch)
            .register(RegisterRequest::default())
            .await
            .unwrap_err();
        assert_ne!(
            e.code(),
            tonic::Code::InvalidArgument,
            "plaintext never reaches the service"
        );
    }
    s.stop().await;
}

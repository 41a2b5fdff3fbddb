//! gRPC-Web on the gRPC port: an HTTP/1.1 client (as a browser would send) can log in.

use prost::Message;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use veza_proto::auth::{AuthenticateRequest, AuthenticateResponse};
use veza_tests::{Backend, TestServer};

#[tokio::test]
async fn grpc_web_over_http1() {
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    s.register("web@example.com", "browser password").await;
    let msg = AuthenticateRequest {
        email: "web@example.com".into(),
        password: "browser password".into(),
        ..Default::default()
    }
    .encode_to_vec();
    let mut body = vec![0u8];
    body.extend_from_slice(&(msg.len() as u32).to_be_bytes());
    body.extend_from_slice(&msg);
    let addr = s.grpc_url.trim_start_matches("http://").to_string();
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let head = format!(
        "POST /veza.auth.AuthService/Authenticate HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/grpc-web+proto\r\nx-grpc-web: 1\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    tcp.write_all(head.as_bytes()).await.unwrap();
    tcp.write_all(&body).await.unwrap();
    let mut raw = Vec::new();
    tcp.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(
        text.to_ascii_lowercase()
            .contains("content-type: application/grpc-web+proto"),
        "{text}"
    );
    let split = raw.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4;
    let payload = dechunk(
        &raw[split..],
        text.to_ascii_lowercase()
            .contains("transfer-encoding: chunked"),
    );
    assert_eq!(payload[0], 0, "a data frame first");
    let len = u32::from_be_bytes(payload[1..5].try_into().unwrap()) as usize;
    let resp = AuthenticateResponse::decode(&payload[5..5 + len]).unwrap();
    assert!(resp.success && resp.access_token.matches('.').count() == 2);
    let trailer = &payload[5 + len..];
    assert_eq!(trailer[0], 0x80, "then a trailer frame");
    assert!(String::from_utf8_lossy(&trailer[5..]).contains("grpc-status:0"));
    s.stop().await;
}

fn dechunk(body: &[u8], chunked: bool) -> Vec<u8> {
    if !chunked {
        return body.to_vec();
    }
    let mut out = Vec::new();
    let mut rest = body;
    loop {
        let line_end = rest.windows(2).position(|w| w == b"\r\n").unwrap();
        let size =
            usize::from_str_radix(std::str::from_utf8(&rest[..line_end]).unwrap().trim(), 16)
                .unwrap();
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[line_end + 2..line_end + 2 + size]);
        rest = &rest[line_end + 2 + size + 2..];
    }
}

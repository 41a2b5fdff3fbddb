//! Every way a credential is refused with `UNAUTHENTICATED`, on unary and streaming calls alike.

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;
use tonic::{Code, Request};
use veza_proto::{
    auth::{GetUserInfoRequest, StreamUserSessionsRequest},
    chat::{ChatMessage, chat_service_client::ChatServiceClient},
};
use veza_tests::{Backend, TestServer, api_key, bearer, on_both_backends, with_header};

/// Sends the same credentials to a unary, a server-streaming and a bidirectional call, and
/// expects each to be refused with `UNAUTHENTICATED`.
async fn refused(s: &TestServer, header: Option<(&'static str, String)>, why: &str) {
    let wrap = |msg| match &header {
        Some((name, value)) => with_header(msg, name, value),
        None => Request::new(msg),
    };
    let mut auth = s.auth().await;
    let unary = auth
        .get_user_info(wrap(GetUserInfoRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(
        unary.code(),
        Code::Unauthenticated,
        "{why}: unary got {unary:?}"
    );
    let mut req = Request::new(StreamUserSessionsRequest::default());
    if let Some((name, value)) = &header {
        req.metadata_mut().insert(*name, value.parse().unwrap());
    }
    let streaming = auth.stream_user_sessions(req).await.unwrap_err();
    assert_eq!(
        streaming.code(),
        Code::Unauthenticated,
        "{why}: streaming got {streaming:?}"
    );
    let mut chat = ChatServiceClient::new(s.channel().await);
    let mut req = Request::new(futures::stream::iter(vec![ChatMessage::default()]));
    if let Some((name, value)) = &header {
        req.metadata_mut().insert(*name, value.parse().unwrap());
    }
    let bidi = chat.chat_stream(req).await.unwrap_err();
    assert_eq!(
        bidi.code(),
        Code::Unauthenticated,
        "{why}: bidi got {bidi:?}"
    );
}

fn claims(user_id: i64, exp_offset: i64) -> serde_json::Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    json!({"sub": user_id.to_string(), "email": "x@example.com", "roles": ["user", "admin"], "sid": 1,
           "jti": "forged", "exp": now + exp_offset, "iat": now, "iss": "veza"})
}

fn real_key(s: &TestServer) -> EncodingKey {
    let der = std::fs::read(s.data_dir().join(veza_control_plane::auth::KEY_FILE)).unwrap();
    EncodingKey::from_ed_der(&der)
}

fn b64(v: &serde_json::Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

async fn every_bad_credential_is_unauthenticated(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (id, good) = s.user("mallory").await;
    let auth_header = |t: &str| Some(("authorization", format!("Bearer {t}")));

    refused(&s, None, "no credentials").await;
    refused(
        &s,
        Some(("authorization", good.clone())),
        "no Bearer scheme",
    )
    .await;
    refused(&s, Some(("authorization", "Bearer".into())), "empty bearer").await;
    refused(
        &s,
        Some(("authorization", "Basic dXNlcjpwYXNz".into())),
        "basic auth",
    )
    .await;
    refused(&s, auth_header("not-a-jwt"), "garbage token").await;

    let none = format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&claims(id, 600))
    );
    refused(&s, auth_header(&none), "alg none").await;
    let hs = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(id, 600),
        &EncodingKey::from_secret(&[7; 32]),
    )
    .unwrap();
    refused(&s, auth_header(&hs), "HS256 token on an EdDSA server").await;
    let other_key: Vec<u8> = [
        &[
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ][..],
        &[9; 32],
    ]
    .concat();
    let wrong = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims(id, 600),
        &EncodingKey::from_ed_der(&other_key),
    )
    .unwrap();
    refused(&s, auth_header(&wrong), "wrong key").await;
    let expired = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims(id, -10),
        &real_key(&s),
    )
    .unwrap();
    refused(&s, auth_header(&expired), "expired").await;
    let mut early = claims(id, 600);
    early["nbf"] = json!(early["iat"].as_i64().unwrap() + 300);
    let early =
        jsonwebtoken::encode(&Header::new(Algorithm::EdDSA), &early, &real_key(&s)).unwrap();
    refused(&s, auth_header(&early), "not yet valid").await;
    let mut tampered = good.clone();
    let tail = tampered.pop().unwrap();
    tampered.push(if tail == 'A' { 'B' } else { 'A' });
    refused(&s, auth_header(&tampered), "tampered signature").await;

    // The same forged claims with the real key are accepted: the refusals above are about the
    // credential, not the harness.
    let real = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims(id, 600),
        &real_key(&s),
    )
    .unwrap();
    s.auth()
        .await
        .get_user_info(bearer(&real, GetUserInfoRequest::default()))
        .await
        .unwrap();

    refused(
        &s,
        Some(("x-api-key", "vz_unknown".into())),
        "unknown API key",
    )
    .await;
    refused(
        &s,
        Some(("x-api-key", "sk_wrong_prefix".into())),
        "malformed API key",
    )
    .await;
    s.stop().await;
}

async fn revoked_credentials_are_unauthenticated(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let (_, token) = s.user("trent").await;
    let mut auth = s.auth().await;
    auth.revoke_token(bearer(
        &token,
        veza_proto::auth::RevokeTokenRequest {
            token: token.clone(),
            token_type_hint: String::new(),
        },
    ))
    .await
    .unwrap();
    refused(
        &s,
        Some(("authorization", format!("Bearer {token}"))),
        "revoked access token",
    )
    .await;

    let key = auth
        .create_api_key(bearer(
            &admin,
            veza_proto::auth::CreateApiKeyRequest {
                name: "k".into(),
                scopes: vec!["admin".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    auth.get_user_info(api_key(&key.api_key, GetUserInfoRequest { user_id: 1 }))
        .await
        .unwrap();
    auth.revoke_api_key(bearer(
        &admin,
        veza_proto::auth::RevokeApiKeyRequest {
            key_id: key.info.unwrap().key_id,
        },
    ))
    .await
    .unwrap();
    refused(&s, Some(("x-api-key", key.api_key)), "revoked API key").await;
    s.stop().await;
}

async fn hs256_server_refuses_eddsa_tokens(b: Backend) {
    let secret = "an HS256 secret of at least thirty-two bytes".to_string();
    let Some(s) = TestServer::start_with(b, |c| {
        c.jwt = veza_control_plane::config::JwtConfig::Hs256(secret.clone())
    })
    .await
    else {
        return;
    };
    let (id, good) = s.user("hs").await;
    let header: serde_json::Value = serde_json::from_slice(
        &URL_SAFE_NO_PAD
            .decode(good.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "HS256");
    s.auth()
        .await
        .get_user_info(bearer(&good, GetUserInfoRequest::default()))
        .await
        .unwrap();
    let other_key: Vec<u8> = [
        &[
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ][..],
        &[5; 32],
    ]
    .concat();
    let ed = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims(id, 600),
        &EncodingKey::from_ed_der(&other_key),
    )
    .unwrap();
    refused(
        &s,
        Some(("authorization", format!("Bearer {ed}"))),
        "EdDSA token on an HS256 server",
    )
    .await;
    let wrong_secret = jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        &claims(id, 600),
        &EncodingKey::from_secret(b"another secret of thirty-two bytes!!"),
    )
    .unwrap();
    refused(
        &s,
        Some(("authorization", format!("Bearer {wrong_secret}"))),
        "wrong HS256 secret",
    )
    .await;
    s.stop().await;
}

on_both_backends!(
    every_bad_credential_is_unauthenticated,
    revoked_credentials_are_unauthenticated,
    hs256_server_refuses_eddsa_tokens
);

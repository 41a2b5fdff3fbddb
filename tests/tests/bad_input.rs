//! Malformed input gets INVALID_ARGUMENT (naming the field) or ALREADY_EXISTS, never a panic,
//! and repeated failed logins are throttled.

use tonic::{Code, Status};
use tonic_types::StatusExt;
use veza_proto::auth::{
    AuthenticateRequest, GetUserInfoRequest, RefreshTokenRequest, RegisterRequest,
};
use veza_tests::{Backend, TestServer, bearer, on_both_backends};

fn assert_field(status: &Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    assert!(
        status.message().starts_with(field),
        "message names {field}: {}",
        status.message()
    );
    let details = status.get_error_details();
    let bad = details.bad_request().expect("BadRequest details");
    assert_eq!(bad.field_violations[0].field, field);
}

fn reg(email: &str, password: &str) -> RegisterRequest {
    RegisterRequest {
        email: email.into(),
        password: password.into(),
        ..Default::default()
    }
}

async fn registration_rejects_bad_fields(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let mut auth = s.auth().await;
    let mb = "x".repeat(1 << 20);
    assert_field(
        &auth.register(reg("", "long enough")).await.unwrap_err(),
        "email",
    );
    assert_field(
        &auth
            .register(reg("no-at-sign", "long enough"))
            .await
            .unwrap_err(),
        "email",
    );
    assert_field(
        &auth
            .register(reg(&format!("{mb}@x.io"), "long enough"))
            .await
            .unwrap_err(),
        "email",
    );
    assert_field(
        &auth.register(reg("a@x.io", "short")).await.unwrap_err(),
        "password",
    );
    assert_field(
        &auth.register(reg("a@x.io", &mb)).await.unwrap_err(),
        "password",
    );
    let mut r = reg("a@x.io", "long enough");
    r.username = mb.clone();
    assert_field(&auth.register(r).await.unwrap_err(), "username");
    let mut r = reg("a@x.io", "long enough");
    r.first_name = mb.clone();
    assert_field(&auth.register(r).await.unwrap_err(), "first_name");

    auth.register(reg("a@x.io", "long enough")).await.unwrap();
    let dup = auth
        .register(reg("A@X.io", "another one"))
        .await
        .unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    assert!(dup.message().contains("email"), "{}", dup.message());
    let mut same_name = reg("b@x.io", "long enough");
    same_name.username = "a".repeat(3);
    auth.register(same_name.clone()).await.unwrap();
    same_name.email = "c@x.io".into();
    let dup = auth.register(same_name).await.unwrap_err();
    assert_eq!(dup.code(), Code::AlreadyExists);
    assert!(dup.message().contains("username"), "{}", dup.message());

    let login = |email: &str, pw: &str| AuthenticateRequest {
        email: email.into(),
        password: pw.into(),
        ..Default::default()
    };
    assert_field(
        &auth.authenticate(login("", "x")).await.unwrap_err(),
        "email",
    );
    assert_field(
        &auth.authenticate(login("a@x.io", &mb)).await.unwrap_err(),
        "password",
    );
    assert_field(
        &auth
            .refresh_token(RefreshTokenRequest {
                refresh_token: mb.clone(),
            })
            .await
            .unwrap_err(),
        "refresh_token",
    );
    let (token, _) = s.login("a@x.io", "long enough").await;
    assert_field(
        &auth
            .get_user_info(bearer(&token, GetUserInfoRequest { user_id: -3 }))
            .await
            .unwrap_err(),
        "user_id",
    );
    // Still serving after all that.
    auth.get_user_info(bearer(&token, GetUserInfoRequest::default()))
        .await
        .unwrap();
    s.stop().await;
}

async fn wrong_passwords_are_unauthenticated_then_throttled(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    s.register("t@x.io", "the right one").await;
    let mut auth = s.auth().await;
    let login = |pw: &str| AuthenticateRequest {
        email: "t@x.io".into(),
        password: pw.into(),
        ..Default::default()
    };
    let unknown = auth
        .authenticate(AuthenticateRequest {
            email: "nobody@x.io".into(),
            password: "whatever1".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::Unauthenticated);
    // 30 free failures per account (the unknown one above counts for its own email only).
    for _ in 0..30 {
        let e = auth
            .authenticate(login("wrong password"))
            .await
            .unwrap_err();
        assert_eq!(
            (e.code(), e.message()),
            (Code::Unauthenticated, "invalid email or password")
        );
    }
    let throttled = auth.authenticate(login("the right one")).await.unwrap_err();
    assert_eq!(throttled.code(), Code::ResourceExhausted, "{throttled:?}");
    assert!(throttled.message().contains("retry in"));
    // The first wait is 60 s (the end of a wait is shown by the throttle's unit tests).
    let delay = throttled
        .get_error_details()
        .retry_info()
        .and_then(|r| r.retry_delay);
    assert!(
        delay.is_some_and(|d| d.as_secs() > 50 && d.as_secs() <= 60),
        "{delay:?}"
    );
    s.stop().await;
}

on_both_backends!(
    registration_rejects_bad_fields,
    wrong_passwords_are_unauthenticated_then_throttled
);

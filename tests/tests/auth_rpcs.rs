//! Every Auth RPC's success path, on SQLite and PostgreSQL.

use futures::StreamExt;
use tonic::Code;
use veza_proto::auth::*;
use veza_tests::{Backend, TestServer, api_key, bearer, on_both_backends};

async fn register_login_validate_and_read_self(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let id = s.register("ada@example.com", "analytical engine").await;
    let mut auth = s.auth().await;
    let login = auth
        .authenticate(AuthenticateRequest {
            email: "ADA@example.com".into(),
            password: "analytical engine".into(),
            device_id: "laptop".into(),
            ip_address: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(login.success);
    assert_eq!(login.expires_in, 900);
    assert_eq!(login.user_info.as_ref().unwrap().user_id, id);
    assert_eq!(login.access_token.matches('.').count(), 2, "a JWT");

    let v = auth
        .validate_token(bearer(
            &login.access_token,
            ValidateTokenRequest {
                token: login.access_token.clone(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(v.valid);
    assert_eq!(v.user_info.unwrap().email, "ada@example.com");
    assert!(v.expires_at.unwrap().seconds > 0);
    let bogus = auth
        .validate_token(bearer(
            &login.access_token,
            ValidateTokenRequest {
                token: "x.y.z".into(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(!bogus.valid);

    let me = auth
        .get_user_info(bearer(
            &login.access_token,
            GetUserInfoRequest { user_id: 0 },
        ))
        .await
        .unwrap()
        .into_inner();
    let me = me.user_info.unwrap();
    assert_eq!(
        (me.user_id, me.username.as_str(), me.roles.clone()),
        (id, "ada", vec!["user".to_string()])
    );
    s.stop().await;
}

async fn refresh_rotates_and_reuse_revokes_the_session(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    s.register("bob@example.com", "bob password").await;
    let (access, refresh) = s.login("bob@example.com", "bob password").await;
    let mut auth = s.auth().await;
    let rotated = auth
        .refresh_token(RefreshTokenRequest {
            refresh_token: refresh.clone(),
        })
        .await
        .unwrap()
        .into_inner();
    assert!(rotated.success);
    assert_ne!(rotated.refresh_token, refresh);
    auth.get_user_info(bearer(&rotated.access_token, GetUserInfoRequest::default()))
        .await
        .unwrap();

    let mut sessions = auth
        .stream_user_sessions(bearer(&access, StreamUserSessionsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let first = sessions.next().await.unwrap().unwrap();
    assert_eq!((first.event.as_str(), first.revoked), ("current", false));

    let reuse = auth
        .refresh_token(RefreshTokenRequest {
            refresh_token: refresh,
        })
        .await
        .unwrap_err();
    assert_eq!(reuse.code(), Code::Unauthenticated);
    assert!(reuse.message().contains("reuse"), "{}", reuse.message());
    let revoked = sessions.next().await.unwrap().unwrap();
    assert_eq!(
        (revoked.event.as_str(), revoked.revoked, revoked.session_id),
        ("revoked", true, first.session_id)
    );
    for token in [&access, &rotated.access_token] {
        let e = auth
            .get_user_info(bearer(token, GetUserInfoRequest::default()))
            .await
            .unwrap_err();
        assert_eq!(e.code(), Code::Unauthenticated);
    }
    let again = auth
        .refresh_token(RefreshTokenRequest {
            refresh_token: rotated.refresh_token,
        })
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::Unauthenticated);
    s.stop().await;
}

async fn revoke_token_access_and_refresh(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    s.register("cy@example.com", "cy password").await;
    let (a1, _) = s.login("cy@example.com", "cy password").await;
    let (a2, r2) = s.login("cy@example.com", "cy password").await;
    let mut auth = s.auth().await;
    let done = auth
        .revoke_token(bearer(
            &a2,
            RevokeTokenRequest {
                token: a1.clone(),
                token_type_hint: String::new(),
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(done.success);
    let e = auth
        .get_user_info(bearer(&a1, GetUserInfoRequest::default()))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unauthenticated, "access token revoked")
    );
    auth.get_user_info(bearer(&a2, GetUserInfoRequest::default()))
        .await
        .unwrap();
    // RFC 7009: an unknown token is not an error.
    auth.revoke_token(bearer(
        &a2,
        RevokeTokenRequest {
            token: "unknown".into(),
            token_type_hint: String::new(),
        },
    ))
    .await
    .unwrap();
    // Revoking the refresh token ends its whole session.
    auth.revoke_token(bearer(
        &a2,
        RevokeTokenRequest {
            token: r2.clone(),
            token_type_hint: "refresh_token".into(),
        },
    ))
    .await
    .unwrap();
    assert_eq!(
        auth.get_user_info(bearer(&a2, GetUserInfoRequest::default()))
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    assert_eq!(
        auth.refresh_token(RefreshTokenRequest { refresh_token: r2 })
            .await
            .unwrap_err()
            .code(),
        Code::Unauthenticated
    );
    s.stop().await;
}

async fn session_stream_shows_current_then_changes(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (id, token) = s.user("dee").await;
    s.login("dee@example.com", "correct horse battery").await;
    let mut auth = s.auth().await;
    let mut stream = auth
        .stream_user_sessions(bearer(&token, StreamUserSessionsRequest { user_id: id }))
        .await
        .unwrap()
        .into_inner();
    let a = stream.next().await.unwrap().unwrap();
    let b2 = stream.next().await.unwrap().unwrap();
    assert_eq!(
        (a.event.as_str(), b2.event.as_str()),
        ("current", "current")
    );
    assert!(a.session_id < b2.session_id && a.user_id == id);
    let (_, refresh) = s.login("dee@example.com", "correct horse battery").await;
    let created = stream.next().await.unwrap().unwrap();
    assert_eq!(created.event, "created");
    assert!(created.session_id > b2.session_id);
    auth.refresh_token(RefreshTokenRequest {
        refresh_token: refresh,
    })
    .await
    .unwrap();
    let refreshed = stream.next().await.unwrap().unwrap();
    assert_eq!(
        (refreshed.event.as_str(), refreshed.session_id),
        ("refreshed", created.session_id)
    );
    s.stop().await;
}

async fn admin_manages_api_keys(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (_, admin) = s.admin().await;
    let (user_id, user) = s.user("eve").await;
    let mut auth = s.auth().await;
    let created = auth
        .create_api_key(bearer(
            &admin,
            CreateApiKeyRequest {
                name: "backend".into(),
                scopes: vec!["users:read".into()],
            },
        ))
        .await
        .unwrap()
        .into_inner();
    assert!(created.api_key.starts_with("vz_") && created.api_key.len() > 40);
    let info = created.info.unwrap();
    assert!(created.api_key.starts_with(&info.prefix));
    let read = auth
        .get_user_info(api_key(&created.api_key, GetUserInfoRequest { user_id }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(read.user_info.unwrap().email, "eve@example.com");

    let listed = auth
        .list_api_keys(bearer(&admin, ListApiKeysRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert_eq!(listed.len(), 1);
    assert_eq!(
        (listed[0].key_id, listed[0].scopes.clone()),
        (info.key_id, vec!["users:read".to_string()])
    );
    assert!(
        listed
            .iter()
            .all(|k| !k.prefix.is_empty() && k.prefix.len() < 20),
        "never the whole key"
    );

    let denied = auth
        .create_api_key(bearer(
            &user,
            CreateApiKeyRequest {
                name: "x".into(),
                scopes: vec!["admin".into()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(denied.code(), Code::PermissionDenied);
    let bad = auth
        .create_api_key(bearer(
            &admin,
            CreateApiKeyRequest {
                name: "x".into(),
                scopes: vec!["root".into()],
            },
        ))
        .await
        .unwrap_err();
    assert_eq!(bad.code(), Code::InvalidArgument);

    auth.revoke_api_key(bearer(
        &admin,
        RevokeApiKeyRequest {
            key_id: info.key_id,
        },
    ))
    .await
    .unwrap();
    let e = auth
        .get_user_info(api_key(&created.api_key, GetUserInfoRequest { user_id }))
        .await
        .unwrap_err();
    assert_eq!(
        (e.code(), e.message()),
        (Code::Unauthenticated, "API key revoked")
    );
    assert!(
        auth.list_api_keys(bearer(&admin, ListApiKeysRequest::default()))
            .await
            .unwrap()
            .into_inner()
            .api_keys
            .is_empty()
    );
    let all = auth
        .list_api_keys(bearer(
            &admin,
            ListApiKeysRequest {
                include_revoked: true,
            },
        ))
        .await
        .unwrap()
        .into_inner()
        .api_keys;
    assert!(all[0].revoked);
    let missing = auth
        .revoke_api_key(bearer(&admin, RevokeApiKeyRequest { key_id: 999 }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    s.stop().await;
}

on_both_backends!(
    register_login_validate_and_read_self,
    refresh_rotates_and_reuse_revokes_the_session,
    revoke_token_access_and_refresh,
    session_stream_shows_current_then_changes,
    admin_manages_api_keys,
);

//! Users reach only their own data; admins reach everyone's.

use futures::StreamExt;
use tonic::Code;
use veza_proto::auth::{GetUserInfoRequest, StreamUserSessionsRequest};
use veza_tests::{Backend, TestServer, bearer, on_both_backends};

async fn users_cannot_read_each_other_but_admins_can(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let (alice, alice_token) = s.user("alice").await;
    let (bob, bob_token) = s.user("bob").await;
    let (_, admin) = s.admin().await;
    let mut auth = s.auth().await;

    let e = auth
        .get_user_info(bearer(&alice_token, GetUserInfoRequest { user_id: bob }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    let e = auth
        .stream_user_sessions(bearer(
            &alice_token,
            StreamUserSessionsRequest { user_id: bob },
        ))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);
    // Asking for an id that does not exist is refused the same way, so ids cannot be probed.
    let e = auth
        .get_user_info(bearer(&alice_token, GetUserInfoRequest { user_id: 4242 }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::PermissionDenied);

    let info = auth
        .get_user_info(bearer(&admin, GetUserInfoRequest { user_id: alice }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(info.user_info.unwrap().email, "alice@example.com");
    let mut sessions = auth
        .stream_user_sessions(bearer(&admin, StreamUserSessionsRequest { user_id: bob }))
        .await
        .unwrap()
        .into_inner();
    let first = sessions.next().await.unwrap().unwrap();
    assert_eq!(first.user_id, bob);
    let e = auth
        .get_user_info(bearer(&admin, GetUserInfoRequest { user_id: 4242 }))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::NotFound);
    drop(bob_token);
    s.stop().await;
}

on_both_backends!(users_cannot_read_each_other_but_admins_can);

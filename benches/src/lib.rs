//! Shared helpers for Veza benches and load tools.

use tonic::Request;
use veza_control_plane::domain::NewAccount;
use veza_proto::auth::{AuthenticateRequest, auth_service_client::AuthServiceClient};

/// Creates the load-test account in `db` and logs in through the server at `url`.
pub async fn login(db: &veza_storage::Db, url: &str) -> anyhow::Result<String> {
    let account = NewAccount {
        email: "load@example.com".into(),
        password: "load password".into(),
        ..Default::default()
    };
    veza_control_plane::domain::create_account(db, account).await?;
    let mut auth = AuthServiceClient::connect(url.to_string()).await?;
    let req = AuthenticateRequest {
        email: "load@example.com".into(),
        password: "load password".into(),
        ..Default::default()
    };
    Ok(auth.authenticate(req).await?.into_inner().access_token)
}

/// `msg` with `authorization: Bearer <token>`.
pub fn authed<T>(token: &str, msg: T) -> Request<T> {
    let mut req = Request::new(msg);
    req.metadata_mut().insert(
        "authorization",
        format!("Bearer {token}").parse().expect("ascii token"),
    );
    req
}

//! What every client command shares: the server address and the credentials.

use clap::Args;
use tonic::{Request, metadata::MetadataValue, transport::Channel};
use veza_proto::auth::{AuthenticateRequest, auth_service_client::AuthServiceClient};

/// Where the server is and who is calling.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// gRPC address of the server.
    #[arg(long, env = "VEZA_SERVER", default_value = "http://127.0.0.1:9090")]
    pub server: String,
    /// Access token (skips logging in).
    #[arg(long, env = "VEZA_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Log in with this email…
    #[arg(long, env = "VEZA_EMAIL")]
    pub email: Option<String>,
    /// …and this password.
    #[arg(long, env = "VEZA_PASSWORD", hide_env_values = true)]
    pub password: Option<String>,
}

/// A connected client: the channel and the bearer token.
#[derive(Clone)]
pub struct Session {
    pub channel: Channel,
    pub token: String,
}

impl ClientArgs {
    /// Connects and logs in (or uses the given token).
    pub async fn connect(&self) -> anyhow::Result<Session> {
        let channel = tonic::transport::Endpoint::from_shared(self.server.clone())?
            .connect()
            .await
            .map_err(|e| anyhow::anyhow!("connecting to {}: {e}", self.server))?;
        let token = match (&self.token, &self.email, &self.password) {
            (Some(t), _, _) => t.clone(),
            (None, Some(email), Some(password)) => {
                let req = AuthenticateRequest {
                    email: email.clone(),
                    password: password.clone(),
                    ..Default::default()
                };
                let resp = AuthServiceClient::new(channel.clone())
                    .authenticate(req)
                    .await?;
                resp.into_inner().access_token
            }
            _ => anyhow::bail!(
                "give --token, or --email and --password (or VEZA_TOKEN / VEZA_EMAIL / VEZA_PASSWORD)"
            ),
        };
        Ok(Session { channel, token })
    }
}

impl Session {
    /// `msg` with this session's credentials.
    pub fn request<T>(&self, msg: T) -> anyhow::Result<Request<T>> {
        let mut req = Request::new(msg);
        let value: MetadataValue<_> = format!("Bearer {}", self.token).parse()?;
        req.metadata_mut().insert("authorization", value);
        Ok(req)
    }
}

//! `veza.auth.AuthService`: protobuf in, domain call, protobuf out.

use std::sync::Arc;

use futures::StreamExt;
use tonic::{Request, Response, Status};
use veza_proto::auth::{self as pb, auth_service_server::AuthService};
use veza_storage::{ApiKeyRecord, SessionRecord, UserRecord};

use super::{caller, peer_ip, timestamp};
use crate::{
    domain::{Accounts, NewAccount, SessionEvent},
    shutdown::{BoxStream, Shutdown, guard},
};

/// The Auth service.
pub struct AuthApi {
    accounts: Arc<Accounts>,
    shutdown: Shutdown,
}

impl AuthApi {
    /// The service over the accounts domain.
    pub fn new(accounts: Arc<Accounts>, shutdown: Shutdown) -> AuthApi {
        AuthApi { accounts, shutdown }
    }
}

#[tonic::async_trait]
impl AuthService for AuthApi {
    async fn authenticate(
        &self,
        req: Request<pb::AuthenticateRequest>,
    ) -> Result<Response<pb::AuthenticateResponse>, Status> {
        let peer = peer_ip(&req);
        let r = req.into_inner();
        let ip = if r.ip_address.is_empty() {
            &peer
        } else {
            &r.ip_address
        };
        let t = self
            .accounts
            .login(&r.email, &r.password, &r.device_id, ip, &peer)
            .await?;
        Ok(Response::new(pb::AuthenticateResponse {
            success: true,
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            expires_in: t.expires_in,
            user_info: Some(user_info(&t.user)),
        }))
    }

    async fn validate_token(
        &self,
        req: Request<pb::ValidateTokenRequest>,
    ) -> Result<Response<pb::ValidateTokenResponse>, Status> {
        caller(&req)?;
        let checked = self.accounts.validate(&req.into_inner().token).await?;
        Ok(Response::new(match checked {
            Some((user, exp, sid)) => pb::ValidateTokenResponse {
                valid: true,
                user_info: Some(user_info(&user)),
                expires_at: timestamp(exp * 1000),
                session_id: sid,
            },
            None => pb::ValidateTokenResponse::default(),
        }))
    }

    async fn refresh_token(
        &self,
        req: Request<pb::RefreshTokenRequest>,
    ) -> Result<Response<pb::RefreshTokenResponse>, Status> {
        let t = self
            .accounts
            .refresh(&req.into_inner().refresh_token)
            .await?;
        Ok(Response::new(pb::RefreshTokenResponse {
            access_token: t.access_token,
            refresh_token: t.refresh_token,
            expires_in: t.expires_in,
            success: true,
        }))
    }

    async fn revoke_token(
        &self,
        req: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        self.accounts
            .revoke(&who, &r.token, &r.token_type_hint)
            .await?;
        Ok(Response::new(pb::RevokeTokenResponse { success: true }))
    }

    async fn get_user_info(
        &self,
        req: Request<pb::GetUserInfoRequest>,
    ) -> Result<Response<pb::GetUserInfoResponse>, Status> {
        let who = caller(&req)?;
        let user = self
            .accounts
            .user_info(&who, req.into_inner().user_id)
            .await?;
        Ok(Response::new(pb::GetUserInfoResponse {
            user_info: Some(user_info(&user)),
        }))
    }

    async fn stream_user_sessions(
        &self,
        req: Request<pb::StreamUserSessionsRequest>,
    ) -> Result<Response<BoxStream<pb::UserSession>>, Status> {
        let who = caller(&req)?;
        let events = self
            .accounts
            .session_events(&who, req.into_inner().user_id)
            .await?;
        let stream = events.map(|e| Ok(user_session(e)));
        Ok(Response::new(guard(stream, self.shutdown.clone())))
    }

    async fn register(
        &self,
        req: Request<pb::RegisterRequest>,
    ) -> Result<Response<pb::RegisterResponse>, Status> {
        let peer = peer_ip(&req);
        let r = req.into_inner();
        let account = NewAccount {
            email: r.email,
            password: r.password,
            username: r.username,
            first_name: r.first_name,
            last_name: r.last_name,
            admin: false,
        };
        let user = self.accounts.register(account, &peer).await?;
        Ok(Response::new(pb::RegisterResponse {
            user_info: Some(user_info(&user)),
            success: true,
        }))
    }

    async fn create_api_key(
        &self,
        req: Request<pb::CreateApiKeyRequest>,
    ) -> Result<Response<pb::CreateApiKeyResponse>, Status> {
        let who = caller(&req)?;
        let r = req.into_inner();
        let (key, record) = self
            .accounts
            .create_api_key(Some(&who), &r.name, &r.scopes)
            .await?;
        Ok(Response::new(pb::CreateApiKeyResponse {
            success: true,
            api_key: key,
            info: Some(api_key_info(record)),
        }))
    }

    async fn list_api_keys(
        &self,
        req: Request<pb::ListApiKeysRequest>,
    ) -> Result<Response<pb::ListApiKeysResponse>, Status> {
        let who = caller(&req)?;
        let keys = self
            .accounts
            .list_api_keys(Some(&who), req.into_inner().include_revoked)
            .await?;
        Ok(Response::new(pb::ListApiKeysResponse {
            api_keys: keys.into_iter().map(api_key_info).collect(),
        }))
    }

    async fn revoke_api_key(
        &self,
        req: Request<pb::RevokeApiKeyRequest>,
    ) -> Result<Response<pb::RevokeApiKeyResponse>, Status> {
        let who = caller(&req)?;
        self.accounts
            .revoke_api_key(Some(&who), req.into_inner().key_id)
            .await?;
        Ok(Response::new(pb::RevokeApiKeyResponse { success: true }))
    }
}

/// The public view of an account.
pub fn user_info(u: &UserRecord) -> pb::UserInfo {
    pb::UserInfo {
        user_id: u.id,
        email: u.email.clone(),
        username: u.username.clone(),
        first_name: u.first_name.clone(),
        last_name: u.last_name.clone(),
        roles: u.roles.clone(),
        created_at: timestamp(u.created_at),
    }
}

fn user_session(e: SessionEvent) -> pb::UserSession {
    let s: SessionRecord = e.session;
    pb::UserSession {
        session_id: s.id,
        user_id: s.user_id,
        device_id: s.device_id,
        ip_address: s.ip_address,
        created_at: timestamp(s.created_at),
        last_seen_at: timestamp(s.last_seen_at),
        expires_at: timestamp(s.expires_at),
        revoked: s.revoked,
        event: e.event,
    }
}

fn api_key_info(k: ApiKeyRecord) -> pb::ApiKeyInfo {
    pb::ApiKeyInfo {
        key_id: k.id,
        name: k.name,
        prefix: k.prefix,
        scopes: k.scopes,
        created_at: timestamp(k.created_at),
        last_used_at: timestamp(k.last_used_at),
        revoked: k.revoked,
        created_by: k.created_by,
    }
}

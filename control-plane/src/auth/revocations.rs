//! The revoked sessions, access tokens and API keys every instance must refuse, kept in memory
//! and in step across instances through the bus.

use std::{
    collections::HashSet,
    sync::{Arc, RwLock},
};

use futures::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use veza_storage::Db;

use crate::bus::{Bus, BusEvent};

/// The bus subject revocations travel on.
pub const SUBJECT: &str = "veza.auth.revoked";

/// One revocation, as published on the bus.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Revocation {
    Session(i64),
    Token(String),
    ApiKey(i64),
}

/// What this instance knows to be revoked.
#[derive(Debug)]
pub struct Revocations {
    sessions: RwLock<HashSet<i64>>,
    tokens: RwLock<HashSet<String>>,
    api_keys: RwLock<HashSet<i64>>,
    /// Bumped on every revocation, so open streams re-check their credentials.
    changes: watch::Sender<u64>,
}

impl Default for Revocations {
    fn default() -> Revocations {
        Revocations {
            sessions: RwLock::default(),
            tokens: RwLock::default(),
            api_keys: RwLock::default(),
            changes: watch::Sender::new(0),
        }
    }
}

impl Revocations {
    /// Subscribes to the bus, then loads what the database already holds.
    pub async fn start(bus: &Bus, db: &Db) -> anyhow::Result<Arc<Revocations>> {
        let this = Arc::new(Revocations::default());
        let mut sub = bus.subscribe(SUBJECT).await?;
        for sid in db.revoked_session_ids().await? {
            this.apply(&Revocation::Session(sid));
        }
        for jti in db.revoked_jtis().await? {
            this.apply(&Revocation::Token(jti));
        }
        let weak = Arc::downgrade(&this);
        tokio::spawn(async move {
            while let Some(event) = sub.next().await {
                let Some(this) = weak.upgrade() else { break };
                match event {
                    BusEvent::Message(m) => {
                        match serde_json::from_slice::<Revocation>(&m.payload) {
                            Ok(r) => this.apply(&r),
                            Err(e) => tracing::warn!(error = %e, "ignoring malformed revocation"),
                        }
                    }
                    BusEvent::Lagged(n) => {
                        tracing::error!(lost = n, "revocation subscriber lagged")
                    }
                }
            }
        });
        Ok(this)
    }

    /// Records `r` locally.
    pub fn apply(&self, r: &Revocation) {
        match r {
            Revocation::Session(id) => write(&self.sessions).insert(*id),
            Revocation::Token(jti) => write(&self.tokens).insert(jti.clone()),
            Revocation::ApiKey(id) => write(&self.api_keys).insert(*id),
        };
        self.changes.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Changes whenever something is revoked.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }

    /// Records `r` here and tells the other instances.
    pub async fn publish(&self, bus: &Bus, r: Revocation) {
        self.apply(&r);
        match serde_json::to_vec(&r) {
            Ok(payload) => {
                if let Err(e) = bus.publish(SUBJECT.into(), payload.into()).await {
                    tracing::error!(error = %e, "publishing a revocation");
                }
            }
            Err(e) => tracing::error!(error = %e, "encoding a revocation"),
        }
    }

    /// Whether a token of session `sid` with id `jti` is revoked.
    pub fn token_revoked(&self, sid: i64, jti: &str) -> bool {
        read(&self.sessions).contains(&sid) || read(&self.tokens).contains(jti)
    }

    /// Whether API key `id` is revoked.
    pub fn api_key_revoked(&self, id: i64) -> bool {
        read(&self.api_keys).contains(&id)
    }
}

fn read<T>(lock: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    lock.read().unwrap_or_else(|p| p.into_inner())
}

fn write<T>(lock: &RwLock<T>) -> std::sync::RwLockWriteGuard<'_, T> {
    lock.write().unwrap_or_else(|p| p.into_inner())
}

//! The message writer: one task per instance that commits sends in batches (group commit), then
//! publishes them on the bus in id order before acknowledging, so an acknowledged message is
//! durable and already on its way to every subscriber.

use tokio::sync::{mpsc, oneshot};
use veza_storage::{Db, MessageRecord, NewMessage, Rejected};

use crate::{
    bus::Bus,
    domain::error::{DomainError, Result},
};

/// Largest batch committed in one transaction.
const MAX_BATCH: usize = 512;
/// Sends waiting for the writer before callers wait for room.
const QUEUE: usize = 8192;

type Reply = oneshot::Sender<Result<std::result::Result<MessageRecord, Rejected>>>;

/// A handle on the writer task.
#[derive(Clone)]
pub struct MessageWriter {
    tx: mpsc::Sender<(NewMessage, Reply)>,
}

impl MessageWriter {
    /// Starts the writer task.
    pub fn start(db: Db, bus: Bus) -> MessageWriter {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(run(db, bus, rx));
        MessageWriter { tx }
    }

    /// Stores `m` and returns it with its id once durable and published.
    pub async fn write(
        &self,
        m: NewMessage,
    ) -> Result<std::result::Result<MessageRecord, Rejected>> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send((m, reply))
            .await
            .map_err(|_| DomainError::Unavailable("message writer stopped".into()))?;
        rx.await
            .map_err(|_| DomainError::Unavailable("message writer stopped".into()))?
    }
}

async fn run(db: Db, bus: Bus, mut rx: mpsc::Receiver<(NewMessage, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let (messages, replies): (Vec<NewMessage>, Vec<Reply>) = batch.drain(..).unzip();
        match db.insert_messages(&messages).await {
            Ok(results) => {
                for (result, reply) in results.into_iter().zip(replies) {
                    if let Ok(m) = &result {
                        publish(&bus, m).await;
                    }
                    let _ = reply.send(Ok(result));
                }
            }
            Err(e) if e.is_bad_row() && messages.len() > 1 => {
                // One sender's bad row must not fail the others: each is written on its own.
                tracing::warn!(error = %e, batch = messages.len(), "message batch refused; writing one by one");
                for (m, reply) in messages.into_iter().zip(replies) {
                    let result = match db.insert_messages(std::slice::from_ref(&m)).await {
                        Ok(mut results) => match results.pop() {
                            Some(r) => Ok(r),
                            None => Err(DomainError::Internal(anyhow::anyhow!("no result"))),
                        },
                        Err(e) => Err(refused(e)),
                    };
                    if let Ok(Ok(stored)) = &result {
                        publish(&bus, stored).await;
                    }
                    let _ = reply.send(result);
                }
            }
            Err(e) => {
                let e = refused(e);
                tracing::error!(error = %e, batch = messages.len(), "storing a message batch");
                for reply in replies {
                    let _ = reply.send(Err(copy(&e)));
                }
            }
        }
    }
}

/// The error for a message the database would not store: `INVALID_ARGUMENT` when the row itself
/// was refused (validation should have caught it), else what the storage error maps to.
fn refused(e: veza_storage::StorageError) -> DomainError {
    if e.is_bad_row() && !matches!(e, veza_storage::StorageError::Conflict(_)) {
        tracing::error!(error = %e, "the database refused a message");
        return DomainError::invalid("content", "the message could not be stored as sent");
    }
    DomainError::from(e)
}

async fn publish(bus: &Bus, m: &MessageRecord) {
    match serde_json::to_vec(m) {
        Ok(payload) => {
            if let Err(e) = bus
                .publish(super::message_subject(m.room_id), payload.into())
                .await
            {
                tracing::error!(error = %e, room = m.room_id, "publishing a message");
            }
        }
        Err(e) => tracing::error!(error = %e, "encoding a message"),
    }
}

/// The same failure for every caller of a failed batch.
fn copy(e: &DomainError) -> DomainError {
    match e {
        DomainError::Unavailable(m) => DomainError::Unavailable(m.clone()),
        DomainError::InvalidArgument { field, reason } => DomainError::InvalidArgument {
            field,
            reason: reason.clone(),
        },
        other => DomainError::Internal(anyhow::anyhow!("{other}")),
    }
}

//! Per-room fan-out inside one instance: one bus subscription per room with listeners, decoded
//! once and shared by every local subscriber as `Arc`s.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures::StreamExt;
use tokio::sync::broadcast;
use veza_storage::MessageRecord;

use super::Activity;
use crate::bus::{Bus, BusEvent, Subscription};

/// Events buffered per room for the slowest local subscriber; beyond, it catches up from the database.
const ROOM_BUFFER: usize = 1024;

/// What a room subscriber receives.
#[derive(Clone, Debug)]
pub enum RoomEvent {
    Message(Arc<MessageRecord>),
    Activity(Arc<Activity>),
    /// The hub itself lost bus messages: subscribers must catch up from the database.
    Lagged,
}

type Rooms = Arc<Mutex<HashMap<i64, broadcast::Sender<RoomEvent>>>>;

/// The rooms with local subscribers.
#[derive(Clone)]
pub struct RoomHub {
    bus: Bus,
    rooms: Rooms,
}

impl RoomHub {
    /// A hub over `bus`.
    pub fn new(bus: Bus) -> RoomHub {
        RoomHub {
            bus,
            rooms: Rooms::default(),
        }
    }

    /// Subscribes to a room; what is published after this returns is delivered.
    pub async fn subscribe(&self, room_id: i64) -> anyhow::Result<broadcast::Receiver<RoomEvent>> {
        if let Some(tx) = lock(&self.rooms).get(&room_id) {
            return Ok(tx.subscribe());
        }
        let sub = self
            .bus
            .subscribe(&format!("veza.chat.room.{room_id}.*"))
            .await?;
        self.bus.flush().await;
        let mut rooms = lock(&self.rooms);
        if let Some(tx) = rooms.get(&room_id) {
            return Ok(tx.subscribe());
        }
        let (tx, rx) = broadcast::channel(ROOM_BUFFER);
        rooms.insert(room_id, tx.clone());
        tokio::spawn(forward(room_id, sub, tx, self.rooms.clone()));
        Ok(rx)
    }
}

async fn forward(
    room_id: i64,
    mut sub: Subscription,
    tx: broadcast::Sender<RoomEvent>,
    rooms: Rooms,
) {
    let mut idle = tokio::time::interval(Duration::from_secs(30));
    loop {
        let event = tokio::select! {
            e = sub.next() => match e {
                Some(e) => decode(e),
                None => break,
            },
            _ = idle.tick() => None,
        };
        let delivered = match event {
            Some(e) => tx.send(e).is_ok(),
            None => tx.receiver_count() > 0,
        };
        if !delivered {
            let mut map = lock(&rooms);
            if tx.receiver_count() == 0 {
                map.remove(&room_id);
                return;
            }
        }
    }
    lock(&rooms).remove(&room_id);
}

fn decode(e: BusEvent) -> Option<RoomEvent> {
    match e {
        BusEvent::Lagged(_) => Some(RoomEvent::Lagged),
        BusEvent::Message(m) if m.subject.ends_with(".message") => {
            serde_json::from_slice(&m.payload)
                .ok()
                .map(|r| RoomEvent::Message(Arc::new(r)))
        }
        BusEvent::Message(m) => serde_json::from_slice(&m.payload)
            .ok()
            .map(|a| RoomEvent::Activity(Arc::new(a))),
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

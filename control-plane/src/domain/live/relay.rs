//! The relay between instances: the ingesting instance publishes each page once on
//! `veza.live.<id>.pages`; every other instance with listeners subscribes once and feeds its
//! local channel. Each message carries the header pages, so an instance can join mid-stream.

use std::sync::Arc;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures::StreamExt;

use super::{
    Live,
    channel::{Channel, Page},
};
use crate::bus::{Bus, BusEvent};

const KIND_PAGE: u8 = 1;
const KIND_END: u8 = 2;
/// Bytes of an instance id.
pub const INSTANCE_LEN: usize = 16;

/// A decoded relay message.
#[derive(Debug)]
pub enum Relayed {
    Page { headers: Bytes, page: Page },
    End,
}

/// The subject of stream `id`'s pages.
pub fn pages_subject(id: i64) -> String {
    format!("veza.live.{id}.pages")
}

/// Encodes a page with the stream's header pages.
pub fn encode_page(origin: &[u8; INSTANCE_LEN], headers: &Bytes, page: &Page) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + INSTANCE_LEN + 34 + headers.len() + page.data.len());
    b.put_u8(KIND_PAGE);
    b.put_slice(origin);
    b.put_u64(page.index);
    b.put_u64(page.timestamp_ms);
    b.put_i64(page.arrived_us);
    b.put_u16(page.channels);
    b.put_u32(headers.len() as u32);
    b.put_slice(headers);
    b.put_slice(&page.data);
    b.freeze()
}

/// Encodes the end of the broadcast.
pub fn encode_end(origin: &[u8; INSTANCE_LEN]) -> Bytes {
    let mut b = BytesMut::with_capacity(1 + INSTANCE_LEN);
    b.put_u8(KIND_END);
    b.put_slice(origin);
    b.freeze()
}

/// Decodes a relay message and its origin; `None` when malformed.
pub fn decode(mut b: Bytes) -> Option<([u8; INSTANCE_LEN], Relayed)> {
    if b.len() < 1 + INSTANCE_LEN {
        return None;
    }
    let kind = b.get_u8();
    let mut origin = [0u8; INSTANCE_LEN];
    b.copy_to_slice(&mut origin);
    match kind {
        KIND_END => Some((origin, Relayed::End)),
        KIND_PAGE if b.len() >= 30 => {
            let index = b.get_u64();
            let timestamp_ms = b.get_u64();
            let arrived_us = b.get_i64();
            let channels = b.get_u16();
            let hlen = b.get_u32() as usize;
            if b.len() < hlen {
                return None;
            }
            let headers = b.split_to(hlen);
            let page = Page::new(index, timestamp_ms, channels, b, arrived_us);
            Some((origin, Relayed::Page { headers, page }))
        }
        _ => None,
    }
}

impl Live {
    /// Publishes a page to the other instances (NATS only; one instance needs no relay).
    pub(super) async fn relay_page(&self, id: i64, headers: &Bytes, page: &Page) {
        if let Bus::Nats(_) = self.inner.bus {
            let msg = encode_page(&self.inner.instance, headers, page);
            if let Err(e) = self.inner.bus.publish(pages_subject(id), msg).await {
                tracing::warn!(error = %e, "live relay: publishing a page");
            }
        }
    }

    /// Tells the other instances' listeners that stream `id` has ended.
    pub(super) async fn relay_end(&self, id: i64) {
        if let Bus::Nats(_) = self.inner.bus {
            let msg = encode_end(&self.inner.instance);
            let _ = self.inner.bus.publish(pages_subject(id), msg).await;
            self.inner.bus.flush().await;
        }
    }

    /// Feeds `channel` from the pages another instance relays, until the broadcast ends or the
    /// channel has had no listener for a while.
    pub(super) async fn follow_relay(&self, channel: Arc<Channel>) {
        let id = channel.id;
        let mut sub = match self.inner.bus.subscribe(&pages_subject(id)).await {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(stream_id = id, error = %e, "live relay: subscribing");
                return;
            }
        };
        let mut idle = tokio::time::interval(std::time::Duration::from_secs(5));
        let mut shutdown = self.inner.shutdown.clone();
        loop {
            tokio::select! {
                ev = sub.next() => match ev {
                    Some(BusEvent::Message(env)) => {
                        if self.apply_relayed(&channel, env.payload) {
                            break;
                        }
                    }
                    Some(BusEvent::Lagged(_)) => {}
                    None => break,
                },
                _ = idle.tick() => {
                    if channel.ended() || self.idle_remote(&channel) {
                        break;
                    }
                }
                _ = shutdown.wait() => break,
            }
        }
        self.drop_channel(&channel);
    }

    /// Applies one relayed message; `true` when the broadcast ended.
    fn apply_relayed(&self, channel: &Channel, payload: Bytes) -> bool {
        let Some((origin, msg)) = decode(payload) else {
            return false;
        };
        if origin == self.inner.instance {
            return false;
        }
        match msg {
            Relayed::Page { headers, page } => {
                channel.set_headers(Page::new(
                    0,
                    page.timestamp_ms,
                    page.channels,
                    headers,
                    page.arrived_us,
                ));
                channel.publish(Arc::new(page));
                false
            }
            Relayed::End => {
                channel.end();
                true
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_round_trip() {
        let origin = [7u8; INSTANCE_LEN];
        let page = Page::new(42, 4200, 2, Bytes::from_static(b"OggS page"), 123);
        let msg = encode_page(&origin, &Bytes::from_static(b"heads"), &page);
        match decode(msg) {
            Some((o, Relayed::Page { headers, page: p })) => {
                assert_eq!(o, origin);
                assert_eq!(&headers[..], b"heads");
                assert_eq!(
                    (p.index, p.timestamp_ms, p.channels, p.arrived_us),
                    (42, 4200, 2, 123)
                );
                assert_eq!(&p.data[..], b"OggS page");
            }
            other => panic!("bad decode: {other:?}"),
        }
        assert!(matches!(
            decode(encode_end(&origin)),
            Some((_, Relayed::End))
        ));
        assert!(decode(Bytes::from_static(b"\x01short")).is_none());
    }
}

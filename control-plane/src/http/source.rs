//! An Icecast source (`PUT` or `SOURCE /live/{id}`, Basic `source:<stream_key>`): its body is
//! read off the socket and published like a gRPC producer's chunks, grace period included
//! (SPEC §12). Ogg Opus is parsed into packets on the source's own task as bytes arrive; other
//! formats are decoded to PCM by media-core on a blocking thread.

use std::collections::VecDeque;
use std::io::Read;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::{
    io::AsyncReadExt,
    net::TcpStream,
    sync::mpsc,
    time::{Instant, Sleep},
};
use veza_media_core::{
    MediaError,
    live_opus::{OggStart, OpusPassthrough, ogg_start},
    live_source::{SourceAudio, SourceKind, SourceReader},
};
use veza_storage::MediaRecord;

use super::{
    framing::Framing,
    raw::{Head, LiveHttp, refuse, reply},
};
use crate::{
    domain::{DomainError, live::SourceCodec},
    shutdown::Shutdown,
};

/// Body bytes and decoded items in flight between the socket, the decoder and the stream.
const IN_FLIGHT: usize = 16;
/// Bytes read off the socket at once.
const READ: usize = 16 << 10;

/// Authenticates a source and ingests its audio until it ends.
pub(super) async fn serve(mut sock: TcpStream, id: i64, head: Head, rest: BytesMut, st: LiveHttp) {
    let Some(key) = head.source_password() else {
        let e = DomainError::Unauthenticated("a source logs in as source:<stream_key>".into());
        return refuse(&mut sock, &e).await;
    };
    let m = match st.live.source_login(id, &key).await {
        Ok(m) => m,
        Err(e) => return refuse(&mut sock, &e).await,
    };
    let ct = head
        .header("content-type")
        .and_then(|v| std::str::from_utf8(v).ok());
    let Some(kind) = ct.and_then(SourceKind::from_content_type) else {
        let msg = "send audio/ogg (Opus, Vorbis, FLAC) or audio/mpeg\n";
        let _ = reply(&mut sock, 415, "Unsupported Media Type", msg, &[]).await;
        return;
    };
    let Some(framing) = Framing::of(
        head.header("content-length"),
        head.header("transfer-encoding"),
    ) else {
        let _ = reply(
            &mut sock,
            400,
            "Bad Request",
            "unreadable body framing\n",
            &[],
        )
        .await;
        return;
    };
    let expects = head
        .header("expect")
        .is_some_and(|v| v.eq_ignore_ascii_case(b"100-continue"));
    // Legacy SOURCE clients wait for the answer before sending; PUT gets it at the end.
    let early = head.method == "SOURCE";
    let opening: &[u8] = match (expects, early) {
        (_, true) => b"HTTP/1.0 200 OK\r\n\r\n",
        (true, false) => b"HTTP/1.1 100 Continue\r\n\r\n",
        (false, false) => b"",
    };
    if !opening.is_empty()
        && tokio::io::AsyncWriteExt::write_all(&mut sock, opening)
            .await
            .is_err()
    {
        return;
    }
    let mut body = Body::new(&mut sock, framing, rest, &st);
    let published = ingest(kind, &mut body, &m).await;
    let read = body.end.unwrap_or(BodyEnd::Stopped);
    tracing::info!(
        stream_id = id,
        ?read,
        ok = published.is_ok(),
        "Icecast source left"
    );
    let outcome = match (read, published) {
        (_, Err(e)) => Err(e),
        (BodyEnd::Malformed, Ok(())) => Err(DomainError::invalid("body", "malformed chunks")),
        (_, Ok(())) => Ok(()),
    };
    match outcome {
        _ if early => {
            let _ = tokio::io::AsyncWriteExt::shutdown(&mut sock).await;
        }
        Err(e) => refuse(&mut sock, &e).await,
        Ok(()) => {
            let _ = reply(&mut sock, 200, "OK", "", &[]).await;
        }
    }
}

/// Why the body stopped.
#[derive(Debug)]
enum BodyEnd {
    /// All of it came (or the peer closed an until-close body).
    End,
    /// Nothing came for the idle timeout.
    Idle,
    /// The decoder stopped taking bytes (bad audio, or the stream is over).
    Stopped,
    Shutdown,
    Malformed,
    Broken,
}

/// The request body, read off the socket piece by piece.
struct Body<'a> {
    sock: &'a mut TcpStream,
    framing: Framing,
    buf: BytesMut,
    st: &'a LiveHttp,
    shutdown: Shutdown,
    /// Fires at the idle deadline as of its last reset; reads only move `last_read`, so a
    /// source sending steadily costs no timer work per read.
    idle: Pin<Box<Sleep>>,
    last_read: Instant,
    /// Why it ended, once it has.
    end: Option<BodyEnd>,
}

impl<'a> Body<'a> {
    fn new(sock: &'a mut TcpStream, framing: Framing, buf: BytesMut, st: &'a LiveHttp) -> Self {
        Body {
            sock,
            framing,
            buf,
            st,
            shutdown: st.shutdown.clone(),
            idle: Box::pin(tokio::time::sleep(st.idle)),
            last_read: Instant::now(),
            end: None,
        }
    }

    /// The next piece of the body; `None` once it has ended (the reason is in `end`).
    async fn next(&mut self) -> Option<Bytes> {
        if self.end.is_some() {
            return None;
        }
        match self.read().await {
            Ok(b) => Some(b),
            Err(end) => {
                self.end = Some(end);
                None
            }
        }
    }

    async fn read(&mut self) -> Result<Bytes, BodyEnd> {
        loop {
            match self.framing.next(&mut self.buf) {
                Ok(Some(b)) => return Ok(b),
                Ok(None) => {}
                Err(why) => {
                    tracing::debug!(why, "malformed source body");
                    return Err(BodyEnd::Malformed);
                }
            }
            if self.framing.done() {
                return Err(BodyEnd::End);
            }
            self.buf.reserve(READ);
            let read = tokio::select! {
                r = self.sock.read_buf(&mut self.buf) => r,
                () = &mut self.idle => {
                    let deadline = self.last_read + self.st.idle;
                    if Instant::now() >= deadline {
                        return Err(BodyEnd::Idle);
                    }
                    self.idle.as_mut().reset(deadline);
                    continue;
                }
                () = self.shutdown.wait() => return Err(BodyEnd::Shutdown),
            };
            match read {
                Ok(0) if matches!(self.framing, Framing::Eof) => return Err(BodyEnd::End),
                Ok(0) | Err(_) => return Err(BodyEnd::Broken),
                Ok(_) => self.last_read = Instant::now(),
            }
        }
    }
}

/// Ingests the body: Ogg Opus passed through on this task, everything else decoded on a
/// blocking thread.
async fn ingest(kind: SourceKind, body: &mut Body<'_>, m: &MediaRecord) -> Result<(), DomainError> {
    let st = body.st;
    let prefix = match kind {
        SourceKind::Ogg => match sniff(body).await {
            Ok((OggStart::Opus, prefix)) => {
                return publish(st, m, Box::pin(passthrough(body, prefix))).await;
            }
            Ok((_, prefix)) => prefix,
            Err(e) => return Err(bad_audio(e)),
        },
        SourceKind::Mp3 => Vec::new(),
    };
    let (bytes_tx, bytes_rx) = mpsc::channel::<Bytes>(IN_FLIGHT);
    let (audio_tx, audio_rx) = mpsc::channel(IN_FLIGHT);
    tokio::task::spawn_blocking(move || decode(kind, prefix.into(), bytes_rx, audio_tx));
    let audio = Box::pin(tokio_stream::wrappers::ReceiverStream::new(audio_rx));
    let ((), published) = tokio::join!(pump(body, bytes_tx), publish(st, m, audio));
    published
}

/// Reads the body until it tells Ogg Opus from other Ogg codecs; the bytes read.
async fn sniff(body: &mut Body<'_>) -> Result<(OggStart, Vec<u8>), MediaError> {
    let mut prefix = Vec::new();
    loop {
        match ogg_start(&prefix, body.end.is_some())? {
            OggStart::More => {
                if let Some(b) = body.next().await {
                    prefix.extend_from_slice(&b);
                }
            }
            start => return Ok((start, prefix)),
        }
    }
}

/// An Ogg Opus body's items, parsed as its bytes arrive.
fn passthrough<'a>(
    body: &'a mut Body<'_>,
    prefix: Vec<u8>,
) -> impl Stream<Item = Result<SourceAudio, MediaError>> + Send + 'a {
    let mut pass = OpusPassthrough::new();
    let mut queue = VecDeque::new();
    let failed = pass.push(&prefix, &mut queue).err();
    futures::stream::unfold(
        (body, pass, queue, failed),
        |(body, mut pass, mut queue, mut failed)| async move {
            loop {
                if let Some(item) = queue.pop_front() {
                    return Some((Ok(item), (body, pass, queue, failed)));
                }
                if let Some(e) = failed.take() {
                    body.end.get_or_insert(BodyEnd::Stopped);
                    return Some((Err(e), (body, pass, queue, None)));
                }
                let bytes = body.next().await?;
                failed = pass.push(&bytes, &mut queue).err();
            }
        },
    )
}

/// Reads the body into the decoder's channel until it ends or the decoder stops.
async fn pump(body: &mut Body<'_>, tx: mpsc::Sender<Bytes>) {
    while let Some(b) = body.next().await {
        if tx.send(b).await.is_err() {
            body.end = Some(BodyEnd::Stopped);
            return;
        }
    }
}

/// The decoder's thread: body bytes in (after `prefix`), Opus packets or PCM out.
fn decode(
    kind: SourceKind,
    prefix: Bytes,
    rx: mpsc::Receiver<Bytes>,
    tx: mpsc::Sender<Result<SourceAudio, MediaError>>,
) {
    let input = ChannelReader { rx, cur: prefix };
    let mut reader = match SourceReader::new(kind, input) {
        Ok(r) => r,
        Err(e) => {
            let _ = tx.blocking_send(Err(e));
            return;
        }
    };
    loop {
        let item = match reader.next() {
            Ok(Some(a)) => Ok(a),
            Ok(None) => return,
            Err(e) => Err(e),
        };
        let last = item.is_err();
        if tx.blocking_send(item).is_err() || last {
            return;
        }
    }
}

/// The body as a blocking reader for media-core.
struct ChannelReader {
    rx: mpsc::Receiver<Bytes>,
    cur: Bytes,
}

impl Read for ChannelReader {
    fn read(&mut self, out: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.cur = b,
                None => return Ok(0),
            }
        }
        let n = out.len().min(self.cur.len());
        out[..n].copy_from_slice(&self.cur.split_to(n));
        Ok(n)
    }
}

/// Publishes the decoded audio: its first item tells the codec, and the rest must keep to it.
async fn publish<A>(st: &LiveHttp, m: &MediaRecord, mut items: A) -> Result<(), DomainError>
where
    A: Stream<Item = Result<SourceAudio, MediaError>> + Unpin + Send,
{
    let (codec, first) = match items.next().await {
        None => return Ok(()),
        Some(Err(e)) => return Err(bad_audio(e)),
        Some(Ok(SourceAudio::OpusHead { channels, pre_skip })) => {
            (SourceCodec::Opus { channels, pre_skip }, None)
        }
        Some(Ok(SourceAudio::Pcm {
            sample_rate,
            channels,
            data,
        })) => (
            SourceCodec::Pcm {
                rate: sample_rate,
                channels,
            },
            Some(data),
        ),
        Some(Ok(SourceAudio::OpusPacket(_))) => {
            return Err(DomainError::invalid("audio", "Opus audio before its head"));
        }
    };
    let audio = futures::stream::iter(first.map(Ok)).chain(rest(codec, items));
    st.live.publish_source(m, codec, Box::pin(audio)).await
}

/// The source's audio after its first item, as the bytes the producer takes.
fn rest<A>(codec: SourceCodec, items: A) -> impl Stream<Item = Result<Bytes, DomainError>> + Send
where
    A: Stream<Item = Result<SourceAudio, MediaError>> + Unpin + Send,
{
    futures::stream::unfold(items, move |mut items| async move {
        loop {
            let item = match items.next().await? {
                Err(e) => Err(bad_audio(e)),
                Ok(SourceAudio::OpusPacket(p)) => Ok(p),
                Ok(SourceAudio::OpusHead { channels, .. }) => match codec {
                    // A chained stream in the same layout goes on.
                    SourceCodec::Opus { channels: c, .. } if c == channels => continue,
                    _ => Err(changed()),
                },
                Ok(SourceAudio::Pcm {
                    sample_rate,
                    channels,
                    data,
                }) => match codec {
                    SourceCodec::Pcm { rate, channels: c }
                        if rate == sample_rate && c == channels =>
                    {
                        Ok(data)
                    }
                    _ => Err(changed()),
                },
            };
            return Some((item, items));
        }
    })
}

fn changed() -> DomainError {
    DomainError::invalid("audio", "the source changed its format mid-stream")
}

fn bad_audio(e: MediaError) -> DomainError {
    DomainError::invalid("audio", e.to_string())
}

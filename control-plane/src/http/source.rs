//! An Icecast source (`PUT` or `SOURCE /live/{id}`, Basic `source:<stream_key>`): its body is
//! read off the socket, turned into Opus packets or PCM by media-core on a blocking thread, and
//! published like a gRPC producer's chunks, grace period included (SPEC §12).

use std::io::Read;

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use tokio::{io::AsyncReadExt, net::TcpStream, sync::mpsc};
use veza_media_core::{
    MediaError,
    live_source::{SourceAudio, SourceKind, SourceReader},
};
use veza_storage::MediaRecord;

use super::{
    framing::Framing,
    raw::{Head, LiveHttp, refuse, reply},
};
use crate::domain::{DomainError, live::SourceCodec};

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
    let (bytes_tx, bytes_rx) = mpsc::channel::<Bytes>(IN_FLIGHT);
    let (audio_tx, audio_rx) = mpsc::channel(IN_FLIGHT);
    tokio::task::spawn_blocking(move || decode(kind, bytes_rx, audio_tx));
    let (read, published) = tokio::join!(
        pump(&mut sock, framing, rest, bytes_tx, &st),
        publish(&st, &m, audio_rx),
    );
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

/// Reads the body off the socket into the decoder until it ends.
async fn pump(
    sock: &mut TcpStream,
    mut framing: Framing,
    mut buf: BytesMut,
    tx: mpsc::Sender<Bytes>,
    st: &LiveHttp,
) -> BodyEnd {
    let mut shutdown = st.shutdown.clone();
    loop {
        loop {
            match framing.next(&mut buf) {
                Ok(Some(b)) => {
                    if tx.send(b).await.is_err() {
                        return BodyEnd::Stopped;
                    }
                }
                Ok(None) => break,
                Err(why) => {
                    tracing::debug!(why, "malformed source body");
                    return BodyEnd::Malformed;
                }
            }
        }
        if framing.done() {
            return BodyEnd::End;
        }
        buf.reserve(READ);
        let read = tokio::select! {
            r = tokio::time::timeout(st.idle, sock.read_buf(&mut buf)) => r,
            _ = shutdown.wait() => return BodyEnd::Shutdown,
        };
        match read {
            Ok(Ok(0)) if matches!(framing, Framing::Eof) => return BodyEnd::End,
            Ok(Ok(0)) | Ok(Err(_)) => return BodyEnd::Broken,
            Ok(Ok(_)) => {}
            Err(_) => return BodyEnd::Idle,
        }
    }
}

/// The decoder's thread: body bytes in, Opus packets or PCM out.
fn decode(
    kind: SourceKind,
    rx: mpsc::Receiver<Bytes>,
    tx: mpsc::Sender<Result<SourceAudio, MediaError>>,
) {
    let input = ChannelReader {
        rx,
        cur: Bytes::new(),
    };
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
async fn publish(
    st: &LiveHttp,
    m: &MediaRecord,
    mut rx: mpsc::Receiver<Result<SourceAudio, MediaError>>,
) -> Result<(), DomainError> {
    let (codec, first) = match rx.recv().await {
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
    let audio = futures::stream::iter(first.map(Ok)).chain(rest(codec, rx));
    st.live.publish_source(m, codec, Box::pin(audio)).await
}

/// The source's audio after its first item, as the bytes the producer takes.
fn rest(
    codec: SourceCodec,
    rx: mpsc::Receiver<Result<SourceAudio, MediaError>>,
) -> impl Stream<Item = Result<Bytes, DomainError>> + Send {
    futures::stream::unfold(rx, move |mut rx| async move {
        loop {
            let item = match rx.recv().await? {
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
            return Some((item, rx));
        }
    })
}

fn changed() -> DomainError {
    DomainError::invalid("audio", "the source changed its format mid-stream")
}

fn bad_audio(e: MediaError) -> DomainError {
    DomainError::invalid("audio", e.to_string())
}

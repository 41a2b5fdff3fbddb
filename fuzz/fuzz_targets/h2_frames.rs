//! Fuzz target: the live path's HTTP/2 frame scanner (`grpc/direct/frames.rs`) over arbitrary
//! bytes cut at arbitrary places. It must never panic, must report the same events however the
//! bytes are cut, and must agree with a straightforward whole-buffer parser written here.
#![no_main]

use libfuzzer_sys::fuzz_target;
use veza_control_plane::grpc::direct::frames::{
    ACK, Event, HEAD, Head, PREFACE, SETTINGS, Scanner, WINDOW_UPDATE,
};

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (cuts, bytes) = rest.split_at(rest.len().min(usize::from(mode >> 4)));
    let client = mode & 1 == 1;
    let new = || {
        if client {
            Scanner::from_client()
        } else {
            Scanner::from_server()
        }
    };

    let mut scanner = new();
    let mut got = Vec::new();
    let mut at = 0;
    for len in chunk_lengths(cuts, bytes.len()) {
        let chunk = &bytes[at..at + len];
        scanner.feed(chunk, &mut |e| {
            if let Event::Start {
                head,
                at: Some(off),
            } = e
            {
                let raw = chunk
                    .get(off..off + HEAD)
                    .expect("a reported header lies in its feed");
                assert_eq!(parse_head(raw), head, "the offset points at the header");
            }
            got.push(strip(e));
        });
        at += len;
    }
    let (expected, lost) = reference(bytes, client);
    assert_eq!(got, expected);
    assert_eq!(scanner.lost(), lost);
    if scanner.at_boundary() {
        assert!(!lost);
        assert_eq!(scanner.pending_head(), 0);
    }
    assert!(scanner.pending_head() < HEAD);
});

/// Chunk lengths summing to `total`, taken from `cuts` (the rest in one chunk).
fn chunk_lengths(cuts: &[u8], total: usize) -> Vec<usize> {
    let mut out = Vec::new();
    let mut left = total;
    for &c in cuts {
        let n = usize::from(c).min(left);
        out.push(n);
        left -= n;
    }
    out.push(left);
    out
}

fn strip(e: Event) -> Event {
    match e {
        Event::Start { head, .. } => Event::Start { head, at: None },
        e => e,
    }
}

fn parse_head(h: &[u8]) -> Head {
    Head {
        len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
        ty: h[3],
        flags: h[4],
        stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
    }
}

/// The events of `bytes` in one pass, and whether the scanner must give up (bad preface).
fn reference(bytes: &[u8], client: bool) -> (Vec<Event>, bool) {
    let mut out = Vec::new();
    let mut rest = bytes;
    if client {
        let n = PREFACE.len().min(rest.len());
        if rest[..n] != PREFACE[..n] {
            return (out, true);
        }
        rest = &rest[n..];
    }
    while rest.len() >= HEAD {
        let head = parse_head(&rest[..HEAD]);
        out.push(Event::Start { head, at: None });
        rest = &rest[HEAD..];
        let len = head.len as usize;
        let payload = &rest[..len.min(rest.len())];
        if head.ty == SETTINGS && head.flags & ACK == 0 {
            for e in payload.chunks_exact(6) {
                out.push(Event::Setting {
                    id: u16::from_be_bytes([e[0], e[1]]),
                    value: u32::from_be_bytes([e[2], e[3], e[4], e[5]]),
                });
            }
        } else if head.ty == WINDOW_UPDATE && head.len == 4 && payload.len() == 4 {
            out.push(Event::Window {
                stream: head.stream,
                increment: u32::from_be_bytes([payload[0], payload[1], payload[2], payload[3]])
                    & 0x7fff_ffff,
            });
        }
        if payload.len() < len {
            return (out, false);
        }
        out.push(Event::End(head));
        rest = &rest[len..];
    }
    (out, false)
}

//! A streaming HTTP/2 frame scanner: it follows frame boundaries in bytes as they pass through a
//! connection and reports the few fields the live fast path needs, copying nothing.

/// The client connection preface (RFC 9113 §3.4).
pub const PREFACE: &[u8; 24] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PUSH_PROMISE: u8 = 0x5;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const WINDOW_UPDATE: u8 = 0x8;
pub const CONTINUATION: u8 = 0x9;
/// A frame type no HTTP/2 peer knows, which it must ignore (RFC 9113 §5.5).
pub const UNKNOWN: u8 = 0xf0;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

/// `SETTINGS_HEADER_TABLE_SIZE`.
pub const HEADER_TABLE_SIZE: u16 = 0x1;
/// `SETTINGS_INITIAL_WINDOW_SIZE`.
pub const INITIAL_WINDOW_SIZE: u16 = 0x4;

/// Error codes (RFC 9113 §7).
pub const NO_ERROR: u32 = 0x0;
pub const INTERNAL_ERROR: u32 = 0x2;
pub const REFUSED_STREAM: u32 = 0x7;

/// Length of a frame header.
pub const HEAD: usize = 9;

/// The largest DATA payload every peer accepts (the protocol's minimum `MAX_FRAME_SIZE`).
pub const MAX_DATA: usize = 16_384;

/// A frame header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub len: u32,
    pub ty: u8,
    pub flags: u8,
    pub stream: u32,
}

impl Head {
    /// The 9 header bytes of a DATA frame of `len` bytes on `stream`.
    pub fn data(len: usize, stream: u32) -> [u8; 9] {
        Head::bytes(len, DATA, 0, stream)
    }

    /// The 9 header bytes of a frame of `len` bytes, type `ty` and `flags` on `stream`.
    pub fn bytes(len: usize, ty: u8, flags: u8, stream: u32) -> [u8; 9] {
        let l = (len as u32).to_be_bytes();
        let s = stream.to_be_bytes();
        [l[1], l[2], l[3], ty, flags, s[0], s[1], s[2], s[3]]
    }
}

/// A whole frame: header and `payload`, appended to `out`.
pub fn frame(out: &mut Vec<u8>, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&Head::bytes(payload.len(), ty, flags, stream));
    out.extend_from_slice(payload);
}

/// What the scanner saw.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A complete frame header; `at` is the offset of its first byte in this `feed`, or `None`
    /// when it began in an earlier one.
    Start { head: Head, at: Option<usize> },
    /// One entry of a SETTINGS frame (not an ACK).
    Setting { id: u16, value: u32 },
    /// A WINDOW_UPDATE increment (stream 0 is the connection).
    Window { stream: u32, increment: u32 },
    /// A PING that asks for an answer, with its opaque data.
    Ping([u8; 8]),
    /// The frame's last byte went by.
    End(Head),
}

/// Follows one direction of one connection.
#[derive(Clone, Debug)]
pub struct Scanner {
    preface: usize,
    head: [u8; 9],
    have: usize,
    cur: Option<Head>,
    left: u32,
    acc: [u8; 8],
    acc_len: usize,
    block_open: bool,
    lost: bool,
}

impl Scanner {
    /// Bytes a client sends: the preface, then frames.
    pub fn from_client() -> Scanner {
        Scanner::new(PREFACE.len())
    }

    /// Bytes a server sends: frames from the first byte.
    pub fn from_server() -> Scanner {
        Scanner::new(0)
    }

    fn new(preface: usize) -> Scanner {
        Scanner {
            preface,
            head: [0; 9],
            have: 0,
            cur: None,
            left: 0,
            acc: [0; 8],
            acc_len: 0,
            block_open: false,
            lost: false,
        }
    }

    /// The bytes were not HTTP/2 (an HTTP/1 connection): nothing more is reported.
    pub fn lost(&self) -> bool {
        self.lost
    }

    /// The client preface went by whole.
    pub fn preface_done(&self) -> bool {
        !self.lost && self.preface == 0
    }

    /// Bytes of a frame header seen so far, when one is split across `feed` calls.
    pub fn pending_head(&self) -> usize {
        self.have
    }

    /// Bytes at the end of what was fed that belong to a frame header not yet complete, or to
    /// a WINDOW_UPDATE or PING frame not yet complete: held back, a frame that may still be
    /// rewritten (an increment, or the frame hidden from hyper) is never half delivered.
    pub fn unfinished_update(&self) -> usize {
        if self.lost || self.preface > 0 {
            return 0;
        }
        match self.cur {
            Some(h) if h.ty == WINDOW_UPDATE && h.len == 4 => 9 + (4 - self.left as usize),
            Some(h) if h.ty == PING && h.len == 8 => 9 + (8 - self.left as usize),
            Some(_) => 0,
            None => self.have,
        }
    }

    /// Between two frames and outside a header block: another frame may go here.
    pub fn at_boundary(&self) -> bool {
        !self.lost && self.preface == 0 && self.have == 0 && self.cur.is_none() && !self.block_open
    }

    /// Follows `bytes`, reporting events in order.
    pub fn feed(&mut self, mut bytes: &[u8], on: &mut impl FnMut(Event)) {
        let mut pos = 0;
        while !bytes.is_empty() && !self.lost {
            let used = if self.preface > 0 {
                self.preface_bytes(bytes)
            } else if let Some(head) = self.cur {
                self.payload_bytes(head, bytes, on)
            } else {
                self.head_bytes(bytes, pos, on)
            };
            bytes = &bytes[used..];
            pos += used;
        }
    }

    fn preface_bytes(&mut self, bytes: &[u8]) -> usize {
        let start = PREFACE.len() - self.preface;
        let n = self.preface.min(bytes.len());
        if bytes[..n] != PREFACE[start..start + n] {
            self.lost = true;
        }
        self.preface -= n;
        n
    }

    fn head_bytes(&mut self, bytes: &[u8], pos: usize, on: &mut impl FnMut(Event)) -> usize {
        let began = (self.have == 0).then_some(pos);
        let n = (9 - self.have).min(bytes.len());
        self.head[self.have..self.have + n].copy_from_slice(&bytes[..n]);
        self.have += n;
        if self.have < 9 {
            return n;
        }
        self.have = 0;
        let h = &self.head;
        let head = Head {
            len: u32::from_be_bytes([0, h[0], h[1], h[2]]),
            ty: h[3],
            flags: h[4],
            stream: u32::from_be_bytes([h[5], h[6], h[7], h[8]]) & 0x7fff_ffff,
        };
        on(Event::Start { head, at: began });
        if matches!(head.ty, HEADERS | PUSH_PROMISE) {
            self.block_open = head.flags & END_HEADERS == 0;
        }
        self.cur = Some(head);
        self.left = head.len;
        self.acc_len = 0;
        if head.len == 0 {
            self.finish(head, on);
        }
        n
    }

    fn payload_bytes(&mut self, head: Head, bytes: &[u8], on: &mut impl FnMut(Event)) -> usize {
        let n = (self.left as usize).min(bytes.len());
        let wanted = match head.ty {
            SETTINGS if head.flags & ACK == 0 => 6,
            WINDOW_UPDATE if head.len == 4 => 4,
            PING if head.len == 8 && head.flags & ACK == 0 => 8,
            _ => 0,
        };
        if wanted > 0 {
            for &b in &bytes[..n] {
                self.acc[self.acc_len] = b;
                self.acc_len += 1;
                if self.acc_len == wanted {
                    self.acc_len = 0;
                    on(self.entry(head));
                }
            }
        }
        self.left -= n as u32;
        if self.left == 0 {
            self.finish(head, on);
        }
        n
    }

    fn entry(&self, head: Head) -> Event {
        let a = &self.acc;
        if head.ty == PING {
            return Event::Ping(*a);
        }
        if head.ty == SETTINGS {
            Event::Setting {
                id: u16::from_be_bytes([a[0], a[1]]),
                value: u32::from_be_bytes([a[2], a[3], a[4], a[5]]),
            }
        } else {
            Event::Window {
                stream: head.stream,
                increment: u32::from_be_bytes([a[0], a[1], a[2], a[3]]) & 0x7fff_ffff,
            }
        }
    }

    fn finish(&mut self, head: Head, on: &mut impl FnMut(Event)) {
        self.cur = None;
        if head.ty == CONTINUATION && head.flags & END_HEADERS != 0 {
            self.block_open = false;
        }
        on(Event::End(head));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
        let mut f = Head::data(payload.len(), stream).to_vec();
        f[3] = ty;
        f[4] = flags;
        f.extend_from_slice(payload);
        f
    }

    fn events(s: &mut Scanner, bytes: &[u8], step: usize) -> Vec<Event> {
        let mut out = Vec::new();
        for c in bytes.chunks(step) {
            s.feed(c, &mut |e| out.push(e));
        }
        out
    }

    fn client_bytes() -> Vec<u8> {
        let mut b = PREFACE.to_vec();
        b.extend(frame(
            SETTINGS,
            0,
            0,
            &[0, 4, 0, 1, 0, 0, 0, 3, 0, 0, 0, 100],
        ));
        b.extend(frame(WINDOW_UPDATE, 0, 0, &[0x80, 0, 1, 0]));
        b.extend(frame(HEADERS, END_HEADERS, 1, b"hpack"));
        b.extend(frame(DATA, END_STREAM, 1, b"request"));
        b.extend(frame(RST_STREAM, 0, 1, &[0, 0, 0, 8]));
        b
    }

    #[test]
    fn reports_the_same_events_however_the_bytes_are_cut() {
        let bytes = client_bytes();
        let whole = events(&mut Scanner::from_client(), &bytes, bytes.len());
        for step in [1, 2, 5, 9, 10, 17] {
            let cut: Vec<Event> = events(&mut Scanner::from_client(), &bytes, step)
                .into_iter()
                .map(|e| match e {
                    Event::Start { head, .. } => Event::Start { head, at: None },
                    e => e,
                })
                .collect();
            let expect: Vec<Event> = whole
                .iter()
                .map(|e| match *e {
                    Event::Start { head, .. } => Event::Start { head, at: None },
                    e => e,
                })
                .collect();
            assert_eq!(cut, expect, "step {step}");
        }
        assert!(whole.contains(&Event::Setting {
            id: INITIAL_WINDOW_SIZE,
            value: 65_536
        }));
        assert!(whole.contains(&Event::Window {
            stream: 0,
            increment: 256
        }));
        let ends = whole
            .iter()
            .filter(|e| matches!(e, Event::End(h) if h.stream == 1))
            .count();
        assert_eq!(ends, 3);
    }

    #[test]
    fn start_offsets_point_at_frame_headers() {
        let bytes = client_bytes();
        let mut offsets = Vec::new();
        Scanner::from_client().feed(&bytes, &mut |e| {
            if let Event::Start { head, at } = e {
                offsets.push((head.ty, at));
            }
        });
        assert_eq!(offsets[0], (SETTINGS, Some(24)));
        assert_eq!(offsets[1], (WINDOW_UPDATE, Some(24 + 9 + 12)));
    }

    #[test]
    fn header_blocks_hold_the_boundary_until_continuation_ends() {
        let mut s = Scanner::from_server();
        s.feed(&frame(HEADERS, 0, 1, b"part"), &mut |_| {});
        assert!(!s.at_boundary(), "inside a header block");
        s.feed(&frame(CONTINUATION, END_HEADERS, 1, b"rest"), &mut |_| {});
        assert!(s.at_boundary());
        s.feed(&frame(DATA, 0, 1, b"abc")[..5], &mut |_| {});
        assert!(!s.at_boundary(), "inside a frame");
    }

    #[test]
    fn http1_bytes_are_not_followed() {
        let mut s = Scanner::from_client();
        let mut n = 0;
        s.feed(
            b"POST /veza.chat.ChatService/SendMessage HTTP/1.1\r\n",
            &mut |_| n += 1,
        );
        assert!(s.lost());
        assert!(!s.at_boundary());
        assert_eq!(n, 0);
    }

    #[test]
    fn data_headers_encode_length_and_stream() {
        let h = Head::data(16_384, 3);
        assert_eq!(h, [0, 0x40, 0, DATA, 0, 0, 0, 0, 3]);
    }
}

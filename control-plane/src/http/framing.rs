//! An HTTP/1.x request body as a source sends it: `Content-Length`, chunked, or everything
//! until the connection closes (Icecast's sources, ffmpeg's `icecast://`).

use bytes::{Buf, Bytes, BytesMut};

/// How the body is delimited, and how far it has been read.
#[derive(Debug)]
pub enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunk),
    /// Until the peer closes.
    Eof,
}

/// Where a chunked body is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Chunk {
    /// Before a chunk-size line.
    Size,
    /// Inside a chunk with this many bytes left.
    Data(u64),
    /// After a chunk's data, before its CRLF.
    Crlf,
    /// After the last chunk (its trailers are not read).
    Done,
}

/// A chunk-size line longer than this is refused.
const MAX_SIZE_LINE: usize = 1024;

impl Framing {
    /// The framing of a request with these headers, or `None` when they contradict.
    pub fn of(content_length: Option<&[u8]>, transfer_encoding: Option<&[u8]>) -> Option<Framing> {
        if let Some(te) = transfer_encoding {
            let chunked = std::str::from_utf8(te)
                .ok()?
                .rsplit(',')
                .next()
                .is_some_and(|last| last.trim().eq_ignore_ascii_case("chunked"));
            return (chunked && content_length.is_none()).then_some(Framing::Chunked(Chunk::Size));
        }
        match content_length {
            Some(v) => std::str::from_utf8(v)
                .ok()?
                .trim()
                .parse()
                .ok()
                .map(Framing::Length),
            None => Some(Framing::Eof),
        }
    }

    /// Whether the whole body has been read.
    pub fn done(&self) -> bool {
        matches!(self, Framing::Length(0) | Framing::Chunked(Chunk::Done))
    }

    /// Takes the next piece of body out of `buf` (bytes read from the socket); `Ok(None)` when
    /// `buf` holds no more of it for now; `Err` on a malformed chunked body.
    pub fn next(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, &'static str> {
        loop {
            if buf.is_empty() {
                return Ok(None);
            }
            match self {
                Framing::Eof => return Ok(Some(buf.split().freeze())),
                Framing::Length(left) => {
                    let n = (*left).min(buf.len() as u64) as usize;
                    if n == 0 {
                        return Ok(None);
                    }
                    *left -= n as u64;
                    return Ok(Some(buf.split_to(n).freeze()));
                }
                Framing::Chunked(state) => match *state {
                    Chunk::Done => return Ok(None),
                    Chunk::Size => match httparse::parse_chunk_size(buf) {
                        Ok(httparse::Status::Complete((used, size))) => {
                            buf.advance(used);
                            *state = if size == 0 {
                                Chunk::Done
                            } else {
                                Chunk::Data(size)
                            };
                        }
                        Ok(httparse::Status::Partial) if buf.len() <= MAX_SIZE_LINE => {
                            return Ok(None);
                        }
                        _ => return Err("malformed chunk size"),
                    },
                    Chunk::Data(left) => {
                        let n = left.min(buf.len() as u64) as usize;
                        *state = if n as u64 == left {
                            Chunk::Crlf
                        } else {
                            Chunk::Data(left - n as u64)
                        };
                        return Ok(Some(buf.split_to(n).freeze()));
                    }
                    Chunk::Crlf => {
                        if buf.len() < 2 {
                            return Ok(None);
                        }
                        if &buf[..2] != b"\r\n" {
                            return Err("chunk not followed by CRLF");
                        }
                        buf.advance(2);
                        *state = Chunk::Size;
                    }
                },
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(f: &mut Framing, input: &[u8], step: usize) -> Result<Vec<u8>, &'static str> {
        let mut out = Vec::new();
        let mut buf = BytesMut::new();
        for piece in input.chunks(step) {
            buf.extend_from_slice(piece);
            while let Some(b) = f.next(&mut buf)? {
                out.extend_from_slice(&b);
            }
        }
        Ok(out)
    }

    #[test]
    fn chunked_bodies_in_any_pieces() {
        let body = b"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\n\r\n";
        for step in 1..body.len() {
            let mut f = Framing::of(None, Some(b"chunked")).unwrap();
            assert_eq!(all(&mut f, body, step).unwrap(), b"hello world");
            assert!(f.done());
        }
        let mut f = Framing::Chunked(Chunk::Size);
        assert!(all(&mut f, b"zz\r\n", 4).is_err());
        let mut f = Framing::Chunked(Chunk::Size);
        assert!(all(&mut f, b"2\r\nabXY", 8).is_err());
        let mut f = Framing::Chunked(Chunk::Size);
        assert!(all(&mut f, &[b'1'; 2000], 2000).is_err());
    }

    #[test]
    fn length_and_eof() {
        let mut f = Framing::of(Some(b"4"), None).unwrap();
        assert_eq!(all(&mut f, b"abcdef", 3).unwrap(), b"abcd");
        assert!(f.done());
        let mut f = Framing::of(None, None).unwrap();
        assert_eq!(all(&mut f, b"abcdef", 2).unwrap(), b"abcdef");
        assert!(!f.done());
        assert!(Framing::of(Some(b"x"), None).is_none());
        assert!(Framing::of(Some(b"3"), Some(b"chunked")).is_none());
        assert!(Framing::of(None, Some(b"gzip")).is_none());
    }
}

//! Byte sources that the decoders read from: anything `Read + Seek`, or bytes in memory.

use std::io::{Read, Seek, SeekFrom};

/// Anything media-core can read a file from.
pub trait Source: Read + Seek + Send + Sync {}

impl<T: Read + Seek + Send + Sync> Source for T {}

/// A source with its length measured once up front (what symphonia and the Ogg reader need).
pub struct Measured<R> {
    inner: R,
    len: u64,
}

impl<R: Source> Measured<R> {
    /// Measures the source's length and rewinds it.
    pub fn new(mut inner: R) -> std::io::Result<Self> {
        let len = inner.seek(SeekFrom::End(0))?;
        inner.seek(SeekFrom::Start(0))?;
        Ok(Measured { inner, len })
    }

    pub fn len(&self) -> u64 {
        self.len
    }

    /// True for a zero-byte source.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

impl<R: Read> Read for Measured<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.inner.read(buf)
    }
}

impl<R: Seek> Seek for Measured<R> {
    fn seek(&mut self, pos: SeekFrom) -> std::io::Result<u64> {
        self.inner.seek(pos)
    }
}

impl<R: Source> symphonia::core::io::MediaSource for Measured<R> {
    fn is_seekable(&self) -> bool {
        true
    }

    fn byte_len(&self) -> Option<u64> {
        Some(self.len)
    }
}

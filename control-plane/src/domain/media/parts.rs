//! The source file of an upload for the media core: with a local blob store, a `Read + Seek`
//! view of the chunk files in order (no second copy of the bytes); otherwise a local file.

use std::{
    fs::File,
    io::{self, Read, Seek, SeekFrom},
    path::PathBuf,
};

use veza_media_core::Source;

/// Where the media core reads an upload from.
#[derive(Debug, Clone)]
pub(super) enum SourceFile {
    /// One local file (a working copy, or the chunks fetched from a remote store).
    File(PathBuf),
    /// The chunk files of a local blob store, in order.
    Parts(Vec<PathBuf>),
}

impl SourceFile {
    /// Opens a fresh reader (blocking).
    pub(super) fn open(&self) -> io::Result<Box<dyn Source>> {
        Ok(match self {
            SourceFile::File(p) => Box::new(File::open(p)?),
            SourceFile::Parts(parts) => Box::new(PartsReader::open(parts)?),
        })
    }
}

/// Several files read as their concatenation.
struct PartsReader {
    /// (path, offset of its first byte, length)
    parts: Vec<(PathBuf, u64, u64)>,
    total: u64,
    pos: u64,
    /// The open part: (index, file, position within it).
    open: Option<(usize, File, u64)>,
}

impl PartsReader {
    fn open(paths: &[PathBuf]) -> io::Result<PartsReader> {
        let mut parts = Vec::with_capacity(paths.len());
        let mut total = 0u64;
        for p in paths {
            let len = std::fs::metadata(p)?.len();
            parts.push((p.clone(), total, len));
            total += len;
        }
        Ok(PartsReader {
            parts,
            total,
            pos: 0,
            open: None,
        })
    }
}

impl Read for PartsReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.pos >= self.total || buf.is_empty() {
            return Ok(0);
        }
        let idx = self.parts.partition_point(|p| p.1 <= self.pos) - 1;
        let (ref path, start, len) = self.parts[idx];
        let offset = self.pos - start;
        let reuse = matches!(&self.open, Some((i, _, at)) if *i == idx && *at == offset);
        if !reuse {
            let mut f = match self.open.take() {
                Some((i, f, _)) if i == idx => f,
                _ => File::open(path)?,
            };
            f.seek(SeekFrom::Start(offset))?;
            self.open = Some((idx, f, offset));
        }
        let Some((_, f, at)) = self.open.as_mut() else {
            return Ok(0);
        };
        let want = buf.len().min((len - offset) as usize);
        let n = f.read(&mut buf[..want])?;
        if n == 0 {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("{} is shorter than when it was stored", path.display()),
            ));
        }
        *at += n as u64;
        self.pos += n as u64;
        Ok(n)
    }
}

impl Seek for PartsReader {
    fn seek(&mut self, to: SeekFrom) -> io::Result<u64> {
        let pos = match to {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.total.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        self.pos = pos
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "seek before the start"))?;
        Ok(self.pos)
    }
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Seek, SeekFrom};

    use super::PartsReader;

    #[test]
    fn reads_and_seeks_across_parts() {
        let dir = tempfile::tempdir().unwrap();
        let mut paths = Vec::new();
        for (i, part) in [&b"hello "[..], b"wor", b"ld"].iter().enumerate() {
            let p = dir.path().join(i.to_string());
            std::fs::write(&p, part).unwrap();
            paths.push(p);
        }
        let mut r = PartsReader::open(&paths).unwrap();
        let mut all = String::new();
        r.read_to_string(&mut all).unwrap();
        assert_eq!(all, "hello world");
        assert_eq!(r.seek(SeekFrom::End(-5)).unwrap(), 6);
        let mut buf = [0u8; 4];
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"worl");
        r.seek(SeekFrom::Current(-6)).unwrap();
        r.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"o wo");
        assert!(r.seek(SeekFrom::Current(-100)).is_err());
    }
}

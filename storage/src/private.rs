//! Files only the server's user may read (secrets at rest): directories 0700, files 0600.
//!
//! The data directory holds the database (password hashes, the signing seed), the signing key
//! and uploaded audio. The server also sets its umask to `077`; these helpers make the modes
//! explicit where the server itself creates a path, and tighten what already exists.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::Path;

#[cfg(unix)]
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};

/// Mode of the server's directories.
pub const DIR_MODE: u32 = 0o700;
/// Mode of the server's files.
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` (and missing parents) 0700 and tightens `path` itself to 0700 if it exists
/// with looser permissions. Parents that already exist are left alone.
pub fn dir(path: &Path) -> io::Result<()> {
    dir_keep_existing(path)?;
    tighten(path, DIR_MODE)
}

/// Creates `path` (and missing parents) 0700 without changing an existing directory's mode:
/// for directories the operator chose, outside the data directory.
pub fn dir_keep_existing(path: &Path) -> io::Result<()> {
    let mut builder = fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    builder.mode(DIR_MODE);
    builder.create(path)
}

/// Removes group and other permissions from `path` if it has any (`mode` is what it gets).
/// A missing path is not an error.
pub fn tighten(path: &Path, mode: u32) -> io::Result<()> {
    #[cfg(unix)]
    match fs::metadata(path) {
        Ok(meta) if meta.permissions().mode() & 0o077 != 0 => {
            fs::set_permissions(path, fs::Permissions::from_mode(mode))
        }
        Ok(_) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    }
    #[cfg(not(unix))]
    {
        let _ = (path, mode);
        Ok(())
    }
}

/// Opens `path` for writing, created 0600 if missing (an existing file is truncated).
pub fn create_file(path: &Path) -> io::Result<File> {
    let mut opts = OpenOptions::new();
    opts.write(true).create(true).truncate(true);
    #[cfg(unix)]
    opts.mode(FILE_MODE);
    opts.open(path)
}

/// Writes `data` to `path` as [`create_file`] does, and tightens a file that was looser.
pub fn write(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    let mut f = create_file(path)?;
    f.write_all(data)?;
    tighten(path, FILE_MODE)
}

/// Makes sure the file at `path` exists and is 0600, creating it empty if missing (so that a
/// library that creates it later, such as SQLite, finds the mode already set).
pub fn touch(path: &Path) -> io::Result<()> {
    let mut opts = OpenOptions::new();
    opts.append(true).create(true);
    #[cfg(unix)]
    opts.mode(FILE_MODE);
    opts.open(path)?;
    tighten(path, FILE_MODE)
}

#[cfg(all(test, unix))]
mod tests {
    use super::*;

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn creates_private_and_tightens_loose_paths() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        assert_eq!(mode(&t.path().join("a")), 0o700);
        fs::set_permissions(&d, fs::Permissions::from_mode(0o755)).unwrap();
        dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        let f = d.join("f");
        fs::write(&f, b"x").unwrap();
        fs::set_permissions(&f, fs::Permissions::from_mode(0o644)).unwrap();
        touch(&f).unwrap();
        assert_eq!(mode(&f), 0o600);
        assert_eq!(fs::read(&f).unwrap(), b"x", "touch keeps the content");
        write(&d.join("g"), b"y").unwrap();
        assert_eq!(mode(&d.join("g")), 0o600);
    }
}

//! Small file-system helpers of the backup code: private files and directories created with
//! their final mode, reading a regular file without following a link, names for temporary and
//! dated paths.
//!
//! Owns: nothing but these helpers.
//! Must not: follow a symlink where it reads on behalf of a backup or restore.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use kafclaw_actors::fsutil::{self, DIR_MODE};

/// UTC now as `YYYYMMDDTHHMMSS.mmmZ` (names of backups, staging and pre-restore copies).
pub fn stamp() -> String {
    let t = time::OffsetDateTime::now_utc();
    format!(
        "{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// `DirBuilder` with the private mode.
pub trait PrivateDir {
    /// Mode 0700.
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateDir for std::fs::DirBuilder {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(DIR_MODE)
    }
}

/// A private directory that must not exist yet.
pub fn create_new_private_dir(path: &Path) -> std::io::Result<()> {
    std::fs::DirBuilder::new().mode_private().create(path)
}

/// Eight random bytes in hex (names of temporary files and directories).
pub fn random_tag() -> Result<String, String> {
    let mut r = [0u8; 8];
    getrandom::fill(&mut r).map_err(|e| format!("no randomness: {e}"))?;
    Ok(hex::encode(r))
}

/// The bytes of `path` if it is a regular file (not a link) of at most `max` bytes.
pub fn read_private_regular(path: &Path, max: u64) -> Option<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags =
        rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY;
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > max {
        return None;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)
        .ok()?;
    let opened = file.metadata().ok()?;
    if !opened.is_file() || opened.len() > max {
        return None;
    }
    let mut bytes = Vec::new();
    (&mut file).take(max).read_to_end(&mut bytes).ok()?;
    Some(bytes)
}

/// Opens `path` for reading if it is a regular file: not following a final symlink, without
/// blocking on a FIFO, refusing anything else.
pub fn open_regular(path: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags =
        rustix::fs::OFlags::NOFOLLOW | rustix::fs::OFlags::NONBLOCK | rustix::fs::OFlags::NOCTTY;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(flags.bits() as i32)
        .open(path)?;
    if !file.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    Ok(file)
}

/// Creates `path` (0600, must not exist) holding `bytes`, fsynced.
pub fn write_new(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut file = fsutil::create_private_new(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Every file and directory under `dir` (not following symlinks), sorted.
pub fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                out.extend(walk(&path));
                out.push(path);
            } else if kind.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

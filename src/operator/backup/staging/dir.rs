//! A directory backup (as older versions wrote them): every entry opened relative to its
//! parent's descriptor, `lstat` before opening, `O_NOFOLLOW|O_NONBLOCK`, `fstat` after.
//!
//! Owns: walking the directory without following links or opening anything but regular files
//! and directories.
//! Must not: open a FIFO, device or socket (a FIFO would block, a device could act).

use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};

use super::super::layout::MANIFEST;
use super::{read_err, Sink, StageError};

/// A name for a file type that a backup must not hold.
pub(crate) fn what_is(kind: FileType) -> &'static str {
    match kind {
        FileType::Symlink => "is a symbolic link",
        FileType::Fifo => "is a FIFO",
        FileType::CharacterDevice | FileType::BlockDevice => "is a device node",
        FileType::Socket => "is a socket",
        FileType::Directory => "is a directory",
        _ => "is not a regular file",
    }
}

/// A directory backup: the manifest first, then every entry, each opened relative to its
/// parent's descriptor without following links.
pub(super) fn stage(root: &Path, sink: &mut Sink<'_>) -> Result<(), StageError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    let dir = rustix::fs::open(root, flags, Mode::empty())
        .map_err(|e| read_err(root.display().to_string(), e))?;
    let (mut manifest, size) = open_regular(&dir, MANIFEST, MANIFEST)?;
    sink.manifest(size, &mut manifest)?;
    walk(&dir, "", sink)
}

fn walk(dir: &OwnedFd, prefix: &str, sink: &mut Sink<'_>) -> Result<(), StageError> {
    let mut names = Vec::new();
    let mut entries = rustix::fs::Dir::read_from(dir).map_err(|e| read_err(prefix, e))?;
    while let Some(entry) = entries.read() {
        let entry = entry.map_err(|e| read_err(prefix, e))?;
        let name = entry.file_name().to_bytes();
        if name != b"." && name != b".." {
            names.push(name.to_vec());
        }
    }
    names.sort();
    for raw in names {
        let name = String::from_utf8_lossy(&raw).into_owned();
        let rel = format!("{prefix}{name}");
        if rel == MANIFEST {
            continue;
        }
        let stat = rustix::fs::statat(dir, raw.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
            .map_err(|e| read_err(&rel, e))?;
        match FileType::from_raw_mode(stat.st_mode) {
            FileType::Directory => {
                sink.dir(rel.as_bytes())?;
                let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                let child = rustix::fs::openat(dir, raw.as_slice(), flags, Mode::empty())
                    .map_err(|e| read_err(&rel, e))?;
                same_inode(&child, &stat, &rel)?;
                walk(&child, &format!("{rel}/"), sink)?;
            }
            FileType::RegularFile => {
                let (mut file, size) = open_regular(dir, &name, &rel)?;
                sink.file(rel.as_bytes(), size, &mut file)?;
            }
            other => {
                return Err(StageError::NotRegular {
                    name: rel,
                    what: what_is(other),
                })
            }
        }
    }
    Ok(())
}

/// Opens `name` in `dir` if it is a regular file with one link: `lstat` first (nothing else
/// is opened: a FIFO would block, a device could act), then `O_NOFOLLOW|O_NONBLOCK` and
/// `fstat` to close the race. Returns the file and its size.
pub(crate) fn open_regular(
    dir: &OwnedFd,
    name: &str,
    rel: &str,
) -> Result<(File, u64), StageError> {
    let stat = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(s) => s,
        Err(rustix::io::Errno::NOENT) if rel == MANIFEST => return Err(StageError::NoManifest),
        Err(e) => return Err(read_err(rel, e)),
    };
    check_regular(&stat, rel)?;
    let flags =
        OFlags::RDONLY | OFlags::NOFOLLOW | OFlags::NONBLOCK | OFlags::NOCTTY | OFlags::CLOEXEC;
    let fd = rustix::fs::openat(dir, name, flags, Mode::empty()).map_err(|e| read_err(rel, e))?;
    let opened = same_inode(&fd, &stat, rel)?;
    check_regular(&opened, rel)?;
    let size = u64::try_from(opened.st_size).unwrap_or(0);
    Ok((File::from(fd), size))
}

fn check_regular(stat: &rustix::fs::Stat, rel: &str) -> Result<(), StageError> {
    match FileType::from_raw_mode(stat.st_mode) {
        FileType::RegularFile if stat.st_nlink == 1 => Ok(()),
        FileType::RegularFile => Err(StageError::NotRegular {
            name: rel.to_string(),
            what: "is a hard link (more than one name for one file)",
        }),
        other => Err(StageError::NotRegular {
            name: rel.to_string(),
            what: what_is(other),
        }),
    }
}

/// The `fstat` of `fd`, if it is the inode that `lstat` saw.
pub(crate) fn same_inode(
    fd: &impl AsFd,
    seen: &rustix::fs::Stat,
    rel: &str,
) -> Result<rustix::fs::Stat, StageError> {
    let now = rustix::fs::fstat(fd).map_err(|e| read_err(rel, e))?;
    if now.st_dev != seen.st_dev || now.st_ino != seen.st_ino {
        return Err(read_err(rel, "was replaced while it was read"));
    }
    Ok(now)
}

//! Copying a backup — a directory or one archive file — into a private staging home, as
//! untrusted input.
//!
//! Owns: the rules every entry passes before one byte of it is read: a name in the layout,
//! listed in the manifest, a regular file or a directory (never a symlink, hard link, device,
//! FIFO or socket: checked with `lstat` before opening, opened with `O_NOFOLLOW|O_NONBLOCK`,
//! checked again with `fstat`), a size equal to the manifest's and within the part's bound and
//! the free space. Files are hashed while they are copied (streaming, constant memory).
//! Must not: follow a link inside a backup, read an entry whole into memory, write outside the
//! staging directory, or decide anything from the manifest before its MAC is checked (the
//! caller does that; here it only bounds what is read).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use rustix::fs::FileType;

use kafclaw_actors::fsutil;
use kafclaw_actors::paths::Home;

use super::layout::{self, NameError, Part, MANIFEST};
use super::manifest::{Listed, Manifest, ManifestError};

pub(crate) mod dir;

/// Space left free on the staging file system, whatever the backup says.
const SPARE_BYTES: u64 = 64 << 20;

/// A backup copied into a staging home.
#[derive(Debug)]
pub struct Staged {
    /// The manifest as found (not yet authenticated).
    pub manifest: Manifest,
    /// What was actually read: BLAKE3 and size of every file but the manifest.
    pub sums: BTreeMap<String, Listed>,
    /// The backup was one archive file (not a directory).
    pub archive: bool,
}

/// Why a backup is refused while it is staged.
#[derive(Debug, thiserror::Error)]
pub enum StageError {
    /// A symlink, hard link, device node, FIFO, socket or another tar entry type.
    #[error("{name}: {what}; a backup holds only regular files and directories")]
    NotRegular {
        /// The entry's name.
        name: String,
        /// What it is.
        what: &'static str,
    },
    /// A name outside the layout, absolute, or with `..`.
    #[error(transparent)]
    Name(#[from] NameError),
    /// The manifest does not parse.
    #[error(transparent)]
    Manifest(#[from] ManifestError),
    /// No manifest where it must be.
    #[error("no MANIFEST.json (an archive must start with it)")]
    NoManifest,
    /// A file the manifest does not list.
    #[error("{0} is not in the manifest")]
    Unlisted(String),
    /// The same name twice.
    #[error("{0} appears twice")]
    Duplicate(String),
    /// Larger than its part allows.
    #[error("{name} has {size} bytes, more than the {max} a backup's {name} may have")]
    TooLarge {
        /// The entry.
        name: String,
        /// Its size.
        size: u64,
        /// The bound.
        max: u64,
    },
    /// Another size than the manifest's.
    #[error("{name} has {size} bytes while the manifest lists {listed}")]
    SizeMismatch {
        /// The entry.
        name: String,
        /// Its size.
        size: u64,
        /// The manifest's.
        listed: u64,
    },
    /// More than the staging file system can take.
    #[error("the backup needs more than the {free} bytes free where it is staged")]
    NoSpace {
        /// Usable bytes.
        free: u64,
    },
    /// An archive's extension entries (GNU long names, PAX headers) are oversized or do not
    /// describe exactly one entry.
    #[error("the archive is malformed: {0}")]
    Malformed(String),
    /// Reading the backup failed (truncated, unreadable, not an archive).
    #[error("cannot read {what}: {reason}")]
    Read {
        /// What.
        what: String,
        /// Why.
        reason: String,
    },
    /// Writing the staging copy failed.
    #[error("cannot write the staging copy {what}: {reason}")]
    Write {
        /// What.
        what: String,
        /// Why.
        reason: String,
    },
}

fn read_err(what: impl Into<String>, e: impl std::fmt::Display) -> StageError {
    StageError::Read {
        what: what.into(),
        reason: e.to_string(),
    }
}

fn write_err(what: impl Into<String>, e: impl std::fmt::Display) -> StageError {
    StageError::Write {
        what: what.into(),
        reason: e.to_string(),
    }
}

/// Copies the backup at `path` (a directory, or an archive file) into the home view `view`
/// (whose root exists, private and empty).
pub fn stage(path: &Path, view: &Home) -> Result<Staged, StageError> {
    // The operator's own path may be a link (e.g. to a mounted medium); nothing inside is.
    let meta = std::fs::metadata(path).map_err(|e| read_err(path.display().to_string(), e))?;
    let mut sink = Sink::new(view)?;
    let archive = if meta.is_dir() {
        dir::stage(path, &mut sink)?;
        false
    } else if meta.is_file() {
        super::archive::read(path, &mut sink)?;
        true
    } else {
        return Err(StageError::NotRegular {
            name: path.display().to_string(),
            what: dir::what_is(FileType::from_raw_mode(
                std::os::unix::fs::MetadataExt::mode(&meta),
            )),
        });
    };
    let manifest = sink.manifest.ok_or(StageError::NoManifest)?;
    Ok(Staged {
        manifest,
        sums: sink.seen,
        archive,
    })
}

/// Where entries go: checks each against the layout, the manifest and the bounds, then
/// copies and hashes it.
pub struct Sink<'a> {
    view: &'a Home,
    manifest: Option<Manifest>,
    seen: BTreeMap<String, Listed>,
    budget: u64,
}

impl<'a> Sink<'a> {
    fn new(view: &'a Home) -> Result<Self, StageError> {
        let stat = rustix::fs::statvfs(view.root()).map_err(|e| write_err("(free space)", e))?;
        let free = stat.f_bavail.saturating_mul(stat.f_frsize);
        Ok(Self {
            view,
            manifest: None,
            seen: BTreeMap::new(),
            budget: free.saturating_sub(SPARE_BYTES),
        })
    }

    /// Reads the manifest (at most its bound) from `reader` of `size` bytes.
    pub fn manifest(&mut self, size: u64, reader: &mut dyn Read) -> Result<(), StageError> {
        if self.manifest.is_some() {
            return Err(StageError::Duplicate(MANIFEST.into()));
        }
        let max = Part::Manifest.max_bytes();
        if size > max {
            return Err(StageError::TooLarge {
                name: MANIFEST.into(),
                size,
                max,
            });
        }
        let mut bytes = Vec::new();
        reader
            .take(max)
            .read_to_end(&mut bytes)
            .map_err(|e| read_err(MANIFEST, e))?;
        let manifest = Manifest::parse(&bytes)?;
        if manifest.total_size() > self.budget {
            return Err(StageError::NoSpace { free: self.budget });
        }
        self.manifest = Some(manifest);
        Ok(())
    }

    /// A directory entry: only the layout's directories.
    pub fn dir(&mut self, raw: &[u8]) -> Result<(), StageError> {
        let (name, part) = layout::classify(raw, true)?;
        let path = layout::staged_path(self.view, &name, part);
        fsutil::create_private_dir(&path).map_err(|e| write_err(name, e))
    }

    /// A regular file of `size` bytes read from `reader`.
    pub fn file(&mut self, raw: &[u8], size: u64, reader: &mut dyn Read) -> Result<(), StageError> {
        let (name, part) = layout::classify(raw, false)?;
        let Some(manifest) = &self.manifest else {
            return Err(StageError::NoManifest);
        };
        if part == Part::Manifest || self.seen.contains_key(&name) {
            return Err(StageError::Duplicate(name));
        }
        let listed = manifest
            .files
            .get(&name)
            .ok_or_else(|| StageError::Unlisted(name.clone()))?;
        if let Some(listed) = listed.size.filter(|l| *l != size) {
            return Err(StageError::SizeMismatch { name, size, listed });
        }
        if size > part.max_bytes() {
            let max = part.max_bytes();
            return Err(StageError::TooLarge { name, size, max });
        }
        if size > self.budget {
            return Err(StageError::NoSpace { free: self.budget });
        }
        self.budget -= size;
        let path = layout::staged_path(self.view, &name, part);
        if let Some(parent) = path.parent() {
            fsutil::create_private_dir(parent).map_err(|e| write_err(&name, e))?;
        }
        let file = fsutil::create_private_new(&path).map_err(|e| write_err(&name, e))?;
        let blake3 = copy_hashed(&name, size, reader, file)?;
        self.seen.insert(
            name,
            Listed {
                blake3,
                size: Some(size),
            },
        );
        Ok(())
    }
}

/// Copies exactly `size` bytes into `file` (fsynced), returning their BLAKE3.
fn copy_hashed(
    name: &str,
    size: u64,
    reader: &mut dyn Read,
    file: File,
) -> Result<String, StageError> {
    let mut hasher = blake3::Hasher::new();
    let mut out = BufWriter::with_capacity(64 << 10, file);
    let mut buf = vec![0u8; 64 << 10];
    let mut left = size;
    while left > 0 {
        let want = usize::try_from(left.min(buf.len() as u64)).unwrap_or(buf.len());
        let n = reader
            .read(&mut buf[..want])
            .map_err(|e| read_err(name, e))?;
        if n == 0 {
            return Err(read_err(name, format!("ends {left} bytes early")));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(|e| write_err(name, e))?;
        left -= n as u64;
    }
    let file = out.into_inner().map_err(|e| write_err(name, e.error()))?;
    file.sync_all().map_err(|e| write_err(name, e))?;
    Ok(hasher.finalize().to_hex().to_string())
}

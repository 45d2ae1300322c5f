//! Walking an untrusted skill — a directory or a tar stream — entry by entry.
//!
//! Owns: the entry rules (a plain relative name, a regular file or a directory, no setuid or
//! setgid bit, within the size bounds), reported as findings; entries that break one are not
//! read. Opening reuses the backup's checks (`lstat` first, `O_NOFOLLOW|O_NONBLOCK`, `fstat`
//! after, one link only; archives opened the same way and zstd-decoded with a bounded window,
//! and iterated with the backup's bounded [`members`], an oversized or misplaced extension
//! entry being a critical finding that ends the walk).
//! Must not: follow a link, open a FIFO or device, or read more than the bounds.

use std::io::Read;
use std::os::fd::OwnedFd;
use std::path::Path;

use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use tar::EntryType;

use crate::backup::archive::{members, Member, MemberError};
use crate::backup::staging::{dir as backup_dir, StageError};

use super::{Finding, FindingKind, MAX_ENTRIES, MAX_FILE_BYTES, MAX_TOTAL_BYTES};

/// Where the walk's accepted entries go.
pub trait Visit {
    /// A directory (relative name).
    fn dir(&mut self, rel: &str) -> Result<(), String>;
    /// A regular file of `size` bytes with permission bits `mode`.
    fn file(
        &mut self,
        rel: &str,
        size: u64,
        mode: u32,
        reader: &mut dyn Read,
    ) -> Result<(), String>;
}

/// The bounds and findings of one walk.
pub struct Walk<'a> {
    visit: &'a mut dyn Visit,
    /// What broke a rule.
    pub findings: Vec<Finding>,
    entries: usize,
    total: u64,
}

impl<'a> Walk<'a> {
    /// A walk feeding `visit`.
    pub fn new(visit: &'a mut dyn Visit) -> Self {
        Self {
            visit,
            findings: Vec::new(),
            entries: 0,
            total: 0,
        }
    }

    fn find(&mut self, kind: FindingKind, file: &str, detail: impl Into<String>) {
        self.findings.push(Finding::new(kind, file, detail));
    }

    /// Counts an entry; false (with a finding, once) past the bound.
    fn count(&mut self) -> bool {
        self.entries += 1;
        if self.entries == MAX_ENTRIES + 1 {
            self.find(
                FindingKind::Size,
                "",
                format!("more than {MAX_ENTRIES} entries"),
            );
        }
        self.entries <= MAX_ENTRIES
    }

    /// Checks a regular file's mode and size; true when it may be read.
    fn file_ok(&mut self, rel: &str, size: u64, mode: u32) -> bool {
        let mut ok = true;
        if mode & 0o6000 != 0 {
            self.find(
                FindingKind::Setuid,
                rel,
                format!("has the setuid or setgid bit (mode {:o})", mode & 0o7777),
            );
            ok = false;
        }
        if size > MAX_FILE_BYTES {
            self.find(
                FindingKind::Size,
                rel,
                format!("has {size} bytes, more than the {MAX_FILE_BYTES} a skill file may have"),
            );
            ok = false;
        }
        if ok {
            self.total += size;
            if self.total > MAX_TOTAL_BYTES {
                self.find(
                    FindingKind::Size,
                    rel,
                    format!("the skill passes {MAX_TOTAL_BYTES} bytes"),
                );
                ok = false;
            }
        }
        ok
    }

    /// Walks the directory at `root` (the operator's path may itself be a link; nothing
    /// inside is followed).
    pub fn directory(&mut self, root: &Path) -> Result<(), String> {
        let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
        let dir = rustix::fs::open(root, flags, Mode::empty())
            .map_err(|e| format!("cannot open {}: {e}", root.display()))?;
        self.walk_dir(&dir, "")
    }

    fn walk_dir(&mut self, dir: &OwnedFd, prefix: &str) -> Result<(), String> {
        let mut names = Vec::new();
        let mut entries =
            rustix::fs::Dir::read_from(dir).map_err(|e| format!("cannot read {prefix}: {e}"))?;
        while let Some(entry) = entries.read() {
            let entry = entry.map_err(|e| format!("cannot read {prefix}: {e}"))?;
            let name = entry.file_name().to_bytes();
            if name != b"." && name != b".." {
                names.push(name.to_vec());
            }
        }
        names.sort();
        for raw in names {
            let name = String::from_utf8_lossy(&raw).into_owned();
            let rel = format!("{prefix}{name}");
            if !self.count() {
                return Ok(());
            }
            if !crate::backup::layout::plain_component(&name) {
                self.find(
                    FindingKind::Path,
                    &rel,
                    "is not a plain name (a-z, 0-9, '.', '_', '-')",
                );
                continue;
            }
            let stat = rustix::fs::statat(dir, raw.as_slice(), AtFlags::SYMLINK_NOFOLLOW)
                .map_err(|e| format!("cannot read {rel}: {e}"))?;
            match FileType::from_raw_mode(stat.st_mode) {
                FileType::Directory => {
                    self.visit.dir(&rel)?;
                    let flags =
                        OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
                    let child = rustix::fs::openat(dir, raw.as_slice(), flags, Mode::empty())
                        .map_err(|e| format!("cannot read {rel}: {e}"))?;
                    backup_dir::same_inode(&child, &stat, &rel).map_err(|e| e.to_string())?;
                    self.walk_dir(&child, &format!("{rel}/"))?;
                }
                FileType::RegularFile => {
                    let mode = stat.st_mode & 0o7777;
                    let size = u64::try_from(stat.st_size).unwrap_or(u64::MAX);
                    if stat.st_nlink > 1 {
                        self.find(
                            FindingKind::Link,
                            &rel,
                            "is a hard link (more than one name for one file)",
                        );
                        continue;
                    }
                    if !self.file_ok(&rel, size, mode) {
                        continue;
                    }
                    match backup_dir::open_regular(dir, &name, &rel) {
                        Ok((mut file, size)) => self.visit.file(&rel, size, mode, &mut file)?,
                        Err(StageError::NotRegular { what, .. }) => {
                            self.find(kind_of(what), &rel, what)
                        }
                        Err(e) => return Err(e.to_string()),
                    }
                }
                other => {
                    let what = backup_dir::what_is(other);
                    self.find(kind_of(what), &rel, what);
                }
            }
        }
        Ok(())
    }

    /// Walks the archive file at `path` (plain, gzip- or zstd-compressed tar).
    pub fn archive(&mut self, path: &Path) -> Result<(), String> {
        let input = crate::backup::archive::open_untrusted(path).map_err(|e| e.to_string())?;
        let mut input = std::io::BufReader::new(input);
        let gzip = std::io::BufRead::fill_buf(&mut input)
            .map_err(|e| format!("cannot read the archive: {e}"))?
            .starts_with(&GZIP_MAGIC);
        let input: Box<dyn std::io::Read> = if gzip {
            // The walk bounds what it takes: the entry count and each file's size.
            Box::new(flate2::bufread::MultiGzDecoder::new(input))
        } else {
            Box::new(input)
        };
        let mut archive = tar::Archive::new(input);
        let bad = |e: std::io::Error| format!("cannot read the archive: {e}");
        let members = members(&mut archive).map_err(|e| e.to_string())?;
        for member in members {
            let Member {
                mut entry,
                path: raw,
            } = match member {
                Ok(m) => m,
                Err(e @ MemberError::Read(_)) => return Err(e.to_string()),
                // Where the next entry starts, or what it is named, is unknown: the walk ends.
                Err(e) => {
                    let kind = match e {
                        MemberError::TooLarge { .. } => FindingKind::Size,
                        _ => FindingKind::EntryType,
                    };
                    self.find(kind, "", e.to_string());
                    return Ok(());
                }
            };
            let shown = String::from_utf8_lossy(&raw).into_owned();
            let kind = entry.header().entry_type();
            let text = shown.strip_prefix("./").unwrap_or(&shown);
            let text = text.strip_suffix('/').unwrap_or(text);
            if text.is_empty() || text == "." {
                continue;
            }
            if !self.count() {
                return Ok(());
            }
            if text.starts_with('/') || text.split('/').any(|c| c == "..") {
                self.find(
                    FindingKind::Path,
                    &shown,
                    "is absolute or has a '..' component",
                );
                continue;
            }
            if !super::manifest::relative_plain(text) {
                self.find(
                    FindingKind::Path,
                    &shown,
                    "is not a plain name (a-z, 0-9, '.', '_', '-')",
                );
                continue;
            }
            let mode = entry.header().mode().map_err(bad)? & 0o7777;
            match kind {
                EntryType::Regular | EntryType::Continuous => {
                    let size = entry.size();
                    if self.file_ok(text, size, mode) {
                        self.visit.file(text, size, mode, &mut entry)?;
                    }
                }
                EntryType::Directory => self.visit.dir(text)?,
                other => {
                    let what = crate::backup::archive::tar_kind(other);
                    self.find(kind_of(what), text, what);
                }
            }
        }
        Ok(())
    }
}

/// The first two bytes of a gzip stream (RFC 1952).
const GZIP_MAGIC: [u8; 2] = [0x1f, 0x8b];

fn kind_of(what: &str) -> FindingKind {
    if what.contains("link") {
        FindingKind::Link
    } else {
        FindingKind::EntryType
    }
}

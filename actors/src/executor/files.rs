//! The file tools: `read_file`, `list_dir` (tier 0), `write_file`, `edit_file` (tier 1).
//!
//! Owns: the size caps, the one-occurrence rule of `edit_file`, and writing with final modes
//! (parents 0700, files 0600, atomically through [`crate::fsutil::write_atomic`]).
//! Must not: decide who may call them (policy) or accept a path the confinement refused.
//!
//! Blocking file-system calls: the actor runs these on the blocking pool.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::command::Denial;
use super::paths::{Confinement, SecretRule};
use crate::fsutil;

/// Caps of the file tools.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct FileLimits {
    /// The largest file `read_file` returns (and `edit_file` edits), in bytes.
    pub max_read_bytes: u64,
    /// The largest content `write_file`/`edit_file` writes, in bytes.
    pub max_write_bytes: usize,
    /// The most entries `list_dir` returns.
    pub max_list_entries: usize,
}

impl Default for FileLimits {
    fn default() -> Self {
        Self {
            max_read_bytes: 1024 * 1024,
            max_write_bytes: 1024 * 1024,
            max_list_entries: 1000,
        }
    }
}

/// Why a file tool failed. Messages name the path as given, never its content.
#[derive(Debug, thiserror::Error)]
pub enum FileToolError {
    /// The path was refused.
    #[error("{0}")]
    Denied(Denial),
    /// Nothing at the path.
    #[error("{0:?} not found")]
    NotFound(String),
    /// `read_file`/`edit_file` on something that is not a regular file.
    #[error("{0:?} is not a regular file")]
    NotAFile(String),
    /// `list_dir` on something that is not a directory.
    #[error("{0:?} is not a directory")]
    NotADirectory(String),
    /// A file or a content over the cap.
    #[error("{what} is {size} bytes, the limit is {max}")]
    TooLarge {
        /// What was too large (`file "x"`, `content`).
        what: String,
        /// Its size.
        size: u64,
        /// The cap.
        max: u64,
    },
    /// `edit_file` with an empty `old_text`.
    #[error("old_text must not be empty")]
    EmptyOldText,
    /// `edit_file` did not find `old_text`.
    #[error("old_text not found in {0:?}")]
    OldTextNotFound(String),
    /// `edit_file` found `old_text` more than once.
    #[error("old_text found {count} times in {path:?}; it must occur exactly once")]
    OldTextAmbiguous {
        /// The path as given.
        path: String,
        /// How many occurrences.
        count: usize,
    },
    /// `edit_file` on a file that is not UTF-8 text.
    #[error("{0:?} is not UTF-8 text")]
    NotText(String),
    /// Another I/O failure.
    #[error("i/o error on {path:?}: {reason}")]
    Io {
        /// The path as given.
        path: String,
        /// The operating system's reason.
        reason: String,
    },
}

impl From<Denial> for FileToolError {
    fn from(denial: Denial) -> Self {
        FileToolError::Denied(denial)
    }
}

/// One entry of `list_dir`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DirEntryInfo {
    /// The file name.
    pub name: String,
    /// Whether it is a directory (symlinks are reported as what they are, not followed).
    pub is_dir: bool,
    /// Whether it is a symbolic link.
    pub is_symlink: bool,
    /// Its size in bytes (of the link itself for a symlink).
    pub size: u64,
}

/// What a write did.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct WriteReport {
    /// The path as given.
    pub path: String,
    /// Bytes written.
    pub bytes: usize,
}

/// The file tools over one confinement.
#[derive(Clone, Debug)]
pub struct FileTools {
    /// Where they may read and write.
    confinement: Confinement,
    /// Their caps.
    limits: FileLimits,
}

impl FileTools {
    /// File tools confined by `confinement`.
    pub fn new(confinement: Confinement, limits: FileLimits) -> Self {
        Self {
            confinement,
            limits,
        }
    }

    /// Resolves a path for reading (relative to the work repo).
    pub fn resolve_read(&self, raw: &str) -> Result<PathBuf, Denial> {
        self.confinement.check_read(
            raw,
            self.confinement.work_repo(),
            true,
            SecretRule::SecretOrUnder,
        )
    }

    /// Resolves a path for writing (relative to the work repo).
    pub fn resolve_write(&self, raw: &str) -> Result<PathBuf, Denial> {
        self.confinement
            .check_write(raw, self.confinement.work_repo())
    }

    /// `read_file`: the file's text (invalid UTF-8 replaced), at most `max_read_bytes`.
    pub fn read_file(&self, raw: &str) -> Result<String, FileToolError> {
        let path = self.resolve_read(raw)?;
        let bytes = self.read_capped(raw, &path)?;
        Ok(String::from_utf8_lossy(&bytes).into_owned())
    }

    /// `list_dir`: the entries, sorted by name; secret entries are left out.
    pub fn list_dir(&self, raw: &str) -> Result<Vec<DirEntryInfo>, FileToolError> {
        let path = self.resolve_read(raw)?;
        let meta = fs::metadata(&path).map_err(|e| io_error(raw, e))?;
        if !meta.is_dir() {
            return Err(FileToolError::NotADirectory(raw.to_string()));
        }
        let mut entries = Vec::new();
        for entry in fs::read_dir(&path).map_err(|e| io_error(raw, e))? {
            let entry = entry.map_err(|e| io_error(raw, e))?;
            let entry_path = entry.path();
            if self
                .confinement
                .touches_secret(&entry_path, SecretRule::SecretOrUnder)
            {
                continue;
            }
            let Ok(meta) = fs::symlink_metadata(&entry_path) else {
                continue;
            };
            entries.push(DirEntryInfo {
                name: entry.file_name().to_string_lossy().into_owned(),
                is_dir: meta.is_dir(),
                is_symlink: meta.file_type().is_symlink(),
                size: meta.len(),
            });
            if entries.len() >= self.limits.max_list_entries {
                break;
            }
        }
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(entries)
    }

    /// `write_file`: replaces (or creates) the file atomically, mode 0600, parents 0700.
    pub fn write_file(&self, raw: &str, content: &str) -> Result<WriteReport, FileToolError> {
        self.check_write_size(content)?;
        let path = self.resolve_write(raw)?;
        self.write_resolved(raw, &path, content)
    }

    /// `edit_file`: replaces the one occurrence of `old_text` with `new_text`.
    pub fn edit_file(
        &self,
        raw: &str,
        old_text: &str,
        new_text: &str,
    ) -> Result<WriteReport, FileToolError> {
        if old_text.is_empty() {
            return Err(FileToolError::EmptyOldText);
        }
        let path = self.resolve_write(raw)?;
        let bytes = self.read_capped(raw, &path)?;
        let text = String::from_utf8(bytes).map_err(|_| FileToolError::NotText(raw.to_string()))?;
        let count = text.matches(old_text).count();
        match count {
            0 => return Err(FileToolError::OldTextNotFound(raw.to_string())),
            1 => {}
            count => {
                return Err(FileToolError::OldTextAmbiguous {
                    path: raw.to_string(),
                    count,
                })
            }
        }
        let edited = text.replacen(old_text, new_text, 1);
        self.check_write_size(&edited)?;
        self.write_resolved(raw, &path, &edited)
    }

    fn check_write_size(&self, content: &str) -> Result<(), FileToolError> {
        if content.len() > self.limits.max_write_bytes {
            return Err(FileToolError::TooLarge {
                what: "content".to_string(),
                size: content.len() as u64,
                max: self.limits.max_write_bytes as u64,
            });
        }
        Ok(())
    }

    fn read_capped(&self, raw: &str, path: &Path) -> Result<Vec<u8>, FileToolError> {
        use std::os::unix::fs::OpenOptionsExt;
        // Non-blocking: a FIFO swapped in cannot hang the call.
        let file = fs::OpenOptions::new()
            .read(true)
            .custom_flags(O_NONBLOCK | O_NOCTTY)
            .open(path)
            .map_err(|e| io_error(raw, e))?;
        // The path was checked, then opened by name again: a component swapped for a symlink
        // in between (by any other writer of the workspace) would open something else. What
        // was opened is checked again, on the descriptor, before a byte of it is read.
        self.check_opened(raw, path, &file)?;
        let meta = file.metadata().map_err(|e| io_error(raw, e))?;
        if !meta.is_file() {
            return Err(FileToolError::NotAFile(raw.to_string()));
        }
        let max = self.limits.max_read_bytes;
        if meta.len() > max {
            return Err(too_large_file(raw, meta.len(), max));
        }
        let mut bytes = Vec::new();
        file.take(max + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| io_error(raw, e))?;
        if bytes.len() as u64 > max {
            return Err(too_large_file(raw, bytes.len() as u64, max));
        }
        Ok(bytes)
    }

    fn write_resolved(
        &self,
        raw: &str,
        path: &Path,
        content: &str,
    ) -> Result<WriteReport, FileToolError> {
        if path.is_dir() {
            return Err(FileToolError::NotAFile(raw.to_string()));
        }
        let parent = path
            .parent()
            .ok_or_else(|| FileToolError::Denied(Denial::Unresolvable(raw.to_string())))?;
        fsutil::create_private_dir(parent).map_err(|e| io_error(raw, e))?;
        // Re-check after creating the parents: the directory written into must still
        // resolve inside the work repo.
        let parent_str = parent.to_string_lossy();
        let recheck = self
            .confinement
            .check_write(&parent_str, self.confinement.work_repo())?;
        if recheck != parent {
            return Err(FileToolError::Denied(Denial::SymlinkEscape(
                raw.to_string(),
            )));
        }
        fsutil::write_atomic(path, content.as_bytes()).map_err(|e| io_error(raw, e))?;
        Ok(WriteReport {
            path: raw.to_string(),
            bytes: content.len(),
        })
    }
}

/// `O_NONBLOCK` and `O_NOCTTY` on Linux.
const O_NONBLOCK: i32 = 0o4000;
const O_NOCTTY: i32 = 0o400;

impl FileTools {
    /// Fails unless `file` is the file `checked` resolved to: its real path (as the kernel
    /// names the descriptor) must pass the read check again and be that same path.
    pub(super) fn check_opened(
        &self,
        raw: &str,
        checked: &Path,
        file: &fs::File,
    ) -> Result<(), FileToolError> {
        use std::os::fd::AsRawFd;
        let opened = fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd()))
            .map_err(|e| io_error(raw, e))?;
        let escaped = || FileToolError::Denied(Denial::SymlinkEscape(raw.to_string()));
        let again = self
            .confinement
            .check_read(
                &opened.to_string_lossy(),
                self.confinement.work_repo(),
                true,
                SecretRule::SecretOrUnder,
            )
            .map_err(|_| escaped())?;
        if again != opened || opened != checked {
            return Err(escaped());
        }
        Ok(())
    }
}

fn too_large_file(raw: &str, size: u64, max: u64) -> FileToolError {
    FileToolError::TooLarge {
        what: format!("file {raw:?}"),
        size,
        max,
    }
}

fn io_error(raw: &str, e: std::io::Error) -> FileToolError {
    if e.kind() == std::io::ErrorKind::NotFound {
        FileToolError::NotFound(raw.to_string())
    } else {
        FileToolError::Io {
            path: raw.to_string(),
            reason: e.kind().to_string(),
        }
    }
}

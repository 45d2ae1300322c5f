//! Putting a verified staging home in place, crash-safely.
//!
//! A swap is a list of items, each one live path (`~/.kafclaw/timeline.db`, `audit`,
//! `config.json`, and where the backup replaces them the vault key file and the workspace
//! identity files) with its staged replacement in the same directory or file system, and the
//! place its current version is saved to (`~/.kafclaw/pre-restore-<time>/…`, or a dated
//! sibling for paths outside the state directory). A journal `restore-<time>.journal` is
//! written (atomically) before the first rename and marked committed after the last one; every
//! step is one `rename(2)`.
//!
//! Architecture Invariant: a restore killed at any step leaves the old home or the new one:
//! the next command (`recover`, called before any command touches the home) rolls an
//! uncommitted journal back by looking at which of live / staged / saved exist, which is
//! idempotent, so a kill during the roll-back is finished by the next run too. The saved state
//! stays until the restored home has started once ([`started`], called by the gateway).
//!
//! Owns: the journal, the swap, the roll-back, the removal of pre-restore copies.
//! Must not: delete a saved (pre-restore) copy before the journal is committed and the home
//! has started; touch a staging directory another process holds locked.

use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use kafclaw_actors::fsutil;
use kafclaw_actors::paths::Home;

/// How a swap's journal file name starts (followed by the stamp and `.journal`).
const JOURNAL_PREFIX: &str = "restore-";
/// How a staging directory's name starts.
pub const STAGING_PREFIX: &str = ".restore-";

/// One path replaced by a restore.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct Item {
    /// The path in the home.
    pub live: PathBuf,
    /// Its replacement (renamed to `live`).
    pub staged: PathBuf,
    /// Where the current `live` is moved.
    pub saved: PathBuf,
    /// Copied to `staged` once the journal is written (paths outside the staging directory).
    pub copy_from: Option<PathBuf>,
    /// `live` existed when the journal was written.
    pub had_live: bool,
    /// There is a replacement (false: the backup has none, `live` is only moved away).
    pub has_staged: bool,
}

/// Where a swap is.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Renames may be under way: roll back.
    Swapping,
    /// Every rename done; the saved copies wait for the first start.
    Committed,
}

/// The journal of one restore.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Journal {
    /// Swapping or committed.
    pub state: State,
    /// The stamp shared by the staging, journal and pre-restore names.
    pub stamp: String,
    /// The staging directory.
    pub staging: PathBuf,
    /// `~/.kafclaw/pre-restore-<time>/`.
    pub pre_restore: PathBuf,
    /// What is replaced, in order.
    pub items: Vec<Item>,
}

/// A test-only fault: `KAFCLAW_TEST_RESTORE_KILL_AFTER=N` makes the process SIGKILL itself
/// after step N of a swap (`test-hooks` builds only; a no-op otherwise).
pub struct KillHook {
    #[cfg_attr(not(feature = "test-hooks"), allow(dead_code))]
    after: Option<u32>,
    done: u32,
    /// Unit tests: return an error (no roll-back) after this step, as if killed.
    #[cfg(test)]
    pub(super) stop_after: Option<u32>,
}

impl KillHook {
    /// Reads the hook from the command's environment (`test-hooks` builds only).
    pub fn from_env(env: &std::collections::HashMap<String, String>) -> Self {
        #[cfg(feature = "test-hooks")]
        let after = env
            .get("KAFCLAW_TEST_RESTORE_KILL_AFTER")
            .and_then(|v| v.parse().ok());
        #[cfg(not(feature = "test-hooks"))]
        let after = {
            let _ = env;
            None
        };
        Self {
            after,
            done: 0,
            #[cfg(test)]
            stop_after: None,
        }
    }

    fn step(&mut self) -> Result<(), String> {
        self.done += 1;
        #[cfg(test)]
        if self.stop_after == Some(self.done) {
            return Err(format!("stopped after step {}", self.done));
        }
        #[cfg(feature = "test-hooks")]
        if self.after == Some(self.done) {
            let me = rustix::process::getpid();
            let _ = rustix::process::kill_process(me, rustix::process::Signal::KILL);
            loop {
                std::thread::park();
            }
        }
        Ok(())
    }
}

fn journal_path(home: &Home, stamp: &str) -> PathBuf {
    home.state_dir()
        .join(format!("{JOURNAL_PREFIX}{stamp}.journal"))
}

fn write_journal(home: &Home, journal: &Journal) -> Result<(), String> {
    let bytes = serde_json::to_vec_pretty(journal).map_err(|e| e.to_string())?;
    fsutil::write_atomic(&journal_path(home, &journal.stamp), &bytes)
        .map_err(|e| format!("cannot write the restore journal: {e}"))
}

fn exists(path: &Path) -> bool {
    std::fs::symlink_metadata(path).is_ok()
}

fn rename(from: &Path, to: &Path) -> Result<(), String> {
    std::fs::rename(from, to)
        .map_err(|e| format!("cannot move {} to {}: {e}", from.display(), to.display()))?;
    for dir in [from.parent(), to.parent()].into_iter().flatten() {
        let _ = fsutil::sync_dir(dir);
    }
    Ok(())
}

/// Carries out `journal` (state [`State::Swapping`]); on any failure rolls back and returns
/// why. A hook may kill the process between steps (tests).
pub fn execute(home: &Home, mut journal: Journal, hook: &mut KillHook) -> Result<(), String> {
    write_journal(home, &journal)?;
    hook.step()?;
    if let Err(e) = forward(&journal, hook) {
        return match rollback(home, &journal) {
            Ok(()) => Err(format!("{e}; the previous home was put back")),
            Err(r) => Err(format!("{e}; rolling back failed too: {r}")),
        };
    }
    journal.state = State::Committed;
    write_journal(home, &journal)?;
    hook.step()?;
    let _ = std::fs::remove_dir_all(&journal.staging);
    Ok(())
}

pub(super) fn forward(journal: &Journal, hook: &mut KillHook) -> Result<(), String> {
    for item in &journal.items {
        if let (Some(from), true) = (&item.copy_from, item.has_staged) {
            copy_file(from, &item.staged)?;
            hook.step()?;
        }
    }
    for item in &journal.items {
        if item.had_live {
            if let Some(dir) = item.saved.parent() {
                fsutil::create_private_dir(dir)
                    .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
            }
            rename(&item.live, &item.saved)?;
            hook.step()?;
        }
        if item.has_staged {
            rename(&item.staged, &item.live)?;
            hook.step()?;
        }
    }
    Ok(())
}

fn copy_file(from: &Path, to: &Path) -> Result<(), String> {
    let _ = std::fs::remove_file(to);
    let mut src =
        std::fs::File::open(from).map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    let mut dst = fsutil::create_private_new(to)
        .map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    std::io::copy(&mut src, &mut dst)
        .and_then(|_| dst.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", to.display()))
}

/// Undoes whatever part of `journal` was done; idempotent.
pub fn rollback(home: &Home, journal: &Journal) -> Result<(), String> {
    for item in journal.items.iter().rev() {
        // The replacement is in place only if it was renamed in: then the old version (if
        // any) was moved to `saved` first.
        let replaced = !item.had_live || exists(&item.saved);
        if item.has_staged && !exists(&item.staged) && exists(&item.live) && replaced {
            rename(&item.live, &item.staged)?;
        }
        if item.had_live && exists(&item.saved) && !exists(&item.live) {
            rename(&item.saved, &item.live)?;
        }
        if item.copy_from.is_some() && exists(&item.staged) {
            let _ = std::fs::remove_file(&item.staged);
        }
    }
    let _ = std::fs::remove_dir(&journal.pre_restore);
    let _ = std::fs::remove_dir_all(&journal.staging);
    std::fs::remove_file(journal_path(home, &journal.stamp))
        .map_err(|e| format!("cannot remove the restore journal: {e}"))?;
    let _ = fsutil::sync_dir(&home.state_dir());
    Ok(())
}

/// Every journal in the home, oldest first.
fn journals(home: &Home) -> Vec<Journal> {
    let mut found: Vec<(String, Journal)> = std::fs::read_dir(home.state_dir())
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_str()?.to_string();
            if !(name.starts_with(JOURNAL_PREFIX) && name.ends_with(".journal")) {
                return None;
            }
            let text = std::fs::read(e.path()).ok()?;
            Some((name, serde_json::from_slice(&text).ok()?))
        })
        .collect();
    found.sort_by(|a, b| a.0.cmp(&b.0));
    found.into_iter().map(|(_, j)| j).collect()
}

/// Takes the staging directory's lock (held while a restore runs); `None` when another
/// process holds it or it cannot be opened.
pub fn lock_staging(dir: &Path) -> Option<OwnedFd> {
    use rustix::fs::{FlockOperation, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = rustix::fs::open(dir, flags, Mode::empty()).ok()?;
    rustix::fs::flock(&fd, FlockOperation::NonBlockingLockExclusive).ok()?;
    Some(fd)
}

/// Finishes what an interrupted restore left: an uncommitted swap is rolled back, abandoned
/// staging directories are removed. Returns a line for the operator when something was done.
pub fn recover(home: &Home) -> Result<Option<String>, String> {
    let mut done = None;
    for journal in journals(home) {
        if journal.state != State::Swapping {
            continue;
        }
        if exists(&journal.staging) && lock_staging(&journal.staging).is_none() {
            continue; // a restore is running right now
        }
        rollback(home, &journal)?;
        done = Some(
            "an interrupted restore was rolled back: the home is as it was before it".to_string(),
        );
    }
    let entries = std::fs::read_dir(home.state_dir())
        .into_iter()
        .flatten()
        .flatten();
    for entry in entries {
        let is_staging = entry
            .file_name()
            .to_str()
            .is_some_and(|n| n.starts_with(STAGING_PREFIX));
        if is_staging && lock_staging(&entry.path()).is_some() {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
    Ok(done)
}

/// Called once the gateway has started on a restored home: removes the pre-restore copies
/// of every committed restore. Returns the removed directories.
pub fn started(home: &Home) -> Vec<PathBuf> {
    let mut removed = Vec::new();
    for journal in journals(home) {
        if journal.state != State::Committed {
            continue;
        }
        for item in &journal.items {
            if item.saved.is_dir() {
                let _ = std::fs::remove_dir_all(&item.saved);
            } else {
                let _ = std::fs::remove_file(&item.saved);
            }
        }
        let _ = std::fs::remove_dir_all(&journal.pre_restore);
        if std::fs::remove_file(journal_path(home, &journal.stamp)).is_ok() {
            removed.push(journal.pre_restore.clone());
        }
    }
    removed
}

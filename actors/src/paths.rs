//! The layout of a KafClaw home (CONTRACT §1): every state path in one place.
//!
//! Owns: path names and the creation of the state directories with their final modes.
//! Must not: read or write the files' contents.

use std::io;
use std::path::{Path, PathBuf};

use crate::fsutil;

/// Every path under one KafClaw root (`--home`, `$KAFCLAW_HOME`, or the user's home).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Home {
    /// The root that `~` stands for in CONTRACT §1.
    root: PathBuf,
}

impl Home {
    /// A layout rooted at `root` (nothing is created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self { root: root.into() }
    }

    /// The root directory (`~`).
    pub fn root(&self) -> &Path {
        &self.root
    }
    /// `~/.kafclaw`, the state directory (0700).
    pub fn state_dir(&self) -> PathBuf {
        self.root.join(".kafclaw")
    }
    /// `~/.kafclaw/config.json`, the operator config (0600).
    pub fn config_file(&self) -> PathBuf {
        self.state_dir().join("config.json")
    }
    /// `~/.kafclaw/timeline.db`, the sled store (0700).
    pub fn store_dir(&self) -> PathBuf {
        self.state_dir().join("timeline.db")
    }
    /// `~/.kafclaw/audit`, the audit segments (dir 0700, files 0600).
    pub fn audit_dir(&self) -> PathBuf {
        self.state_dir().join("audit")
    }
    /// `~/.kafclaw/audit.head`, the audit chain's head written at a clean stop (0600); kept
    /// outside `audit/` so that cutting records from the segments cannot cut it too.
    pub fn audit_head_file(&self) -> PathBuf {
        self.state_dir().join("audit.head")
    }
    /// `~/.kafclaw/workspace`, the agent workspace (0700).
    pub fn default_workspace(&self) -> PathBuf {
        self.state_dir().join("workspace")
    }
    /// `~/.kafclaw/work-repo`, the only tree tools may write (0700).
    pub fn default_work_repo(&self) -> PathBuf {
        self.state_dir().join("work-repo")
    }
    /// `~/.kafclaw/snapshots`, incident snapshots (0700).
    pub fn snapshots_dir(&self) -> PathBuf {
        self.state_dir().join("snapshots")
    }
    /// `~/.kafclaw/backups`, where `kafclaw backup create` writes without `--out` (0700).
    pub fn backups_dir(&self) -> PathBuf {
        self.state_dir().join("backups")
    }
    /// `~/.kafclaw/control.sock`, the operator socket of a running gateway.
    pub fn control_socket(&self) -> PathBuf {
        self.state_dir().join("control.sock")
    }
    /// `~/.kafclaw/control.cookie`, the running gateway's control cookie (0600): every request
    /// on the control socket carries it, so a process of the same uid that may not read the
    /// state directory (an exec child or a skill entry under Landlock) cannot command the
    /// gateway even where the kernel cannot keep it off the socket.
    pub fn control_cookie(&self) -> PathBuf {
        self.state_dir().join("control.cookie")
    }
    /// `~/.config/kafclaw`, holding the env file and the vault key (0700).
    pub fn config_dir(&self) -> PathBuf {
        self.root.join(".config").join("kafclaw")
    }
    /// `~/.config/kafclaw/env`, the operator env file (0600).
    pub fn env_file(&self) -> PathBuf {
        self.config_dir().join("env")
    }
    /// `~/.config/kafclaw/tomb.rr`, the vault key file (0600).
    pub fn key_file(&self) -> PathBuf {
        self.config_dir().join("tomb.rr")
    }

    /// Paths that no tool may ever read or list, whatever the configured roots say: the
    /// secrets themselves and the copies of conversation data (snapshots, backups). The rest
    /// of the state directory but its workspace and work repo is refused to tools as well
    /// (the executor's confinement and `security check`'s isolation rows).
    pub fn secret_paths(&self) -> Vec<PathBuf> {
        vec![
            self.key_file(),
            self.env_file(),
            self.config_file(),
            self.store_dir(),
            self.audit_dir(),
            self.audit_head_file(),
            self.config_dir(),
            self.snapshots_dir(),
            self.backups_dir(),
            self.control_socket(),
            self.control_cookie(),
        ]
    }

    /// Creates the state directories that must exist before the gateway starts, each with
    /// mode 0700 at creation. Existing directories keep their mode (doctor reports it).
    pub fn ensure_state_dirs(&self) -> io::Result<()> {
        for dir in [
            self.state_dir(),
            self.audit_dir(),
            self.snapshots_dir(),
            self.config_dir(),
        ] {
            fsutil::create_private_dir(&dir)?;
        }
        Ok(())
    }
}

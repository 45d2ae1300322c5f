//! What a restore swaps: the state paths, the vault key file when the backup carries its own,
//! and the workspace identity files, each with where its replacement is staged and where the
//! current version is saved.
//!
//! Owns: that list.
//! Must not: change anything (the swap does).

use std::path::{Path, PathBuf};

use kafclaw_actors::agent::IDENTITY_FILES;
use kafclaw_actors::fsutil;

use super::super::files::read_private_regular;
use super::super::swap::Item;
use super::super::verify::Inspection;
use super::super::WORKSPACE_DIR;
use super::Ctx;
use crate::checks::Report;
use crate::settings::Settings;

impl Ctx<'_> {
    pub(super) fn state_items(&self) -> Vec<Item> {
        let pre = self
            .home
            .state_dir()
            .join(format!("pre-restore-{}", self.stamp));
        [
            (self.home.store_dir(), self.view.store_dir()),
            (self.home.audit_dir(), self.view.audit_dir()),
            (self.home.config_file(), self.view.config_file()),
            // The replaced log's head file names records the restored log never had; the
            // restored store carries the head of the restored log. (No staged one: moved away.)
            (self.home.audit_head_file(), self.view.audit_head_file()),
        ]
        .into_iter()
        .map(|(live, staged)| Item {
            saved: pre.join(live.file_name().unwrap_or_default()),
            had_live: std::fs::symlink_metadata(&live).is_ok(),
            has_staged: staged.exists(),
            live,
            staged,
            copy_from: None,
        })
        .filter(|i| i.had_live || i.has_staged)
        .collect()
    }

    /// The vault key file, when it comes from the backup and differs from the one in place.
    pub(super) fn key_item(
        &self,
        inspection: &Inspection,
        report: &mut Report,
    ) -> Result<Option<Item>, ()> {
        let live = self.home.key_file();
        let current = read_private_regular(&live, 1 << 20);
        let restored = std::fs::read(self.view.key_file()).ok();
        if !inspection.key_from_backup || current == restored {
            report.pass("key", "using the vault key already in place");
            return Ok(None);
        }
        if current.is_some() && !self.flags.force {
            report.fail(
                "key",
                format!(
                    "the backup carries its own vault key and {} exists",
                    live.display()
                ),
                "pass --force to replace it (the current one is kept as a pre-restore copy)",
            );
            return Err(());
        }
        if fsutil::create_private_dir(&self.home.config_dir()).is_err() {
            report.fail(
                "key",
                format!("cannot create {}", self.home.config_dir().display()),
                "check the home's permissions",
            );
            return Err(());
        }
        report.pass("key", "vault key restored from the backup");
        Ok(Some(self.sibling_item(live, self.view.key_file())))
    }

    /// An item outside the state directory: staged and saved next to `live`.
    fn sibling_item(&self, live: PathBuf, from: PathBuf) -> Item {
        let name = live
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("file")
            .to_string();
        let dir = live.parent().map(Path::to_path_buf).unwrap_or_default();
        Item {
            staged: dir.join(format!(".{name}.restore-{}", self.stamp)),
            saved: dir.join(format!(".{name}.pre-restore-{}", self.stamp)),
            had_live: std::fs::symlink_metadata(&live).is_ok(),
            has_staged: true,
            copy_from: Some(from),
            live,
        }
    }

    /// The identity files the backup carries, into the workspace the restored config names.
    pub(super) fn identity_items(&self, restored: &Settings, report: &mut Report) -> Vec<Item> {
        let workspace = restored.workspace(self.home);
        let mut items = Vec::new();
        let mut changed = Vec::new();
        for name in IDENTITY_FILES {
            let from = self.view.state_dir().join(WORKSPACE_DIR).join(name);
            let Ok(new) = std::fs::read(&from) else {
                continue;
            };
            let live = workspace.join(name);
            if std::fs::read(&live).ok().as_ref() != Some(&new) {
                changed.push(name);
            }
            items.push(self.sibling_item(live, from));
        }
        if !items.is_empty() && fsutil::create_private_dir(&workspace).is_err() {
            report.warn(
                "identity",
                format!("cannot create {}", workspace.display()),
                "create it and restore again",
            );
            return Vec::new();
        }
        if !changed.is_empty() {
            report.warn(
                "identity",
                format!(
                    "the backup changes the agent's identity files in {}: {}",
                    workspace.display(),
                    changed.join(", ")
                ),
                "read them before starting the gateway: they become the agent's system prompt",
            );
        }
        items
    }
}

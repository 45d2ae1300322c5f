//! Where `backup create` may write: exactly the operator's path (or a dated archive inside an
//! existing directory), never inside the workspace, the work repo or the home's secret paths,
//! never in a directory that group or others can read or write, never over an existing file.
//!
//! Owns: that decision.
//! Must not: create anything but the (private) parent directory.

use std::path::{Path, PathBuf};

use kafclaw_actors::fsutil;
use kafclaw_actors::paths::Home;

use super::files::stamp;
use crate::settings::Settings;

/// Where `create` writes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Destination {
    /// The archive file (does not exist yet).
    pub file: PathBuf,
    /// zstd-compress (the name ends in `.zst`).
    pub compress: bool,
}

/// Resolves `--out` (absolute) into the archive to write, or why not. Without `--out`, a dated
/// archive in `~/.kafclaw/backups/`; an existing directory gets a dated archive inside it;
/// any other path is the archive itself.
pub fn destination(
    out: Option<&Path>,
    home: &Home,
    settings: &Settings,
) -> Result<Destination, String> {
    let default = home.backups_dir();
    let out = out.unwrap_or(&default);
    if out == default {
        fsutil::create_private_dir(out)
            .map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    }
    let file = if out.is_dir() {
        out.join(format!("kafclaw-backup-{}.tar.zst", stamp()))
    } else {
        out.to_path_buf()
    };
    if std::fs::symlink_metadata(&file).is_ok() {
        return Err(format!(
            "{} already exists; a backup never replaces a file (choose a new name)",
            file.display()
        ));
    }
    let parent = file
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fsutil::create_private_dir(parent)
        .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    let real = parent
        .canonicalize()
        .map_err(|e| format!("cannot resolve {}: {e}", parent.display()))?;
    let mode = fsutil::mode_of(&real).map_err(|e| format!("{}: {e}", real.display()))?;
    if mode & 0o066 != 0 {
        return Err(format!(
            "{} is readable or writable by group or others (mode {mode:04o}); write backups into a directory only you can read (chmod 700)",
            real.display()
        ));
    }
    let forbidden = [
        ("the agent workspace", settings.workspace(home)),
        ("the work repo", settings.work_repo(home)),
        ("the store", home.store_dir()),
        ("the audit log", home.audit_dir()),
        ("the key directory", home.config_dir()),
    ];
    for (what, root) in forbidden {
        let root = root.canonicalize().unwrap_or(root);
        if real.starts_with(&root) {
            return Err(format!(
                "{} is inside {what} ({}), which tools or other sessions can read; write backups elsewhere",
                file.display(),
                root.display()
            ));
        }
    }
    let compress = file.extension().is_some_and(|e| e == "zst");
    Ok(Destination { file, compress })
}

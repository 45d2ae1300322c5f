//! File-system helpers that create every file and directory with its final mode.
//!
//! Owns: the rule "a file is never world-readable for an instant". Every state file and
//! directory the program makes goes through here; nothing is written first and chmod-ed after.
//! Must not: know what the files mean (that is the caller's business).

use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Mode of every private directory (`~/.kafclaw`, `timeline.db`, `audit`, …).
pub const DIR_MODE: u32 = 0o700;
/// Mode of every private file (`config.json`, audit segments, `tomb.rr`, the env file).
pub const FILE_MODE: u32 = 0o600;

/// Creates `path` and any missing parents, each new directory created with `mode`.
///
/// Existing directories are left as they are (their mode is reported by `doctor`, repaired by
/// `doctor --fix`), so pointing `--home` at an existing tree never changes it silently.
pub fn create_dir_all_with_mode(path: &Path, mode: u32) -> io::Result<()> {
    if path.is_dir() {
        return Ok(());
    }
    DirBuilder::new().recursive(true).mode(mode).create(path)
}

/// Creates a private directory (0700) and its missing parents.
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    create_dir_all_with_mode(path, DIR_MODE)
}

/// Opens `path` for appending, creating it with mode 0600 if it does not exist.
pub fn open_private_append(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .create(true)
        .append(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Creates a new file with mode 0600; fails if it already exists.
pub fn create_private_new(path: &Path) -> io::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(FILE_MODE)
        .open(path)
}

/// Replaces `path` atomically with `bytes`: a 0600 temporary file in the same directory is
/// written, fsynced and renamed over the target, then the directory is fsynced.
/// A crash leaves either the old content or the new one, never a mix.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with_mode(path, bytes, FILE_MODE)
}

/// Like [`write_atomic`] with an explicit mode for the new file.
pub fn write_atomic_with_mode(path: &Path, bytes: &[u8], mode: u32) -> io::Result<()> {
    let dir = path
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no parent"))?;
    let tmp = temp_sibling(path);
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        sync_dir(dir)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Fsyncs a directory so that a rename or a new entry in it is durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The permission bits (`0o777` part) of `path`, not following a final symlink.
pub fn mode_of(path: &Path) -> io::Result<u32> {
    Ok(fs::symlink_metadata(path)?.mode() & 0o777)
}

/// Sets the permission bits of an existing path (used only by explicit repairs such as
/// `doctor --fix`, never as part of creating a file).
pub fn set_mode(path: &Path, mode: u32) -> io::Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
}

fn temp_sibling(path: &Path) -> PathBuf {
    let mut random = [0u8; 8];
    // A name collision only makes `create_new` fail; it never overwrites anything.
    let _ = getrandom::fill(&mut random);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    path.with_file_name(format!(".{name}.{}.tmp", hex::encode(random)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_creates_private_file_and_replaces_content() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        write_atomic(&path, b"one").unwrap();
        assert_eq!(mode_of(&path).unwrap(), FILE_MODE);
        write_atomic(&path, b"two").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"two");
        let leftovers: Vec<_> = fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(leftovers.len(), 1, "no temporary file is left behind");
    }

    #[test]
    fn private_dirs_and_files_get_their_final_modes() {
        let dir = tempfile::tempdir().unwrap();
        let nested = dir.path().join("a/b/c");
        create_private_dir(&nested).unwrap();
        assert_eq!(mode_of(&nested).unwrap(), DIR_MODE);
        assert_eq!(mode_of(&dir.path().join("a")).unwrap(), DIR_MODE);
        let file = nested.join("seg");
        drop(open_private_append(&file).unwrap());
        assert_eq!(mode_of(&file).unwrap(), FILE_MODE);
        assert!(
            create_private_new(&file).is_err(),
            "create_new never clobbers"
        );
    }
}

//! Secrets handed over as files, the way secret managers do it: `NAME_FILE` next to every
//! secret variable `NAME` (the container convention, e.g.
//! `KAFCLAW_GATEWAY_AUTH_TOKEN_FILE=/run/secrets/token`) and systemd credentials at
//! `$CREDENTIALS_DIRECTORY/<dotted key>` (e.g. `gateway.auth_token`, from `LoadCredential=`).
//!
//! Owns: which variables and credential names stand for which secret key, the file rules
//! (a regular file, no group or other permission bits, at most 64 KiB of UTF-8, trailing
//! newlines stripped) and the refusal of `NAME` and `NAME_FILE` set together.
//! Must not: put a secret's value in an error, or read any file that is not named for a
//! secret key.

use std::os::unix::fs::{MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::keys::{self, Kind};
use super::{Origin, SettingsError};

/// The variable systemd sets to the service's credentials directory.
pub const CREDENTIALS_DIRECTORY: &str = "CREDENTIALS_DIRECTORY";

/// The vault passphrase's file variable and credential name (not a settings key: the vault
/// key file is sealed with it).
pub const PASSPHRASE_FILE_ENV: &str = "KAFCLAW_VAULT_PASSPHRASE_FILE";
/// The credential that holds the vault passphrase.
pub const PASSPHRASE_CREDENTIAL: &str = "vault.passphrase";

/// The vault passphrase from `KAFCLAW_VAULT_PASSPHRASE` (given as `plain`), else
/// `KAFCLAW_VAULT_PASSPHRASE_FILE`, else the credential `vault.passphrase`.
pub fn passphrase(
    env: &std::collections::HashMap<String, String>,
    plain: &str,
) -> Result<Option<String>, SettingsError> {
    if let Some(value) = env.get(plain).filter(|v| !v.is_empty()) {
        if env.contains_key(PASSPHRASE_FILE_ENV) {
            return Err(SettingsError::SecretFile {
                source_name: PASSPHRASE_FILE_ENV.to_string(),
                problem: format!("{plain} is set as well; set one of them"),
            });
        }
        return Ok(Some(value.clone()));
    }
    if let Some(path) = env.get(PASSPHRASE_FILE_ENV) {
        return read(PASSPHRASE_FILE_ENV, Path::new(path)).map(Some);
    }
    if let Some(dir) = env.get(CREDENTIALS_DIRECTORY) {
        let path = Path::new(dir).join(PASSPHRASE_CREDENTIAL);
        if path.exists() {
            let source_name = format!("systemd credential {}", path.display());
            return read(&source_name, &path).map(Some);
        }
    }
    Ok(None)
}

/// The suffix of a variable that names a file holding the secret.
const SUFFIX: &str = "_FILE";

/// The largest secret file read (a token or an API key is far smaller).
const MAX_BYTES: u64 = 64 * 1024;

/// The secret key that `var` (`<NAME>_FILE`) points a file at, when `NAME` is a secret's
/// variable.
pub fn secret_key_of_file_var(var: &str) -> Option<String> {
    let base = var.strip_suffix(SUFFIX)?;
    let key = keys::key_for_env(base)?;
    is_secret(&key).then_some(key)
}

fn is_secret(key: &str) -> bool {
    keys::lookup(key).is_some_and(|spec| spec.kind == Kind::Secret)
}

/// Refuses a layer (the process environment, the env file) that sets both `NAME` and
/// `NAME_FILE`: which one wins would be a guess.
pub fn refuse_both<'a>(vars: impl Iterator<Item = &'a str> + Clone) -> Result<(), SettingsError> {
    for var in vars.clone() {
        if secret_key_of_file_var(var).is_none() {
            continue;
        }
        let base = &var[..var.len() - SUFFIX.len()];
        if vars.clone().any(|v| v == base) {
            return Err(SettingsError::SecretFile {
                source_name: var.to_string(),
                problem: format!("{base} is set as well; set one of them"),
            });
        }
    }
    Ok(())
}

/// Reads the secret file `path` named by `source_name`; the error names both, never the value.
pub fn read(source_name: &str, path: &Path) -> Result<String, SettingsError> {
    let refuse = |problem: String| SettingsError::SecretFile {
        source_name: source_name.to_string(),
        problem,
    };
    if !path.is_absolute() {
        return Err(refuse(format!(
            "{} is not an absolute path",
            path.display()
        )));
    }
    // The kernel's own files (`/proc/self/environ` reports size 0 and mode 0400) are no
    // secret files.
    let resolved = std::fs::canonicalize(path)
        .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?;
    if resolved.starts_with("/proc") || resolved.starts_with("/sys") {
        return Err(refuse(format!("{} is a kernel file", path.display())));
    }
    // Opened once (non-blocking: a FIFO swapped in cannot hang the start) and checked on
    // that descriptor, so what is checked is what is read.
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(rustix::fs::OFlags::NONBLOCK.bits() as i32)
        .open(path)
        .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?;
    let meta = file
        .metadata()
        .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?;
    if !meta.is_file() {
        return Err(refuse(format!("{} is not a regular file", path.display())));
    }
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        return Err(refuse(format!(
            "{} is readable or writable by group or others (mode {mode:04o}); chmod 600 {}",
            path.display(),
            path.display()
        )));
    }
    let euid = rustix::process::geteuid().as_raw();
    if meta.uid() != euid && meta.uid() != 0 {
        return Err(refuse(format!(
            "{} belongs to uid {}, not to this user (uid {euid}) or root",
            path.display(),
            meta.uid()
        )));
    }
    let mut bytes = Vec::new();
    std::io::Read::read_to_end(&mut std::io::Read::take(&file, MAX_BYTES + 1), &mut bytes)
        .map_err(|e| refuse(format!("cannot read {}: {e}", path.display())))?;
    if bytes.len() as u64 > MAX_BYTES {
        return Err(refuse(format!(
            "{} is larger than {MAX_BYTES} bytes",
            path.display()
        )));
    }
    let text = String::from_utf8(bytes)
        .map_err(|_| refuse(format!("{} is not UTF-8 text", path.display())))?;
    let text = zeroize::Zeroizing::new(text);
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

/// Every secret held in the credentials directory `dir`: files named for a secret key
/// (`gateway.auth_token`, `channels.bridges.slack.secret`) or its variable
/// (`KAFCLAW_GATEWAY_AUTH_TOKEN`). Other files are not read (the directory may hold
/// credentials of other programs).
pub fn credentials(dir: &Path) -> Result<Vec<(String, String, Origin)>, SettingsError> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) => {
            return Err(SettingsError::SecretFile {
                source_name: format!("{CREDENTIALS_DIRECTORY}={}", dir.display()),
                problem: format!("cannot list it: {e}"),
            })
        }
    };
    let mut names: Vec<String> = entries
        .filter_map(Result::ok)
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    names.sort();
    let mut found = Vec::new();
    for name in names {
        let key = if is_secret(&name) {
            name.clone()
        } else {
            match keys::key_for_env(&name).filter(|k| is_secret(k)) {
                Some(key) => key,
                None => continue,
            }
        };
        let path = dir.join(&name);
        let source_name = format!("systemd credential {}", path.display());
        let value = read(&source_name, &path)?;
        found.push((key, value, Origin::Credential(path)));
    }
    Ok(found)
}

/// Where a secret key's value came from, for `doctor` (never the value).
pub fn describe(origin: &Origin) -> String {
    match origin {
        Origin::Env(var) => format!("environment ({var})"),
        Origin::EnvFile(path, var) => format!("env file ({var} in {})", path.display()),
        Origin::SecretFile(var, path) => format!("file ({var}={})", path.display()),
        Origin::Credential(path) => format!("systemd credential ({})", path.display()),
        Origin::Vault => "vault".to_string(),
        Origin::ConfigFile(path) => format!("config ({})", path.display()),
        Origin::Flag(flag) => format!("flag {flag}"),
        Origin::Default => "built-in default".to_string(),
    }
}

/// The path a secret's value was read from, when it came from a file.
pub fn file_of(origin: &Origin) -> Option<PathBuf> {
    match origin {
        Origin::SecretFile(_, path) | Origin::Credential(path) => Some(path.clone()),
        _ => None,
    }
}

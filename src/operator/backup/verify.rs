//! `backup verify`, and the checks that `restore` runs on its staging copy before anything in
//! the home changes: the entries (staging), the vault opens with the key at hand, the
//! manifest's MAC, every checksum, the audit chain and its head, every secret decrypts.
//!
//! Owns: the order of those checks and what each reports.
//! Must not: write to the backup or the home; treat a manifest as authentic without a valid
//! MAC unless the operator said `--unauthenticated`.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use kafclaw_actors::audit::AuditKey;
use kafclaw_actors::fsutil;
use kafclaw_actors::paths::Home;
use kafclaw_actors::store::StoreDb;
use kafclaw_actors::vault::{Vault, AUDIT_KEY_NAME, BACKUP_KEY_NAME};

use super::files::{create_new_private_dir, random_tag, read_private_regular, write_new};
use super::layout::{SEALED_KEY, STORE};
use super::manifest::MacCheck;
use super::staging::{self, Staged};
use super::PASSPHRASE_ENV;
use crate::checks::Report;

/// What the checks found usable.
pub struct Inspection {
    /// The staged backup.
    pub staged: Staged,
    /// The manifest's MAC verified.
    pub authenticated: bool,
    /// The backup's audit key (to append the restore's own record).
    pub audit_key: AuditKey,
    /// The vault key came from the backup (sealed), not from this home.
    pub key_from_backup: bool,
}

/// `kafclaw backup verify PATH`.
pub fn verify(
    path: &Path,
    home: &Home,
    env: &HashMap<String, String>,
    unauthenticated: bool,
) -> Report {
    let mut report = Report::new("backup verify");
    let scratch = match Scratch::new() {
        Ok(s) => s,
        Err(e) => {
            report.fail("staging", e, "free space in the temporary directory");
            return report;
        }
    };
    let view = Home::new(&scratch.0);
    let _ = inspect(path, &view, home, env, unauthenticated, &mut report);
    report
}

/// Stages `path` into `view` and checks it; `None` (after a FAIL) when it must not be used.
pub fn inspect(
    path: &Path,
    view: &Home,
    home: &Home,
    env: &HashMap<String, String>,
    unauthenticated: bool,
    report: &mut Report,
) -> Option<Inspection> {
    let staged = match staging::stage(path, view) {
        Ok(s) => s,
        Err(e) => {
            report.fail(
                "entries",
                e.to_string(),
                "the backup was altered or is not a kafclaw backup: use another backup",
            );
            return None;
        }
    };
    report.pass(
        "entries",
        format!(
            "{} regular files, every name in the layout",
            staged.sums.len()
        ),
    );
    if !staged
        .sums
        .keys()
        .any(|k| k.starts_with(&format!("{STORE}/")))
    {
        report.fail("store", "the backup holds no store", "use another backup");
        return None;
    }
    let (key_from_backup, source) = match install_key(view, home, env) {
        Ok(k) => k,
        Err(e) => {
            report.fail("vault", e, format!("put this installation's tomb.rr in ~/.config/kafclaw/, or set {PASSPHRASE_ENV} for a backup made with --include-key"));
            return None;
        }
    };
    let keys = match open_keys(view, env) {
        Ok(k) => k,
        Err(e) => {
            report.fail(
                "vault",
                format!("{e} (with {source})"),
                "use the vault key of the installation that made the backup",
            );
            return None;
        }
    };
    report.pass(
        "vault",
        format!(
            "the backup's store opens with {source}; all {} secrets decrypt",
            keys.secrets
        ),
    );
    if !authenticate(&staged, keys.backup.as_ref(), unauthenticated, report) {
        return None;
    }
    let authenticated = keys
        .backup
        .as_ref()
        .is_some_and(|k| staged.manifest.check_mac(k) == MacCheck::Valid);
    if !checksums(&staged, report) || !chain(view, &staged, &keys.audit, report) {
        return None;
    }
    Some(Inspection {
        staged,
        authenticated,
        audit_key: keys.audit,
        key_from_backup,
    })
}

/// Puts the vault key file into the view: the backup's sealed one (with the passphrase), else
/// a copy of this home's. Returns (from the backup, a description).
fn install_key(
    view: &Home,
    home: &Home,
    env: &HashMap<String, String>,
) -> Result<(bool, &'static str), String> {
    fsutil::create_private_dir(&view.config_dir()).map_err(|e| e.to_string())?;
    let sealed = view.root().join(SEALED_KEY);
    let passphrase = env.get(PASSPHRASE_ENV).filter(|p| !p.is_empty());
    if let (Ok(sealed), Some(passphrase)) = (std::fs::read_to_string(&sealed), passphrase) {
        let key = super::seal::open_key(&sealed, passphrase)?;
        write_new(&view.key_file(), &key)?;
        return Ok((true, "the key sealed in the backup"));
    }
    match read_private_regular(&home.key_file(), 1 << 20) {
        Some(key) => {
            write_new(&view.key_file(), &key)?;
            Ok((false, "this home's vault key"))
        }
        None if sealed.exists() => Err(format!(
            "the backup's vault key is sealed: set {PASSPHRASE_ENV}"
        )),
        None => Err(format!(
            "no vault key to open the backup with ({} is missing)",
            home.key_file().display()
        )),
    }
}

struct Keys {
    audit: AuditKey,
    backup: Option<zeroize::Zeroizing<[u8; 32]>>,
    secrets: usize,
}

/// Opens the staged store and vault: the audit key, the backup key, every secret decrypts.
/// The store is closed again before returning.
fn open_keys(view: &Home, env: &HashMap<String, String>) -> Result<Keys, String> {
    let db = StoreDb::open(&view.store_dir()).map_err(|e| e.to_string())?;
    let (vault, _) =
        Vault::open_existing(view, &db, crate::core::passphrase(env)).map_err(|e| e.to_string())?;
    let key32 = |name: &str| -> Result<Option<zeroize::Zeroizing<[u8; 32]>>, String> {
        let Some(value) = vault.get(name).map_err(|e| e.to_string())? else {
            return Ok(None);
        };
        let bytes: [u8; 32] = value
            .expose()
            .try_into()
            .map_err(|_| format!("{name} is not 32 bytes"))?;
        Ok(Some(zeroize::Zeroizing::new(bytes)))
    };
    let audit = key32(AUDIT_KEY_NAME)?.ok_or("the backup's vault holds no audit key")?;
    let backup = key32(BACKUP_KEY_NAME)?;
    let all = vault.verify_all().map_err(|e| e.to_string())?;
    let bad = all.iter().filter(|(_, r)| r.is_err()).count();
    if bad > 0 {
        return Err(format!("{bad} of {} secrets do not decrypt", all.len()));
    }
    drop(vault);
    db.flush_blocking().map_err(|e| e.to_string())?;
    Ok(Keys {
        audit: AuditKey::from_bytes(*audit),
        backup,
        secrets: all.len(),
    })
}

/// The MAC: valid passes; altered always fails; absent or uncheckable passes with a warning
/// only under `--unauthenticated`.
fn authenticate(
    staged: &Staged,
    key: Option<&zeroize::Zeroizing<[u8; 32]>>,
    unauthenticated: bool,
    report: &mut Report,
) -> bool {
    let check = key.map_or(MacCheck::Missing, |k| staged.manifest.check_mac(k));
    let why = match (check, key) {
        (MacCheck::Valid, _) => {
            report.pass("manifest", "authenticated: its MAC verifies with the backup key of the installation that wrote it");
            return true;
        }
        (MacCheck::Invalid, _) => {
            report.fail(
                "manifest",
                "the manifest's MAC does not verify: the backup was altered after it was written",
                "use another backup",
            );
            return false;
        }
        (MacCheck::Missing, None) => {
            "the backup's vault holds no backup key (written by an older version)"
        }
        (MacCheck::Missing, Some(_)) => "the manifest carries no MAC",
    };
    if unauthenticated {
        report.warn(
            "manifest",
            format!("NOT AUTHENTICATED: {why}; accepted because of --unauthenticated"),
            "its contents may have been changed by anyone who could write the backup",
        );
        true
    } else {
        report.fail(
            "manifest",
            format!("cannot be authenticated: {why}"),
            "only if you trust where this backup has been: add --unauthenticated (audited)",
        );
        false
    }
}

fn checksums(staged: &Staged, report: &mut Report) -> bool {
    let mut problems = Vec::new();
    for (name, listed) in &staged.manifest.files {
        match staged.sums.get(name) {
            None => problems.push(format!("{name} is missing")),
            Some(got) if got.blake3 != listed.blake3 => {
                problems.push(format!("{name} does not match its checksum"))
            }
            Some(_) => {}
        }
    }
    if problems.is_empty() {
        report.pass(
            "checksums",
            format!("{} files match the manifest", staged.manifest.files.len()),
        );
        true
    } else {
        report.fail(
            "checksums",
            problems.join("; "),
            "the backup was altered or damaged: use another backup",
        );
        false
    }
}

fn chain(view: &Home, staged: &Staged, key: &AuditKey, report: &mut Report) -> bool {
    let head = &staged.manifest.doc["audit_head"];
    match kafclaw_actors::audit::verify(&view.audit_dir(), key, None) {
        Ok(r)
            if head["seq"].as_u64() == Some(r.head_seq)
                && head["hash"].as_str() == Some(r.head_hash.as_str()) =>
        {
            report.pass(
                "audit_chain",
                format!("ok {} records, head {}", r.records, r.head_hash),
            );
            true
        }
        Ok(r) => {
            report.fail(
                "audit_chain",
                format!(
                    "the chain verifies but ends at seq {} while the manifest says {}",
                    r.head_seq, head["seq"]
                ),
                "records were cut from the end: use another backup",
            );
            false
        }
        Err(e) => {
            report.fail(
                "audit_chain",
                e.to_string(),
                "the audit log in the backup was altered: use another backup",
            );
            false
        }
    }
}

/// A throw-away home in the system temp directory (0700), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, String> {
        let dir = std::env::temp_dir().join(format!("kafclaw-verify-{}", random_tag()?));
        create_new_private_dir(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

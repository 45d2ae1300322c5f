//! `kafclaw backup create | verify | restore` (CONTRACT §8, runbook §7).
//!
//! A backup is a directory `kafclaw-backup-<UTC time>/` (0700, files 0600) holding:
//! `timeline.db/` (a consistent sled export of every tree — the vault's sealed secrets
//! included, ciphertext only), `audit/` (copies of the segments, each cut after its last
//! complete record), `config.json` (every secret setting's value replaced by
//! [`REDACTED`]), optionally `tomb.rr.sealed` (the vault key file encrypted with
//! XChaCha20-Poly1305 under an Argon2id key derived from `KAFCLAW_BACKUP_PASSPHRASE`; only
//! with `--include-key`), and `MANIFEST.json` (BLAKE3 of every other file, the audit head).
//!
//! Owns: writing, checking and restoring that layout; recording the last successful backup in
//! `~/.kafclaw/last-backup` for `security check`.
//! Must not: put a secret value in clear into a backup, or touch a non-empty home on restore
//! without `--force`. While a gateway runs, `create` goes through its control socket
//! ([`crate::ops::Operation::BackupCreate`]): sled allows one process per store.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::{json, Value};

use kafclaw_actors::audit::{AuditKey, AuditKind, AuditLog, RecordedHead};
use kafclaw_actors::clock;
use kafclaw_actors::fsutil::{self, DIR_MODE, FILE_MODE};
use kafclaw_actors::paths::Home;
use kafclaw_actors::store::StoreDb;
use kafclaw_actors::vault::{Vault, AUDIT_KEY_NAME};

use crate::checks::{self, Report};
use crate::cli::BackupCommand;
use crate::control::{self, Answer};
use crate::ops::Operation;

/// The value that replaces every secret in a backed-up config.json.
pub const REDACTED: &str = "<redacted: in vault>";
/// The variable holding the passphrase of `--include-key`.
pub const PASSPHRASE_ENV: &str = "KAFCLAW_BACKUP_PASSPHRASE";
/// The manifest's file name.
pub const MANIFEST: &str = "MANIFEST.json";
/// The sealed key file's name.
pub const SEALED_KEY: &str = "tomb.rr.sealed";
const FORMAT: &str = "kafclaw-backup-1";
const KEY_FORMAT: &str = "kafclaw-backup-key-1";
const KEY_AAD: &[u8] = b"kafclaw-backup-key-1";
/// Argon2id cost of the key-file passphrase (OWASP's minimum for Argon2id: 19 MiB, 2 passes).
const ARGON_M_KIB: u32 = 19_456;
const ARGON_T: u32 = 2;
const ARGON_P: u32 = 1;

/// What `create` wrote.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct Summary {
    /// The backup directory.
    pub path: PathBuf,
    /// Files listed in the manifest.
    pub files: usize,
    /// Audit segments copied.
    pub audit_segments: usize,
    /// The last audit record in the backup.
    pub audit_head: Value,
    /// Secret settings redacted from config.json.
    pub redacted: Vec<String>,
    /// The vault key is inside (sealed with the passphrase).
    pub key_included: bool,
}

/// Runs one `backup` subcommand; returns the exit code.
pub fn run(cmd: &BackupCommand, home: &Home, env: &HashMap<String, String>, json: bool) -> i32 {
    crate::logging::init("warn", false);
    match cmd {
        BackupCommand::Create { out, include_key } => {
            create_cmd(home, env, out.clone(), *include_key, json)
        }
        BackupCommand::Verify { path } => verify(path, home, env).print(json),
        BackupCommand::Restore { path, force } => restore_cmd(path, home, env, *force, json),
    }
}

fn create_cmd(
    home: &Home,
    env: &HashMap<String, String>,
    out: Option<PathBuf>,
    include_key: bool,
    json: bool,
) -> i32 {
    let out = out.unwrap_or_else(|| home.state_dir().join("backups"));
    let out = if out.is_absolute() {
        out
    } else {
        checks::resolve(&out)
    };
    let sealed_key = if include_key {
        let Some(passphrase) = env.get(PASSPHRASE_ENV).filter(|p| !p.is_empty()) else {
            eprintln!("kafclaw: --include-key needs a passphrase in {PASSPHRASE_ENV}");
            return 2;
        };
        let key = match std::fs::read(home.key_file()) {
            Ok(k) => k,
            Err(e) => {
                eprintln!(
                    "kafclaw: cannot read the vault key {}: {e}",
                    home.key_file().display()
                );
                return 2;
            }
        };
        match seal_key(&key, passphrase) {
            Ok(s) => Some(s),
            Err(e) => {
                eprintln!("kafclaw: {e}");
                return 2;
            }
        }
    } else {
        None
    };
    let op = Operation::BackupCreate {
        out: out.clone(),
        sealed_key: sealed_key.clone(),
    };
    let (summary, via) = match control::send(home, &op) {
        Ok(Some(Answer::Ok(v))) => match serde_json::from_value::<Summary>(v) {
            Ok(s) => (s, "through the running gateway"),
            Err(e) => {
                eprintln!("kafclaw: malformed answer from the gateway: {e}");
                return 2;
            }
        },
        Ok(Some(Answer::Failed(e) | Answer::Error(e))) | Err(e) => {
            eprintln!("kafclaw: backup failed: {e}");
            return 2;
        }
        Ok(None) => match create_offline(home, env, &out, sealed_key) {
            Ok(s) => (s, "offline"),
            Err(e) => {
                eprintln!("kafclaw: backup failed: {e}");
                return 2;
            }
        },
    };
    let mut report = Report::new("backup create");
    report.pass(
        "backup",
        format!(
            "written {via} to {} ({} files, {} audit segments, head seq {})",
            summary.path.display(),
            summary.files,
            summary.audit_segments,
            summary.audit_head["seq"]
        ),
    );
    if summary.redacted.is_empty() {
        report.pass("config", "config.json holds no secret values");
    } else {
        report.pass(
            "config",
            format!("redacted from config.json: {}", summary.redacted.join(", ")),
        );
    }
    if summary.key_included {
        report.pass(
            "key",
            format!("vault key included, sealed with {PASSPHRASE_ENV}"),
        );
    } else {
        report.pass(
            "key",
            "vault key not included: keep ~/.config/kafclaw/tomb.rr in your secret store (or use --include-key)",
        );
    }
    report.print(json)
}

fn create_offline(
    home: &Home,
    env: &HashMap<String, String>,
    out: &Path,
    sealed_key: Option<String>,
) -> Result<Summary, String> {
    let mut settings = checks::load_settings(home, env).map_err(|e| e.to_string())?;
    let core = crate::core::open(home, &mut settings, env).map_err(|e| e.to_string())?;
    let summary = create(home, &core.db, out, sealed_key)?;
    let recorded = RecordedHead::for_home(home, Some(&core.db))
        .map_err(|e| format!("the backup was written but cannot be audited: {e}"))?;
    let mut log = AuditLog::open_recorded(
        &home.audit_dir(),
        core.audit_key.clone(),
        &settings.audit,
        recorded,
    )
    .map_err(|e| format!("the backup was written but cannot be audited: {e}"))?;
    log.append(
        AuditKind::BackupCreated,
        &checks::cli_actor(),
        &summary.path.display().to_string(),
        &audit_data(&summary),
    )
    .map_err(|e| format!("the backup was written but cannot be audited: {e}"))?;
    Ok(summary)
}

/// The `backup.created` record's data (names, counts; no secret).
pub fn audit_data(summary: &Summary) -> Value {
    json!({
        "path": summary.path.display().to_string(),
        "files": summary.files,
        "audit_head": summary.audit_head,
        "key_included": summary.key_included,
    })
}

/// Writes a backup of `home` (store through `db`, which may be the running gateway's) into a
/// new directory under `out`, and records it in `~/.kafclaw/last-backup`.
pub fn create(
    home: &Home,
    db: &StoreDb,
    out: &Path,
    sealed_key: Option<String>,
) -> Result<Summary, String> {
    fsutil::create_private_dir(out).map_err(|e| format!("cannot create {}: {e}", out.display()))?;
    let stamp = time::OffsetDateTime::now_utc();
    let name = format!(
        "kafclaw-backup-{:04}{:02}{:02}T{:02}{:02}{:02}.{:03}Z",
        stamp.year(),
        u8::from(stamp.month()),
        stamp.day(),
        stamp.hour(),
        stamp.minute(),
        stamp.second(),
        stamp.millisecond()
    );
    let dir = out.join(name);
    std::fs::DirBuilder::new()
        .mode_private()
        .create(&dir)
        .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    let result = fill(home, db, &dir, sealed_key);
    match result {
        Ok(summary) => {
            crate::checks::backup::record_backup(home, &summary.path).map_err(|e| {
                format!("backup written to {} but not recorded: {e}", dir.display())
            })?;
            Ok(summary)
        }
        Err(e) => {
            let _ = std::fs::remove_dir_all(&dir);
            Err(e)
        }
    }
}

trait PrivateDir {
    fn mode_private(&mut self) -> &mut Self;
}

impl PrivateDir for std::fs::DirBuilder {
    fn mode_private(&mut self) -> &mut Self {
        use std::os::unix::fs::DirBuilderExt;
        self.mode(DIR_MODE)
    }
}

fn fill(
    home: &Home,
    db: &StoreDb,
    dir: &Path,
    sealed_key: Option<String>,
) -> Result<Summary, String> {
    // The audit log first: every record in it describes something at least as old as the store
    // export that follows.
    let audit_dir = dir.join("audit");
    fsutil::create_private_dir(&audit_dir).map_err(|e| e.to_string())?;
    let segments = checks::files::audit_segments(home);
    for segment in &segments {
        let bytes = std::fs::read(segment)
            .map_err(|e| format!("cannot read {}: {e}", segment.display()))?;
        let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let name = segment.file_name().unwrap_or_default();
        write_new(&audit_dir.join(name), &bytes[..complete])?;
    }
    db.export_to(&dir.join("timeline.db"))
        .map_err(|e| e.to_string())?;
    // The export may name a later audit head than the segments copied before it: the
    // restored home must expect exactly the copied log.
    record_copied_head(&dir.join("timeline.db"), &audit_dir)?;

    let mut redacted = Vec::new();
    if let Ok(text) = std::fs::read_to_string(home.config_file()) {
        let mut config: Value = serde_json::from_str(&text).map_err(|e| {
            format!("config.json is not valid JSON ({e}); fix it before backing up")
        })?;
        redact(&mut config, "", &mut redacted);
        let mut bytes = serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        write_new(&dir.join("config.json"), &bytes)?;
    }
    let key_included = sealed_key.is_some();
    if let Some(sealed) = sealed_key {
        write_new(&dir.join(SEALED_KEY), sealed.as_bytes())?;
    }
    tighten(dir);
    let files = hash_tree(dir)?;
    let audit_head = audit_head(&audit_dir);
    let manifest = json!({
        "format": FORMAT,
        "created": clock::now_rfc3339(),
        "version": env!("CARGO_PKG_VERSION"),
        "key_included": key_included,
        "redacted": redacted,
        "audit_head": audit_head,
        "files": files,
    });
    let mut bytes = serde_json::to_vec_pretty(&manifest).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    write_new(&dir.join(MANIFEST), &bytes)?;
    fsutil::sync_dir(dir).map_err(|e| e.to_string())?;
    Ok(Summary {
        path: dir.to_path_buf(),
        files: files.len(),
        audit_segments: segments.len(),
        audit_head,
        redacted,
        key_included,
    })
}

fn write_new(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut file = fsutil::create_private_new(path)
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// Replaces every secret setting's string value with [`REDACTED`]; collects their keys.
fn redact(value: &mut Value, prefix: &str, redacted: &mut Vec<String>) {
    use crate::settings::keys::{self, Kind};
    match value {
        Value::Object(map) => {
            for (k, v) in map.iter_mut() {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                redact(v, &key, redacted);
            }
        }
        Value::String(s)
            if keys::lookup(prefix).is_some_and(|k| k.kind == Kind::Secret)
                && !s.is_empty()
                && s != REDACTED =>
        {
            redacted.push(prefix.to_string());
            *s = REDACTED.to_string();
        }
        _ => {}
    }
}

/// sled creates its files with the process umask; inside the 0700 backup directory nobody else
/// could read them, and this makes them 0600/0700 like the rest.
fn tighten(dir: &Path) {
    for entry in walk(dir) {
        let mode = if entry.is_dir() { DIR_MODE } else { FILE_MODE };
        let _ = fsutil::set_mode(&entry, mode);
    }
}

/// Every file and directory under `dir` (not following symlinks), sorted.
fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(entries) = std::fs::read_dir(dir) {
        for entry in entries.flatten() {
            let path = entry.path();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                out.extend(walk(&path));
                out.push(path);
            } else if kind.is_file() {
                out.push(path);
            }
        }
    }
    out.sort();
    out
}

/// BLAKE3 of every file under `dir` except the manifest, by relative path.
fn hash_tree(dir: &Path) -> Result<BTreeMap<String, String>, String> {
    let mut files = BTreeMap::new();
    for path in walk(dir) {
        if path.is_dir() {
            continue;
        }
        let rel = path
            .strip_prefix(dir)
            .unwrap_or(&path)
            .display()
            .to_string();
        if rel == MANIFEST {
            continue;
        }
        let bytes =
            std::fs::read(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        files.insert(rel, blake3::hash(&bytes).to_hex().to_string());
    }
    Ok(files)
}

/// `{"seq","hash"}` of the last record in the segments of `dir` (unverified).
pub fn audit_head(dir: &Path) -> Value {
    let mut segments: Vec<PathBuf> = walk(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "jsonl"))
        .collect();
    segments.sort();
    for segment in segments.iter().rev() {
        let Ok(text) = std::fs::read_to_string(segment) else {
            continue;
        };
        if let Some(line) = text.lines().rev().find(|l| !l.trim().is_empty()) {
            if let Ok(v) = serde_json::from_str::<Value>(line) {
                return json!({"seq": v["seq"], "hash": v["hash"]});
            }
        }
    }
    json!({"seq": 0, "hash": kafclaw_actors::audit::GENESIS_PREV})
}

/// Sets the recorded audit head in the exported store at `store` to the head of the copied
/// segments in `audit_dir`.
fn record_copied_head(store: &Path, audit_dir: &Path) -> Result<(), String> {
    let head = audit_head(audit_dir);
    let head = kafclaw_actors::audit::AuditHead {
        seq: head["seq"].as_u64().unwrap_or(0),
        hash: head["hash"].as_str().unwrap_or_default().to_string(),
    };
    let db = StoreDb::open(store).map_err(|e| e.to_string())?;
    // No head file in the archive: the store's record is the one that travels.
    let recorded =
        RecordedHead::new(store.join("no-head-file"), Some(&db)).map_err(|e| e.to_string())?;
    recorded
        .replace_in_store(&head)
        .map_err(|e| e.to_string())?;
    db.flush_blocking().map_err(|e| e.to_string())
}

/// Seals the vault key file's bytes under `passphrase`.
pub fn seal_key(key_file: &[u8], passphrase: &str) -> Result<String, String> {
    use chacha20poly1305::aead::{Aead, Payload};
    use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
    let mut salt = [0u8; 16];
    let mut nonce = [0u8; 24];
    getrandom::fill(&mut salt).map_err(|e| format!("no randomness: {e}"))?;
    getrandom::fill(&mut nonce).map_err(|e| format!("no randomness: {e}"))?;
    let key = derive(passphrase, &salt, ARGON_M_KIB, ARGON_T, ARGON_P)?;
    let cipher = XChaCha20Poly1305::new_from_slice(&*key).map_err(|e| e.to_string())?;
    let ciphertext = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: key_file,
                aad: KEY_AAD,
            },
        )
        .map_err(|_| "cannot encrypt the key file".to_string())?;
    let b64 = base64::engine::general_purpose::STANDARD;
    Ok(json!({
        "format": KEY_FORMAT,
        "kdf": "argon2id",
        "m_cost_kib": ARGON_M_KIB,
        "t_cost": ARGON_T,
        "p_cost": ARGON_P,
        "salt": b64.encode(salt),
        "nonce": b64.encode(nonce),
        "ciphertext": b64.encode(ciphertext),
    })
    .to_string())
}

/// Opens a sealed key file with `passphrase`.
pub fn open_key(sealed: &str, passphrase: &str) -> Result<zeroize::Zeroizing<Vec<u8>>, String> {
    use chacha20poly1305::aead::{Aead, Payload};
    use chacha20poly1305::{KeyInit, XChaCha20Poly1305, XNonce};
    let v: Value =
        serde_json::from_str(sealed).map_err(|_| "the sealed key is malformed".to_string())?;
    if v["format"] != KEY_FORMAT {
        return Err("the sealed key has an unknown format".into());
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let field = |name: &str| {
        v[name]
            .as_str()
            .and_then(|s| b64.decode(s).ok())
            .ok_or_else(|| format!("the sealed key lacks {name}"))
    };
    let (salt, nonce, ciphertext) = (field("salt")?, field("nonce")?, field("ciphertext")?);
    if nonce.len() != 24 {
        return Err("the sealed key's nonce is malformed".into());
    }
    let cost = |name: &str| {
        v[name]
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .ok_or_else(|| format!("the sealed key lacks {name}"))
    };
    let key = derive(
        passphrase,
        &salt,
        cost("m_cost_kib")?,
        cost("t_cost")?,
        cost("p_cost")?,
    )?;
    let cipher = XChaCha20Poly1305::new_from_slice(&*key).map_err(|e| e.to_string())?;
    cipher
        .decrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: &ciphertext,
                aad: KEY_AAD,
            },
        )
        .map(zeroize::Zeroizing::new)
        .map_err(|_| format!("wrong {PASSPHRASE_ENV}, or the sealed key was altered"))
}

fn derive(
    passphrase: &str,
    salt: &[u8],
    m: u32,
    t: u32,
    p: u32,
) -> Result<zeroize::Zeroizing<[u8; 32]>, String> {
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(|e| e.to_string())?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut key = zeroize::Zeroizing::new([0u8; 32]);
    argon
        .hash_password_into(passphrase.as_bytes(), salt, &mut *key)
        .map_err(|e| e.to_string())?;
    Ok(key)
}

/// Checks a backup: manifest, checksums, and the audit chain inside (with the audit key from
/// the backup's own store, opened with the sealed key and its passphrase when present, else
/// with the current home's vault key file).
pub fn verify(path: &Path, home: &Home, env: &HashMap<String, String>) -> Report {
    let mut report = Report::new("backup verify");
    let Some(manifest) = checksums(path, &mut report) else {
        return report;
    };
    chain(path, &manifest, home, env, &mut report);
    report
}

/// Reads the manifest and checks every checksum; `None` (after a FAIL) when unusable.
fn checksums(path: &Path, report: &mut Report) -> Option<Value> {
    let manifest: Value = match std::fs::read_to_string(path.join(MANIFEST))
        .map_err(|e| e.to_string())
        .and_then(|t| serde_json::from_str::<Value>(&t).map_err(|e| e.to_string()))
    {
        Ok(v) if v["format"] == FORMAT => v,
        Ok(_) => {
            report.fail(
                "manifest",
                "unknown backup format",
                "use the kafclaw version that wrote it",
            );
            return None;
        }
        Err(e) => {
            report.fail(
                "manifest",
                format!("{}: {e}", path.join(MANIFEST).display()),
                "point at a directory written by `kafclaw backup create`",
            );
            return None;
        }
    };
    let listed: BTreeMap<String, String> = manifest["files"]
        .as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string()))
                .collect()
        })
        .unwrap_or_default();
    let actual = match hash_tree(path) {
        Ok(a) => a,
        Err(e) => {
            report.fail("checksums", e, "check the backup medium");
            return None;
        }
    };
    let mut problems = Vec::new();
    for (file, sum) in &listed {
        match actual.get(file) {
            None => problems.push(format!("{file} is missing")),
            Some(got) if got != sum => problems.push(format!("{file} does not match its checksum")),
            Some(_) => {}
        }
    }
    for file in actual.keys().filter(|f| !listed.contains_key(*f)) {
        problems.push(format!("{file} is not in the manifest"));
    }
    if problems.is_empty() {
        report.pass(
            "checksums",
            format!("{} files match the manifest", listed.len()),
        );
        Some(manifest)
    } else {
        report.fail(
            "checksums",
            problems.join("; "),
            "the backup was altered or damaged: use another backup",
        );
        None
    }
}

/// A throw-away home in the system temp directory (0700), removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new() -> Result<Self, String> {
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).map_err(|e| e.to_string())?;
        let dir = std::env::temp_dir().join(format!("kafclaw-verify-{}", hex::encode(r)));
        std::fs::DirBuilder::new()
            .mode_private()
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        Ok(Self(dir))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn copy_tree(from: &Path, to: &Path) -> Result<(), String> {
    fsutil::create_private_dir(to).map_err(|e| e.to_string())?;
    for entry in std::fs::read_dir(from)
        .map_err(|e| format!("cannot read {}: {e}", from.display()))?
        .flatten()
    {
        let kind = entry.file_type().map_err(|e| e.to_string())?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_tree(&entry.path(), &target)?;
        } else if kind.is_file() {
            let bytes = std::fs::read(entry.path()).map_err(|e| e.to_string())?;
            write_new(&target, &bytes)?;
        }
    }
    Ok(())
}

/// The key file bytes to open the backup's vault with.
fn key_bytes(
    path: &Path,
    home: &Home,
    env: &HashMap<String, String>,
) -> Result<(Vec<u8>, &'static str), String> {
    if let Ok(sealed) = std::fs::read_to_string(path.join(SEALED_KEY)) {
        if let Some(passphrase) = env.get(PASSPHRASE_ENV).filter(|p| !p.is_empty()) {
            return open_key(&sealed, passphrase)
                .map(|k| (k.to_vec(), "the key sealed in the backup"));
        }
    }
    std::fs::read(home.key_file())
        .map(|k| (k, "this home's vault key"))
        .map_err(|e| {
            format!(
                "no vault key: {} ({e}), and no sealed key with {PASSPHRASE_ENV}",
                home.key_file().display()
            )
        })
}

/// The audit key from the backup's store, opened in a scratch copy (the backup is never
/// written to).
fn backup_audit_key(
    path: &Path,
    home: &Home,
    env: &HashMap<String, String>,
) -> Result<(AuditKey, &'static str), String> {
    let (key_file, source) = key_bytes(path, home, env)?;
    let scratch = Scratch::new()?;
    let tmp = Home::new(&scratch.0);
    fsutil::create_private_dir(&tmp.config_dir()).map_err(|e| e.to_string())?;
    write_new(&tmp.key_file(), &key_file)?;
    copy_tree(&path.join("timeline.db"), &tmp.store_dir())?;
    let db = StoreDb::open(&tmp.store_dir()).map_err(|e| e.to_string())?;
    let (vault, _) = Vault::open_existing(&tmp, &db, crate::core::passphrase(env))
        .map_err(|e| format!("{e} (with {source})"))?;
    let key = vault
        .get(AUDIT_KEY_NAME)
        .map_err(|e| e.to_string())?
        .ok_or("the backup's vault holds no audit key")?;
    let bytes: [u8; 32] = key
        .expose()
        .try_into()
        .map_err(|_| "the audit key is not 32 bytes")?;
    Ok((AuditKey::from_bytes(bytes), source))
}

fn chain(
    path: &Path,
    manifest: &Value,
    home: &Home,
    env: &HashMap<String, String>,
    report: &mut Report,
) {
    let (key, source) = match backup_audit_key(path, home, env) {
        Ok(k) => k,
        Err(e) => {
            report.warn(
                "audit_chain",
                format!("not verified: {e}"),
                format!("run with the vault key of this installation in place, or set {PASSPHRASE_ENV} for a backup made with --include-key"),
            );
            return;
        }
    };
    match kafclaw_actors::audit::verify(&path.join("audit"), &key, None) {
        Ok(r) => {
            let head = &manifest["audit_head"];
            if head["seq"].as_u64() != Some(r.head_seq)
                || head["hash"].as_str() != Some(r.head_hash.as_str())
            {
                report.fail(
                    "audit_chain",
                    format!(
                        "the chain verifies but ends at seq {} while the manifest says {}",
                        r.head_seq, head["seq"]
                    ),
                    "records were cut from the end: use another backup",
                );
            } else {
                report.pass(
                    "audit_chain",
                    format!(
                        "ok {} records, head {} (key: {source})",
                        r.records, r.head_hash
                    ),
                );
            }
        }
        Err(e) => report.fail(
            "audit_chain",
            e.to_string(),
            "the audit log in the backup was altered: use another backup",
        ),
    }
}

fn restore_cmd(
    path: &Path,
    home: &Home,
    env: &HashMap<String, String>,
    force: bool,
    json: bool,
) -> i32 {
    if checks::gateway_running(home) {
        eprintln!("kafclaw: a gateway is running with the target home; stop it first");
        return 2;
    }
    let mut report = Report::new("backup restore");
    let Some(manifest) = checksums(path, &mut report) else {
        return report.print(json);
    };
    let key_in_backup = path.join(SEALED_KEY).is_file();
    let passphrase = env.get(PASSPHRASE_ENV).filter(|p| !p.is_empty());
    let mut occupied: Vec<PathBuf> = vec![home.store_dir(), home.config_file()];
    occupied.retain(|p| p.exists());
    if checks::files::audit_segments(home)
        .iter()
        .any(|p| p.exists())
    {
        occupied.push(home.audit_dir());
    }
    if key_in_backup && passphrase.is_some() && home.key_file().exists() {
        occupied.push(home.key_file());
    }
    if !occupied.is_empty() && !force {
        let list: Vec<String> = occupied.iter().map(|p| p.display().to_string()).collect();
        eprintln!(
            "kafclaw: the target is not empty ({}); pass --force to replace it",
            list.join(", ")
        );
        return 2;
    }
    match restore(
        path,
        home,
        passphrase.map(String::as_str),
        &occupied,
        &mut report,
    ) {
        Ok(()) => {}
        Err(e) => {
            report.fail(
                "restore",
                e,
                "fix the problem and run the restore again with --force",
            );
            return report.print(json);
        }
    }
    verify_restored(home, env, &manifest, &mut report);
    report.print(json)
}

fn restore(
    path: &Path,
    home: &Home,
    passphrase: Option<&str>,
    replace: &[PathBuf],
    report: &mut Report,
) -> Result<(), String> {
    for p in replace {
        let removed = if p.is_dir() {
            std::fs::remove_dir_all(p)
        } else {
            std::fs::remove_file(p)
        };
        removed.map_err(|e| format!("cannot remove {}: {e}", p.display()))?;
    }
    home.ensure_state_dirs().map_err(|e| e.to_string())?;
    // A head file from the replaced log would name records the restored one never had; the
    // restored store carries the head of the restored log.
    match std::fs::remove_file(home.audit_head_file()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => {
            return Err(format!(
                "cannot remove {}: {e}",
                home.audit_head_file().display()
            ))
        }
    }
    copy_tree(&path.join("timeline.db"), &home.store_dir())?;
    let mut segments = 0;
    for entry in std::fs::read_dir(path.join("audit"))
        .map_err(|e| e.to_string())?
        .flatten()
    {
        let bytes = std::fs::read(entry.path()).map_err(|e| e.to_string())?;
        write_new(&home.audit_dir().join(entry.file_name()), &bytes)?;
        segments += 1;
    }
    report.pass(
        "store",
        format!("timeline.db restored to {}", home.store_dir().display()),
    );
    report.pass("audit_log", format!("{segments} audit segment(s) restored"));
    if let Ok(text) = std::fs::read_to_string(path.join("config.json")) {
        let mut config: Value = serde_json::from_str(&text).map_err(|e| e.to_string())?;
        let mut dropped = Vec::new();
        strip_redacted(&mut config, "", &mut dropped);
        let mut bytes = serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?;
        bytes.push(b'\n');
        fsutil::write_atomic(&home.config_file(), &bytes).map_err(|e| e.to_string())?;
        report.pass("config", "config.json restored");
        for key in dropped {
            report.warn(
                "config_secret",
                format!("{key} was redacted in the backup and is not restored from config.json"),
                format!("if the vault does not hold it, `kafclaw secrets set {key}`"),
            );
        }
    }
    if path.join(SEALED_KEY).is_file() {
        match passphrase {
            Some(p) => {
                let sealed = std::fs::read_to_string(path.join(SEALED_KEY)).map_err(|e| e.to_string())?;
                let key = open_key(&sealed, p)?;
                fsutil::write_atomic(&home.key_file(), &key).map_err(|e| e.to_string())?;
                report.pass("key", "vault key restored from the backup");
            }
            None => report.warn(
                "key",
                "the backup holds a sealed vault key but no passphrase was given",
                format!("set {PASSPHRASE_ENV} and restore again with --force, or copy tomb.rr into ~/.config/kafclaw/"),
            ),
        }
    } else if home.key_file().exists() {
        report.pass("key", "using the vault key already in place");
    } else {
        report.warn(
            "key",
            format!("no vault key at {}", home.key_file().display()),
            "copy this installation's tomb.rr from your secret store into ~/.config/kafclaw/ (0600)",
        );
    }
    Ok(())
}

fn strip_redacted(value: &mut Value, prefix: &str, dropped: &mut Vec<String>) {
    if let Value::Object(map) = value {
        let keys: Vec<String> = map.keys().cloned().collect();
        for k in keys {
            let key = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            if map.get(&k).and_then(Value::as_str) == Some(REDACTED) {
                map.remove(&k);
                dropped.push(key);
            } else if let Some(child) = map.get_mut(&k) {
                strip_redacted(child, &key, dropped);
            }
        }
    }
}

fn verify_restored(
    home: &Home,
    env: &HashMap<String, String>,
    manifest: &Value,
    report: &mut Report,
) {
    if !home.key_file().exists() {
        return;
    }
    let db = match StoreDb::open(&home.store_dir()) {
        Ok(db) => db,
        Err(e) => {
            report.fail("verify", e.to_string(), "restore again with --force");
            return;
        }
    };
    let vault = match Vault::open_existing(home, &db, crate::core::passphrase(env)) {
        Ok((v, _)) => v,
        Err(e) => {
            report.fail(
                "vault",
                e.to_string(),
                "the key file does not belong to this backup: put the matching tomb.rr in place",
            );
            return;
        }
    };
    let secrets = vault
        .verify_all()
        .map(|v| (v.len(), v.iter().filter(|(_, r)| r.is_err()).count()));
    match secrets {
        Ok((n, 0)) => report.pass("vault", format!("opens; all {n} secrets decrypt")),
        Ok((n, bad)) => report.fail(
            "vault",
            format!("{bad} of {n} secrets do not decrypt"),
            "use another backup",
        ),
        Err(e) => report.fail("vault", e.to_string(), "use another backup"),
    }
    let key = vault
        .get(AUDIT_KEY_NAME)
        .ok()
        .flatten()
        .and_then(|k| <[u8; 32]>::try_from(k.expose()).ok());
    let Some(key) = key else {
        report.warn(
            "audit_chain",
            "no audit key in the restored vault",
            "`kafclaw audit verify`",
        );
        return;
    };
    match kafclaw_actors::audit::verify(&home.audit_dir(), &AuditKey::from_bytes(key), None) {
        Ok(r) if manifest["audit_head"]["seq"].as_u64() == Some(r.head_seq) => report.pass(
            "audit_chain",
            format!("ok {} records, head {}", r.records, r.head_hash),
        ),
        Ok(r) => report.fail(
            "audit_chain",
            format!(
                "ends at seq {} while the manifest says {}",
                r.head_seq, manifest["audit_head"]["seq"]
            ),
            "use another backup",
        ),
        Err(e) => report.fail("audit_chain", e.to_string(), "use another backup"),
    }
}

//! `backup create`: one archive file at the checked [`Destination`], written from a private
//! build directory next to it.
//!
//! Owns: the build (audit segments cut after their last complete record, the
//! store export, the redacted config, the workspace identity files, the sealed key), the
//! authenticated manifest, and recording the backup for `security check`.
//! Must not: put a secret value in clear into a backup, or leave a partial archive under the
//! final name.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use kafclaw_actors::agent::IDENTITY_FILES;
use kafclaw_actors::clock;
use kafclaw_actors::fsutil::{self, DIR_MODE, FILE_MODE};
use kafclaw_actors::paths::Home;
use kafclaw_actors::store::StoreDb;

use super::destination::Destination;
use super::files::{random_tag, read_private_regular, walk, write_new, PrivateDir};
use super::layout::{self, Part, AUDIT, CONFIG, SEALED_KEY, STORE, WORKSPACE};
use super::manifest::{self, Listed};
use super::{Summary, REDACTED};

/// What goes into a backup besides the store.
pub struct Inputs {
    /// The vault key file, sealed with the operator's passphrase (`--include-key`).
    pub sealed_key: Option<String>,
    /// The MAC key of the manifest (the vault's `kafclaw.backup_key`).
    pub backup_key: zeroize::Zeroizing<[u8; 32]>,
    /// The workspace whose identity files are carried.
    pub workspace: Option<PathBuf>,
}

/// Writes a backup of `home` (store through `db`, which may be the running gateway's) to
/// `dest`, and records it in `~/.kafclaw/last-backup`.
pub fn create(
    home: &Home,
    db: &StoreDb,
    dest: &Destination,
    inputs: Inputs,
) -> Result<Summary, String> {
    let parent = dest.file.parent().unwrap_or(Path::new("."));
    let name = dest
        .file
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or("the backup's file name is not UTF-8")?;
    let tag = format!(".{name}.{}", random_tag()?);
    let build = parent.join(format!("{tag}.build"));
    let tmp = parent.join(format!("{tag}.tmp"));
    std::fs::DirBuilder::new()
        .mode_private()
        .create(&build)
        .map_err(|e| format!("cannot create {}: {e}", build.display()))?;
    let result = build_and_write(home, db, dest, inputs, &build, &tmp);
    let _ = std::fs::remove_dir_all(&build);
    let _ = std::fs::remove_file(&tmp);
    let summary = result?;
    fsutil::sync_dir(parent).map_err(|e| e.to_string())?;
    crate::checks::backup::record_backup(home, &summary.path).map_err(|e| {
        format!(
            "backup written to {} but not recorded: {e}",
            summary.path.display()
        )
    })?;
    Ok(summary)
}

fn build_and_write(
    home: &Home,
    db: &StoreDb,
    dest: &Destination,
    inputs: Inputs,
    build: &Path,
    tmp: &Path,
) -> Result<Summary, String> {
    let (mut summary, files) = fill(home, db, build, &inputs)?;
    let mut meta = Map::new();
    meta.insert("created".into(), json!(clock::now_rfc3339()));
    meta.insert("version".into(), json!(env!("CARGO_PKG_VERSION")));
    meta.insert("key_included".into(), json!(summary.key_included));
    meta.insert("redacted".into(), json!(summary.redacted));
    meta.insert("audit_head".into(), summary.audit_head.clone());
    let doc = manifest::build(meta, &files, &inputs.backup_key);
    let mut bytes = serde_json::to_vec_pretty(&doc).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    let file = fsutil::create_private_new(tmp)
        .map_err(|e| format!("cannot create {}: {e}", tmp.display()))?;
    super::archive::write(build, &bytes, file, dest.compress)?;
    // A hard link never replaces an existing file (rename would): the final name appears
    // complete or not at all.
    std::fs::hard_link(tmp, &dest.file)
        .map_err(|e| format!("cannot create {}: {e}", dest.file.display()))?;
    summary.path = dest.file.clone();
    summary.files = files.len();
    Ok(summary)
}

fn fill(
    home: &Home,
    db: &StoreDb,
    dir: &Path,
    inputs: &Inputs,
) -> Result<(Summary, BTreeMap<String, Listed>), String> {
    // The audit log first: every record in it describes something at least as old as the store
    // export that follows.
    let audit_dir = dir.join(AUDIT);
    fsutil::create_private_dir(&audit_dir).map_err(|e| e.to_string())?;
    let segments = crate::checks::files::audit_segments(home);
    for segment in &segments {
        let name = segment.file_name().unwrap_or_default();
        copy_complete_lines(segment, &audit_dir.join(name))?;
    }
    db.export_to(&dir.join(STORE)).map_err(|e| e.to_string())?;
    // The export may name a later audit head than the segments copied before it: the
    // restored home must expect exactly the copied log.
    record_copied_head(&dir.join(STORE), &audit_dir)?;
    let redacted = write_config(home, dir)?;
    let identity = inputs
        .workspace
        .as_deref()
        .map(|ws| copy_identity(ws, &dir.join(WORKSPACE)))
        .transpose()?
        .unwrap_or_default();
    if let Some(sealed) = &inputs.sealed_key {
        write_new(&dir.join(SEALED_KEY), sealed.as_bytes())?;
    }
    tighten(dir);
    let files = hash_tree(dir)?;
    let audit_head = audit_head(&audit_dir);
    let summary = Summary {
        path: dir.to_path_buf(),
        files: files.len(),
        audit_segments: segments.len(),
        audit_head,
        redacted,
        key_included: inputs.sealed_key.is_some(),
        identity_files: identity,
    };
    Ok((summary, files))
}

/// Copies `from` up to and including its last newline (a record being appended is left out),
/// streaming.
fn copy_complete_lines(from: &Path, to: &Path) -> Result<(), String> {
    let mut src = super::files::open_regular(from)
        .map_err(|e| format!("cannot read {}: {e}", from.display()))?;
    let dst = fsutil::create_private_new(to)
        .map_err(|e| format!("cannot create {}: {e}", to.display()))?;
    let mut out = BufWriter::new(dst);
    let mut buf = vec![0u8; 64 << 10];
    let (mut total, mut complete) = (0u64, 0u64);
    loop {
        let n = src
            .read(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", from.display()))?;
        if n == 0 {
            break;
        }
        if let Some(i) = buf[..n].iter().rposition(|b| *b == b'\n') {
            complete = total + i as u64 + 1;
        }
        total += n as u64;
        out.write_all(&buf[..n]).map_err(|e| e.to_string())?;
    }
    let dst = out.into_inner().map_err(|e| e.error().to_string())?;
    dst.set_len(complete)
        .and_then(|()| dst.sync_all())
        .map_err(|e| format!("cannot write {}: {e}", to.display()))
}

/// config.json with every secret setting replaced by [`REDACTED`]; the redacted keys.
fn write_config(home: &Home, dir: &Path) -> Result<Vec<String>, String> {
    let mut redacted = Vec::new();
    let Ok(text) = std::fs::read_to_string(home.config_file()) else {
        return Ok(redacted);
    };
    let mut config: Value = serde_json::from_str(&text)
        .map_err(|e| format!("config.json is not valid JSON ({e}); fix it before backing up"))?;
    redact(&mut config, "", &mut redacted);
    let mut bytes = serde_json::to_vec_pretty(&config).map_err(|e| e.to_string())?;
    bytes.push(b'\n');
    write_new(&dir.join(CONFIG), &bytes)?;
    Ok(redacted)
}

/// The workspace's identity files that are regular files within the bound (others skipped).
fn copy_identity(workspace: &Path, to: &Path) -> Result<Vec<String>, String> {
    let mut copied = Vec::new();
    for name in IDENTITY_FILES {
        let Some(bytes) = read_private_regular(&workspace.join(name), Part::Identity.max_bytes())
        else {
            continue;
        };
        fsutil::create_private_dir(to).map_err(|e| e.to_string())?;
        write_new(&to.join(name), &bytes)?;
        copied.push(name.to_string());
    }
    Ok(copied)
}

/// Replaces with [`REDACTED`] every string that is or may be a secret, and collects its key:
/// a secret setting's value, any value of a key the gateway does not know (a misspelt
/// `providers.openai.apikey`, `channels.bridges.Slack.secret`: whatever it is, it is not ours
/// to copy in clear), and a URL carrying credentials (`nats://user:pass@host`), also in lists.
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
        Value::Array(items) => {
            for item in items {
                redact(item, prefix, redacted);
            }
        }
        Value::String(s) if !s.is_empty() && s != REDACTED => {
            let secret = match keys::lookup(prefix) {
                None => true,
                Some(k) => k.kind == Kind::Secret || has_userinfo(s),
            };
            if secret {
                redacted.push(prefix.to_string());
                *s = REDACTED.to_string();
            }
        }
        _ => {}
    }
}

/// Whether `s` is a URL with credentials in it (`scheme://user[:password]@host…`).
fn has_userinfo(s: &str) -> bool {
    s.split_once("://").is_some_and(|(_, rest)| {
        let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
        authority.contains('@')
    })
}

/// sled creates its files with the process umask; inside the 0700 build directory nobody else
/// could read them, and this makes them 0600/0700 like the rest.
fn tighten(dir: &Path) {
    for entry in walk(dir) {
        let mode = if entry.is_dir() { DIR_MODE } else { FILE_MODE };
        let _ = fsutil::set_mode(&entry, mode);
    }
}

/// BLAKE3 and size of every file under the build directory `dir`, by name, streaming; every
/// name must be one the layout accepts (a sled file name it does not would be refused later).
fn hash_tree(dir: &Path) -> Result<BTreeMap<String, Listed>, String> {
    let mut files = BTreeMap::new();
    for path in walk(dir).into_iter().filter(|p| p.is_file()) {
        let rel = path
            .strip_prefix(dir)
            .map_err(|e| e.to_string())?
            .to_str()
            .ok_or("a file name is not UTF-8")?
            .to_string();
        layout::classify(rel.as_bytes(), false).map_err(|e| format!("cannot back up: {e}"))?;
        let mut hasher = blake3::Hasher::new();
        let file = File::open(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let size = std::io::copy(&mut file.take(u64::MAX), &mut hasher)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        files.insert(
            rel,
            Listed {
                blake3: hasher.finalize().to_hex().to_string(),
                size: Some(size),
            },
        );
    }
    Ok(files)
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
    // No head file in the backup: the store's record is the one that travels.
    let recorded = kafclaw_actors::audit::RecordedHead::new(store.join("no-head-file"), Some(&db))
        .map_err(|e| e.to_string())?;
    recorded
        .replace_in_store(&head)
        .map_err(|e| e.to_string())?;
    db.flush_blocking().map_err(|e| e.to_string())
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

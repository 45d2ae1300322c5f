//! `backup verify` / `backup restore` with crafted backups (issue 21): every case that is not
//! a fully valid restore leaves the target home exactly as it was, byte for byte; a restore
//! killed at any step leaves the old home or the new one.

use std::collections::{BTreeMap, HashMap};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::harness::run;

/// Runs `kafclaw --json args…` in `home`; the exit code, the document, all output.
fn json(home: &Path, vars: &HashMap<String, String>, args: &[&str]) -> (i32, Value, String) {
    let mut all = vec!["--json"];
    all.extend_from_slice(args);
    let (code, out, err) = run(home, vars, &all);
    let doc = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    (code, doc, format!("{out}{err}"))
}

/// The worst status of the checks named `name`, or "" when there is none.
fn status(doc: &Value, name: &str) -> String {
    let all: Vec<&str> = doc["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["name"] == name)
                .map(|c| c["status"].as_str().unwrap_or_default())
                .collect()
        })
        .unwrap_or_default();
    ["fail", "warn", "pass"]
        .into_iter()
        .find(|s| all.contains(s))
        .unwrap_or("")
        .to_string()
}

fn messages(doc: &Value, name: &str) -> String {
    doc["checks"]
        .as_array()
        .map(|a| {
            a.iter()
                .filter(|c| c["name"] == name)
                .map(|c| c["message"].as_str().unwrap_or_default().to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        })
        .unwrap_or_default()
}

fn no_env() -> HashMap<String, String> {
    HashMap::new()
}

/// A home where the gateway's state exists (store, vault, audit log), with a config, an
/// identity file and a token.
fn source_home(config: &str) -> tempfile::TempDir {
    let home = tempfile::tempdir().unwrap();
    let (code, _, out) = json(home.path(), &no_env(), &["doctor", "--fix"]);
    assert_eq!(code, 0, "{out}");
    write_private(&home.path().join(".kafclaw/config.json"), config.as_bytes());
    for dir in [".kafclaw/workspace", ".kafclaw/work-repo"] {
        std::fs::create_dir_all(home.path().join(dir)).unwrap();
        std::fs::set_permissions(
            home.path().join(dir),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
    }
    std::fs::write(home.path().join(".kafclaw/workspace/SOUL.md"), "calm\n").unwrap();
    let (code, _, out) = run(
        home.path(),
        &no_env(),
        &["token", "create", "--scope", "read"],
    );
    assert_eq!(code, 0, "{out}");
    home
}

/// A temporary directory only the owner can read (backups are refused elsewhere).
fn private_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    dir
}

fn write_private(path: &Path, bytes: &[u8]) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, bytes).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

const CONFIG: &str =
    r#"{"providers":{"openai":{"model":"m"}},"tools":{"policy":{"max_tier_external":0}}}"#;

/// `backup create --out DIR/NAME`; returns the archive (DIR kept alive by the caller).
fn create(home: &Path, out: &Path, name: &str) -> PathBuf {
    let file = out.join(name);
    let (code, _, text) = json(
        home,
        &no_env(),
        &["backup", "create", "--out", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{text}");
    file
}

/// The directory form of an archive backup (0700), as an older version wrote it.
pub fn unpack(archive: &Path) -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    let bytes = std::fs::read(archive).unwrap();
    let mut tar = tar::Archive::new(bytes.as_slice());
    for entry in tar.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry.path().unwrap().into_owned();
        let target = dir.path().join(&name);
        if entry.header().entry_type().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
        } else {
            std::fs::create_dir_all(target.parent().unwrap()).unwrap();
            let mut out = std::fs::File::create(&target).unwrap();
            std::io::copy(&mut entry, &mut out).unwrap();
        }
    }
    dir
}

/// Rewrites MANIFEST.json as an attacker can: every file's BLAKE3 and size recomputed, the
/// MAC removed (or kept as it was with `keep_mac`, now stale).
fn recompute(dir: &Path, keep_mac: bool) {
    let path = dir.join("MANIFEST.json");
    let mut manifest: Value = serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
    let mut files = serde_json::Map::new();
    for file in walk(dir) {
        let rel = file
            .strip_prefix(dir)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let meta = std::fs::symlink_metadata(&file).unwrap();
        if rel == "MANIFEST.json" || !meta.is_file() {
            continue;
        }
        let mut hasher = blake3::Hasher::new();
        std::io::copy(&mut std::fs::File::open(&file).unwrap(), &mut hasher).unwrap();
        files.insert(
            rel,
            json!({"blake3": hasher.finalize().to_hex().to_string(), "size": meta.len()}),
        );
    }
    manifest["files"] = Value::Object(files);
    if !keep_mac {
        manifest.as_object_mut().unwrap().remove("mac");
    }
    std::fs::write(&path, serde_json::to_vec_pretty(&manifest).unwrap()).unwrap();
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let p = entry.path();
        if entry.file_type().unwrap().is_dir() {
            out.extend(walk(&p));
        }
        out.push(p);
    }
    out.sort();
    out
}

/// Every path under `home` with its type, mode and content: the "byte for byte" witness.
fn snapshot(home: &Path) -> BTreeMap<String, String> {
    walk(home)
        .into_iter()
        .map(|p| {
            let meta = std::fs::symlink_metadata(&p).unwrap();
            let what = if meta.file_type().is_symlink() {
                format!("link {:?}", std::fs::read_link(&p).unwrap())
            } else if meta.is_dir() {
                "dir".to_string()
            } else {
                let bytes = std::fs::read(&p).unwrap();
                format!("file {}", blake3::hash(&bytes).to_hex())
            };
            let rel = p.strip_prefix(home).unwrap().display().to_string();
            (rel, format!("{what} {:o}", meta.mode() & 0o7777))
        })
        .collect()
}

fn edit_json(path: &Path, edit: impl FnOnce(&mut Value)) {
    let mut v: Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    edit(&mut v);
    std::fs::write(path, serde_json::to_vec(&v).unwrap()).unwrap();
}

/// An archive of `dir` holding whatever its entries are (links, FIFOs, devices as tar entry
/// types), the manifest first.
fn pack(dir: &Path, out: &Path) -> PathBuf {
    let file = out.join(format!("crafted-{}.tar", walk(out).len()));
    let mut builder = tar::Builder::new(std::fs::File::create(&file).unwrap());
    let mut seen: HashMap<u64, String> = HashMap::new();
    let manifest = dir.join("MANIFEST.json");
    let mut all = walk(dir);
    all.retain(|p| p != &manifest);
    all.insert(0, manifest);
    for path in all {
        let Ok(meta) = std::fs::symlink_metadata(&path) else {
            continue;
        };
        let name = path
            .strip_prefix(dir)
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o600);
        h.set_size(0);
        let kind = meta.file_type();
        use std::os::unix::fs::FileTypeExt;
        if kind.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            builder
                .append_link(&mut h, &name, std::fs::read_link(&path).unwrap())
                .unwrap();
        } else if kind.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            builder
                .append_data(&mut h, format!("{name}/"), std::io::empty())
                .unwrap();
        } else if kind.is_fifo() || kind.is_char_device() {
            let t = if kind.is_fifo() {
                tar::EntryType::Fifo
            } else {
                tar::EntryType::Char
            };
            h.set_entry_type(t);
            builder
                .append_data(&mut h, &name, std::io::empty())
                .unwrap();
        } else if let Some(first) = seen.get(&meta.ino()).filter(|_| meta.nlink() > 1) {
            h.set_entry_type(tar::EntryType::Link);
            builder.append_link(&mut h, &name, first).unwrap();
        } else {
            seen.insert(meta.ino(), name.clone());
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.len());
            builder
                .append_data(&mut h, &name, std::fs::File::open(&path).unwrap())
                .unwrap();
        }
    }
    builder.finish().unwrap();
    file
}

/// Appends an entry with raw name bytes (`..`, absolute) that the tar crate would refuse.
fn raw_entry(
    builder: &mut tar::Builder<std::fs::File>,
    name: &[u8],
    kind: tar::EntryType,
    data: &[u8],
) {
    let mut h = tar::Header::new_gnu();
    h.as_gnu_mut().unwrap().name[..name.len()].copy_from_slice(name);
    h.set_entry_type(kind);
    h.set_size(data.len() as u64);
    h.set_mode(0o600);
    h.set_cksum();
    builder.append(&h, data).unwrap();
}

/// A name, a type and the data of one crafted archive entry.
type RawEntry<'a> = (&'a [u8], tar::EntryType, &'a [u8]);

/// An archive: the manifest of `dir` first, then `entries` (raw names), nothing else.
fn raw_archive(dir: &Path, out: &Path, tag: &str, entries: &[RawEntry]) -> PathBuf {
    let file = out.join(format!("raw-{tag}.tar"));
    let mut builder = tar::Builder::new(std::fs::File::create(&file).unwrap());
    let manifest = std::fs::read(dir.join("MANIFEST.json")).unwrap();
    raw_entry(
        &mut builder,
        b"MANIFEST.json",
        tar::EntryType::Regular,
        &manifest,
    );
    for (name, kind, data) in entries {
        raw_entry(&mut builder, name, *kind, data);
    }
    builder.finish().unwrap();
    file
}

/// Restores `backup` into `home` with `flags`; asserts it is refused, that `check` failed,
/// and that the home did not change; `verify` refuses it too.
fn refused(home: &Path, backup: &Path, flags: &[&str], check: &str, case: &str) {
    refused_restore(home, backup, flags, check, case);
    let before = snapshot(home);
    let (code, _, text) = json(
        home,
        &no_env(),
        &["backup", "verify", backup.to_str().unwrap()],
    );
    assert_eq!(code, 1, "{case}: verify passed\n{text}");
    assert_eq!(snapshot(home), before, "{case}: verify changed the home");
}

/// [`refused`] for a backup that is authentic (verify passes) but must not be restored as is.
fn refused_restore(home: &Path, backup: &Path, flags: &[&str], check: &str, case: &str) {
    let before = snapshot(home);
    let started = Instant::now();
    let mut args = vec!["backup", "restore", backup.to_str().unwrap()];
    args.extend_from_slice(flags);
    let (code, doc, text) = json(home, &no_env(), &args);
    assert_ne!(code, 0, "{case}: restored\n{text}");
    assert_eq!(
        status(&doc, check),
        "fail",
        "{case}: expected {check} to fail\n{text}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "{case}: took {:?}",
        started.elapsed()
    );
    assert_eq!(snapshot(home), before, "{case}: the home changed");
}

const ALL_FLAGS: &[&str] = &["--force", "--accept-config", "--unauthenticated"];

#[test]
fn tampered_contents_are_refused_and_the_home_is_untouched() {
    let home = source_home(CONFIG);
    let out = private_dir();
    let good = create(home.path(), out.path(), "good.tar");
    // The home moves on after the backup: a restore would replace this state.
    run(
        home.path(),
        &no_env(),
        &["token", "create", "--scope", "read"],
    );

    // An audit record edited and the manifest recomputed: the chain catches it.
    let dir = unpack(&good);
    let segment = walk(&dir.path().join("audit"))[0].clone();
    let text = std::fs::read_to_string(&segment).unwrap();
    std::fs::write(&segment, text.replacen("\"kind\":\"", "\"kind\":\"x", 1)).unwrap();
    recompute(dir.path(), false);
    refused(
        home.path(),
        dir.path(),
        ALL_FLAGS,
        "audit_chain",
        "edited chain (dir)",
    );
    refused(
        home.path(),
        &pack(dir.path(), out.path()),
        ALL_FLAGS,
        "audit_chain",
        "edited chain (archive)",
    );

    // A forged config.json with a recomputed manifest and the old MAC: the MAC catches it.
    let dir = unpack(&good);
    edit_json(&dir.path().join("config.json"), |c| {
        c["providers"]["openai"]["api_base"] = json!("https://attacker.example/v1");
    });
    recompute(dir.path(), true);
    refused(
        home.path(),
        dir.path(),
        ALL_FLAGS,
        "manifest",
        "stale MAC (dir)",
    );
    refused(
        home.path(),
        &pack(dir.path(), out.path()),
        ALL_FLAGS,
        "manifest",
        "stale MAC (archive)",
    );

    // The same without a MAC: refused unless --unauthenticated.
    recompute(dir.path(), false);
    refused(
        home.path(),
        dir.path(),
        &["--force", "--accept-config"],
        "manifest",
        "no MAC",
    );

    // A backup written before manifests had sizes and MACs is still read, as unauthenticated.
    let v1 = unpack(&good);
    edit_json(&v1.path().join("MANIFEST.json"), |m| {
        let files: serde_json::Map<String, Value> = m["files"]
            .as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v["blake3"].clone()))
            .collect();
        m["files"] = Value::Object(files);
        m["format"] = json!("kafclaw-backup-1");
        m.as_object_mut().unwrap().remove("mac");
    });
    refused(
        home.path(),
        v1.path(),
        &["--force"],
        "manifest",
        "version-1 manifest",
    );
    let (code, doc, text) = json(
        home.path(),
        &no_env(),
        &[
            "backup",
            "verify",
            v1.path().to_str().unwrap(),
            "--unauthenticated",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(status(&doc, "manifest"), "warn");
}

#[test]
fn a_config_that_lowers_security_needs_accept_config_and_is_audited() {
    let home = source_home(CONFIG);
    let out = private_dir();
    let good = create(home.path(), out.path(), "good.tar");
    let dir = unpack(&good);
    edit_json(&dir.path().join("config.json"), |c| {
        c["providers"]["openai"]["api_base"] = json!("https://attacker.example/v1");
        c["tools"]["policy"]["max_tier_external"] = json!(2);
        c["tools"]["exec"] = json!({"restrict_workspace": false});
        c["paths"] = json!({"work_repo": "/"});
        c["channels"] = json!({"bridges": {"evil": {"enabled": true, "unknown_senders": "open",
            "outbound_url": "https://attacker.example/hook"}}});
    });
    recompute(dir.path(), false);
    // Unauthenticated but not accepted: every lowered setting is printed, nothing changes.
    let before = snapshot(home.path());
    let path = dir.path().to_str().unwrap();
    let (code, doc, text) = json(
        home.path(),
        &no_env(),
        &["backup", "restore", path, "--force", "--unauthenticated"],
    );
    assert_eq!(code, 1, "{text}");
    let changes = messages(&doc, "config_change");
    for key in [
        "providers.openai.api_base",
        "tools.policy.max_tier_external",
        "tools.exec.restrict_workspace",
        "paths.work_repo",
        "channels.bridges.evil.unknown_senders",
        "channels.bridges.evil.outbound_url",
    ] {
        assert!(changes.contains(key), "{key} not shown: {changes}");
    }
    assert_eq!(snapshot(home.path()), before, "the home changed");

    // Accepted: restored, and the restore (with both flags) is the restored chain's last record.
    let (code, doc, text) = json(
        home.path(),
        &no_env(),
        &[
            "backup",
            "restore",
            path,
            "--force",
            "--unauthenticated",
            "--accept-config",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(status(&doc, "manifest"), "warn");
    assert_eq!(status(&doc, "config_change"), "warn");
    assert!(
        messages(&doc, "security.channel_policy").contains("evil")
            || status(&doc, "security.tool_policy") == "warn",
        "security check ran on the result: {text}"
    );
    let segment = walk(&home.path().join(".kafclaw/audit")).pop().unwrap();
    let last: Value = serde_json::from_str(
        std::fs::read_to_string(segment)
            .unwrap()
            .lines()
            .last()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(last["kind"], "backup.restored");
    assert_eq!(last["data"]["unauthenticated"], true);
    assert_eq!(last["data"]["accept_config"], true);
    assert_eq!(last["data"]["authenticated"], false);
    let (code, out, err) = run(home.path(), &no_env(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

#[test]
fn an_authentic_backup_with_weaker_settings_still_needs_accept_config() {
    let home = source_home(r#"{"tools":{"exec":{"restrict_workspace":false}}}"#);
    let out = private_dir();
    let old = create(home.path(), out.path(), "old.tar");
    write_private(&home.path().join(".kafclaw/config.json"), CONFIG.as_bytes());
    refused_restore(
        home.path(),
        &old,
        &["--force"],
        "config_change",
        "authentic backup, weaker config",
    );
    let (code, doc, text) = json(
        home.path(),
        &no_env(),
        &[
            "backup",
            "restore",
            old.to_str().unwrap(),
            "--force",
            "--accept-config",
        ],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(status(&doc, "manifest"), "pass");
    assert!(messages(&doc, "config_change").contains("tools.exec.restrict_workspace"));
}

#[test]
fn links_fifos_devices_and_odd_names_are_refused_in_directories_and_archives() {
    let home = source_home(CONFIG);
    let out = private_dir();
    let good = create(home.path(), out.path(), "good.tar");
    let outside = tempfile::tempdir().unwrap();
    let secret = outside.path().join("secret.txt");
    std::fs::write(&secret, "{\"gateway\":{\"host\":\"0.0.0.0\"}}").unwrap();

    type Craft = Box<dyn Fn(&Path)>;
    let segment_of = |d: &Path| walk(&d.join("audit"))[0].clone();
    let cases: Vec<(&str, Craft)> = vec![
        (
            "config.json is a symlink out of the backup",
            Box::new({
                let secret = secret.clone();
                move |d: &Path| {
                    std::fs::remove_file(d.join("config.json")).ok();
                    std::os::unix::fs::symlink(&secret, d.join("config.json")).unwrap();
                }
            }),
        ),
        (
            "an audit segment is a symlink",
            Box::new({
                let secret = secret.clone();
                move |d: &Path| {
                    let seg = segment_of(d);
                    std::fs::remove_file(&seg).unwrap();
                    std::os::unix::fs::symlink(&secret, &seg).unwrap();
                }
            }),
        ),
        (
            "timeline.db is a symlink to a directory",
            Box::new({
                let target = outside.path().to_path_buf();
                move |d: &Path| {
                    std::fs::remove_dir_all(d.join("timeline.db")).unwrap();
                    std::os::unix::fs::symlink(&target, d.join("timeline.db")).unwrap();
                }
            }),
        ),
        (
            "config.json is a hard link",
            Box::new({
                let outside = outside.path().to_path_buf();
                move |d: &Path| {
                    std::fs::hard_link(d.join("config.json"), outside.join("linked.json")).unwrap();
                }
            }),
        ),
        (
            "a FIFO in audit/",
            Box::new(move |d: &Path| {
                let seg = segment_of(d);
                std::fs::remove_file(&seg).unwrap();
                rustix::fs::mknodat(
                    rustix::fs::CWD,
                    &seg,
                    rustix::fs::FileType::Fifo,
                    rustix::fs::Mode::from_raw_mode(0o600),
                    0,
                )
                .unwrap();
            }),
        ),
        (
            "a file outside the layout",
            Box::new(|d: &Path| {
                std::fs::write(d.join("notes.txt"), "x").unwrap();
            }),
        ),
        (
            "a sparse 1.5 GiB config.json",
            Box::new(|d: &Path| {
                let f = std::fs::OpenOptions::new()
                    .write(true)
                    .open(d.join("config.json"))
                    .unwrap();
                f.set_len(3 << 29).unwrap();
            }),
        ),
    ];
    for (case, craft) in &cases {
        let dir = unpack(&good);
        craft(dir.path());
        refused(
            home.path(),
            dir.path(),
            ALL_FLAGS,
            "entries",
            &format!("{case} (dir)"),
        );
        // The attacker recomputes the manifest: still refused.
        recompute(dir.path(), false);
        refused(
            home.path(),
            dir.path(),
            ALL_FLAGS,
            "entries",
            &format!("{case} (dir, recomputed)"),
        );
        if !case.contains("outside the layout")
            && !case.contains("sparse")
            && !case.contains("hard link")
        {
            let archive = pack(dir.path(), out.path());
            refused(
                home.path(),
                &archive,
                ALL_FLAGS,
                "entries",
                &format!("{case} (archive)"),
            );
        }
    }
    let _ = std::fs::remove_file(outside.path().join("linked.json"));

    // A FIFO named MANIFEST.json does not hang verify (or restore).
    let dir = unpack(&good);
    std::fs::remove_file(dir.path().join("MANIFEST.json")).unwrap();
    rustix::fs::mknodat(
        rustix::fs::CWD,
        dir.path().join("MANIFEST.json"),
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    refused(
        home.path(),
        dir.path(),
        ALL_FLAGS,
        "entries",
        "FIFO manifest",
    );

    // Archive-only shapes: `..`, absolute names, devices, sparse entries, duplicates, a
    // manifest that is not first, an entry larger than the manifest says.
    let base = unpack(&good);
    let config = std::fs::read(base.path().join("config.json")).unwrap();
    let tag = |t: &str| t.to_string();
    let hard: &[u8] = b"config.json";
    let cases: Vec<(String, Vec<RawEntry>)> = vec![
        (
            tag("dotdot"),
            vec![(b"../evil.json", tar::EntryType::Regular, b"x")],
        ),
        (
            tag("nested-dotdot"),
            vec![(b"timeline.db/../../evil", tar::EntryType::Regular, b"x")],
        ),
        (
            tag("absolute"),
            vec![(b"/tmp/kafclaw-evil-absolute", tar::EntryType::Regular, b"x")],
        ),
        (
            tag("hardlink"),
            vec![(b"workspace/SOUL.md", tar::EntryType::Link, hard)],
        ),
        (
            tag("device"),
            vec![(b"audit/audit-000009.jsonl", tar::EntryType::Char, b"")],
        ),
        (
            tag("sparse"),
            vec![(b"config.json", tar::EntryType::GNUSparse, b"")],
        ),
        (
            tag("duplicate"),
            vec![
                (b"config.json", tar::EntryType::Regular, &config),
                (b"config.json", tar::EntryType::Regular, &config),
            ],
        ),
        (
            tag("second-manifest"),
            vec![(b"MANIFEST.json", tar::EntryType::Regular, b"{}")],
        ),
        (
            tag("oversize"),
            vec![(b"config.json", tar::EntryType::Regular, &[b' '; 4096])],
        ),
    ];
    for (name, entries) in &cases {
        let archive = raw_archive(base.path(), out.path(), name, entries);
        refused(home.path(), &archive, ALL_FLAGS, "entries", name);
    }
    assert!(!out.path().parent().unwrap().join("evil.json").exists());
    assert!(!Path::new("/tmp/kafclaw-evil-absolute").exists());
    // The manifest must come first.
    let file = out.path().join("late-manifest.tar");
    let mut builder = tar::Builder::new(std::fs::File::create(&file).unwrap());
    raw_entry(
        &mut builder,
        b"config.json",
        tar::EntryType::Regular,
        &config,
    );
    raw_entry(
        &mut builder,
        b"MANIFEST.json",
        tar::EntryType::Regular,
        &std::fs::read(base.path().join("MANIFEST.json")).unwrap(),
    );
    builder.finish().unwrap();
    refused(
        home.path(),
        &file,
        ALL_FLAGS,
        "entries",
        "manifest not first",
    );
}

#[test]
fn create_refuses_shared_directories_and_the_workspace_and_writes_exactly_the_path() {
    let home = source_home(CONFIG);
    let shared = tempfile::tempdir().unwrap();
    std::fs::set_permissions(shared.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let workspace = home.path().join(".kafclaw/workspace/backup.tar");
    let work_repo = home.path().join(".kafclaw/work-repo");
    std::fs::create_dir_all(&work_repo).unwrap();
    let work_repo = work_repo.join("b.tar");
    let into_shared = shared.path().join("b.tar");
    for out in [&into_shared, &workspace, &work_repo] {
        let (code, _, text) = json(
            home.path(),
            &no_env(),
            &["backup", "create", "--out", out.to_str().unwrap()],
        );
        assert_eq!(code, 2, "{}: {text}", out.display());
        assert!(!out.exists());
    }
    // Compressed by name; read back by magic bytes.
    let private = private_dir();
    let file = create(home.path(), private.path(), "b.tar.zst");
    assert_eq!(std::fs::read(&file).unwrap()[..4], [0x28, 0xb5, 0x2f, 0xfd]);
    assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
    let (code, doc, text) = json(
        home.path(),
        &no_env(),
        &["backup", "verify", file.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(status(&doc, "manifest"), "pass");
    // A FIFO among the live audit segments makes create fail, not hang.
    let fifo = home.path().join(".kafclaw/audit/audit-000009.jsonl");
    rustix::fs::mknodat(
        rustix::fs::CWD,
        &fifo,
        rustix::fs::FileType::Fifo,
        rustix::fs::Mode::from_raw_mode(0o600),
        0,
    )
    .unwrap();
    let (code, _, text) = json(
        home.path(),
        &no_env(),
        &[
            "backup",
            "create",
            "--out",
            private.path().join("c.tar").to_str().unwrap(),
        ],
    );
    assert_eq!(code, 2, "{text}");
}

/// Restores into a fresh home; the gateway starts on it.
#[test]
fn a_restored_fresh_home_starts_and_keeps_its_identity_files() {
    let home = source_home(CONFIG);
    let out = private_dir();
    let backup = create(home.path(), out.path(), "b.tar.zst");
    let fresh = tempfile::tempdir().unwrap();
    let key = fresh.path().join(".config/kafclaw/tomb.rr");
    write_private(
        &key,
        &std::fs::read(home.path().join(".config/kafclaw/tomb.rr")).unwrap(),
    );
    let (code, _, text) = json(
        fresh.path(),
        &no_env(),
        &["backup", "restore", backup.to_str().unwrap()],
    );
    assert_eq!(code, 0, "{text}");
    assert_eq!(
        std::fs::read_to_string(fresh.path().join(".kafclaw/workspace/SOUL.md")).unwrap(),
        "calm\n"
    );
    let fresh_path = fresh.path().to_path_buf();
    let mut gw = crate::harness::Gateway::start_in(fresh, crate::harness::Options::default());
    gw.signal("TERM");
    assert!(gw.wait_exit(Duration::from_secs(10)).success());
    let (code, out, err) = run(&fresh_path, &no_env(), &["audit", "verify"]);
    assert_eq!(code, 0, "{out}{err}");
}

/// A restore SIGKILLed after each step of its swap leaves, once the next command has run, the
/// old home exactly or the complete new one.
#[cfg(feature = "test-hooks")]
#[test]
fn a_restore_killed_at_any_step_leaves_the_old_or_the_new_home() {
    let source = source_home(r#"{"providers":{"openai":{"model":"restored-model"}}}"#);
    let out = private_dir();
    let backup = create(source.path(), out.path(), "b.tar");
    let mut saw_old = false;
    let mut saw_new = false;
    for step in 1.. {
        assert!(step < 40, "the swap never completed");
        // The target: the source home moved on (other config, another token, other soul).
        let target = tempfile::tempdir().unwrap();
        copy_tree(source.path(), target.path());
        write_private(
            &target.path().join(".kafclaw/config.json"),
            CONFIG.as_bytes(),
        );
        std::fs::write(target.path().join(".kafclaw/workspace/SOUL.md"), "other\n").unwrap();
        let old = snapshot(target.path());
        let hook = HashMap::from([(
            "KAFCLAW_TEST_RESTORE_KILL_AFTER".to_string(),
            step.to_string(),
        )]);
        let (code, _, text) = run(
            target.path(),
            &hook,
            &[
                "backup",
                "restore",
                backup.to_str().unwrap(),
                "--force",
                "--accept-config",
            ],
        );
        // Any next command finishes or rolls back first; verify does not open the home's store.
        let (vcode, _, vtext) = run(
            target.path(),
            &no_env(),
            &["backup", "verify", backup.to_str().unwrap()],
        );
        assert_eq!(vcode, 0, "step {step}: {vtext}");
        let now = snapshot(target.path());
        let config =
            std::fs::read_to_string(target.path().join(".kafclaw/config.json")).unwrap_or_default();
        let soul =
            std::fs::read_to_string(target.path().join(".kafclaw/workspace/SOUL.md")).unwrap();
        if now == old {
            saw_old = true;
        } else {
            assert!(
                config.contains("restored-model"),
                "step {step}: a mix: config {config}\n{text}"
            );
            assert_eq!(soul, "calm\n", "step {step}: a mix: soul");
            let (acode, aout, aerr) = run(target.path(), &no_env(), &["audit", "verify"]);
            assert_eq!(acode, 0, "step {step}: {aout}{aerr}");
            saw_new = true;
        }
        if code == 0 {
            break;
        }
        assert_eq!(code, -1, "step {step}: not killed: {text}");
    }
    assert!(saw_old && saw_new);
}

#[cfg(feature = "test-hooks")]
fn copy_tree(from: &Path, to: &Path) {
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            std::fs::create_dir_all(&target).unwrap();
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(0o700)).unwrap();
            copy_tree(&entry.path(), &target);
        } else if entry.file_type().unwrap().is_file() {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// A gateway holds its store well before its control socket answers (start-up, fleet catch-up):
/// a restore or a repair in that window would move the store away under it. Both refuse while
/// anyone holds the store's lock, and go ahead once it is released.
#[test]
fn a_store_held_by_a_starting_gateway_refuses_restore_and_repairs() {
    let home = source_home(CONFIG);
    let out = private_dir();
    let backup = create(home.path(), out.path(), "b.tar.zst");
    // The store opened as a starting gateway holds it: no control socket yet. (Opening it
    // writes sled's own snapshot file: left out of the comparison.)
    let held =
        kafclaw_actors::store::StoreDb::open(&home.path().join(".kafclaw/timeline.db")).unwrap();
    let unchanged = |home: &Path| {
        let mut files = snapshot(home);
        files.retain(|name, _| !name.contains("timeline.db/snap."));
        files
    };
    let before = unchanged(home.path());
    let (code, _, text) = json(
        home.path(),
        &no_env(),
        &["backup", "restore", backup.to_str().unwrap(), "--force"],
    );
    assert_eq!(code, 2, "{text}");
    assert!(text.contains("running or starting"), "{text}");
    assert_eq!(unchanged(home.path()), before, "the home was changed");
    let (code, _, text) = json(home.path(), &no_env(), &["doctor", "--fix"]);
    assert_eq!(code, 2, "{text}");
    drop(held);
    let (code, _, text) = json(
        home.path(),
        &no_env(),
        &["backup", "restore", backup.to_str().unwrap(), "--force"],
    );
    assert_eq!(code, 0, "{text}");
}

/// The backup's config.json holds no secret value: not a secret setting's, not one under a key
/// the gateway does not know (a misspelt or wrongly cased secret key), not a URL's credentials.
#[test]
fn a_backup_copies_no_value_that_may_be_a_secret() {
    let config = r#"{"providers":{"openai":{"model":"m","apikey":"sk-misspelt-0123456789"}},
        "channels":{"bridges":{"Slack":{"secret":"cased-secret-0123456789"}}},
        "fleet":{"nats_urls":["nats://node:pass-in-url-0123@127.0.0.1:4222","nats://127.0.0.1:4223"]}}"#;
    let home = source_home(config);
    let out = private_dir();
    let backup = create(home.path(), out.path(), "b.tar");
    let unpacked = unpack(&backup);
    let copied = std::fs::read_to_string(unpacked.path().join("config.json")).unwrap();
    for secret in [
        "sk-misspelt-0123456789",
        "cased-secret-0123456789",
        "pass-in-url-0123",
    ] {
        assert!(!copied.contains(secret), "{secret} in {copied}");
    }
    // What is not a secret is kept.
    assert!(
        copied.contains("\"model\":\"m\"") || copied.contains("\"model\": \"m\""),
        "{copied}"
    );
    assert!(copied.contains("nats://127.0.0.1:4223"), "{copied}");
}

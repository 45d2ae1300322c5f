//! Unit tests of the backup layout, manifest MAC, staging refusals and the swap's roll-back.

use super::layout::{classify, Part};

#[test]
fn names_outside_the_layout_are_refused() {
    for bad in [
        "/etc/passwd",
        "../x",
        "timeline.db/../../x",
        "audit/../config.json",
        "",
        "a//b",
        "./config.json",
        "other.txt",
        "audit/evil.jsonl",
        "workspace/notes.md",
        "timeline.db",
    ] {
        assert!(classify(bad.as_bytes(), false).is_err(), "{bad:?} accepted");
    }
    assert_eq!(classify(b"timeline.db/", true).unwrap().1, Part::Store);
    assert_eq!(
        classify(b"audit/audit-000001.jsonl", false).unwrap().1,
        Part::Audit
    );
    assert_eq!(
        classify(b"workspace/SOUL.md", false).unwrap().1,
        Part::Identity
    );
    assert_eq!(
        classify(b"timeline.db/blobs/12", false).unwrap().1,
        Part::Store
    );
}

mod manifest_mac {
    use std::collections::BTreeMap;

    use serde_json::{json, Map, Value};

    use crate::backup::manifest::{build, Listed, MacCheck, Manifest};

    fn files() -> BTreeMap<String, Listed> {
        let listed = |b: char| Listed {
            blake3: std::iter::repeat_n(b, 64).collect(),
            size: Some(7),
        };
        BTreeMap::from([
            ("config.json".to_string(), listed('a')),
            ("timeline.db/db".to_string(), listed('b')),
        ])
    }

    fn manifest(key: &[u8; 32]) -> Value {
        let mut meta = Map::new();
        meta.insert("created".into(), json!("2026-01-01T00:00:00Z"));
        meta.insert("audit_head".into(), json!({"seq": 3, "hash": "00"}));
        build(meta, &files(), key)
    }

    fn check(doc: &Value, key: &[u8; 32]) -> MacCheck {
        Manifest::parse(&serde_json::to_vec(doc).unwrap())
            .unwrap()
            .check_mac(key)
    }

    #[test]
    fn the_mac_covers_every_field_and_not_the_formatting() {
        let key = [7u8; 32];
        let doc = manifest(&key);
        assert_eq!(check(&doc, &key), MacCheck::Valid);
        // Pretty-printed, keys in another order: the same canonical bytes.
        let pretty = serde_json::to_vec_pretty(&doc).unwrap();
        let parsed = Manifest::parse(&pretty).unwrap();
        assert_eq!(parsed.check_mac(&key), MacCheck::Valid);
        assert_eq!(check(&doc, &[8u8; 32]), MacCheck::Invalid, "another key");
        for edit in [
            |d: &mut Value| d["files"]["config.json"]["blake3"] = json!("c".repeat(64)),
            |d: &mut Value| d["files"]["config.json"]["size"] = json!(8),
            |d: &mut Value| d["audit_head"]["seq"] = json!(4),
            |d: &mut Value| d["created"] = json!("2027-01-01T00:00:00Z"),
            |d: &mut Value| d["key_included"] = json!(true),
            |d: &mut Value| d["mac"] = json!("zz"),
        ] {
            let mut forged = doc.clone();
            edit(&mut forged);
            assert_eq!(check(&forged, &key), MacCheck::Invalid, "{forged}");
        }
        let mut stripped = doc.clone();
        stripped.as_object_mut().unwrap().remove("mac");
        assert_eq!(check(&stripped, &key), MacCheck::Missing);
    }

    #[test]
    fn a_manifest_naming_files_outside_the_layout_does_not_parse() {
        let key = [7u8; 32];
        for name in [
            "../x",
            "/etc/passwd",
            "timeline.db/../x",
            "MANIFEST.json",
            "x",
        ] {
            let mut doc = manifest(&key);
            doc["files"][name] = json!({"blake3": "a".repeat(64), "size": 1});
            assert!(
                Manifest::parse(&serde_json::to_vec(&doc).unwrap()).is_err(),
                "{name}"
            );
        }
        let mut doc = manifest(&key);
        doc["files"]["config.json"]["blake3"] = json!("not hex");
        assert!(Manifest::parse(&serde_json::to_vec(&doc).unwrap()).is_err());
        doc["format"] = json!("kafclaw-backup-9");
        assert!(Manifest::parse(&serde_json::to_vec(&doc).unwrap()).is_err());
    }
}

mod swap_rollback {
    use std::collections::{BTreeMap, HashMap};
    use std::path::Path;

    use kafclaw_actors::paths::Home;

    use crate::backup::swap::{forward, rollback, Item, Journal, KillHook, State};

    fn tree(root: &Path) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for path in crate::backup::files::walk(root) {
            let rel = path.strip_prefix(root).unwrap().display().to_string();
            let content = std::fs::read_to_string(&path).unwrap_or_else(|_| "<dir>".into());
            out.insert(rel, content);
        }
        out
    }

    /// A home with a store, a config and a soul; a staging copy replacing all three and adding
    /// an audit log; the journal of that swap.
    fn setup(root: &Path) -> (Home, Journal) {
        let home = Home::new(root);
        let state = home.state_dir();
        std::fs::create_dir_all(state.join("timeline.db")).unwrap();
        std::fs::write(state.join("timeline.db/db"), "old store").unwrap();
        std::fs::write(home.config_file(), "old config").unwrap();
        std::fs::create_dir_all(state.join("workspace")).unwrap();
        std::fs::write(state.join("workspace/SOUL.md"), "old soul").unwrap();
        let staging = state.join(".restore-T");
        let view = Home::new(&staging);
        std::fs::create_dir_all(view.store_dir()).unwrap();
        std::fs::write(view.store_dir().join("db"), "new store").unwrap();
        std::fs::create_dir_all(view.audit_dir()).unwrap();
        std::fs::write(view.audit_dir().join("audit-000001.jsonl"), "new audit").unwrap();
        std::fs::write(view.config_file(), "new config").unwrap();
        std::fs::write(staging.join("SOUL.md"), "new soul").unwrap();
        let pre = state.join("pre-restore-T");
        let item = |live: std::path::PathBuf, staged: std::path::PathBuf| Item {
            saved: pre.join(live.file_name().unwrap()),
            had_live: live.exists(),
            has_staged: true,
            live,
            staged,
            copy_from: None,
        };
        let soul = state.join("workspace/SOUL.md");
        let items = vec![
            item(home.store_dir(), view.store_dir()),
            item(home.audit_dir(), view.audit_dir()),
            item(home.config_file(), view.config_file()),
            Item {
                live: soul.clone(),
                staged: state.join("workspace/.SOUL.md.restore-T"),
                saved: state.join("workspace/.SOUL.md.pre-restore-T"),
                copy_from: Some(staging.join("SOUL.md")),
                had_live: true,
                has_staged: true,
            },
        ];
        let journal = Journal {
            state: State::Swapping,
            stamp: "T".into(),
            staging,
            pre_restore: pre,
            items,
        };
        std::fs::write(
            state.join("restore-T.journal"),
            serde_json::to_vec(&journal).unwrap(),
        )
        .unwrap();
        (home, journal)
    }

    #[test]
    fn rolling_back_after_any_step_restores_the_old_home_and_is_idempotent() {
        let mut steps_seen = 0;
        for stop in 1..20 {
            let dir = tempfile::tempdir().unwrap();
            let (home, journal) = setup(dir.path());
            let before: BTreeMap<String, String> = tree(&home.state_dir())
                .into_iter()
                .filter(|(k, _)| !k.starts_with(".restore-") && !k.ends_with(".journal"))
                .collect();
            let mut hook = KillHook::from_env(&HashMap::new());
            hook.stop_after = Some(stop);
            if forward(&journal, &mut hook).is_ok() {
                break;
            }
            steps_seen = stop;
            rollback(&home, &journal).unwrap();
            assert_eq!(tree(&home.state_dir()), before, "stopped after step {stop}");
            // A second roll-back (as after a kill during the first) changes nothing.
            std::fs::write(
                home.state_dir().join("restore-T.journal"),
                serde_json::to_vec(&journal).unwrap(),
            )
            .unwrap();
            rollback(&home, &journal).unwrap();
            assert_eq!(
                tree(&home.state_dir()),
                before,
                "rolled back twice at {stop}"
            );
        }
        assert!(steps_seen >= 8, "only {steps_seen} steps");
    }
}

#[test]
fn a_sealed_key_asking_for_an_unreasonable_cost_is_refused_before_deriving() {
    let sealed = crate::backup::seal_key(b"key file bytes", "pw").unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&sealed).unwrap();
    v["m_cost_kib"] = serde_json::json!(u32::MAX);
    let started = std::time::Instant::now();
    let err = crate::backup::open_key(&v.to_string(), "pw").unwrap_err();
    assert!(err.contains("unreasonable"), "{err}");
    assert!(started.elapsed() < std::time::Duration::from_secs(1));
}

/// Archives read with bounded extension entries: GNU long names and PAX headers, as the
/// writer emits them and as an attacker does.
mod archive_extensions {
    use std::collections::BTreeMap;
    use std::time::{Duration, Instant};

    use kafclaw_actors::paths::Home;
    use serde_json::{json, Map};

    use crate::backup::archive;
    use crate::backup::manifest::{build, Listed};
    use crate::backup::staging::{stage, StageError, Staged};

    const CONFIG: &[u8] = b"{\"gateway\":{}}";

    fn listed(bytes: &[u8]) -> Listed {
        Listed {
            blake3: blake3::hash(bytes).to_hex().to_string(),
            size: Some(bytes.len() as u64),
        }
    }

    fn manifest(files: &BTreeMap<String, Listed>) -> Vec<u8> {
        let mut meta = Map::new();
        meta.insert("created".into(), json!("2026-01-01T00:00:00Z"));
        meta.insert("audit_head".into(), json!({"seq": 0, "hash": "00"}));
        serde_json::to_vec(&build(meta, files, &[7u8; 32])).unwrap()
    }

    /// Stages the archive `bytes` as `backup verify` and `restore` do.
    fn staged(bytes: &[u8]) -> Result<Staged, StageError> {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("backup.tar");
        std::fs::write(&file, bytes).unwrap();
        let view = dir.path().join("view");
        std::fs::create_dir(&view).unwrap();
        stage(&file, &Home::new(&view))
    }

    /// One entry: `header` (checksum set here), then `data` padded to 512 bytes.
    fn entry(mut header: tar::Header, data: &[u8]) -> Vec<u8> {
        header.set_cksum();
        let mut out = header.as_bytes().to_vec();
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
        out
    }

    fn header(name: &[u8], kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.as_old_mut().name[..name.len()].copy_from_slice(name);
        h.set_entry_type(kind);
        h.set_mode(0o600);
        h.set_size(size);
        h
    }

    /// The manifest (listing config.json), then what `tail` appends.
    fn archive_with(tail: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let files = BTreeMap::from([("config.json".to_string(), listed(CONFIG))]);
        let manifest = manifest(&files);
        let mut out = entry(
            header(
                b"MANIFEST.json",
                tar::EntryType::Regular,
                manifest.len() as u64,
            ),
            &manifest,
        );
        tail(&mut out);
        out
    }

    /// Regression (security review): the tar crate read a GNU long-name entry whole into
    /// memory whatever size it declared (8 GiB from one header), before any bound here ran.
    #[test]
    fn an_oversized_long_name_entry_is_refused_as_malformed_without_reading_it() {
        let long_name = |size: u64| header(b"././@LongLink", tar::EntryType::GNULongName, size);
        // 1 MiB of long name actually present, then the entry it names.
        let real = archive_with(|out| {
            out.extend(entry(long_name(1 << 20), &vec![b'a'; 1 << 20]));
            out.extend(entry(
                header(b"config.json", tar::EntryType::Regular, CONFIG.len() as u64),
                CONFIG,
            ));
            out.extend([0u8; 1024]);
        });
        // 8 GiB declared (the largest octal size), 4 KiB present.
        let bomb = archive_with(|out| out.extend(entry(long_name(0o77777777777), &[0; 4096])));
        for (bytes, size) in [(real, 1u64 << 20), (bomb, 0o77777777777)] {
            for bytes in [
                bytes.clone(),
                zstd::encode_all(bytes.as_slice(), 3).unwrap(),
            ] {
                let started = Instant::now();
                let err = staged(&bytes).unwrap_err();
                assert!(started.elapsed() < Duration::from_secs(2));
                assert_eq!(
                    err.to_string(),
                    format!(
                        "the archive is malformed: a GNU long-name entry ('L') declares {size} \
                         bytes, more than the 65536 an extension entry may have"
                    )
                );
            }
        }
    }

    /// Extension entries that do not describe exactly one entry make the archive malformed.
    #[test]
    fn a_misplaced_long_name_entry_makes_the_archive_malformed() {
        let name = b"config.json\0";
        let long_name = || {
            entry(
                header(b"././@LongLink", tar::EntryType::GNULongName, 12),
                name,
            )
        };
        let config = || {
            entry(
                header(b"x", tar::EntryType::Regular, CONFIG.len() as u64),
                CONFIG,
            )
        };
        for (tail, reason) in [
            (
                vec![long_name()],
                "a GNU long-name entry ('L') ends the archive: no entry follows it",
            ),
            (
                vec![long_name(), long_name(), config()],
                "a GNU long-name entry ('L') follows another before the entry they describe",
            ),
        ] {
            let bytes = archive_with(|out| {
                tail.iter().for_each(|e| out.extend(e));
                out.extend([0u8; 1024]);
            });
            let err = staged(&bytes).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!("the archive is malformed: {reason}")
            );
        }
        // Applied to the entry after it, the long name is that entry's name.
        let bytes = archive_with(|out| {
            out.extend(long_name());
            out.extend(config());
            out.extend([0u8; 1024]);
        });
        let got = staged(&bytes).unwrap();
        assert_eq!(got.sums.keys().collect::<Vec<_>>(), ["config.json"]);
    }

    /// `backup create`'s writer round-trips through the reader, names over 100 bytes
    /// included (a ustar prefix, or a GNU long-name entry for a component that long).
    #[test]
    fn the_writer_round_trips_through_the_bounded_reader() {
        let long_component = format!("timeline.db/{}", "s".repeat(150));
        let split = format!("timeline.db/{}/{}", "p".repeat(90), "q".repeat(90));
        let dir = tempfile::tempdir().unwrap();
        let build_dir = dir.path().join("build");
        let mut files = BTreeMap::new();
        for (name, body) in [
            ("config.json", CONFIG),
            ("timeline.db/db", b"store".as_slice()),
            (long_component.as_str(), b"long"),
            (split.as_str(), b"split"),
            ("workspace/SOUL.md", b"calm\n"),
        ] {
            let path = build_dir.join(name);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, body).unwrap();
            files.insert(name.to_string(), listed(body));
        }
        std::fs::create_dir_all(build_dir.join("audit")).unwrap();
        let manifest = manifest(&files);
        for compress in [false, true] {
            let file = dir.path().join(format!("out-{compress}.tar"));
            archive::write(
                &build_dir,
                &manifest,
                std::fs::File::create(&file).unwrap(),
                compress,
            )
            .unwrap();
            let bytes = std::fs::read(&file).unwrap();
            if !compress {
                assert!(has_long_name(&bytes), "the writer used a GNU long name");
            }
            let got = staged(&bytes).unwrap();
            assert!(got.archive);
            assert_eq!(got.sums, files);
        }
    }

    /// True when some header of the plain archive `bytes` is a GNU long-name entry.
    fn has_long_name(bytes: &[u8]) -> bool {
        let mut archive = tar::Archive::new(bytes);
        let found = archive
            .entries()
            .unwrap()
            .raw(true)
            .any(|e| e.unwrap().header().entry_type().is_gnu_longname());
        found
    }
}

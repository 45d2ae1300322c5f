use std::fs;

use actix::prelude::*;
use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine as _;

use super::*;

/// A home in a temporary directory.
struct Fixture {
    _dir: tempfile::TempDir,
    home: Home,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    Fixture { _dir: dir, home }
}

/// Opens the store; a store just dropped may hold its lock a moment longer while sled's
/// flusher thread ends, so a lock refusal is retried for a few seconds.
fn open_db(home: &Home) -> StoreDb {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    loop {
        match StoreDb::open(&home.store_dir()) {
            Err(e) if e.to_string().contains("lock") && std::time::Instant::now() < deadline => {
                std::thread::sleep(std::time::Duration::from_millis(20))
            }
            other => return other.unwrap(),
        }
    }
}

fn open(home: &Home, db: &StoreDb) -> Vault {
    open_with(home, db, None).unwrap().0
}

fn open_with(
    home: &Home,
    db: &StoreDb,
    passphrase: Option<&str>,
) -> Result<(Vault, Vec<VaultWarning>), VaultError> {
    Vault::open_or_create(home, db, passphrase.map(SecretValue::from))
}

fn secrets() -> Vec<(&'static str, &'static str)> {
    vec![
        ("providers.openai.api_key", "sk-test-0123456789"),
        ("channels.whatsapp.app_secret", "whatsapp-app-secret-value"),
        (
            "gateway.auth_token",
            "a-long-random-gateway-token-value-xyz",
        ),
    ]
}

fn fill(vault: &Vault) {
    for (name, value) in secrets() {
        vault.set(name, value.into()).unwrap();
    }
}

fn assert_all_open(vault: &Vault) {
    for (name, value) in secrets() {
        let got = vault.get(name).unwrap().unwrap();
        assert_eq!(got.expose_str(), Some(value), "secret {name}");
    }
    for (name, outcome) in vault.verify_all().unwrap() {
        assert!(outcome.is_ok(), "{name}: {outcome:?}");
    }
}

/// The stored record of `name`, as the store holds it.
fn raw_record(db: &StoreDb, name: &str) -> Vec<u8> {
    db.tree(TreeName::Secrets)
        .unwrap()
        .get(storage_key(name))
        .unwrap()
        .unwrap()
}

fn put_raw_record(db: &StoreDb, name: &str, bytes: &[u8]) {
    db.tree(TreeName::Secrets)
        .unwrap()
        .insert(storage_key(name), bytes)
        .unwrap();
}

fn key_file_json(home: &Home) -> serde_json::Value {
    serde_json::from_slice(&fs::read(home.key_file()).unwrap()).unwrap()
}

#[test]
fn round_trip_set_get_list_remove() {
    let f = fixture();
    let db = open_db(&f.home);
    let vault = open(&f.home, &db);
    fill(&vault);
    assert_all_open(&vault);
    assert_eq!(vault.get("absent").unwrap(), None);

    vault
        .set("providers.openai.api_key", "sk-replaced".into())
        .unwrap();
    assert_eq!(
        vault
            .get("providers.openai.api_key")
            .unwrap()
            .unwrap()
            .expose(),
        b"sk-replaced"
    );

    let names: Vec<_> = vault.list().unwrap().into_iter().map(|i| i.name).collect();
    assert_eq!(
        names,
        [
            "channels.whatsapp.app_secret",
            "gateway.auth_token",
            "providers.openai.api_key"
        ]
    );
    assert!(vault.remove("gateway.auth_token").unwrap());
    assert!(!vault.remove("gateway.auth_token").unwrap());
    assert_eq!(vault.get("gateway.auth_token").unwrap(), None);
    assert_eq!(vault.list().unwrap().len(), 2);
}

#[test]
fn values_are_sealed_in_the_store_never_in_clear() {
    let f = fixture();
    let db = open_db(&f.home);
    let vault = open(&f.home, &db);
    fill(&vault);
    for (name, value) in secrets() {
        let raw = raw_record(&db, name);
        let text = String::from_utf8(raw).unwrap();
        assert!(!text.contains(value), "{name} is stored in clear");
        let record: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(record["v"], 1);
        assert_eq!(record["key_id"], vault.key_id());
        assert_eq!(
            B64.decode(record["nonce"].as_str().unwrap()).unwrap().len(),
            24
        );
    }
    // A fresh nonce per write: the same value sealed twice differs.
    let first = raw_record(&db, "gateway.auth_token");
    vault
        .set(
            "gateway.auth_token",
            "a-long-random-gateway-token-value-xyz".into(),
        )
        .unwrap();
    assert_ne!(first, raw_record(&db, "gateway.auth_token"));
}

#[test]
fn reopen_persists_values_and_creation_times() {
    let f = fixture();
    let (key_id, listed) = {
        let db = open_db(&f.home);
        let vault = open(&f.home, &db);
        fill(&vault);
        (vault.key_id().to_string(), vault.list().unwrap())
    };
    let db = open_db(&f.home);
    let (vault, warnings) = Vault::open_existing(&f.home, &db, None).unwrap();
    assert_eq!(warnings, []);
    assert_eq!(vault.key_id(), key_id);
    assert_all_open(&vault);
    assert_eq!(vault.list().unwrap(), listed);

    vault
        .set("gateway.auth_token", "another-value".into())
        .unwrap();
    let info = vault
        .list()
        .unwrap()
        .into_iter()
        .find(|i| i.name == "gateway.auth_token")
        .unwrap();
    let before = listed
        .iter()
        .find(|i| i.name == "gateway.auth_token")
        .unwrap();
    assert_eq!(
        info.created, before.created,
        "an update keeps the creation time"
    );
}

#[test]
fn key_file_and_directory_are_created_private() {
    let f = fixture();
    let db = open_db(&f.home);
    let (vault, warnings) = open_with(&f.home, &db, None).unwrap();
    assert_eq!(warnings, []);
    assert_eq!(fsutil::mode_of(&f.home.key_file()).unwrap(), 0o600);
    assert_eq!(fsutil::mode_of(&f.home.config_dir()).unwrap(), 0o700);
    assert_eq!(
        fsutil::mode_of(&f.home.root().join(".config")).unwrap(),
        0o700
    );
    let doc = key_file_json(&f.home);
    assert_eq!(doc["format"], "kafclaw-tomb");
    assert_eq!(doc["version"], 1);
    assert_eq!(doc["kind"], "plain");
    assert_eq!(doc["key_id"], vault.key_id());
    assert_eq!(B64.decode(doc["key"].as_str().unwrap()).unwrap().len(), 32);
    assert!(!vault.is_passphrase_protected());
    // The key never sits next to the ciphertexts: nothing under the store names the key file.
    assert!(!f.home.store_dir().join("tomb.rr").exists());
}

#[test]
fn loose_modes_are_warnings_and_are_left_alone() {
    let f = fixture();
    {
        let db = open_db(&f.home);
        fill(&open(&f.home, &db));
    }
    fsutil::set_mode(&f.home.key_file(), 0o644).unwrap();
    fsutil::set_mode(&f.home.config_dir(), 0o755).unwrap();
    let db = open_db(&f.home);
    let (vault, warnings) = open_with(&f.home, &db, None).unwrap();
    assert_all_open(&vault);
    assert!(warnings.contains(&VaultWarning::KeyFileMode {
        path: f.home.key_file(),
        mode: 0o644
    }));
    assert!(warnings.contains(&VaultWarning::KeyDirMode {
        path: f.home.config_dir(),
        mode: 0o755
    }));
    assert!(warnings[0].to_string().contains("644"));
    assert_eq!(
        fsutil::mode_of(&f.home.key_file()).unwrap(),
        0o644,
        "loading never chmods"
    );
}

#[test]
fn another_vaults_key_file_is_a_key_mismatch() {
    let a = fixture();
    let b = fixture();
    {
        let db_a = open_db(&a.home);
        fill(&open(&a.home, &db_a));
        let db_b = open_db(&b.home);
        open(&b.home, &db_b).set("x", "y".into()).unwrap();
    }
    fs::copy(b.home.key_file(), a.home.key_file()).unwrap();
    let db_a = open_db(&a.home);
    match open_with(&a.home, &db_a, None) {
        Err(VaultError::KeyMismatch { path, .. }) => assert_eq!(path, a.home.key_file()),
        other => panic!("expected KeyMismatch, got {:?}", other.map(|(v, _)| v)),
    }
    let message = open_with(&a.home, &db_a, None).unwrap_err().to_string();
    assert!(message.contains("tomb.rr"), "{message}");
}

#[test]
fn missing_key_file_is_never_a_silent_empty_vault() {
    let f = fixture();
    {
        let db = open_db(&f.home);
        assert!(matches!(
            Vault::open_existing(&f.home, &db, None),
            Err(VaultError::KeyFileMissing { .. })
        ));
        fill(&open(&f.home, &db));
    }
    fs::remove_file(f.home.key_file()).unwrap();
    let db = open_db(&f.home);
    match open_with(&f.home, &db, None) {
        Err(VaultError::KeyFileLost { path, .. }) => assert_eq!(path, f.home.key_file()),
        other => panic!("expected KeyFileLost, got {:?}", other.map(|(v, _)| v)),
    }
    assert!(
        !f.home.key_file().exists(),
        "no new key replaces a lost one"
    );
    assert!(matches!(
        Vault::open_existing(&f.home, &db, None),
        Err(VaultError::KeyFileLost { .. })
    ));
}

#[test]
fn missing_key_file_with_no_secrets_left_gets_a_new_key() {
    let f = fixture();
    let old_id = {
        let db = open_db(&f.home);
        let vault = open(&f.home, &db);
        vault.set("a", "1".into()).unwrap();
        vault.remove("a").unwrap();
        vault.key_id().to_string()
    };
    fs::remove_file(f.home.key_file()).unwrap();
    let db = open_db(&f.home);
    assert!(matches!(
        Vault::open_existing(&f.home, &db, None),
        Err(VaultError::KeyFileMissing { .. })
    ));
    let (vault, warnings) = open_with(&f.home, &db, None).unwrap();
    assert_eq!(warnings, []);
    assert_ne!(vault.key_id(), old_id);
    vault.set("b", "2".into()).unwrap();
    drop(vault);
    let (vault, _) = Vault::open_existing(&f.home, &db, None).unwrap();
    assert_eq!(vault.get("b").unwrap().unwrap().expose(), b"2");
}

#[test]
fn truncated_or_garbled_key_file_is_malformed() {
    let f = fixture();
    {
        let db = open_db(&f.home);
        fill(&open(&f.home, &db));
    }
    let original = fs::read(f.home.key_file()).unwrap();
    let db = open_db(&f.home);
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("half", original[..original.len() / 2].to_vec()),
        ("empty", Vec::new()),
        ("not json", b"hello".to_vec()),
        (
            "short key",
            String::from_utf8(original.clone())
                .unwrap()
                .replace("\"key\":\"", "\"key\":\"AAAA")
                .into_bytes(),
        ),
    ];
    for (case, bytes) in cases {
        fs::write(f.home.key_file(), &bytes).unwrap();
        match open_with(&f.home, &db, None) {
            Err(VaultError::KeyFileMalformed { path, reason }) => {
                assert_eq!(path, f.home.key_file(), "{case}");
                let key = key_material(&original);
                assert!(!reason.contains(&key[..8]), "{case}: reason quotes the key");
            }
            other => panic!(
                "{case}: expected KeyFileMalformed, got {:?}",
                other.map(|(v, _)| v)
            ),
        }
    }
    // A flipped byte inside the key no longer matches its key id.
    let mut doc: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let mut key = B64.decode(doc["key"].as_str().unwrap()).unwrap();
    key[0] ^= 1;
    doc["key"] = B64.encode(&key).into();
    fs::write(f.home.key_file(), serde_json::to_vec(&doc).unwrap()).unwrap();
    assert!(matches!(
        open_with(&f.home, &db, None),
        Err(VaultError::KeyFileMalformed { .. })
    ));
    // A future format version is named as such.
    let mut doc: serde_json::Value = serde_json::from_slice(&original).unwrap();
    doc["version"] = 2.into();
    fs::write(f.home.key_file(), serde_json::to_vec(&doc).unwrap()).unwrap();
    assert!(matches!(
        open_with(&f.home, &db, None),
        Err(VaultError::KeyFileUnsupported { version: 2, .. })
    ));
    // Restoring the file restores the vault.
    fs::write(f.home.key_file(), &original).unwrap();
    assert_all_open(&open(&f.home, &db));
}

fn key_material(key_file: &[u8]) -> String {
    let doc: serde_json::Value = serde_json::from_slice(key_file).unwrap();
    doc["key"].as_str().unwrap().to_string()
}

#[test]
fn passphrase_wraps_the_key_and_is_required() {
    let f = fixture();
    {
        let db = open_db(&f.home);
        let (vault, warnings) = open_with(&f.home, &db, Some("correct horse")).unwrap();
        assert_eq!(warnings, []);
        assert!(vault.is_passphrase_protected());
        fill(&vault);
    }
    let doc = key_file_json(&f.home);
    assert_eq!(doc["kind"], "argon2id");
    assert!(doc.get("key").is_none(), "no key in clear");
    assert_eq!(doc["kdf"]["algorithm"], "argon2id");
    assert_eq!(
        B64.decode(doc["nonce"].as_str().unwrap()).unwrap().len(),
        24
    );
    assert_eq!(
        B64.decode(doc["wrapped_key"].as_str().unwrap())
            .unwrap()
            .len(),
        48
    );
    assert_eq!(fsutil::mode_of(&f.home.key_file()).unwrap(), 0o600);

    let db = open_db(&f.home);
    match open_with(&f.home, &db, None) {
        Err(VaultError::PassphraseRequired { path }) => assert_eq!(path, f.home.key_file()),
        other => panic!(
            "expected PassphraseRequired, got {:?}",
            other.map(|(v, _)| v)
        ),
    }
    match open_with(&f.home, &db, Some("wrong horse")) {
        Err(VaultError::WrongPassphrase { path }) => assert_eq!(path, f.home.key_file()),
        other => panic!("expected WrongPassphrase, got {:?}", other.map(|(v, _)| v)),
    }
    assert!(matches!(
        open_with(&f.home, &db, Some("")),
        Err(VaultError::PassphraseEmpty)
    ));
    let error = open_with(&f.home, &db, Some("wrong horse")).unwrap_err();
    assert!(!format!("{error:?} {error}").contains("horse"));

    let (vault, _) = open_with(&f.home, &db, Some("correct horse")).unwrap();
    assert_all_open(&vault);
}

#[test]
fn passphrase_for_a_plain_key_file_is_a_warning() {
    let f = fixture();
    {
        let db = open_db(&f.home);
        fill(&open(&f.home, &db));
    }
    let db = open_db(&f.home);
    let (vault, warnings) = open_with(&f.home, &db, Some("unneeded")).unwrap();
    assert_eq!(
        warnings,
        [VaultWarning::PassphraseUnused {
            path: f.home.key_file()
        }]
    );
    assert_all_open(&vault);
}

#[test]
fn flipped_byte_in_a_ciphertext_names_the_secret() {
    let f = fixture();
    let db = open_db(&f.home);
    let vault = open(&f.home, &db);
    fill(&vault);
    let name = "channels.whatsapp.app_secret";
    let mut record: serde_json::Value = serde_json::from_slice(&raw_record(&db, name)).unwrap();
    let mut ct = B64.decode(record["ct"].as_str().unwrap()).unwrap();
    ct[3] ^= 0x40;
    record["ct"] = B64.encode(&ct).into();
    put_raw_record(&db, name, &serde_json::to_vec(&record).unwrap());

    match vault.get(name) {
        Err(VaultError::SecretCorrupt { name: got }) => assert_eq!(got, name),
        other => panic!("expected SecretCorrupt, got {other:?}"),
    }
    let error = vault.get(name).unwrap_err().to_string();
    assert!(error.contains(name), "{error}");

    let report = vault.verify_all().unwrap();
    assert_eq!(report.len(), 3);
    for (secret, outcome) in report {
        assert_eq!(outcome.is_err(), secret == name, "{secret}: {outcome:?}");
    }
    // Other secrets still open; a rotation refuses to run over a damaged secret.
    assert!(vault.get("gateway.auth_token").unwrap().is_some());
    let mut vault = vault;
    let old_id = vault.key_id().to_string();
    assert!(matches!(
        vault.rotate_key(),
        Err(VaultError::SecretCorrupt { .. })
    ));
    assert_eq!(vault.key_id(), old_id);
    assert!(!keyfile::next_path(&f.home.key_file()).exists());

    // A record that is not even JSON is named too.
    put_raw_record(&db, name, b"garbage");
    assert!(matches!(
        vault.get(name),
        Err(VaultError::SecretRecordMalformed { name: got, .. }) if got == name
    ));
}

#[test]
fn secret_copied_under_another_name_is_rejected() {
    let f = fixture();
    let db = open_db(&f.home);
    let vault = open(&f.home, &db);
    fill(&vault);
    let stolen = raw_record(&db, "providers.openai.api_key");
    put_raw_record(&db, "gateway.auth_token", &stolen);
    put_raw_record(&db, "brand-new", &stolen);
    for name in ["gateway.auth_token", "brand-new"] {
        match vault.get(name) {
            Err(VaultError::SecretCorrupt { name: got }) => assert_eq!(got, name),
            other => panic!("expected SecretCorrupt for {name}, got {other:?}"),
        }
    }
    assert!(vault.get("providers.openai.api_key").unwrap().is_some());
}

#[test]
fn secret_sealed_under_another_key_is_rejected() {
    let a = fixture();
    let b = fixture();
    let db_a = open_db(&a.home);
    let db_b = open_db(&b.home);
    let vault_a = open(&a.home, &db_a);
    let vault_b = open(&b.home, &db_b);
    vault_b.set("shared", "from-b".into()).unwrap();
    put_raw_record(&db_a, "shared", &raw_record(&db_b, "shared"));
    assert!(matches!(
        vault_a.get("shared"),
        Err(VaultError::SecretKeyMismatch { name, .. }) if name == "shared"
    ));
    // Claiming the right key id does not help: the key is bound into the associated data.
    let mut record: serde_json::Value =
        serde_json::from_slice(&raw_record(&db_b, "shared")).unwrap();
    record["key_id"] = vault_a.key_id().into();
    put_raw_record(&db_a, "shared", &serde_json::to_vec(&record).unwrap());
    assert!(matches!(
        vault_a.get("shared"),
        Err(VaultError::SecretCorrupt { name }) if name == "shared"
    ));
}

#[test]
fn names_are_validated_and_reserved_names_protected() {
    let f = fixture();
    let db = open_db(&f.home);
    let vault = open(&f.home, &db);
    let long = "a".repeat(129);
    for bad in [
        "",
        "has space",
        "slash/name",
        "ünïcode",
        "semi;colon",
        long.as_str(),
    ] {
        assert!(
            matches!(
                vault.set(bad, "v".into()),
                Err(VaultError::InvalidName { .. })
            ),
            "{bad:?} accepted"
        );
        assert!(matches!(
            vault.get(bad),
            Err(VaultError::InvalidName { .. })
        ));
    }
    for good in ["a", "A-Z_0.9:x", &"b".repeat(128)] {
        vault.set(good, "v".into()).unwrap();
    }

    vault.set(AUDIT_KEY_NAME, "internal".into()).unwrap();
    assert!(matches!(
        vault.remove_user(AUDIT_KEY_NAME),
        Err(VaultError::ReservedName { .. })
    ));
    assert!(matches!(
        vault.remove_user("KafClaw.Other"),
        Err(VaultError::ReservedName { .. })
    ));
    assert!(matches!(
        vault.set_user("kafclaw.token_hash_key", "x".into()),
        Err(VaultError::ReservedName { .. })
    ));
    assert!(vault.get(AUDIT_KEY_NAME).unwrap().is_some());
    let listed = vault.list().unwrap();
    let audit = listed.iter().find(|i| i.name == AUDIT_KEY_NAME).unwrap();
    assert!(audit.internal);
    assert!(listed
        .iter()
        .filter(|i| i.name != AUDIT_KEY_NAME)
        .all(|i| !i.internal));
    assert!(vault.remove_user("a").unwrap());
    assert!(
        vault.remove(AUDIT_KEY_NAME).unwrap(),
        "the internal path may remove"
    );

    let huge = SecretValue::new(vec![7; MAX_VALUE_LEN + 1]);
    assert!(matches!(
        vault.set("huge", huge),
        Err(VaultError::ValueTooLarge { .. })
    ));
}

#[test]
fn import_is_all_or_nothing() {
    let f = fixture();
    let db = open_db(&f.home);
    let vault = open(&f.home, &db);
    vault.set("existing", "old".into()).unwrap();
    let batch = |extra: (&str, &str)| -> Vec<(String, SecretValue)> {
        vec![
            ("one".to_string(), SecretValue::from("1")),
            ("existing".to_string(), SecretValue::from("new")),
            (extra.0.to_string(), SecretValue::from(extra.1)),
        ]
    };
    for (bad, expected) in [
        ("bad name", "InvalidName"),
        ("kafclaw.audit_key", "ReservedName"),
        ("one", "DuplicateName"),
    ] {
        let error = vault.import(batch((bad, "3"))).unwrap_err();
        assert!(format!("{error:?}").starts_with(expected), "{error:?}");
        assert_eq!(vault.get("one").unwrap(), None, "nothing imported");
        assert_eq!(vault.get("existing").unwrap().unwrap().expose(), b"old");
    }
    assert_eq!(vault.import(batch(("three", "3"))).unwrap(), 3);
    assert_eq!(vault.get("one").unwrap().unwrap().expose(), b"1");
    assert_eq!(vault.get("existing").unwrap().unwrap().expose(), b"new");
    assert_eq!(vault.get("three").unwrap().unwrap().expose(), b"3");
}

#[test]
fn get_or_create_random_returns_the_same_value() {
    let f = fixture();
    let db = open_db(&f.home);
    let mut vault = open(&f.home, &db);
    let first = vault.get_or_create_random(AUDIT_KEY_NAME, 32).unwrap();
    assert_eq!(first.len(), 32);
    assert_eq!(
        vault.get_or_create_random(AUDIT_KEY_NAME, 32).unwrap(),
        first
    );
    let other = vault
        .get_or_create_random("kafclaw.token_hash_key", 32)
        .unwrap();
    assert_ne!(other, first);
    vault.rotate_key().unwrap();
    assert_eq!(
        vault.get_or_create_random(AUDIT_KEY_NAME, 32).unwrap(),
        first,
        "rotating the vault key never changes the audit key"
    );
    for len in [0, MAX_RANDOM_LEN + 1] {
        assert!(matches!(
            vault.get_or_create_random("x", len),
            Err(VaultError::InvalidRandomLength { .. })
        ));
    }
    drop(vault);
    drop(db);
    let db = open_db(&f.home);
    let vault = open(&f.home, &db);
    assert_eq!(
        vault.get_or_create_random(AUDIT_KEY_NAME, 32).unwrap(),
        first
    );
}

#[test]
fn rotate_key_keeps_values_and_changes_the_key_id() {
    for passphrase in [None, Some("rotate me")] {
        let f = fixture();
        let (old_id, new_id) = {
            let db = open_db(&f.home);
            let mut vault = open_with(&f.home, &db, passphrase).unwrap().0;
            fill(&vault);
            let old_id = vault.key_id().to_string();
            let created = vault.list().unwrap();
            let rotation = vault.rotate_key().unwrap();
            assert_eq!(rotation.old_key_id, old_id);
            assert_eq!(rotation.new_key_id, vault.key_id());
            assert_ne!(rotation.new_key_id, old_id);
            assert_eq!(rotation.resealed, 3);
            assert_all_open(&vault);
            assert_eq!(
                vault.list().unwrap(),
                created,
                "timestamps survive a rotation"
            );
            for (name, _) in secrets() {
                let record: serde_json::Value =
                    serde_json::from_slice(&raw_record(&db, name)).unwrap();
                assert_eq!(record["key_id"], vault.key_id());
            }
            (old_id, rotation.new_key_id)
        };
        assert_eq!(fsutil::mode_of(&f.home.key_file()).unwrap(), 0o600);
        assert!(!keyfile::next_path(&f.home.key_file()).exists());
        let doc = key_file_json(&f.home);
        assert_eq!(doc["key_id"], new_id.as_str());
        assert_eq!(
            doc["kind"],
            if passphrase.is_some() {
                "argon2id"
            } else {
                "plain"
            }
        );

        let db = open_db(&f.home);
        if passphrase.is_some() {
            assert!(matches!(
                open_with(&f.home, &db, None),
                Err(VaultError::PassphraseRequired { .. })
            ));
        }
        let (vault, warnings) = open_with(&f.home, &db, passphrase).unwrap();
        assert_eq!(warnings, []);
        assert_eq!(vault.key_id(), new_id);
        assert_ne!(vault.key_id(), old_id);
        assert_all_open(&vault);
    }
}

#[test]
fn interrupted_rotation_recovers_at_every_step() {
    let steps = [
        RotateStep::WroteNextKey,
        RotateStep::CommittedStore,
        RotateStep::RenamedKey,
    ];
    for passphrase in [None, Some("crash test")] {
        for step in steps {
            let f = fixture();
            let rotation = {
                let db = open_db(&f.home);
                let mut vault = open_with(&f.home, &db, passphrase).unwrap().0;
                fill(&vault);
                vault.get_or_create_random(AUDIT_KEY_NAME, 32).unwrap();
                vault.rotate_key_until(step).unwrap()
                // Killed here: the vault and the store are dropped without any cleanup.
            };
            let audit_key = {
                // What the audit key was is readable only after recovery; compare below.
                let db = open_db(&f.home);
                let (vault, warnings) = open_with(&f.home, &db, passphrase)
                    .unwrap_or_else(|e| panic!("{step:?}: reopen failed: {e}"));
                let expected_id = match step {
                    RotateStep::WroteNextKey => &rotation.old_key_id,
                    RotateStep::CommittedStore | RotateStep::RenamedKey => &rotation.new_key_id,
                };
                assert_eq!(vault.key_id(), expected_id, "{step:?}");
                let expected_warning = match step {
                    RotateStep::WroteNextKey => Some(VaultWarning::RotationRolledBack {
                        path: keyfile::next_path(&f.home.key_file()),
                    }),
                    RotateStep::CommittedStore => Some(VaultWarning::RotationCompleted {
                        path: f.home.key_file(),
                    }),
                    RotateStep::RenamedKey => None,
                };
                assert_eq!(warnings, expected_warning.into_iter().collect::<Vec<_>>());
                assert_wholly_one_state(&f.home, &db, &vault);
                assert_all_open(&vault);
                vault.get(AUDIT_KEY_NAME).unwrap().unwrap()
            };
            // The recovered vault rotates again and reopens cleanly.
            let db = open_db(&f.home);
            let mut vault = open_with(&f.home, &db, passphrase).unwrap().0;
            assert_eq!(vault.get(AUDIT_KEY_NAME).unwrap().unwrap(), audit_key);
            vault.rotate_key().unwrap();
            assert_wholly_one_state(&f.home, &db, &vault);
            assert_all_open(&vault);
        }
    }
}

/// Key file, store meta entry and every record agree on one key id; no `.next` remains.
fn assert_wholly_one_state(home: &Home, db: &StoreDb, vault: &Vault) {
    let id = vault.key_id();
    assert!(!keyfile::next_path(&home.key_file()).exists());
    assert_eq!(key_file_json(home)["key_id"], id);
    let tree = db.tree(TreeName::Secrets).unwrap();
    assert_eq!(
        tree.get(META_ACTIVE_KEY_ID).unwrap().unwrap(),
        id.as_bytes()
    );
    for (key, bytes) in tree.scan_prefix(SECRET_PREFIX).unwrap() {
        let record: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(record["key_id"], id, "{}", String::from_utf8_lossy(&key));
    }
}

#[test]
fn leftover_temporary_key_files_are_removed_on_open() {
    let f = fixture();
    {
        let db = open_db(&f.home);
        fill(&open(&f.home, &db));
    }
    let leftover = f
        .home
        .config_dir()
        .join(".tomb.rr.next.0011223344556677.tmp");
    fsutil::write_atomic(&leftover, b"{\"half\":").unwrap();
    let unrelated = f.home.config_dir().join("env");
    fsutil::write_atomic(&unrelated, b"A=1\n").unwrap();
    let db = open_db(&f.home);
    let (vault, warnings) = open_with(&f.home, &db, None).unwrap();
    assert_eq!(
        warnings,
        [VaultWarning::LeftoverRemoved {
            path: leftover.clone()
        }]
    );
    assert!(!leftover.exists());
    assert!(unrelated.exists());
    assert_all_open(&vault);
}

#[test]
fn garbage_next_file_is_discarded_when_the_store_did_not_commit() {
    let f = fixture();
    {
        let db = open_db(&f.home);
        fill(&open(&f.home, &db));
    }
    let next = keyfile::next_path(&f.home.key_file());
    fsutil::write_atomic(&next, b"{\"format\":\"kafc").unwrap();
    let db = open_db(&f.home);
    let (vault, warnings) = open_with(&f.home, &db, None).unwrap();
    assert_eq!(
        warnings,
        [VaultWarning::RotationRolledBack { path: next.clone() }]
    );
    assert!(!next.exists());
    assert_all_open(&vault);
}

#[test]
fn debug_output_never_contains_a_value() {
    let value = SecretValue::from("hunter2-super-secret");
    assert_eq!(format!("{value:?}"), "SecretValue(..)");
    let message = SetSecret {
        name: "n".into(),
        value: value.clone(),
    };
    assert!(!format!("{message:?}").contains("hunter2"));
    let import = ImportSecrets {
        entries: vec![("n".into(), value.clone())],
    };
    assert!(!format!("{import:?}").contains("hunter2"));

    let f = fixture();
    let db = open_db(&f.home);
    let vault = open(&f.home, &db);
    vault.set("pw", value.clone()).unwrap();
    assert!(!format!("{vault:?}").contains("hunter2"));
    put_raw_record(&db, "other", &raw_record(&db, "pw"));
    let errors = [
        vault.get("other").unwrap_err(),
        vault.set("bad name", value.clone()).unwrap_err(),
        vault
            .import(vec![("kafclaw.x".into(), value.clone())])
            .unwrap_err(),
        vault
            .set("big", SecretValue::new(vec![b'h'; MAX_VALUE_LEN + 1]))
            .unwrap_err(),
    ];
    for error in errors {
        let shown = format!("{error:?} {error}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(!shown.contains("hhhh"), "{shown}");
    }
    let key = key_material(&fs::read(f.home.key_file()).unwrap());
    assert!(!format!("{vault:?}").contains(&key[..12]));
}

#[actix_rt::test]
async fn secret_vault_actor_answers_every_message() {
    let f = fixture();
    let db = open_db(&f.home);
    let factory = SecretVault::factory(f.home.clone(), db.clone(), None);
    let addr = factory().unwrap().start();
    addr.send(crate::supervisor::Ping).await.unwrap();
    addr.send(SetSecret {
        name: "a".into(),
        value: "1".into(),
    })
    .await
    .unwrap()
    .unwrap();
    let got = addr
        .send(GetSecret { name: "a".into() })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.expose(), b"1");
    let random = addr
        .send(GetOrCreateRandom {
            name: AUDIT_KEY_NAME.into(),
            len: 32,
        })
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(
        addr.send(SetSecret {
            name: AUDIT_KEY_NAME.into(),
            value: "x".into()
        })
        .await
        .unwrap(),
        Err(VaultError::ReservedName { .. })
    ));
    assert!(matches!(
        addr.send(RemoveSecret {
            name: AUDIT_KEY_NAME.into()
        })
        .await
        .unwrap(),
        Err(VaultError::ReservedName { .. })
    ));
    let imported = addr
        .send(ImportSecrets {
            entries: vec![("b".into(), "2".into()), ("c".into(), "3".into())],
        })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(imported, 2);
    let rotation = addr.send(RotateKey).await.unwrap().unwrap();
    assert_eq!(rotation.resealed, 4);
    let listed = addr.send(ListSecrets).await.unwrap().unwrap();
    assert_eq!(listed.len(), 4);
    let verified = addr.send(VerifySecrets).await.unwrap().unwrap();
    assert!(verified.iter().all(|(_, outcome)| outcome.is_ok()));
    assert!(addr
        .send(RemoveSecret { name: "a".into() })
        .await
        .unwrap()
        .unwrap());
    assert_eq!(
        addr.send(GetOrCreateRandom {
            name: AUDIT_KEY_NAME.into(),
            len: 32
        })
        .await
        .unwrap()
        .unwrap(),
        random
    );

    // A panic kills the actor; a fresh one from the factory sees the same secrets.
    let _ = addr
        .send(crate::supervisor::InjectPanic("test".into()))
        .await;
    let restarted = factory().unwrap().start();
    let got = restarted
        .send(GetSecret { name: "b".into() })
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(got.expose(), b"2");
}

#[actix_rt::test]
async fn vault_work_runs_off_the_actor_thread_and_a_panicked_operation_stops_the_actor() {
    use super::actor::WithVault;
    use std::time::{Duration, Instant};

    let f = fixture();
    let db = open_db(&f.home);
    let addr = SecretVault::factory(f.home.clone(), db.clone(), None)()
        .unwrap()
        .start();

    // The operation holds on until a task on the vault's own (single) thread answers it: run
    // inline, it would block that thread and wait in vain.
    let (started_tx, started_rx) = tokio::sync::oneshot::channel::<()>();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let work = addr.send(WithVault(Box::new(move |_| {
        let _ = started_tx.send(());
        go_rx.recv_timeout(Duration::from_secs(5)).is_ok()
    })));
    let answer = async move {
        started_rx.await.unwrap();
        go_tx.send(()).unwrap();
    };
    let (answered, ()) = tokio::join!(work, answer);
    assert!(
        answered.unwrap().unwrap(),
        "the vault's work blocked its actor thread"
    );

    // Messages stay in arrival order: the write is seen by the read sent after it.
    let write = addr.send(SetSecret {
        name: "ordered".into(),
        value: "1".into(),
    });
    let read = addr.send(GetSecret {
        name: "ordered".into(),
    });
    let (written, read) = tokio::join!(write, read);
    written.unwrap().unwrap();
    assert_eq!(read.unwrap().unwrap().unwrap().expose(), b"1");

    // A panicking operation fails closed: an error, and the actor stops for a fresh restart.
    let failed = addr
        .send(WithVault(Box::new(|_| panic!("injected vault panic"))))
        .await
        .unwrap();
    assert!(
        matches!(failed, Err(VaultError::Internal { .. })),
        "{failed:?}"
    );
    let deadline = Instant::now() + Duration::from_secs(5);
    while addr.connected() {
        assert!(Instant::now() < deadline, "the vault actor kept running");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

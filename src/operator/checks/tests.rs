use std::path::Path;

use kafclaw_actors::paths::Home;

use super::isolation::SecretPlaces;
use super::secrets::EnvFile;
use super::*;

#[test]
fn built_in_defaults_know_every_key_they_set() {
    let s = default_settings().expect("defaults load");
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(at(&s.tree, "backup.max_age_days"), 7);
    assert_eq!(at(&s.tree, "log.retention_days"), 0);
    assert_eq!(at(&s.tree, "incidents.owner"), "");
}

#[test]
fn sensitive_variables_by_name_and_by_key_kind() {
    for var in [
        "KAFCLAW_GATEWAY_AUTH_TOKEN",
        "KAFCLAW_PROVIDERS_OPENAI_API_KEY",
        "GITHUB_TOKEN",
        "DB_PASSWORD",
        "AWS_SECRET_ACCESS_KEY",
        "SSH_PRIVATE_KEY",
        "KAFCLAW_CHANNELS_BRIDGES_SLACK_SECRET",
    ] {
        assert!(sensitive_var(var), "{var}");
    }
    for var in [
        "KAFCLAW_SECURITY_TOKEN_MAX_AGE_DAYS",
        "KAFCLAW_GATEWAY_HOST",
        "PATH",
        "KAFCLAW_GATEWAY_AUTH_TOKEN_FILE",
        "KAFCLAW_CHANNELS_BRIDGES_SLACK_SECRET_FILE",
        "KAFCLAW_VAULT_PASSPHRASE_FILE",
        "KAFCLAW_GATEWAY_TLS_KEY_FILE",
    ] {
        assert!(!sensitive_var(var), "{var}");
    }
    assert_eq!(
        vault_name_for("KAFCLAW_GATEWAY_AUTH_TOKEN"),
        "gateway.auth_token"
    );
    assert_eq!(vault_name_for("GITHUB_TOKEN"), "GITHUB_TOKEN");
}

fn check_isolation(home: &Home, path: &str, expect_problem: Option<&str>) {
    let env = HashMap::from([("HOME".to_string(), "/home/gw".to_string())]);
    let got = SecretPlaces::new(home, &env).problem(Path::new(path));
    match expect_problem {
        None => assert!(got.is_none(), "{path}: {got:?}"),
        Some(word) => assert!(
            got.as_deref().is_some_and(|p| p.contains(word)),
            "{path}: {got:?}"
        ),
    }
}

#[test]
fn tool_roots_must_be_isolated() {
    let home = Home::new("/srv/kc");
    check_isolation(&home, "/srv/kc/.kafclaw/workspace", None);
    check_isolation(&home, "/srv/kc/work", None);
    check_isolation(&home, "/srv/other", None);
    check_isolation(&home, "/", Some("root"));
    check_isolation(&home, "/srv/kc", Some("KafClaw root"));
    check_isolation(&home, "/srv", Some("contains the state directory"));
    check_isolation(&home, "/srv/kc/.kafclaw", Some("state directory itself"));
    check_isolation(&home, "/srv/kc/.kafclaw/timeline.db/x", Some("inside"));
    check_isolation(
        &home,
        "/srv/kc/.config/kafclaw",
        Some("contains ~/.config/kafclaw"),
    );
    check_isolation(&home, "/srv/kc/.config", Some("contains ~/.config/kafclaw"));
    check_isolation(&home, "/etc/kafclaw", Some("/etc"));
    check_isolation(&home, "/usr/../etc", Some("/etc"));
    check_isolation(&home, "/var/lib/x", Some("/var"));
    // Everything in the state directory but its workspace and work repo is secret.
    check_isolation(&home, "/srv/kc/.kafclaw/workspace/media", None);
    check_isolation(&home, "/srv/kc/.kafclaw/work-repo/src", None);
    check_isolation(&home, "/srv/kc/.kafclaw/snapshots", Some("snapshots"));
    check_isolation(&home, "/srv/kc/.kafclaw/backups/x", Some("backups"));
    check_isolation(
        &home,
        "/srv/kc/.kafclaw/pre-restore-1",
        Some("state directory"),
    );
    check_isolation(&home, "/srv/kc/.kafclaw/audit.head", Some("inside"));
    // The gateway user's $HOME and its ancestors; a project inside it is fine.
    check_isolation(&home, "/home/gw", Some("$HOME"));
    check_isolation(&home, "/home", Some("$HOME"));
    check_isolation(&home, "/home/gw/project", None);
}

#[test]
fn env_file_scrub_keeps_every_other_byte() {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    std::fs::create_dir_all(home.config_dir()).unwrap();
    let text = "# comment\nexport KAFCLAW_GATEWAY_AUTH_TOKEN='abc'\r\nKAFCLAW_GATEWAY_HOST=0.0.0.0\n\nGITHUB_TOKEN=x\nGITHUB_TOKEN=y\nEMPTY_TOKEN=\nlast line without newline";
    std::fs::write(home.env_file(), text).unwrap();
    let file = EnvFile::read(&home).unwrap();
    let sensitive = file.sensitive();
    assert_eq!(
        sensitive.keys().collect::<Vec<_>>(),
        ["GITHUB_TOKEN", "KAFCLAW_GATEWAY_AUTH_TOKEN"]
    );
    assert_eq!(sensitive["GITHUB_TOKEN"].0, "y", "the last assignment wins");
    let drop: Vec<usize> = sensitive.values().flat_map(|(_, l)| l.clone()).collect();
    assert_eq!(
        file.without(&drop),
        "# comment\nKAFCLAW_GATEWAY_HOST=0.0.0.0\n\nEMPTY_TOKEN=\nlast line without newline"
    );
}

#[test]
fn sealed_key_round_trip_and_wrong_passphrase() {
    let sealed = crate::backup::seal_key(b"key file bytes", "correct horse").unwrap();
    assert!(!sealed.contains("key file bytes"));
    let opened = crate::backup::open_key(&sealed, "correct horse").unwrap();
    assert_eq!(opened.as_slice(), b"key file bytes");
    assert!(crate::backup::open_key(&sealed, "wrong").is_err());
}

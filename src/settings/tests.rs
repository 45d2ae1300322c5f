use super::*;

struct Fixture {
    _dir: tempfile::TempDir,
    home: Home,
    env: HashMap<String, String>,
    flags: FlagOverrides,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let home = Home::new(dir.path());
    Fixture {
        _dir: dir,
        home,
        env: HashMap::new(),
        flags: FlagOverrides::default(),
    }
}

impl Fixture {
    fn config(&self, json: &str) {
        std::fs::create_dir_all(self.home.state_dir()).unwrap();
        std::fs::write(self.home.config_file(), json).unwrap();
    }
    fn env_file(&self, text: &str) {
        std::fs::create_dir_all(self.home.config_dir()).unwrap();
        std::fs::write(self.home.env_file(), text).unwrap();
    }
    fn env(&mut self, k: &str, v: &str) {
        self.env.insert(k.into(), v.into());
    }
    fn load(&self) -> Result<Settings, SettingsError> {
        load(&Sources {
            home: &self.home,
            env: &self.env,
            flags: &self.flags,
        })
    }
}

#[test]
fn defaults_match_the_contract() {
    let s = fixture().load().unwrap();
    assert_eq!(s.gateway.host, "127.0.0.1");
    assert_eq!(s.gateway.port, 18790);
    assert_eq!(s.gateway.dashboard_port, 18791);
    assert!(s.gateway.auth_token.is_none());
    assert_eq!(s.tools["exec"]["restrict_workspace"], true);
    assert_eq!(s.tools["policy"]["max_tier_owner"], 2);
    assert_eq!(s.model.max_tool_iterations, 20);
    assert_eq!(s.supervisor.max_restarts, 5);
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert!(!s.config_file_found);
}

#[test]
fn every_default_key_is_in_the_key_table_and_vice_versa() {
    let mut flat = Vec::new();
    flatten("", &parse_defaults().unwrap(), &mut flat);
    for (key, _) in &flat {
        assert!(keys::lookup(key).is_some(), "{key} missing from KEYS");
    }
    for spec in keys::KEYS {
        let optional = spec.kind == Kind::Secret || spec.key.starts_with("channels.");
        if !optional {
            assert!(
                flat.iter().any(|(k, _)| k == spec.key),
                "{} has no default",
                spec.key
            );
        }
    }
}

#[test]
fn env_beats_env_file_beats_config_beats_defaults_and_flags_beat_all() {
    let mut f = fixture();
    f.config(r#"{"gateway":{"port":20000,"dashboard_port":20001,"host":"127.0.0.2"},"model":{"max_tool_iterations":7}}"#);
    f.env_file(
        "# comment\nexport KAFCLAW_GATEWAY_PORT=21000\nKAFCLAW_GATEWAY_DASHBOARD_PORT='21001'\n",
    );
    f.env("KAFCLAW_GATEWAY_PORT", "22000");
    f.flags.host = Some("127.0.0.3".into());
    let s = f.load().unwrap();
    assert_eq!(s.gateway.port, 22000);
    assert_eq!(
        s.origin("gateway.port"),
        Origin::Env("KAFCLAW_GATEWAY_PORT".into())
    );
    assert_eq!(
        s.gateway.dashboard_port, 21001,
        "env file fills what the environment lacks"
    );
    assert_eq!(s.gateway.host, "127.0.0.3");
    assert_eq!(s.origin("gateway.host"), Origin::Flag("--host"));
    assert_eq!(s.model.max_tool_iterations, 7);
    assert!(s.config_file_found);
}

#[test]
fn runbook_env_names_work_verbatim() {
    let mut f = fixture();
    f.env("KAFCLAW_GATEWAY_HOST", "0.0.0.0");
    f.env("KAFCLAW_GATEWAY_PORT", "18790");
    f.env("KAFCLAW_GATEWAY_DASHBOARD_PORT", "18791");
    f.env("KAFCLAW_GATEWAY_AUTH_TOKEN", "x".repeat(43).as_str());
    f.env("KAFCLAW_TOOLS_EXEC_RESTRICT_WORKSPACE", "false");
    let s = f.load().unwrap();
    assert_eq!(s.gateway.host, "0.0.0.0");
    assert!(!s.gateway.is_loopback());
    assert_eq!(s.gateway.auth_token.unwrap().char_len(), 43);
    assert_eq!(s.tools["exec"]["restrict_workspace"], false);
    assert!(s.warnings.is_empty());
}

/// One bad value → the error line names the key, the source and what is allowed.
fn check_rejects(var: &str, value: &str, expected: &[&str]) {
    let mut f = fixture();
    f.env(var, value);
    let message = f.load().unwrap_err().to_string();
    for part in expected {
        assert!(message.contains(part), "{message:?} lacks {part:?}");
    }
    assert!(!message.contains('\n'));
}

#[test]
fn bad_values_name_key_source_and_allowed() {
    check_rejects(
        "KAFCLAW_GATEWAY_PORT",
        "70000",
        &[
            "gateway.port",
            "KAFCLAW_GATEWAY_PORT in the environment",
            "0-65535",
        ],
    );
    check_rejects(
        "KAFCLAW_TOOLS_EXEC_RESTRICT_WORKSPACE",
        "yes",
        &["tools.exec.restrict_workspace", "true, false"],
    );
    check_rejects(
        "KAFCLAW_TOOLS_POLICY_MAX_TIER_EXTERNAL",
        "3",
        &["tools.policy.max_tier_external", "0-2"],
    );
    check_rejects("KAFCLAW_LOG_FORMAT", "xml", &["log.format", "text, json"]);
}

#[test]
fn edge_lists_are_checked_entry_by_entry() {
    check_rejects(
        "KAFCLAW_GATEWAY_ALLOWED_HOSTS",
        "ok.example.com, https://bad.example.com",
        &[
            "gateway.allowed_hosts",
            "\"https://bad.example.com\"",
            "host name",
        ],
    );
    check_rejects(
        "KAFCLAW_GATEWAY_TRUSTED_PROXIES",
        "10.0.0.0/8,10.0.0.1/8",
        &["gateway.trusted_proxies", "\"10.0.0.1/8\"", "host bits"],
    );
    check_rejects(
        "KAFCLAW_GATEWAY_BODY_TIMEOUT_SECONDS",
        "0",
        &["gateway.body_timeout_seconds", "1-3600"],
    );
    let mut f = fixture();
    f.env("KAFCLAW_GATEWAY_ALLOWED_HOSTS", "a.example, b.example:8443");
    f.env("KAFCLAW_GATEWAY_TRUSTED_PROXIES", "127.0.0.1, 10.0.0.0/8");
    let s = f.load().unwrap();
    assert_eq!(s.gateway.allowed_hosts, ["a.example", "b.example:8443"]);
    assert_eq!(s.gateway.trusted_proxies, ["127.0.0.1", "10.0.0.0/8"]);
    let defaults = fixture().load().unwrap();
    assert_eq!(defaults.gateway.body_timeout_seconds, 10);
    assert!(defaults.gateway.allowed_hosts.is_empty());
    assert!(defaults.gateway.trusted_proxies.is_empty());
}

#[test]
fn a_bad_config_file_value_names_the_file() {
    let f = fixture();
    f.config(r#"{"gateway":{"port":"eighty"}}"#);
    let message = f.load().unwrap_err().to_string();
    assert!(message.contains("gateway.port"));
    assert!(message.contains("config.json"));
}

#[test]
fn invalid_json_is_a_clear_error() {
    let f = fixture();
    f.config("{not json");
    assert!(f.load().unwrap_err().to_string().contains("not valid JSON"));
}

#[test]
fn unknown_keys_and_variables_are_collected_with_suggestions() {
    let mut f = fixture();
    f.config(r#"{"gateway":{"prot":1}}"#);
    f.env("KAFCLAW_GATEWAY_AUTH_TOKN", "x");
    f.env("KAFCLAW_HOME", "/elsewhere");
    f.env("PATH", "/bin");
    let s = f.load().unwrap();
    assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
    let text: Vec<String> = s.warnings.iter().map(ToString::to_string).collect();
    assert!(text[0].contains("gateway.prot") && text[0].contains("gateway.port"));
    assert!(
        text[1].contains("KAFCLAW_GATEWAY_AUTH_TOKN")
            && text[1].contains("KAFCLAW_GATEWAY_AUTH_TOKEN")
    );
}

#[test]
fn bridge_keys_from_config_and_env() {
    let mut f = fixture();
    f.config(r#"{"channels":{"bridges":{"slack":{"outbound_url":"http://127.0.0.1:9/out"}}}}"#);
    f.env("KAFCLAW_CHANNELS_BRIDGES_SLACK_SECRET", "s3cret");
    let s = f.load().unwrap();
    assert_eq!(s.channels["bridges"]["slack"]["secret"], "s3cret");
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
}

#[test]
fn empty_secret_is_unset_with_a_warning() {
    let mut f = fixture();
    f.env("KAFCLAW_GATEWAY_AUTH_TOKEN", "");
    let s = f.load().unwrap();
    assert!(s.gateway.auth_token.is_none());
    assert!(matches!(s.warnings[0], SettingsWarning::EmptySecret { .. }));
}

#[test]
fn secret_values_never_appear_in_errors() {
    let f = fixture();
    f.config(r#"{"gateway":{"auth_token":12345678901234567890}}"#);
    let message = f.load().unwrap_err().to_string();
    assert!(!message.contains("12345678901234567890"), "{message}");
}

#[test]
fn env_file_lines() {
    let cases = [
        ("", EnvLine::Blank),
        ("  # note", EnvLine::Blank),
        ("A=1", EnvLine::Pair("A".into(), "1".into())),
        (
            "export B = \"two words\"",
            EnvLine::Pair("B".into(), "two words".into()),
        ),
        ("C='x'", EnvLine::Pair("C".into(), "x".into())),
        ("D=\"", EnvLine::Pair("D".into(), "\"".into())),
        ("no equals", EnvLine::Bad),
        ("1A=x", EnvLine::Bad),
        ("A-B=x", EnvLine::Bad),
    ];
    for (line, expected) in cases {
        assert_eq!(parse_env_line(line), expected, "{line:?}");
    }
}

#[test]
fn loopback_hosts() {
    for (host, loopback) in [
        ("127.0.0.1", true),
        ("127.1.2.3", true),
        ("::1", true),
        ("[::1]", true),
        ("localhost", true),
        ("0.0.0.0", false),
        ("::", false),
        ("192.168.1.2", false),
        ("example.com", false),
    ] {
        assert_eq!(is_loopback_host(host), loopback, "{host}");
    }
}

#[test]
fn contract_names_without_unit_suffix_are_aliases() {
    let mut f = fixture();
    f.config(r#"{"security":{"auth_lockout":{"window":"2m","lockout":600},"token_max_age":"30d"},"supervisor":{"window":"90s"}}"#);
    f.env("KAFCLAW_BACKUP_MAX_AGE", "14d");
    let s = f.load().unwrap();
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);
    assert_eq!(s.security.auth_lockout.window_seconds, 120);
    assert_eq!(s.security.auth_lockout.lockout_seconds, 600);
    assert_eq!(s.security.token_max_age_days, 30);
    assert_eq!(s.supervisor.window_seconds, 90);
    assert_eq!(
        s.origin("backup.max_age_days"),
        Origin::Env("KAFCLAW_BACKUP_MAX_AGE".into())
    );

    let mut bad = fixture();
    bad.env("KAFCLAW_SUPERVISOR_WINDOW", "soon");
    let message = bad.load().unwrap_err().to_string();
    assert!(message.contains("supervisor.window_seconds"), "{message}");
}

fn private_file(dir: &Path, name: &str, text: &str, mode: u32) -> PathBuf {
    use std::io::Write;
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let path = dir.join(name);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(&path)
        .unwrap();
    f.write_all(text.as_bytes()).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[test]
fn secret_files_sit_in_the_environment_slot() {
    let files = tempfile::tempdir().unwrap();
    let creds = tempfile::tempdir().unwrap();
    let token = private_file(files.path(), "token", "from-file\n", 0o600);
    private_file(
        creds.path(),
        "gateway.auth_token",
        "from-credential\n",
        0o400,
    );
    private_file(
        creds.path(),
        "KAFCLAW_PROVIDERS_OPENAI_API_KEY",
        "key\r\n",
        0o400,
    );

    let mut f = fixture();
    f.config(r#"{"gateway":{"auth_token":"from-config"}}"#);
    f.env_file("KAFCLAW_GATEWAY_AUTH_TOKEN=from-env-file\n");
    f.env("CREDENTIALS_DIRECTORY", creds.path().to_str().unwrap());
    let s = f.load().unwrap();
    assert_eq!(
        s.gateway.auth_token.as_ref().unwrap().expose(),
        "from-credential"
    );
    assert!(matches!(
        s.origin("gateway.auth_token"),
        Origin::Credential(_)
    ));
    assert_eq!(s.providers.openai.api_key.as_ref().unwrap().expose(), "key");
    assert!(s.origin("gateway.auth_token").is_environment());

    f.env("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE", token.to_str().unwrap());
    let s = f.load().unwrap();
    assert_eq!(s.gateway.auth_token.as_ref().unwrap().expose(), "from-file");
    assert_eq!(
        s.origin("gateway.auth_token"),
        Origin::SecretFile("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE".into(), token.clone())
    );
    assert!(s.warnings.is_empty(), "{:?}", s.warnings);

    f.env("KAFCLAW_GATEWAY_AUTH_TOKEN", "from-env");
    let e = f.load().unwrap_err().to_string();
    assert!(
        e.contains("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE") && e.contains("set one"),
        "{e}"
    );
    assert!(!e.contains("from-"), "{e}");
}

#[test]
fn file_variables_exist_only_for_secrets() {
    use secret_files::secret_key_of_file_var as key_of;
    assert_eq!(
        key_of("KAFCLAW_GATEWAY_AUTH_TOKEN_FILE").as_deref(),
        Some("gateway.auth_token")
    );
    assert_eq!(
        key_of("KAFCLAW_CHANNELS_BRIDGES_SLACK_SECRET_FILE").as_deref(),
        Some("channels.bridges.slack.secret")
    );
    assert_eq!(key_of("KAFCLAW_GATEWAY_HOST_FILE"), None);
    assert_eq!(key_of("KAFCLAW_GATEWAY_TLS_KEY_FILE"), None);
    let mut f = fixture();
    f.env("KAFCLAW_GATEWAY_HOST_FILE", "/etc/passwd");
    let s = f.load().unwrap();
    assert_eq!(s.gateway.host, "127.0.0.1");
    assert!(s
        .warnings
        .iter()
        .any(|w| matches!(w, SettingsWarning::UnknownEnv { var, .. } if var == "KAFCLAW_GATEWAY_HOST_FILE")));
}

#[test]
fn the_tls_mode_is_one_of_three_words() {
    let mut f = fixture();
    assert_eq!(f.load().unwrap().gateway.tls.mode, TlsMode::Off);
    f.env("KAFCLAW_GATEWAY_TLS_MODE", "proxy");
    assert_eq!(f.load().unwrap().gateway.tls.mode, TlsMode::Proxy);
    f.env("KAFCLAW_GATEWAY_TLS_MODE", "on");
    let e = f.load().unwrap_err().to_string();
    assert!(
        e.contains("gateway.tls.mode") && e.contains("native, proxy, off"),
        "{e}"
    );
}

#[test]
fn retention_minutes_replaces_the_days_when_set() {
    let mut f = fixture();
    let s = f.load().unwrap();
    assert_eq!(
        s.store.retention(),
        std::time::Duration::from_secs(30 * 86_400)
    );
    assert_eq!(s.store.retention_label(), "30 days");
    f.env("KAFCLAW_STORE_RETENTION_MINUTES", "5");
    let s = f.load().unwrap();
    assert_eq!(s.store.retention(), std::time::Duration::from_secs(300));
    assert_eq!(s.store.retention_label(), "5 minutes");
    f.env("KAFCLAW_STORE_RETENTION_MINUTES", "-1");
    assert!(f.load().is_err(), "a negative retention is refused");
}

#[test]
fn fleet_settings_are_off_by_default_and_checked() {
    let defaults = fixture().load().unwrap();
    assert!(!defaults.fleet.enabled, "fleet mode is opt-in");
    assert!(defaults.fleet.nats_urls.is_empty());
    assert_eq!(defaults.fleet.stream_replicas, 1);
    assert!(defaults.fleet.credentials.is_none());
    assert!(
        !defaults.fleet.node_id().is_empty(),
        "the host name by default"
    );
    check_rejects(
        "KAFCLAW_FLEET_STREAM_REPLICAS",
        "2",
        &["fleet.stream_replicas", "\"2\"", "allowed: 1, 3"],
    );
    check_rejects(
        "KAFCLAW_FLEET_ANCHOR_EVERY_RECORDS",
        "0",
        &["fleet.anchor_every_records", "1-1000000"],
    );
    let mut f = fixture();
    f.env("KAFCLAW_FLEET_ENABLED", "true");
    f.env(
        "KAFCLAW_FLEET_NATS_URLS",
        "nats://10.0.0.1:4222, nats://10.0.0.2:4222",
    );
    f.env("KAFCLAW_FLEET_NODE_ID", "gw-2");
    f.env("KAFCLAW_FLEET_STREAM_REPLICAS", "3");
    f.env("KAFCLAW_FLEET_CREDENTIALS", "nats-token-value");
    let s = f.load().unwrap();
    assert!(s.fleet.enabled);
    assert_eq!(
        s.fleet.nats_urls,
        ["nats://10.0.0.1:4222", "nats://10.0.0.2:4222"]
    );
    assert_eq!(s.fleet.node_id(), "gw-2");
    assert_eq!(s.fleet.stream_replicas, 3);
    assert_eq!(
        s.fleet.credentials.as_ref().map(|c| c.expose()),
        Some("nats-token-value")
    );
    assert!(!format!("{:?}", s.fleet).contains("nats-token-value"));
}

/// Regression (fuzz `settings_load`): the raw `channels` tree kept the channel secrets in
/// plain text, and `Settings`' `Debug` printed it. Every secret key of the key table, given
/// in every source, stays out of the `Debug` form.
#[test]
fn debug_of_the_settings_never_shows_a_secret_value() {
    let mut f = fixture();
    f.config(
        r#"{"channels":{"whatsapp":{"app_secret":"cfg-app-secret-1"},
            "bridges":{"slack":{"enabled":true,"secret":"cfg-bridge-secret-2"}}},
            "fleet":{"credentials":"cfg-fleet-cred-3"}}"#,
    );
    f.env_file("KAFCLAW_CHANNELS_WHATSAPP_ACCESS_TOKEN=file-access-token-4\n");
    f.env(
        "KAFCLAW_CHANNELS_WHATSAPP_VERIFY_TOKEN",
        "env-verify-token-5",
    );
    f.env(
        "KAFCLAW_GATEWAY_AUTH_TOKEN",
        "env-gateway-token-6-long-enough-xx",
    );
    f.env("KAFCLAW_PROVIDERS_OPENAI_API_KEY", "env-openai-key-7");
    let settings = f.load().expect("settings load");
    let shown = format!("{settings:?} {settings:#?}");
    for secret in [
        "cfg-app-secret-1",
        "cfg-bridge-secret-2",
        "cfg-fleet-cred-3",
        "file-access-token-4",
        "env-verify-token-5",
        "env-gateway-token-6",
        "env-openai-key-7",
    ] {
        assert!(!shown.contains(secret), "{secret} is shown in Debug");
    }
    // Still there for the components that use them, and the rest is still printed.
    assert_eq!(
        settings.channels["whatsapp"]["app_secret"],
        "cfg-app-secret-1"
    );
    assert!(shown.contains("dashboard_port"), "{shown}");
    assert!(shown.contains("slack"), "{shown}");
}

/// "did you mean" compares what differs, not the namespace every name shares: an unrelated
/// `KAFCLAW_FOO_BAR` was offered `KAFCLAW_LOG_DIR` because `KAFCLAW_` made them look close.
#[test]
fn a_suggestion_is_offered_only_for_a_near_miss() {
    let vars = [
        "KAFCLAW_LOG_DIR",
        "KAFCLAW_GATEWAY_PORT",
        "KAFCLAW_LOG_LEVEL",
    ];
    let near = |name: &str| keys::nearest(name, vars.iter().copied());
    assert_eq!(near("KAFCLAW_FOO_BAR"), None);
    assert_eq!(near("KAFCLAW_XYZ"), None);
    assert_eq!(near("KAFCLAW_GATEWAY_PROT"), Some("KAFCLAW_GATEWAY_PORT"));
    assert_eq!(near("KAFCLAW_GATEWAY_PORTT"), Some("KAFCLAW_GATEWAY_PORT"));
    assert_eq!(near("KAFCLAW_LOG_LEVLE"), Some("KAFCLAW_LOG_LEVEL"));
    let keys = ["gateway.port", "gateway.host", "log.level"];
    let key = |name: &str| keys::nearest(name, keys.iter().copied());
    assert_eq!(key("gateway.prot"), Some("gateway.port"));
    assert_eq!(key("gateway.hots"), Some("gateway.host"));
    assert_eq!(key("memory.size"), None);
}

/// A channel secret written with the wrong JSON type (a numeric verify token, an array)
/// must not be echoed by the channel-settings error serde builds ("invalid type: integer
/// `918273645`, expected a string"): that line reaches stderr and the log.
#[test]
fn channel_secrets_of_the_wrong_type_never_appear_in_errors() {
    for (json, secret) in [
        (
            r#"{"channels":{"whatsapp":{"enabled":true,"verify_token":918273645,"app_secret":"a","access_token":"b","phone_number_id":"1"}}}"#,
            "918273645",
        ),
        (
            r#"{"channels":{"whatsapp":{"app_secret":["cfg-app-secret-7"]}}}"#,
            "cfg-app-secret-7",
        ),
        (
            r#"{"channels":{"bridges":{"slack":{"secret":777666555444,"outbound_url":"http://127.0.0.1:9/out"}}}}"#,
            "777666555444",
        ),
    ] {
        let f = fixture();
        f.config(json);
        let message = match f.load() {
            Err(e) => e.to_string(),
            Ok(s) => crate::channels::ChannelsSettings::from_settings(&s)
                .expect_err("a secret of the wrong type is refused"),
        };
        assert!(!message.contains(secret), "{message}");
    }
}

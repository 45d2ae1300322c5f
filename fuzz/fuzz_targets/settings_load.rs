//! The settings loader: the built-in TOML defaults, `config.json`, the `.env` file and the
//! process environment, layered by `kafclaw::settings::load`.
//!
//! Properties: loading is deterministic; an error is one line; a secret value (planted in the
//! environment, the env file or the config file) never appears in an error, a warning or the
//! settings' `Debug` form (regression test: `settings::tests::debug_of_the_settings_never_shows_a_secret_value`).
#![no_main]

use std::collections::HashMap;
use std::fs;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use kafclaw::settings::{load, FlagOverrides, Sources};
use kafclaw_actors::paths::Home;
use libfuzzer_sys::fuzz_target;

const VARS: [&str; 8] = [
    "KAFCLAW_GATEWAY_PORT",
    "KAFCLAW_GATEWAY_HOST",
    "KAFCLAW_LOG_LEVEL",
    "KAFCLAW_TOOLS_EXEC_ALLOW",
    "KAFCLAW_CHANNELS_WHATSAPP_ENABLED",
    "KAFCLAW_MODEL_HISTORY_MESSAGES",
    "KAFCLAW_AUDIT_SEGMENT_MAX_BYTES",
    "KAFCLAW_GATEWAY_TRUSTED_PROXIES",
];

const SECRETS: [(&str, &str); 4] = [
    ("KAFCLAW_GATEWAY_AUTH_TOKEN", "gateway.auth_token"),
    (
        "KAFCLAW_PROVIDERS_OPENAI_API_KEY",
        "providers.openai.api_key",
    ),
    (
        "KAFCLAW_CHANNELS_WHATSAPP_APP_SECRET",
        "channels.whatsapp.app_secret",
    ),
    (
        "KAFCLAW_CHANNELS_WHATSAPP_ACCESS_TOKEN",
        "channels.whatsapp.access_token",
    ),
];

#[derive(Arbitrary, Debug)]
enum Place {
    Process,
    EnvFile,
    ConfigFile,
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    config: Option<&'a str>,
    env_file: Option<&'a str>,
    vars: Vec<(u8, &'a str)>,
    raw_vars: Vec<(&'a str, &'a str)>,
    secret: Option<(u8, Place, &'a str)>,
    port: Option<u16>,
    host: Option<&'a str>,
}

fn home() -> &'static Home {
    static HOME: OnceLock<Home> = OnceLock::new();
    HOME.get_or_init(|| {
        let root = fs::canonicalize(tempfile::tempdir().unwrap().keep()).unwrap();
        let home = Home::new(root);
        home.ensure_state_dirs().unwrap();
        home
    })
}

fn nested(key: &str, value: &str) -> serde_json::Value {
    let mut v = serde_json::Value::from(value);
    for part in key.rsplit('.') {
        let mut map = serde_json::Map::new();
        map.insert(part.to_string(), v);
        v = serde_json::Value::Object(map);
    }
    v
}

fn structured(input: Input<'_>) {
    let home = home();
    let mut env: HashMap<String, String> = HashMap::new();
    for (i, value) in input.vars.iter().take(8) {
        env.insert(VARS[usize::from(*i) % VARS.len()].into(), value.to_string());
    }
    for (name, value) in input.raw_vars.iter().take(4) {
        // Variables that name files or directories to read are left out: the fuzzer would
        // point them at the machine's files.
        if name.ends_with("_FILE") || name.contains("CREDENTIALS") || name.contains('\0') {
            continue;
        }
        env.insert(name.to_string(), value.to_string());
    }
    env.retain(|k, v| !k.is_empty() && !k.contains(['=', '\0']) && !v.contains('\0'));
    let mut config = input.config.map(str::to_string);
    let mut env_file = input.env_file.map(str::to_string);
    let mut secret_value = None;
    let mut planted_in_env = 0;
    if let Some((which, place, value)) = &input.secret {
        let (var, key) = SECRETS[usize::from(*which) % SECRETS.len()];
        let value = format!(
            "fz-secret-{}",
            value.replace(['\n', '\r', '\0', '"', '\''], "")
        );
        match place {
            Place::Process => {
                env.insert(var.into(), value.clone());
                planted_in_env = 1;
            }
            Place::EnvFile => {
                let mut text = env_file.unwrap_or_default();
                text.push_str(&format!("\n{var}={value}\n"));
                env_file = Some(text);
            }
            Place::ConfigFile => config = Some(nested(key, &value).to_string()),
        }
        secret_value = Some(value);
    }
    let write = |path: std::path::PathBuf, text: &Option<String>| match text {
        Some(text) => fs::write(path, text).unwrap(),
        None => {
            let _ = fs::remove_file(path);
        }
    };
    write(home.config_file(), &config);
    write(home.env_file(), &env_file);
    let flags = FlagOverrides {
        host: input.host.map(str::to_string),
        port: input.port,
        dashboard_port: None,
        log_format: None,
    };
    let sources = Sources {
        home,
        env: &env,
        flags: &flags,
    };
    let first = load(&sources);
    let second = load(&sources);
    let text = |r: &Result<kafclaw::settings::Settings, kafclaw::settings::SettingsError>| match r {
        Ok(settings) => {
            let warnings: Vec<String> = settings.warnings.iter().map(|w| w.to_string()).collect();
            format!("{settings:?}\n{}", warnings.join("\n"))
        }
        Err(e) => e.to_string(),
    };
    assert_eq!(text(&first), text(&second), "loading is not deterministic");
    // Errors, warnings and the whole `Debug` form.
    let shown = text(&first);
    if let Err(e) = &first {
        assert!(!e.to_string().contains('\n'), "{e}");
    }
    if let Some(secret) = secret_value {
        // Only meaningful when the fuzzer's other inputs do not carry the same bytes.
        let elsewhere = input.config.is_some_and(|c| c.contains(&secret))
            || input.env_file.is_some_and(|c| c.contains(&secret))
            || env.values().filter(|v| v.contains(&secret)).count() > planted_in_env
            || input.host.is_some_and(|h| h.contains(&secret));
        if !elsewhere {
            assert!(!shown.contains(&secret), "the secret is shown: {shown}");
        }
    }
}

/// Raw mode: the bytes are `config.json`.
fn raw(bytes: &[u8]) {
    if let Ok(config) = std::str::from_utf8(bytes) {
        structured(Input {
            config: Some(config),
            env_file: None,
            vars: Vec::new(),
            raw_vars: Vec::new(),
            secret: None,
            port: None,
            host: None,
        });
    }
}

fuzz_target!(|data: &[u8]| kafclaw_fuzz::two_modes(data, raw, structured));

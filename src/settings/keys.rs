//! The table of every settings key: its kind (how values are checked) and whether it is a
//! secret. The single source of truth for validation, env names and "unknown key" warnings.

/// How a key's value is checked and converted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    /// Any string.
    Str,
    /// A secret string (never printed; may also come from the vault).
    Secret,
    /// `true` or `false`.
    Bool,
    /// A TCP port 0-65535 (0 = any free port).
    Port,
    /// An unsigned integer in an inclusive range.
    UInt { min: u64, max: u64 },
    /// One of a fixed set of unsigned integers.
    UIntOneOf(&'static [u64]),
    /// A list of strings (comma-separated in the environment).
    List,
    /// One of a fixed set of words.
    OneOf(&'static [&'static str]),
    /// A URL starting with http:// or https:// (empty allowed where the default is empty).
    Url,
    /// A positive number.
    Float,
    /// A list of host names or IP addresses, each with an optional `:port`.
    HostList,
    /// A list of CIDRs or IP addresses.
    CidrList,
}

/// One settings key. `*` in a path segment matches one name (a bridge's name).
#[derive(Clone, Copy, Debug)]
pub struct KeySpec {
    /// Dotted JSON path.
    pub key: &'static str,
    /// Value rule.
    pub kind: Kind,
}

const fn k(key: &'static str, kind: Kind) -> KeySpec {
    KeySpec { key, kind }
}

const TIER: Kind = Kind::UInt { min: 0, max: 2 };
const POLICY: Kind = Kind::OneOf(&["deny", "pairing", "open"]);
const SCOPE: Kind = Kind::OneOf(&["room", "thread", "user", "account", "channel"]);

/// Every key KafClaw knows.
pub const KEYS: &[KeySpec] = &[
    k("gateway.host", Kind::Str),
    k("gateway.port", Kind::Port),
    k("gateway.dashboard_port", Kind::Port),
    k("gateway.auth_token", Kind::Secret),
    k("gateway.cors_origins", Kind::List),
    k(
        "gateway.max_body_bytes",
        Kind::UInt {
            min: 1024,
            max: 64 << 20,
        },
    ),
    k(
        "gateway.webhook_max_body_bytes",
        Kind::UInt {
            min: 1024,
            max: 64 << 20,
        },
    ),
    k(
        "gateway.request_timeout_seconds",
        Kind::UInt { min: 1, max: 300 },
    ),
    k(
        "gateway.max_connections",
        Kind::UInt {
            min: 1,
            max: 1_000_000,
        },
    ),
    k("gateway.workers", Kind::UInt { min: 0, max: 64 }),
    k("gateway.allowed_hosts", Kind::HostList),
    k("gateway.trusted_proxies", Kind::CidrList),
    k(
        "gateway.body_timeout_seconds",
        Kind::UInt { min: 1, max: 3600 },
    ),
    k(
        "gateway.max_concurrent_chats",
        Kind::UInt {
            min: 1,
            max: 100_000,
        },
    ),
    k(
        "gateway.max_connections_per_ip",
        Kind::UInt {
            min: 0,
            max: 1_000_000,
        },
    ),
    k(
        "gateway.max_unauthenticated_bodies",
        Kind::UInt {
            min: 1,
            max: 100_000,
        },
    ),
    k(
        "gateway.shutdown_grace_seconds",
        Kind::UInt { min: 1, max: 300 },
    ),
    k("gateway.tls.mode", Kind::OneOf(&["native", "proxy", "off"])),
    k("gateway.tls.cert_file", Kind::Str),
    k("gateway.tls.key_file", Kind::Str),
    k("providers.openai.api_base", Kind::Url),
    k("providers.openai.model", Kind::Str),
    k("providers.openai.api_key", Kind::Secret),
    k(
        "providers.openai.timeout_seconds",
        Kind::UInt { min: 1, max: 3600 },
    ),
    k(
        "providers.openai.max_retries",
        Kind::UInt { min: 0, max: 10 },
    ),
    k(
        "budgets.daily_tokens",
        Kind::UInt {
            min: 0,
            max: u64::MAX,
        },
    ),
    k(
        "budgets.channel_daily_tokens",
        Kind::UInt {
            min: 0,
            max: u64::MAX,
        },
    ),
    k(
        "budgets.sender_daily_tokens",
        Kind::UInt {
            min: 0,
            max: u64::MAX,
        },
    ),
    k("model.max_tool_iterations", Kind::UInt { min: 1, max: 200 }),
    k(
        "model.max_tool_calls_per_round",
        Kind::UInt { min: 1, max: 1024 },
    ),
    k(
        "model.max_turn_seconds",
        Kind::UInt {
            min: 1,
            max: 86_400,
        },
    ),
    k(
        "model.history_messages",
        Kind::UInt {
            min: 0,
            max: 10_000,
        },
    ),
    k("tools.exec.allow", Kind::List),
    k(
        "tools.exec.timeout_seconds",
        Kind::UInt { min: 1, max: 3600 },
    ),
    k("tools.exec.restrict_workspace", Kind::Bool),
    k(
        "tools.exec.sandbox",
        Kind::OneOf(&["auto", "landlock", "off"]),
    ),
    k(
        "tools.exec.max_output_bytes",
        Kind::UInt {
            min: 1024,
            max: 16 << 20,
        },
    ),
    k("tools.policy.max_tier_owner", TIER),
    k("tools.policy.max_tier_external", TIER),
    k(
        "tools.policy.approval_timeout_seconds",
        Kind::UInt {
            min: 1,
            max: 86_400,
        },
    ),
    k("paths.workspace", Kind::Str),
    k("paths.work_repo", Kind::Str),
    k("supervisor.max_restarts", Kind::UInt { min: 0, max: 1000 }),
    k(
        "supervisor.window_seconds",
        Kind::UInt {
            min: 1,
            max: 86_400,
        },
    ),
    k(
        "security.auth_lockout.max_failures",
        Kind::UInt {
            min: 1,
            max: 1_000_000,
        },
    ),
    k(
        "security.auth_lockout.window_seconds",
        Kind::UInt {
            min: 1,
            max: 86_400,
        },
    ),
    k(
        "security.auth_lockout.lockout_seconds",
        Kind::UInt {
            min: 1,
            max: 86_400,
        },
    ),
    k(
        "security.token_max_age_days",
        Kind::UInt { min: 1, max: 3650 },
    ),
    k(
        "audit.segment_max_bytes",
        Kind::UInt {
            min: 4096,
            max: 1 << 40,
        },
    ),
    k("log.level", Kind::Str),
    k("log.format", Kind::OneOf(&["text", "json"])),
    // Channels (CONTRACT §5). Validated now so a typo is caught before the channels land.
    k("channels.whatsapp.enabled", Kind::Bool),
    k("channels.whatsapp.phone_number_id", Kind::Str),
    k("channels.whatsapp.verify_token", Kind::Secret),
    k("channels.whatsapp.app_secret", Kind::Secret),
    k("channels.whatsapp.access_token", Kind::Secret),
    k("channels.whatsapp.graph_base", Kind::Url),
    k("channels.whatsapp.api_version", Kind::Str),
    k("channels.whatsapp.owner_ids", Kind::List),
    k("channels.whatsapp.allowlist", Kind::List),
    k("channels.whatsapp.denylist", Kind::List),
    k("channels.whatsapp.unknown_senders", POLICY),
    k("channels.whatsapp.session_scope", SCOPE),
    k("channels.whatsapp.require_mention", Kind::Bool),
    k(
        "channels.whatsapp.resend_after_seconds",
        Kind::UInt {
            min: 1,
            max: 86_400,
        },
    ),
    // Messages beyond plain text (issue 19).
    k("channels.whatsapp.react_to_reactions", Kind::Bool),
    k("channels.whatsapp.unsupported_reply", Kind::Str),
    k(
        "channels.whatsapp.media.max_bytes",
        Kind::UInt {
            min: 1,
            max: 100 << 20,
        },
    ),
    k("channels.whatsapp.media.allow_types", Kind::List),
    k(
        "channels.whatsapp.media.timeout_seconds",
        Kind::UInt { min: 1, max: 600 },
    ),
    k(
        "channels.whatsapp.media.retries",
        Kind::UInt { min: 0, max: 10 },
    ),
    k("channels.bridges.*.enabled", Kind::Bool),
    k("channels.bridges.*.secret", Kind::Secret),
    k("channels.bridges.*.outbound_url", Kind::Url),
    k("channels.bridges.*.owner_ids", Kind::List),
    k("channels.bridges.*.allowlist", Kind::List),
    k("channels.bridges.*.denylist", Kind::List),
    k("channels.bridges.*.unknown_senders", POLICY),
    k("channels.bridges.*.session_scope", SCOPE),
    k("channels.bridges.*.require_mention", Kind::Bool),
    k(
        "channels.bridges.*.resend_after_seconds",
        Kind::UInt {
            min: 1,
            max: 86_400,
        },
    ),
    // Fleet mode on NATS JetStream (issue 18; docs/fleet.md).
    k("fleet.enabled", Kind::Bool),
    k("fleet.nats_urls", Kind::List),
    k("fleet.node_id", Kind::Str),
    k("fleet.credentials", Kind::Secret),
    k("fleet.control_key", Kind::Secret),
    k("fleet.tls_ca_file", Kind::Str),
    k("fleet.stream_replicas", Kind::UIntOneOf(&[1, 3])),
    k(
        "fleet.anchor_every_records",
        Kind::UInt {
            min: 1,
            max: 1_000_000,
        },
    ),
    k(
        "fleet.anchor_every_seconds",
        Kind::UInt {
            min: 1,
            max: 86_400,
        },
    ),
    // Bounded state: what the background pruner keeps (de-duplication keys at least 7 days).
    k("store.retention_days", Kind::UInt { min: 1, max: 3650 }),
    // A retention shorter than a day (soaks, privacy-minded deployments); 0 = retention_days.
    k(
        "store.retention_minutes",
        Kind::UInt {
            min: 0,
            max: 5_256_000,
        },
    ),
    // The free-space reserve of the state directory (0 = off).
    k(
        "store.min_free_mib",
        Kind::UInt {
            min: 0,
            max: 1_048_576,
        },
    ),
    // Messages a channel keeps unfinished (pending, held, processing) before its webhook
    // answers 503 + Retry-After: the bound on the backlog on disk.
    k(
        "store.max_pending",
        Kind::UInt {
            min: 1,
            max: 10_000_000,
        },
    ),
    // The store's page cache: sled's only memory bound (its default is 1 GiB).
    k(
        "store.cache_mib",
        Kind::UInt {
            min: 1,
            max: 65_536,
        },
    ),
    // Operator readiness, checked by `kafclaw security check` (runbook §5, §7).
    k("backup.max_age_days", Kind::UInt { min: 1, max: 3650 }),
    k("log.retention_days", Kind::UInt { min: 0, max: 3650 }),
    // Skills (runbook §9).
    k("skills.enabled", Kind::Bool),
    k("skills.scope", Kind::OneOf(&["selected", "all"])),
    k(
        "skills.runtime_isolation",
        Kind::OneOf(&["auto", "host", "strict"]),
    ),
    k("skills.strict_image", Kind::Str),
    k("skills.link_policy.allow_domains", Kind::List),
    k(
        "skills.link_policy.max_links",
        Kind::UInt {
            min: 0,
            max: 10_000,
        },
    ),
    k("log.dir", Kind::Str),
    k("incidents.owner", Kind::Str),
    k("incidents.webhook_url", Kind::Url),
    k(
        "incidents.auth_failures_per_ip",
        Kind::UInt {
            min: 0,
            max: 1_000_000,
        },
    ),
    k(
        "incidents.auth_failures_window_seconds",
        Kind::UInt {
            min: 1,
            max: 86_400,
        },
    ),
    k(
        "incidents.auth_failures_global",
        Kind::UInt {
            min: 0,
            max: 1_000_000,
        },
    ),
    k(
        "incidents.unknown_senders_per_channel",
        Kind::UInt {
            min: 0,
            max: 1_000_000,
        },
    ),
    k(
        "incidents.unknown_senders_window_seconds",
        Kind::UInt {
            min: 1,
            max: 86_400,
        },
    ),
    k(
        "incidents.denied_high_risk_per_sender",
        Kind::UInt {
            min: 0,
            max: 1_000_000,
        },
    ),
    k(
        "incidents.denied_high_risk_window_seconds",
        Kind::UInt {
            min: 1,
            max: 86_400,
        },
    ),
    k("incidents.token_spike_factor", Kind::Float),
    k(
        "incidents.token_spike_window_seconds",
        Kind::UInt {
            min: 1,
            max: 86_400,
        },
    ),
    k(
        "incidents.token_spike_min_tokens",
        Kind::UInt {
            min: 0,
            max: u64::MAX,
        },
    ),
];

/// `KAFCLAW_*` variables that are not settings keys but are read by the program.
#[cfg(not(feature = "test-hooks"))]
pub const SPECIAL_ENV: &[&str] = &[
    "KAFCLAW_HOME",
    "KAFCLAW_VAULT_PASSPHRASE",
    "KAFCLAW_VAULT_PASSPHRASE_FILE",
];
/// `KAFCLAW_*` variables that are not settings keys but are read by the program (test-hooks
/// builds also read the crash point of `kafclaw_actors::testpoint`).
#[cfg(feature = "test-hooks")]
pub const SPECIAL_ENV: &[&str] = &[
    "KAFCLAW_HOME",
    "KAFCLAW_VAULT_PASSPHRASE",
    "KAFCLAW_VAULT_PASSPHRASE_FILE",
    kafclaw_actors::testpoint::CRASH_ENV,
];

/// The spec of `key`, matching `*` segments.
pub fn lookup(key: &str) -> Option<&'static KeySpec> {
    KEYS.iter().find(|spec| matches(spec.key, key))
}

fn matches(pattern: &str, key: &str) -> bool {
    let mut p = pattern.split('.');
    let mut k = key.split('.');
    loop {
        match (p.next(), k.next()) {
            (None, None) => return true,
            (Some("*"), Some(seg)) => {
                if !valid_name(seg) {
                    return false;
                }
            }
            (Some(a), Some(b)) if a == b => {}
            _ => return false,
        }
    }
}

/// Bridge names: `[a-z0-9_-]{1,32}` (they appear in URLs and env names).
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 32
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_' || b == b'-')
}

/// The environment variable of a key: `KAFCLAW_` + upper-cased path with `.` → `_`.
pub fn env_name(key: &str) -> String {
    format!(
        "KAFCLAW_{}",
        key.to_ascii_uppercase().replace(['.', '-'], "_")
    )
}

/// The key of an environment variable, if it names one. Bridge keys are reachable as
/// `KAFCLAW_CHANNELS_BRIDGES_<NAME>_<FIELD>` where NAME has no underscore.
pub fn key_for_env(var: &str) -> Option<String> {
    for spec in KEYS {
        if !spec.key.contains('*') {
            if env_name(spec.key) == var {
                return Some(spec.key.to_string());
            }
            continue;
        }
        let (head, tail) = spec.key.split_once(".*.")?;
        let prefix = format!("{}_", env_name(head));
        let suffix = format!("_{}", tail.to_ascii_uppercase().replace('.', "_"));
        if let Some(name) = var
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(&suffix))
        {
            let name = name.to_ascii_lowercase();
            if valid_name(&name) && !name.contains('_') {
                return Some(format!("{head}.{name}.{tail}"));
            }
        }
    }
    None
}

/// The known name closest to `unknown` (for "did you mean …" in warnings): within a third
/// of what differs after the prefix both share (at least 2 edits), so a shared namespace
/// such as `KAFCLAW_` does not make unrelated names look close.
pub fn nearest<'a>(unknown: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    candidates
        .map(|c| (edit_distance(unknown, c), c))
        .filter(|(d, c)| {
            let shared = c
                .chars()
                .zip(unknown.chars())
                .take_while(|(a, b)| a == b)
                .count();
            *d <= ((c.chars().count() - shared) / 3).max(2)
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.iter().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// The unit of a key that an alias converts a duration into.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unit {
    /// Whole seconds.
    Seconds,
    /// Whole days.
    Days,
    /// The same value under another spelling (the runbook's camelCase names).
    Same,
}

/// Names the contract and the issues also use for keys stored under a unit-suffixed name
/// (`security.auth_lockout.window` = `security.auth_lockout.window_seconds`). An alias takes a
/// duration (`60s`, `5m`, `90d`, or a bare number in the key's unit) and sets its key.
pub const ALIASES: &[(&str, &str, Unit)] = &[
    (
        "supervisor.window",
        "supervisor.window_seconds",
        Unit::Seconds,
    ),
    (
        "security.auth_lockout.window",
        "security.auth_lockout.window_seconds",
        Unit::Seconds,
    ),
    (
        "security.auth_lockout.lockout",
        "security.auth_lockout.lockout_seconds",
        Unit::Seconds,
    ),
    (
        "security.token_max_age",
        "security.token_max_age_days",
        Unit::Days,
    ),
    ("backup.max_age", "backup.max_age_days", Unit::Days),
    (
        "skills.runtimeIsolation",
        "skills.runtime_isolation",
        Unit::Same,
    ),
];

/// The key and unit an alias stands for.
pub fn alias(key: &str) -> Option<(&'static str, Unit)> {
    ALIASES
        .iter()
        .find(|(from, _, _)| *from == key)
        .map(|(_, to, unit)| (*to, *unit))
}

/// Converts an alias's value into its key's unit; `None` when it is not a duration.
pub fn alias_value(raw: &serde_json::Value, unit: Unit) -> Option<serde_json::Value> {
    if unit == Unit::Same {
        return Some(raw.clone());
    }
    let text = match raw {
        serde_json::Value::Number(n) => return n.as_u64().map(serde_json::Value::from),
        serde_json::Value::String(s) => s.trim(),
        _ => return None,
    };
    if let Ok(n) = text.parse::<u64>() {
        return Some(serde_json::Value::from(n));
    }
    let seconds = kafclaw_actors::token::parse_ttl(text).ok()?.as_secs();
    Some(serde_json::Value::from(match unit {
        Unit::Seconds => seconds,
        Unit::Days => seconds.div_ceil(86_400),
        Unit::Same => seconds,
    }))
}

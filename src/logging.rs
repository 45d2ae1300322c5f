//! Logging with tracing on stderr: readable by default, one JSON object per line with
//! `--log-format json`. Nothing logs an `Authorization` value or a secret: secrets have an
//! opaque `Debug` and no `Display`.

use tracing_subscriber::EnvFilter;

/// Installs the global subscriber. `level` is a tracing filter (`info`, `kafclaw=debug`, …).
pub fn init(level: &str, json: bool) {
    // The NATS client (fleet mode) says every connect and reconnect attempt at info; the
    // gateway says connected/degraded itself. `log.level` naming async_nats overrides this.
    let level = if level.contains("async_nats") {
        level.to_string()
    } else {
        format!("{level},async_nats=warn")
    };
    let filter = EnvFilter::try_new(&level).unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false);
    let result = if json {
        builder.json().flatten_event(true).try_init()
    } else {
        builder.with_ansi(false).try_init()
    };
    // A second init (tests running several gateways in one process) keeps the first.
    let _ = result;
}

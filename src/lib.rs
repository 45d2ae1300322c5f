//! KafClaw: a self-hosted, security-first gateway between chat channels, operators and a
//! tool-running AI agent.
//!
//! This crate is the process edge: the command line, settings, the HTTP gateway and the
//! operator commands. Every actor and its domain logic live in `kafclaw-actors`.

#![forbid(unsafe_code)]

// Folders by role: the gateway (listeners, the HTTP edge, the supervision wiring, the control
// socket's server), the operator (each command, the checks, the operations, the control
// socket's client), the settings and the skills.
pub mod cli;
pub mod fleet;
pub mod gateway;
pub mod logging;
pub mod operator;
pub mod settings;
pub mod skills;

// The modules' paths before the regrouping, kept for code, tests, benches and examples that
// name them (`crate::http`, `kafclaw::checks`, …).
pub use gateway::{admin, channels, control, core, http, last_verify, services};
pub use operator::{
    backup, checks, commands, doctor, envelope, healthcheck, ops, progress, protocol, remote,
    security, status,
};
pub use settings::secret;

use std::collections::HashMap;
use std::path::PathBuf;

use kafclaw_actors::paths::Home;

/// The KafClaw root: `--home`, else `$KAFCLAW_HOME`, else the user's home directory.
pub fn resolve_home(flag: Option<PathBuf>, env: &HashMap<String, String>) -> Option<Home> {
    flag.or_else(|| {
        env.get("KAFCLAW_HOME")
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    })
    .or_else(|| env.get("HOME").filter(|v| !v.is_empty()).map(PathBuf::from))
    .map(Home::new)
}

/// Runs the command line with an explicit environment; returns the process exit code.
pub fn main_with(args: Vec<String>, env: HashMap<String, String>) -> i32 {
    use clap::Parser;
    use envelope::ErrorCode;
    let name = envelope::command_path(&args);
    let mut cli = match cli::Cli::try_parse_from(&args) {
        Ok(cli) => cli,
        Err(e) if e.use_stderr() && envelope::wants_json(&args) => {
            let rendered = e.to_string();
            let first = rendered.lines().next().unwrap_or("invalid command line");
            let message = first.strip_prefix("error: ").unwrap_or(first);
            let _ = e.print();
            return envelope::fail(&name, true, ErrorCode::Usage, message);
        }
        Err(e) => {
            let code = if e.use_stderr() { 2 } else { 0 };
            let _ = e.print();
            return code;
        }
    };
    cli.lift_globals();
    let json = cli.json;
    // Completion scripts depend on nothing but the command line's shape: no home, no settings.
    if let cli::Command::Completion { shell } = cli.command {
        return completion(shell);
    }
    if cli.url.is_some() && !takes_url(&cli.command) {
        return envelope::fail(
            &name,
            json,
            ErrorCode::Usage,
            &format!("`kafclaw {name}` works on the local home only; --url is for status, admin and approvals"),
        );
    }
    let Some(home) = resolve_home(cli.home.clone(), &env) else {
        return envelope::fail(
            &name,
            json,
            ErrorCode::Usage,
            "no home directory: pass --home DIR or set KAFCLAW_HOME",
        );
    };
    // A restore killed half-way is rolled back before anything reads the home.
    if !matches!(cli.command, cli::Command::Version) {
        match backup::recover(&home) {
            Ok(Some(line)) => eprintln!("kafclaw: {line}"),
            Ok(None) => {}
            Err(e) => {
                return envelope::fail(
                    &name,
                    json,
                    ErrorCode::Internal,
                    &format!("cannot finish an interrupted restore: {e}"),
                );
            }
        }
    }
    if cli.token.is_some() && cli.url.is_none() {
        eprintln!("kafclaw: --token is only needed with --url; the local control socket needs none (kept for `admin` when no local gateway answers: it then goes to the configured dashboard port)");
    }
    let remote = cli.url.clone().map(|url| remote::RemoteArgs {
        url,
        token: cli.token.clone(),
    });
    // The operator checks load settings themselves: a broken config is a finding, not a crash.
    let operator = match &cli.command {
        cli::Command::Doctor(a) => Some(doctor::run(&home, &env, json, a.fix)),
        cli::Command::Security(c) => Some(security::run(c, &home, &env, json)),
        cli::Command::Backup(c) => Some(backup::run(c, &home, &env, json)),
        cli::Command::Status => Some(status::run(&home, &env, json, remote.as_ref())),
        _ => None,
    };
    if let Some(code) = operator {
        return code;
    }
    let mut flags = settings::FlagOverrides {
        log_format: cli.log_format.map(|f| f.as_str().to_string()),
        ..Default::default()
    };
    if let cli::Command::Gateway(args) = &cli.command {
        flags.host = args.host.clone();
        flags.port = args.port;
        flags.dashboard_port = args.dashboard_port;
    }
    if let cli::Command::Healthcheck(args) = &cli.command {
        flags.host = args.host.clone();
        flags.port = args.port;
    }
    let loaded = settings::load(&settings::Sources {
        home: &home,
        env: &env,
        flags: &flags,
    });
    let settings = match loaded {
        Ok(s) => s,
        Err(e) => return envelope::fail(&name, json, ErrorCode::Config, &e.to_string()),
    };
    logging::init(&settings.log.level, settings.log.format == "json");
    let ctx = |settings| commands::CommandEnv {
        home: &home,
        settings,
        env: &env,
        json,
        command: name.clone(),
        remote: remote.clone(),
        local_token: cli.token.clone().filter(|_| cli.url.is_none()),
    };
    match cli.command {
        cli::Command::Gateway(args) => {
            gateway::run(home.clone(), settings, &env, args.allow_root, json)
        }
        cli::Command::Secrets(cmd) => commands::secrets(cmd, ctx(settings)),
        cli::Command::Token(cmd) => commands::token(cmd, ctx(settings)),
        cli::Command::Audit(cmd) => commands::audit(cmd, ctx(settings)),
        cli::Command::Approvals(cmd) => commands::approvals(cmd, ctx(settings)),
        cli::Command::Admin { args } => commands::admin(args, ctx(settings)),
        cli::Command::Pairing(cmd) => commands::pairing(cmd, ctx(settings)),
        cli::Command::Skills(cmd) => commands::skills::run(cmd, ctx(settings)),
        cli::Command::Healthcheck(_) => healthcheck::run(&settings, cli.json),
        // Handled before the settings are loaded (above).
        cli::Command::Doctor(_)
        | cli::Command::Security(_)
        | cli::Command::Backup(_)
        | cli::Command::Status
        | cli::Command::Completion { .. } => 2,
        cli::Command::Version => envelope::succeed(
            "version",
            json,
            serde_json::json!({"version": env!("CARGO_PKG_VERSION")}),
            |_| println!("kafclaw {}", env!("CARGO_PKG_VERSION")),
        ),
    }
}

/// The commands that can ask a remote gateway (`--url`): the others act on the local home.
fn takes_url(command: &cli::Command) -> bool {
    matches!(
        command,
        cli::Command::Status | cli::Command::Admin { .. } | cli::Command::Approvals(_)
    )
}

/// `kafclaw completion <shell>`: the script for `shell` on stdout.
fn completion(shell: clap_complete::Shell) -> i32 {
    use clap::CommandFactory;
    use std::io::Write;
    let mut command = cli::Cli::command();
    // Generated into memory first: the generators panic on a write error, and a closed pipe
    // (`kafclaw completion bash | head`) is not worth a panic.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut command, "kafclaw", &mut script);
    let mut out = std::io::stdout().lock();
    match out.write_all(&script).and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => 0,
        Err(e) => {
            eprintln!("kafclaw: cannot write the completion script: {e}");
            2
        }
    }
}

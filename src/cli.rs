//! The command line (CONTRACT §8). Parsing only; each command lives in its own module.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// KafClaw: a security-first gateway between chat channels, operators and a tool-running agent.
#[derive(Debug, Parser)]
#[command(name = "kafclaw", version, about, disable_help_subcommand = true)]
pub struct Cli {
    /// Root directory instead of $KAFCLAW_HOME or the user's home.
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// One JSON document on stdout instead of text, success or failure alike:
    /// `{"ok","command","checks"|"result","error":{"code","message"}}` (docs/cli.md).
    #[arg(long, global = true)]
    pub json: bool,
    /// A remote gateway's dashboard/admin URL (`status`, `admin`, `approvals`); local
    /// commands use the control socket and need no token.
    #[arg(long, global = true, value_name = "URL")]
    pub url: Option<String>,
    /// The bearer token for --url (else KAFCLAW_GATEWAY_AUTH_TOKEN, else the vault's
    /// gateway.auth_token).
    #[arg(long, global = true, value_name = "TOKEN")]
    pub token: Option<String>,
    /// Log format on stderr.
    #[arg(long, global = true, value_enum)]
    pub log_format: Option<LogFormat>,
    /// The command.
    #[command(subcommand)]
    pub command: Command,
}

/// Log formats.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum LogFormat {
    /// Readable lines.
    Text,
    /// One JSON object per line.
    Json,
}

impl LogFormat {
    /// The settings value.
    pub fn as_str(self) -> &'static str {
        match self {
            LogFormat::Text => "text",
            LogFormat::Json => "json",
        }
    }
}

impl Cli {
    /// `kafclaw admin <type> … --json`: the admin arguments are taken verbatim, so the global
    /// flags written after them are lifted out here (they are accepted anywhere).
    pub fn lift_globals(&mut self) {
        let Command::Admin { args } = &mut self.command else {
            return;
        };
        let mut kept = Vec::with_capacity(args.len());
        let mut words = std::mem::take(args).into_iter();
        while let Some(word) = words.next() {
            let (flag, inline) = match word.split_once('=') {
                Some((f, v)) if f.starts_with("--") => (f.to_string(), Some(v.to_string())),
                _ => (word.clone(), None),
            };
            match flag.as_str() {
                "--json" if inline.is_none() => self.json = true,
                "--home" | "--url" | "--token" | "--log-format" => {
                    let Some(value) = inline.or_else(|| words.next()) else {
                        kept.push(word);
                        continue;
                    };
                    match flag.as_str() {
                        "--home" => self.home = Some(PathBuf::from(value)),
                        "--url" => self.url = Some(value),
                        "--token" => self.token = Some(value),
                        _ => {
                            self.log_format = match value.as_str() {
                                "json" => Some(LogFormat::Json),
                                "text" => Some(LogFormat::Text),
                                _ => {
                                    kept.push(word);
                                    kept.push(value);
                                    continue;
                                }
                            }
                        }
                    }
                }
                _ => kept.push(word),
            }
        }
        *args = kept;
    }
}

/// Commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the gateway in the foreground.
    Gateway(GatewayArgs),
    /// Print the version.
    Version,
    /// The secret vault: set (value from stdin), list, rm, rotate-key.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Gateway tokens: create, list, revoke.
    #[command(subcommand)]
    Token(TokenCommand),
    /// The audit log: verify, repair.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// Diagnostics of the home: config, unknown keys, file modes, paths, provider, channels,
    /// store, vault. `--fix` applies the safe repairs.
    Doctor(DoctorArgs),
    /// The security posture: check, audit --deep, fix --yes.
    #[command(subcommand)]
    Security(SecurityCommand),
    /// Backups: create, verify, restore.
    #[command(subcommand)]
    Backup(BackupCommand),
    /// Skills (runbook §9): list, show, enable, disable, install, remove, verify, credential.
    #[command(subcommand)]
    Skills(SkillsCommand),
    /// Config, providers, channels, token usage today, open incidents, audit head: from the
    /// running gateway (its control socket, no token; --url for a remote one) or the store.
    Status,
    /// Tool approvals: list, approve, deny.
    #[command(subcommand)]
    Approvals(ApprovalsCommand),
    /// Pairing requests of unknown senders: pending, approve, deny (needs a running gateway).
    #[command(subcommand)]
    Pairing(PairingCommand),
    /// Print a shell completion script on stdout, e.g.
    /// `mkdir -p ~/.local/share/bash-completion/completions && kafclaw completion bash >
    /// ~/.local/share/bash-completion/completions/kafclaw`.
    Completion {
        /// The shell.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Probe the running gateway: exit 0 when `GET /healthz` on the gateway port answers 200
    /// within 2 s, else 1 (for container HEALTHCHECKs; speaks TLS with gateway.tls.mode =
    /// native, trusting exactly gateway.tls.cert_file).
    Healthcheck(HealthcheckArgs),
    /// Send one admin control message to the running gateway (its control socket; --url for
    /// a remote one), e.g. `kafclaw admin quarantine-channel --channel whatsapp --reason spam`.
    Admin {
        /// The message type (dashes or underscores) followed by `--field value` pairs.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true, num_args = 1..)]
        args: Vec<String>,
    },
}

/// `kafclaw healthcheck`.
#[derive(Debug, clap::Args)]
pub struct HealthcheckArgs {
    /// Host to probe (overrides gateway.host; an unspecified address is probed on loopback).
    #[arg(long)]
    pub host: Option<String>,
    /// Gateway port to probe (overrides gateway.port).
    #[arg(long)]
    pub port: Option<u16>,
}

/// `kafclaw doctor`.
#[derive(Debug, clap::Args)]
pub struct DoctorArgs {
    /// Apply the safe repairs: create missing directories, fix modes, move credentials from
    /// ~/.config/kafclaw/env into the vault. Each change is reported and audited.
    #[arg(long)]
    pub fix: bool,
}

/// `kafclaw security …`.
#[derive(Debug, Subcommand)]
pub enum SecurityCommand {
    /// The security posture (bind, token, modes, root, isolation, plaintext secrets, channels,
    /// tool policy, backups, log retention, incident owner).
    Check,
    /// `check` plus, with --deep, the audit chain, every vault secret, store integrity and a
    /// scan for leaked secret values.
    Audit {
        /// Run the deep checks (without it, the same as `check`).
        #[arg(long)]
        deep: bool,
    },
    /// Apply every safe fix; without --yes only print the plan (exit 1 when it has steps,
    /// 0 when there is nothing to change).
    Fix {
        /// Apply the plan.
        #[arg(long)]
        yes: bool,
    },
}

/// `kafclaw backup …`.
#[derive(Debug, Subcommand)]
pub enum BackupCommand {
    /// Write one backup archive (store export, audit log, sanitized config.json, workspace
    /// identity files, authenticated manifest).
    Create {
        /// The archive to write (tar; zstd-compressed when the name ends in .zst). An existing
        /// directory gets a dated archive inside it. Default: ~/.kafclaw/backups/. Refused
        /// inside the workspace or work repo and in a directory group or others can read.
        #[arg(long, value_name = "PATH")]
        out: Option<PathBuf>,
        /// Include the vault key, encrypted with KAFCLAW_BACKUP_PASSPHRASE.
        #[arg(long)]
        include_key: bool,
    },
    /// Check a backup (archive or directory): entries, manifest MAC, checksums, audit chain.
    Verify {
        /// The backup archive or directory.
        path: PathBuf,
        /// Accept a manifest that cannot be authenticated (no MAC, or no backup key) with a
        /// warning instead of failing.
        #[arg(long)]
        unauthenticated: bool,
    },
    /// Restore a backup into the home (--home DIR): staged and checked first, then swapped in;
    /// the previous state is kept as ~/.kafclaw/pre-restore-<time>/ until the gateway starts.
    Restore {
        /// The backup archive or directory.
        path: PathBuf,
        /// Replace an existing store, audit log and config.json.
        #[arg(long)]
        force: bool,
        /// Take the backup's security-relevant settings that differ from the current ones
        /// (each is printed; audited).
        #[arg(long)]
        accept_config: bool,
        /// Restore a backup whose manifest cannot be authenticated (audited, warned).
        #[arg(long)]
        unauthenticated: bool,
    },
}

/// `kafclaw approvals …`.
#[derive(Debug, Subcommand)]
pub enum ApprovalsCommand {
    /// Pending tool approvals.
    List,
    /// Approve a pending tool call.
    Approve {
        /// The approval's id.
        id: String,
    },
    /// Deny a pending tool call.
    Deny {
        /// The approval's id.
        id: String,
    },
}

/// `kafclaw pairing …` (CONTRACT §5): the one-time codes a channel hands to unknown senders
/// under `unknown_senders: "pairing"`.
#[derive(Debug, Subcommand)]
pub enum PairingCommand {
    /// Unexpired pairing requests with their codes (every channel, or only CHANNEL).
    Pending {
        /// Only this channel (`whatsapp` or a bridge's name).
        channel: Option<String>,
    },
    /// Approve a code: its sender is allow-listed on the channel at once (audited).
    Approve {
        /// The channel (`whatsapp` or a bridge's name).
        channel: String,
        /// The code the sender received.
        code: String,
    },
    /// Deny a code: the request is dropped (audited); the sender stays unknown.
    Deny {
        /// The channel (`whatsapp` or a bridge's name).
        channel: String,
        /// The code the sender received.
        code: String,
    },
}

/// `kafclaw skills …`.
#[derive(Debug, Subcommand)]
pub enum SkillsCommand {
    /// Installed skills: name, version, enabled, description.
    List,
    /// One installed skill: its front matter, pins and state.
    Show {
        /// Skill name.
        name: String,
    },
    /// Enable a skill (applies at once to a running gateway).
    Enable {
        /// Skill name.
        name: String,
    },
    /// Disable a skill (applies at once to a running gateway).
    Disable {
        /// Skill name.
        name: String,
    },
    /// Verify and install a local directory or a .tar / .tar.zst archive.
    Install {
        /// The directory or archive.
        path: std::path::PathBuf,
        /// Install even with warnings (links outside the allowed domains, http://, too many).
        #[arg(long)]
        accept_warnings: bool,
    },
    /// Remove an installed skill.
    Remove {
        /// Skill name.
        name: String,
    },
    /// Re-hash one or every installed skill against its BLAKE3 pins (exit 1 on a change).
    Verify {
        /// Skill name (all when omitted).
        name: Option<String>,
    },
    /// Skill credentials: set (value from stdin, sealed as skills.NAME.CRED).
    #[command(subcommand)]
    Credential(SkillCredentialCommand),
}

/// `kafclaw skills credential …`.
#[derive(Debug, Subcommand)]
pub enum SkillCredentialCommand {
    /// Seal a credential of a skill; the value is read from stdin.
    Set {
        /// Skill name.
        name: String,
        /// Credential name (declared in the skill's front matter).
        credential: String,
    },
}

/// `kafclaw secrets …`.
#[derive(Debug, Subcommand)]
pub enum SecretsCommand {
    /// Seal a secret; the value is read from stdin (never from the command line).
    Set {
        /// Secret name, e.g. gateway.auth_token or providers.openai.api_key.
        name: String,
    },
    /// Names and times of every secret (never values).
    List,
    /// Remove a secret.
    Rm {
        /// Secret name.
        name: String,
    },
    /// Re-seal every secret under a new vault key (atomic).
    RotateKey,
}

/// `kafclaw token …`.
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Issue a token; it is printed once and only its keyed hash is stored.
    Create {
        /// admin, read or chat.
        #[arg(long)]
        scope: String,
        /// Lifetime, e.g. 30d, 12h, 90m.
        #[arg(long)]
        ttl: Option<String>,
        /// Name (default token-N).
        #[arg(long)]
        name: Option<String>,
    },
    /// Names, scopes, ages and last use (never a token).
    List,
    /// Revoke a token by name; a running gateway refuses it at once.
    Revoke {
        /// Token name.
        name: String,
    },
}

/// `kafclaw audit …`.
#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain; names the first broken, missing, reordered or truncated record.
    Verify {
        /// Start at this sequence number.
        #[arg(long)]
        from: Option<u64>,
        /// Fleet mode: also check the chain against this node's newest anchor in NATS (a
        /// rewrite or truncation of anchored records fails, even by root on this host).
        #[arg(long)]
        anchored: bool,
    },
    /// Cut a torn last line (after a crash) and record that it was done. Gateway must be stopped.
    /// Refuses a log that ends before its recorded head unless --accept-missing is given.
    Repair {
        /// Accept that the records after the log's last one are gone (they were cut from the
        /// end): the repair record names them and the chain goes on after it.
        #[arg(long)]
        accept_missing: bool,
    },
}

/// `kafclaw gateway`.
#[derive(Debug, clap::Args)]
pub struct GatewayArgs {
    /// Interface to bind (overrides gateway.host).
    #[arg(long)]
    pub host: Option<String>,
    /// Gateway port (0 = any free port).
    #[arg(long)]
    pub port: Option<u16>,
    /// Dashboard/admin port (0 = any free port).
    #[arg(long)]
    pub dashboard_port: Option<u16>,
    /// Allow running as root with a non-loopback bind (not recommended).
    #[arg(long)]
    pub allow_root: bool,
}

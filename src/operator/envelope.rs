//! The one `--json` shape of every command (CONTRACT §9), printed on stdout for success and
//! failure alike:
//!
//! `{"ok":bool,"command":"secrets list","result":…}` for a command that returns data,
//! `{"ok":bool,"command":"doctor","checks":[…],"summary":{…}}` for a command that runs checks,
//! and on failure an `"error":{"code":…,"message":…}` member besides (`result` is then null).
//!
//! Owns: that shape, the error codes and their exit codes (1 for [`ErrorCode::Failed`], 2 for
//! the rest), and printing an error either as the document or as one `kafclaw: …` line on
//! stderr. Every command prints through here, so a new command gets the shape for free.
//! Must not: carry a secret in a message (callers pass names and places, never values).

use serde_json::{json, Map, Value};

use crate::checks::Report;

/// Why a command did not succeed (the `error.code` of the document).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorCode {
    /// The command line is wrong: unknown flag, missing argument, refused combination.
    Usage,
    /// A check ran and found a problem (exit 1).
    Failed,
    /// The request was refused: bad name, unknown id, unknown channel, not allowed now.
    Refused,
    /// Something the command needs is not there: no running gateway, a component down.
    Unavailable,
    /// The settings could not be loaded.
    Config,
    /// Anything else that stopped the command (a file could not be read, …).
    Internal,
}

impl ErrorCode {
    /// The stable name scripts match on.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorCode::Usage => "usage",
            ErrorCode::Failed => "failed",
            ErrorCode::Refused => "refused",
            ErrorCode::Unavailable => "unavailable",
            ErrorCode::Config => "config",
            ErrorCode::Internal => "internal",
        }
    }

    /// The process exit code: 1 for a failed check, 2 for every other error.
    pub fn exit_code(self) -> i32 {
        match self {
            ErrorCode::Failed => 1,
            _ => 2,
        }
    }

    /// The code of a stable name (an answer of the running gateway); unknown names are
    /// [`ErrorCode::Internal`].
    pub fn parse(name: &str) -> ErrorCode {
        match name {
            "usage" => ErrorCode::Usage,
            "failed" => ErrorCode::Failed,
            "refused" => ErrorCode::Refused,
            "unavailable" => ErrorCode::Unavailable,
            "config" => ErrorCode::Config,
            _ => ErrorCode::Internal,
        }
    }
}

/// The document of a command that succeeded with `result`.
pub fn success(command: &str, result: Value) -> Value {
    json!({"ok": true, "command": command, "result": result})
}

/// The document of a command that failed (`result` is null: there is none).
pub fn failure(command: &str, code: ErrorCode, message: &str) -> Value {
    json!({
        "ok": false,
        "command": command,
        "result": null,
        "error": {"code": code.as_str(), "message": message},
    })
}

/// The document of a check report: `ok` is false (and `error` names the failed checks) when
/// any check failed. `command` is the report's command without its flags (`doctor --fix` is
/// `doctor`).
pub fn report(report: &Report) -> Value {
    let mut doc = Map::new();
    doc.insert("ok".into(), Value::Bool(!report.failed()));
    doc.insert("command".into(), Value::from(command_of(&report.command)));
    let body = report.to_json();
    doc.insert("checks".into(), body["checks"].clone());
    doc.insert("summary".into(), body["summary"].clone());
    if report.failed() {
        let failed: Vec<&str> = report
            .checks
            .iter()
            .filter(|c| c.status == crate::checks::Status::Fail)
            .map(|c| c.name.as_str())
            .collect();
        doc.insert(
            "error".into(),
            json!({
                "code": ErrorCode::Failed.as_str(),
                "message": format!("{} check(s) failed: {}", failed.len(), failed.join(", ")),
            }),
        );
    }
    Value::Object(doc)
}

/// `doctor --fix` → `doctor`, `security fix --yes` → `security fix`.
fn command_of(label: &str) -> &str {
    label.split(" --").next().unwrap_or(label).trim()
}

/// Prints a failure: the document on stdout with `--json`, else `kafclaw: message` on stderr
/// (a failed check, exit 1, is a finding and goes to stdout as `FAIL message`). Returns the
/// exit code.
pub fn fail(command: &str, json: bool, code: ErrorCode, message: &str) -> i32 {
    if json {
        println!("{}", failure(command, code, message));
    } else if code == ErrorCode::Failed {
        println!("FAIL {message}");
    } else {
        eprintln!("kafclaw: {message}");
    }
    code.exit_code()
}

/// Prints a success: the document on stdout with `--json`, else whatever `human` prints.
/// Returns 0.
pub fn succeed(command: &str, json: bool, result: Value, human: impl FnOnce(&Value)) -> i32 {
    if json {
        println!("{}", success(command, result));
    } else {
        human(&result);
    }
    0
}

/// The subcommand path named by a command line (`["kafclaw","--home","h","backup","verify",
/// "x"]` → `backup verify`), found by walking clap's command tree; `kafclaw` when the line
/// names no command. Used for documents of lines that clap refused.
pub fn command_path(args: &[String]) -> String {
    use clap::CommandFactory;
    let root = crate::cli::Cli::command();
    let mut current = &root;
    let mut path: Vec<String> = Vec::new();
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        if word == "--" {
            break;
        }
        if let Some(flag) = word.strip_prefix("--") {
            // A global flag with a separate value consumes the next word.
            if !flag.contains('=') && takes_value(&root, flag) {
                words.next();
            }
            continue;
        }
        if word.starts_with('-') {
            continue;
        }
        match current.find_subcommand(word) {
            Some(sub) => {
                path.push(sub.get_name().to_string());
                current = sub;
            }
            None => break,
        }
    }
    if path.is_empty() {
        "kafclaw".into()
    } else {
        path.join(" ")
    }
}

fn takes_value(root: &clap::Command, flag: &str) -> bool {
    root.get_arguments()
        .find(|a| a.get_long() == Some(flag))
        .is_some_and(|a| a.get_action().takes_values())
}

/// True when `--json` is on the command line (before a `--`), even where clap refused it.
pub fn wants_json(args: &[String]) -> bool {
    args.iter()
        .skip(1)
        .take_while(|a| a.as_str() != "--")
        .any(|a| a == "--json")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(line: &str) -> Vec<String> {
        line.split_whitespace().map(String::from).collect()
    }

    #[test]
    fn command_paths_skip_global_flags_and_their_values() {
        for (line, expected) in [
            ("kafclaw --home /h backup verify x", "backup verify"),
            ("kafclaw --json status", "status"),
            ("kafclaw admin quarantine-channel --json", "admin"),
            (
                "kafclaw --log-format json token create --scope x",
                "token create",
            ),
            ("kafclaw nonsense", "kafclaw"),
            ("kafclaw", "kafclaw"),
            ("kafclaw secrets bogus", "secrets"),
        ] {
            assert_eq!(command_path(&args(line)), expected, "{line}");
        }
    }

    #[test]
    fn failures_carry_a_code_and_no_result() {
        let doc = failure("admin", ErrorCode::Usage, "bad");
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["error"]["code"], "usage");
        assert!(doc["result"].is_null());
        assert_eq!(ErrorCode::Failed.exit_code(), 1);
        assert_eq!(ErrorCode::Refused.exit_code(), 2);
    }

    #[test]
    fn a_report_names_its_command_without_flags_and_its_failed_checks() {
        let mut r = Report::new("doctor --fix");
        r.pass("a", "fine");
        assert_eq!(report(&r)["ok"], true);
        assert!(report(&r).get("error").is_none());
        r.fail("b", "bad", "fix it");
        let doc = report(&r);
        assert_eq!(doc["command"], "doctor");
        assert_eq!(doc["ok"], false);
        assert_eq!(doc["error"]["code"], "failed");
        assert!(doc["error"]["message"].as_str().unwrap().contains('b'));
    }
}

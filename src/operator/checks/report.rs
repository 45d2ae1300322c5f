//! The output of every operator check command: one `[PASS|WARN|FAIL] <check>: <message>` line
//! per check (each WARN/FAIL followed by an indented `remedy:` line naming the command or
//! setting that fixes it), or with `--json` one document in the shape of every command
//! ([`crate::envelope`]): `{"ok","command","checks":[{"name","status","message","remedy"}],
//! "summary":{"pass","warn","fail"},"error"?}`.
//!
//! Owns: the shape of that output and the exit code (0 clean or warnings only, 1 any FAIL).
//! Must not: print a secret value (callers pass names and places, never values).

use serde::Serialize;
use serde_json::json;

/// The outcome of one check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Nothing to do.
    Pass,
    /// Worth fixing; does not fail the command.
    Warn,
    /// A security or correctness problem; the command exits 1.
    Fail,
}

impl Status {
    fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Warn => "WARN",
            Status::Fail => "FAIL",
        }
    }
}

/// One check's result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Check {
    /// Stable name for scripts (`config_file`, `file_mode:.kafclaw/config.json`, …).
    pub name: String,
    /// pass, warn or fail.
    pub status: Status,
    /// What was found (never a secret value).
    pub message: String,
    /// For WARN/FAIL: one line naming the command or setting that fixes it.
    pub remedy: Option<String>,
}

/// The checks of one command, in the order they ran.
#[derive(Debug)]
pub struct Report {
    /// `doctor`, `security check`, `backup verify`, …
    pub command: String,
    /// Every check.
    pub checks: Vec<Check>,
}

impl Report {
    /// An empty report for `command`.
    pub fn new(command: impl Into<String>) -> Self {
        Self {
            command: command.into(),
            checks: Vec::new(),
        }
    }

    /// Adds a PASS.
    pub fn pass(&mut self, name: impl Into<String>, message: impl Into<String>) {
        self.push(name, Status::Pass, message, None);
    }

    /// Adds a WARN with its remedy.
    pub fn warn(
        &mut self,
        name: impl Into<String>,
        message: impl Into<String>,
        remedy: impl Into<String>,
    ) {
        self.push(name, Status::Warn, message, Some(remedy.into()));
    }

    /// Adds a FAIL with its remedy.
    pub fn fail(
        &mut self,
        name: impl Into<String>,
        message: impl Into<String>,
        remedy: impl Into<String>,
    ) {
        self.push(name, Status::Fail, message, Some(remedy.into()));
    }

    /// Adds a check.
    pub fn push(
        &mut self,
        name: impl Into<String>,
        status: Status,
        message: impl Into<String>,
        remedy: Option<String>,
    ) {
        self.checks.push(Check {
            name: name.into(),
            status,
            message: message.into(),
            remedy: if status == Status::Pass { None } else { remedy },
        });
    }

    /// Appends every check of `other`, prefixing nothing (names stay stable).
    pub fn extend(&mut self, other: Report) {
        self.checks.extend(other.checks);
    }

    /// How many checks have `status`.
    pub fn count(&self, status: Status) -> usize {
        self.checks.iter().filter(|c| c.status == status).count()
    }

    /// True when any check failed.
    pub fn failed(&self) -> bool {
        self.count(Status::Fail) > 0
    }

    /// 1 when any check failed, else 0.
    pub fn exit_code(&self) -> i32 {
        i32::from(self.failed())
    }

    /// The checks and their summary (the envelope adds `ok`, the command and `error`).
    pub fn to_json(&self) -> serde_json::Value {
        json!({
            "command": self.command,
            "checks": self.checks,
            "summary": {
                "pass": self.count(Status::Pass),
                "warn": self.count(Status::Warn),
                "fail": self.count(Status::Fail),
            },
        })
    }

    /// The human lines.
    pub fn to_text(&self) -> String {
        let mut out = String::new();
        for check in &self.checks {
            out.push_str(&format!(
                "[{}] {}: {}\n",
                check.status.label(),
                check.name,
                check.message
            ));
            if let Some(remedy) = &check.remedy {
                out.push_str(&format!("       remedy: {remedy}\n"));
            }
        }
        out.push_str(&format!(
            "{}: {} passed, {} warnings, {} failed\n",
            self.command,
            self.count(Status::Pass),
            self.count(Status::Warn),
            self.count(Status::Fail)
        ));
        out
    }

    /// Prints the report on stdout and returns the exit code.
    pub fn print(&self, json: bool) -> i32 {
        if json {
            println!("{}", crate::envelope::report(self));
        } else {
            print!("{}", self.to_text());
        }
        self.exit_code()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_shape_and_exit_code() {
        let mut r = Report::new("doctor");
        r.pass("a", "fine");
        r.warn("b", "meh", "do x");
        assert_eq!(r.exit_code(), 0);
        r.fail("c", "bad", "do y");
        assert_eq!(r.exit_code(), 1);
        let v = r.to_json();
        assert_eq!(v["command"], "doctor");
        assert_eq!(v["checks"][0]["status"], "pass");
        assert!(v["checks"][0]["remedy"].is_null());
        assert_eq!(v["checks"][2]["remedy"], "do y");
        assert_eq!(v["summary"], json!({"pass": 1, "warn": 1, "fail": 1}));
    }

    #[test]
    fn text_lines_carry_a_remedy_for_warn_and_fail() {
        let mut r = Report::new("doctor");
        r.pass("a", "fine");
        r.fail("c", "bad", "run kafclaw doctor --fix");
        let text = r.to_text();
        assert!(text.starts_with(
            "[PASS] a: fine\n[FAIL] c: bad\n       remedy: run kafclaw doctor --fix\n"
        ));
    }
}

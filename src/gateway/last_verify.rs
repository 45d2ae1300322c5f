//! The result of the last audit-chain verification (issue 16: the dashboard shows it), kept
//! in the store's settings tree so it outlives a restart.
//!
//! Owns: running one verification against the recorded head ([`run`]; `kafclaw audit verify`
//! through the gateway and `POST /api/v1/audit/verify` both use it) and remembering its
//! outcome ([`record`], [`read`]). Must not: repair anything or hide a broken chain — a failed
//! verification is recorded with the first problem it found.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use kafclaw_actors::audit::{AuditKey, RecordedHead, VerifyReport};
use kafclaw_actors::paths::Home;
use kafclaw_actors::store::{StoreDb, TreeName};

const KEY: &str = "audit_last_verify";

/// One verification's outcome.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LastVerify {
    /// When it finished (RFC 3339).
    pub verified_at: String,
    /// Who ran it (a token name, `cli:uid=…`).
    pub by: String,
    /// True when the whole chain verified.
    pub ok: bool,
    /// Records verified (up to the first problem).
    pub records: u64,
    /// The verified head's sequence number, when it verified.
    pub head_seq: Option<u64>,
    /// The verified head's hash, when it verified.
    pub head_hash: Option<String>,
    /// The first problem, when it did not verify.
    pub error: Option<String>,
}

/// Why a verification could not run at all (distinct from "it ran and found a problem").
#[derive(Debug, thiserror::Error)]
pub enum VerifyRunError {
    /// The recorded head could not be read.
    #[error("cannot read the recorded audit head: {0}")]
    RecordedHead(String),
    /// The blocking task was interrupted.
    #[error("verification was interrupted")]
    Interrupted,
}

/// What one verification needs.
pub struct VerifyInput {
    /// The home (for the recorded head file).
    pub home: Home,
    /// The open store (the recorded head, and where the outcome is kept).
    pub db: StoreDb,
    /// The audit directory.
    pub dir: PathBuf,
    /// The chain key.
    pub key: AuditKey,
    /// First sequence number to verify.
    pub from: Option<u64>,
    /// Who asks.
    pub by: String,
}

/// Verifies the chain against the recorded head, records the outcome, and returns the report
/// (or the problem, as text) together with the recorded outcome.
pub async fn run(
    input: VerifyInput,
) -> Result<(Result<VerifyReport, String>, LastVerify), VerifyRunError> {
    // The recorded head is read before the segments: records appended meanwhile only make the
    // segments longer than it.
    let recorded = RecordedHead::for_home(&input.home, Some(&input.db))
        .and_then(|head| head.read())
        .map_err(|e| VerifyRunError::RecordedHead(e.to_string()))?;
    let (dir, key, from) = (input.dir, input.key, input.from);
    let report = tokio::task::spawn_blocking(move || {
        kafclaw_actors::audit::verify_against(&dir, &key, from, recorded.as_ref())
    })
    .await
    .map_err(|_| VerifyRunError::Interrupted)?
    .map_err(|e| e.to_string());
    let outcome = outcome(&report, &input.by);
    record(&input.db, &outcome);
    Ok((report, outcome))
}

/// The outcome of a report, as kept.
pub fn outcome(report: &Result<VerifyReport, String>, by: &str) -> LastVerify {
    let verified_at = kafclaw_actors::clock::now_rfc3339();
    match report {
        Ok(report) => LastVerify {
            verified_at,
            by: by.to_string(),
            ok: true,
            records: report.records,
            head_seq: Some(report.head_seq),
            head_hash: Some(report.head_hash.clone()),
            error: None,
        },
        Err(error) => LastVerify {
            verified_at,
            by: by.to_string(),
            ok: false,
            records: 0,
            head_seq: None,
            head_hash: None,
            error: Some(error.clone()),
        },
    }
}

/// Keeps `outcome` as the last one. Best effort: a store that cannot take it only loses the
/// dashboard's display, never the verification's answer.
pub fn record(db: &StoreDb, outcome: &LastVerify) {
    let saved = db
        .tree(TreeName::Settings)
        .and_then(|tree| tree.put_json(KEY, outcome));
    if let Err(error) = saved {
        tracing::warn!(%error, "cannot keep the last audit verification's result");
    }
}

/// The last outcome, if a verification ever ran on this home.
pub fn read(db: &StoreDb) -> Option<LastVerify> {
    db.tree(TreeName::Settings)
        .ok()
        .and_then(|tree| tree.get_json::<LastVerify>(KEY).ok().flatten())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_outcome_is_kept_and_a_failure_names_its_problem() {
        let db = StoreDb::temporary().unwrap();
        assert_eq!(read(&db), None);
        let failed = outcome(&Err("record 7: hash mismatch".into()), "admin");
        record(&db, &failed);
        let kept = read(&db).unwrap();
        assert!(!kept.ok);
        assert_eq!(kept.error.as_deref(), Some("record 7: hash mismatch"));
        let report = VerifyReport {
            records: 9,
            head_seq: 9,
            head_hash: "ab".repeat(32),
            bytes: 900,
        };
        record(&db, &outcome(&Ok(report), "cli:uid=0"));
        let kept = read(&db).unwrap();
        assert!(kept.ok && kept.records == 9 && kept.head_seq == Some(9));
        assert_eq!(kept.by, "cli:uid=0");
    }
}

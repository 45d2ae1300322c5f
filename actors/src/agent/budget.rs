//! Token accounting and daily budgets, in the store's `Usage` tree.
//!
//! Owns: the per-day counters (global, per channel, per sender, per session), their atomic
//! update after every provider call, and the budget check made before every provider call.
//! Must not: call the provider or decide anything but "is there budget left".
//!
//! Days are UTC dates. A check lets a call through while the counter is below the limit, so
//! the last call of a day may overshoot it by one call's tokens. A sender is counted per
//! channel (`whatsapp` + `+4912…`), because sender ids are only unique within a channel.
//! Architecture Invariant: one [`Budget`] (and its clones) per store: the counters are
//! read-modify-written under its lock, so two concurrent sessions never lose an update.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use time::Date;

use crate::provider::Usage;
use crate::store::{KvBatch, KvTree, StoreDb, StoreError, TreeName};

/// Separates channel and sender in a sender key (never part of a channel name).
const SENDER_SEPARATOR: char = '\u{1f}';

/// Daily token limits (`budgets.*`); `None` means unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BudgetSettings {
    /// All tokens of all channels per UTC day (`budgets.daily_tokens`).
    pub daily_tokens: Option<u64>,
    /// Tokens per channel per UTC day.
    pub per_channel: Option<u64>,
    /// Tokens per sender (within a channel) per UTC day.
    pub per_sender: Option<u64>,
}

/// Which limit was hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BudgetLimit {
    /// The global daily limit.
    Global,
    /// The limit of this channel.
    Channel(String),
    /// The limit of this sender.
    Sender(String),
}

/// A budget is used up: no provider call may be made. The `Display` is the reply for the user.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", describe(self))]
pub struct BudgetExceeded {
    /// Which limit.
    pub limit: BudgetLimit,
    /// Tokens used today under that limit.
    pub used: u64,
    /// The limit.
    pub limit_value: u64,
}

fn describe(exceeded: &BudgetExceeded) -> String {
    let whose = match &exceeded.limit {
        BudgetLimit::Global => "the daily token budget".to_owned(),
        BudgetLimit::Channel(name) => format!("the daily token budget of channel \"{name}\""),
        BudgetLimit::Sender(id) => format!("the daily token budget of sender \"{id}\""),
    };
    format!(
        "{whose} is used up ({} of {} tokens today, UTC); try again tomorrow",
        exceeded.used, exceeded.limit_value
    )
}

/// Why a budget check or a usage record did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum BudgetError {
    /// A limit is reached.
    #[error(transparent)]
    Exceeded(#[from] BudgetExceeded),
    /// The counters could not be read or written; a check fails closed.
    #[error("token accounting is unavailable: {0}")]
    Store(#[from] StoreError),
}

/// Token totals of one day under one key.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageTotals {
    /// Prompt tokens.
    pub prompt_tokens: u64,
    /// Completion tokens.
    pub completion_tokens: u64,
    /// Their sum.
    pub total: u64,
    /// Provider calls counted.
    pub calls: u64,
}

impl UsageTotals {
    fn add(mut self, usage: Usage) -> Self {
        self.prompt_tokens = self.prompt_tokens.saturating_add(usage.prompt_tokens);
        self.completion_tokens = self
            .completion_tokens
            .saturating_add(usage.completion_tokens);
        self.total = self.prompt_tokens.saturating_add(self.completion_tokens);
        self.calls = self.calls.saturating_add(1);
        self
    }
}

/// Today's date in UTC.
pub fn utc_today() -> Date {
    time::OffsetDateTime::now_utc().date()
}

/// The counters and the limits. Cheap to clone; clones share the update lock.
#[derive(Clone)]
pub struct Budget {
    /// The `Usage` tree.
    tree: KvTree,
    /// The limits.
    settings: BudgetSettings,
    /// Serialises read-modify-write of the counters.
    lock: Arc<Mutex<()>>,
}

impl std::fmt::Debug for Budget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Budget")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

impl Budget {
    /// Counters in `db`'s `Usage` tree under `settings`.
    pub fn new(db: &StoreDb, settings: BudgetSettings) -> Result<Self, StoreError> {
        Ok(Self {
            tree: db.tree(TreeName::Usage)?,
            settings,
            lock: Arc::default(),
        })
    }

    /// The limits.
    pub fn settings(&self) -> BudgetSettings {
        self.settings
    }

    /// Whether `sender` on `channel` may make a provider call on `day`: the global limit is
    /// checked first, then the channel's, then the sender's. A store failure is an error
    /// (the caller fails closed: no call).
    pub fn check(&self, channel: &str, sender: &str, day: Date) -> Result<(), BudgetError> {
        let limits = [
            (
                self.settings.daily_tokens,
                total_key(day),
                BudgetLimit::Global,
            ),
            (
                self.settings.per_channel,
                channel_key(day, channel),
                BudgetLimit::Channel(channel.to_owned()),
            ),
            (
                self.settings.per_sender,
                sender_key(day, channel, sender),
                BudgetLimit::Sender(sender.to_owned()),
            ),
        ];
        for (limit_value, key, limit) in limits {
            let Some(limit_value) = limit_value else {
                continue;
            };
            let used = self.read(&key)?.total;
            if used >= limit_value {
                return Err(BudgetExceeded {
                    limit,
                    used,
                    limit_value,
                }
                .into());
            }
        }
        Ok(())
    }

    /// Adds one call's `usage` to the day's global, channel, sender and session counters, in
    /// one atomic batch.
    pub fn record(
        &self,
        session: &str,
        channel: &str,
        sender: &str,
        day: Date,
        usage: Usage,
    ) -> Result<(), StoreError> {
        let keys = [
            total_key(day),
            channel_key(day, channel),
            sender_key(day, channel, sender),
            session_key(day, session),
        ];
        // A poisoned lock only means another record panicked; the counters are still whole
        // (each update is one atomic batch).
        let _guard = self.lock.lock().unwrap_or_else(|p| p.into_inner());
        let mut batch = KvBatch::default();
        for key in keys {
            let updated = self.read(&key)?.add(usage);
            let bytes = serde_json::to_vec(&updated).map_err(|e| StoreError::Io(e.to_string()))?;
            batch.insert(key, bytes);
        }
        self.tree.apply(batch)
    }

    /// All tokens of `day`.
    pub fn usage_on(&self, day: Date) -> Result<UsageTotals, StoreError> {
        self.read(&total_key(day))
    }

    /// All tokens of today (UTC).
    pub fn usage_today(&self) -> Result<UsageTotals, StoreError> {
        self.usage_on(utc_today())
    }

    /// Tokens of `day` per channel, by channel name.
    pub fn usage_by_channel(&self, day: Date) -> Result<BTreeMap<String, UsageTotals>, StoreError> {
        self.scan(&channel_key(day, ""))
    }

    /// Tokens of `day` per sender of `channel`, by sender id.
    pub fn usage_by_sender(
        &self,
        day: Date,
        channel: &str,
    ) -> Result<BTreeMap<String, UsageTotals>, StoreError> {
        self.scan(&sender_key(day, channel, ""))
    }

    /// Tokens of `day` of one session.
    pub fn usage_of_session(&self, day: Date, session: &str) -> Result<UsageTotals, StoreError> {
        self.read(&session_key(day, session))
    }

    fn read(&self, key: &str) -> Result<UsageTotals, StoreError> {
        Ok(self.tree.get_json(key)?.unwrap_or_default())
    }

    fn scan(&self, prefix: &str) -> Result<BTreeMap<String, UsageTotals>, StoreError> {
        self.tree
            .scan_prefix(prefix)?
            .into_iter()
            .map(|(key, value)| {
                let name = String::from_utf8_lossy(&key[prefix.len()..]).into_owned();
                let totals = serde_json::from_slice(&value).map_err(|e| StoreError::Corrupt {
                    tree: TreeName::Usage.as_str(),
                    reason: e.to_string(),
                })?;
                Ok((name, totals))
            })
            .collect()
    }
}

fn day_prefix(day: Date) -> String {
    format!(
        "day/{:04}-{:02}-{:02}/",
        day.year(),
        u8::from(day.month()),
        day.day()
    )
}

fn total_key(day: Date) -> String {
    format!("{}total", day_prefix(day))
}

fn channel_key(day: Date, channel: &str) -> String {
    format!("{}channel/{channel}", day_prefix(day))
}

fn sender_key(day: Date, channel: &str, sender: &str) -> String {
    format!(
        "{}sender/{channel}{SENDER_SEPARATOR}{sender}",
        day_prefix(day)
    )
}

fn session_key(day: Date, session: &str) -> String {
    format!("{}session/{session}", day_prefix(day))
}

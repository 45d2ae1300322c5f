//! Channel settings (`channels.whatsapp.*`, `channels.bridges.NAME.*`) typed for startup, and
//! what the HTTP edge needs to verify webhooks (secrets and the bridge replay caches).
//!
//! Must not: parse or verify payloads (the `channel` module of `kafclaw-actors` does).

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use serde::Deserialize;

use kafclaw_actors::channel::backlog::Backlog;
use kafclaw_actors::channel::bridge::ReplayCache;
use kafclaw_actors::channel::{ChannelBridge, ChannelPolicy};
use kafclaw_actors::supervisor::Slot;

use crate::secret::Secret;
use crate::settings::Settings;

/// `channels.whatsapp.*`.
#[derive(Clone, Debug, Deserialize)]
pub struct WhatsAppSettings {
    /// Whether the channel runs.
    #[serde(default)]
    pub enabled: bool,
    /// The business number's id (Graph API path and session account).
    #[serde(default)]
    pub phone_number_id: String,
    /// The webhook handshake token.
    #[serde(default)]
    pub verify_token: Option<Secret>,
    /// The app secret that signs webhook bodies.
    #[serde(default)]
    pub app_secret: Option<Secret>,
    /// The Graph API access token for replies.
    #[serde(default)]
    pub access_token: Option<Secret>,
    /// Graph API base URL (tests point it at a local server).
    #[serde(default = "default_graph_base")]
    pub graph_base: String,
    /// Graph API version.
    #[serde(default = "default_api_version")]
    pub api_version: String,
    /// Seconds a reply whose send was never answered waits for a status webhook before it is
    /// sent again.
    #[serde(default = "default_resend_after")]
    pub resend_after_seconds: u64,
    /// Reactions and system events get a turn of the agent (default: only noted in the
    /// session and on the timeline, no model call).
    #[serde(default)]
    pub react_to_reactions: bool,
    /// The reply to a message type that cannot be handled, sent once per message (empty:
    /// none).
    #[serde(default = "default_unsupported_reply")]
    pub unsupported_reply: String,
    /// Media limits.
    #[serde(default)]
    pub media: MediaConfig,
    /// Access policy.
    #[serde(flatten)]
    pub policy: ChannelPolicy,
}

/// `channels.whatsapp.media.*`.
#[derive(Clone, Debug, Deserialize)]
pub struct MediaConfig {
    /// Largest media file saved, in bytes (default 16 MiB).
    #[serde(default = "default_media_max_bytes")]
    pub max_bytes: u64,
    /// MIME types saved.
    #[serde(default = "kafclaw_actors::channel::media::default_allow_types")]
    pub allow_types: Vec<String>,
    /// Deadline of one media fetch (both Graph requests), seconds.
    #[serde(default = "default_media_timeout")]
    pub timeout_seconds: u64,
    /// Background retries of a download that failed for a passing reason.
    #[serde(default = "default_media_retries")]
    pub retries: u32,
}

impl Default for MediaConfig {
    fn default() -> Self {
        Self {
            max_bytes: default_media_max_bytes(),
            allow_types: kafclaw_actors::channel::media::default_allow_types(),
            timeout_seconds: default_media_timeout(),
            retries: default_media_retries(),
        }
    }
}

impl MediaConfig {
    /// The limits as the media fetcher takes them.
    pub fn to_settings(&self) -> kafclaw_actors::channel::media::MediaSettings {
        kafclaw_actors::channel::media::MediaSettings {
            max_bytes: self.max_bytes,
            allow_types: self
                .allow_types
                .iter()
                .map(|t| kafclaw_actors::channel::media::normalize_mime(t))
                .collect(),
            timeout: std::time::Duration::from_secs(self.timeout_seconds.max(1)),
            retries: self.retries,
            ..Default::default()
        }
    }
}

fn default_media_max_bytes() -> u64 {
    kafclaw_actors::channel::media::DEFAULT_MAX_BYTES
}
fn default_media_timeout() -> u64 {
    kafclaw_actors::channel::media::DEFAULT_TIMEOUT.as_secs()
}
fn default_media_retries() -> u32 {
    kafclaw_actors::channel::media::DEFAULT_RETRIES
}
fn default_unsupported_reply() -> String {
    kafclaw_actors::channel::DEFAULT_UNSUPPORTED_REPLY.into()
}

fn default_graph_base() -> String {
    "https://graph.facebook.com".into()
}
fn default_api_version() -> String {
    "v21.0".into()
}

/// `channels.bridges.NAME.*`.
#[derive(Clone, Debug, Deserialize)]
pub struct BridgeSettings {
    /// Whether the bridge runs.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The shared HMAC secret.
    #[serde(default)]
    pub secret: Option<Secret>,
    /// Where replies are POSTed.
    #[serde(default)]
    pub outbound_url: String,
    /// Seconds a reply whose send was never answered waits before it is sent again (the
    /// bridge drops the repeat by its `Idempotency-Key`).
    #[serde(default = "default_resend_after")]
    pub resend_after_seconds: u64,
    /// Access policy.
    #[serde(flatten)]
    pub policy: ChannelPolicy,
}

fn default_resend_after() -> u64 {
    30
}

fn default_true() -> bool {
    true
}

/// Every configured channel.
#[derive(Clone, Debug, Default)]
pub struct ChannelsSettings {
    /// WhatsApp, when enabled.
    pub whatsapp: Option<WhatsAppSettings>,
    /// Enabled bridges by name.
    pub bridges: BTreeMap<String, BridgeSettings>,
    /// Where media and attachments are saved (`<workspace>/media`), set by the caller that
    /// knows the home.
    pub media_root: std::path::PathBuf,
    /// Each running channel's backlog bound (`store.max_pending`), shared by its actor and
    /// its webhook edge.
    pub backlogs: BTreeMap<String, Arc<Backlog>>,
}

/// Channel names that a bridge may not take.
const RESERVED: &[&str] = &["whatsapp", "api", "cli"];

impl ChannelsSettings {
    /// Reads and checks the channel settings; an enabled channel without its secrets is an
    /// error naming the key and how to set it.
    pub fn from_settings(settings: &Settings) -> Result<Self, String> {
        let mut out = ChannelsSettings::default();
        let channels = &settings.channels;
        if let Some(wa) = channels.get("whatsapp") {
            let wa: WhatsAppSettings = serde_json::from_value(wa.clone())
                .map_err(|e| format!("channels.whatsapp: {e}"))?;
            if wa.enabled {
                for (key, value) in [
                    ("verify_token", &wa.verify_token),
                    ("app_secret", &wa.app_secret),
                    ("access_token", &wa.access_token),
                ] {
                    if value.is_none() {
                        return Err(format!("channels.whatsapp is enabled but channels.whatsapp.{key} is not set (kafclaw secrets set channels.whatsapp.{key})"));
                    }
                }
                if wa.phone_number_id.is_empty() {
                    return Err(
                        "channels.whatsapp is enabled but channels.whatsapp.phone_number_id is not set"
                            .into(),
                    );
                }
                out.whatsapp = Some(wa);
                out.add_backlog("whatsapp", settings);
            }
        }
        if let Some(serde_json::Value::Object(bridges)) = channels.get("bridges") {
            for (name, value) in bridges {
                if RESERVED.contains(&name.as_str()) {
                    return Err(format!(
                        "channels.bridges.{name}: the name {name} is reserved"
                    ));
                }
                let bridge: BridgeSettings = serde_json::from_value(value.clone())
                    .map_err(|e| format!("channels.bridges.{name}: {e}"))?;
                if !bridge.enabled {
                    continue;
                }
                if bridge.secret.is_none() {
                    return Err(format!("channels.bridges.{name} has no secret (kafclaw secrets set channels.bridges.{name}.secret)"));
                }
                if bridge.outbound_url.is_empty() {
                    return Err(format!("channels.bridges.{name} has no outbound_url"));
                }
                out.add_backlog(name, settings);
                out.bridges.insert(name.clone(), bridge);
            }
        }
        Ok(out)
    }

    fn add_backlog(&mut self, name: &str, settings: &Settings) {
        let max = usize::try_from(settings.store.max_pending).unwrap_or(usize::MAX);
        self.backlogs
            .insert(name.to_string(), Arc::new(Backlog::new(max)));
    }

    /// The backlog bound of channel `name` (unbounded for a channel not configured here).
    pub fn backlog(&self, name: &str) -> Arc<Backlog> {
        self.backlogs.get(name).cloned().unwrap_or_default()
    }

    /// Names of every running channel.
    pub fn names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.bridges.keys().cloned().collect();
        if self.whatsapp.is_some() {
            names.insert(0, "whatsapp".into());
        }
        names
    }
}

/// What the webhook routes need.
#[derive(Default)]
pub struct ChannelEdge {
    /// WhatsApp, when enabled.
    pub whatsapp: Option<WhatsAppEdge>,
    /// Bridges by name.
    pub bridges: HashMap<String, BridgeEdge>,
}

/// WhatsApp's webhook secrets and channel.
pub struct WhatsAppEdge {
    /// The handshake token.
    pub verify_token: Secret,
    /// The body-signing secret.
    pub app_secret: Secret,
    /// The business number's id: deliveries for another number of the same app are skipped.
    pub phone_number_id: String,
    /// The channel actor.
    pub channel: Slot<ChannelBridge>,
    /// Its backlog bound, checked before a delivery is stored.
    pub backlog: Arc<Backlog>,
}

/// One bridge's secret, replay cache and channel.
pub struct BridgeEdge {
    /// The HMAC secret.
    pub secret: Secret,
    /// Signatures seen within the timestamp window.
    pub replay: Mutex<ReplayCache>,
    /// The channel actor.
    pub channel: Slot<ChannelBridge>,
    /// Its backlog bound, checked before a delivery is stored.
    pub backlog: Arc<Backlog>,
}

impl ChannelEdge {
    /// The edge for the running channels.
    pub fn new(settings: &ChannelsSettings, slots: &BTreeMap<String, Slot<ChannelBridge>>) -> Self {
        let slot = |name: &str| slots.get(name).cloned().unwrap_or_default();
        let whatsapp = settings.whatsapp.as_ref().and_then(|wa| {
            Some(WhatsAppEdge {
                verify_token: wa.verify_token.clone()?,
                app_secret: wa.app_secret.clone()?,
                phone_number_id: wa.phone_number_id.clone(),
                channel: slot("whatsapp"),
                backlog: settings.backlog("whatsapp"),
            })
        });
        let bridges = settings
            .bridges
            .iter()
            .filter_map(|(name, bridge)| {
                Some((
                    name.clone(),
                    BridgeEdge {
                        secret: bridge.secret.clone()?,
                        replay: Mutex::new(ReplayCache::new(REPLAY_WINDOW_SECONDS, 100_000)),
                        channel: slot(name),
                        backlog: settings.backlog(name),
                    },
                ))
            })
            .collect();
        Self { whatsapp, bridges }
    }
}

/// The bridge timestamp window (CONTRACT §5: ±300 s).
pub const REPLAY_WINDOW_SECONDS: i64 = 300;

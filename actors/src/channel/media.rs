//! Media of inbound messages, saved under `workspace/media/<channel>/<message id>.<ext>`:
//! WhatsApp media fetched through the Graph API, bridge attachments sent inline or served by
//! the bridge's own host.
//!
//! Owns: the two WhatsApp requests (`GET {graph_base}/{version}/{media id}` for the download URL,
//! then the download, both with the access token), their limits (`max_bytes` enforced while
//! reading — the body is never read past the cap —, the MIME allow-list, one deadline over the
//! whole fetch, the SHA-256 the webhook carried), the file's place and mode (created 0600, its
//! final mode, under a 0700 directory, written whole then renamed into place), and a bounded
//! number of background retries of a download that failed for a passing reason.
//! Must not: fetch anything for a sender the channel's policy did not admit (the channel
//! bridge calls it only for admitted messages, at hand-over), fetch a URL that arrived in a
//! message body (WhatsApp media are fetched by their media id; a bridge URL must be on the
//! bridge's own origin), send the access token to any origin but `graph_base` and Meta's media
//! host, follow redirects, take the file extension from the payload (it comes from the
//! allow-listed MIME type), or put the token or a URL's path into an error or a log line.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use sha2::{Digest, Sha256};

use super::content::{Attachment, MediaRef};
use super::session::encode_component;
use crate::backoff::Backoff;
use crate::vault::SecretValue;

/// Default cap on one media file (`channels.whatsapp.media.max_bytes`): 16 MiB.
pub const DEFAULT_MAX_BYTES: u64 = 16 * 1024 * 1024;
/// Default deadline of one fetch, both requests together.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(15);
/// Default number of background retries of a download that failed for a passing reason.
pub const DEFAULT_RETRIES: u32 = 3;
/// The host Meta serves media downloads from (besides `graph_base` itself).
const META_MEDIA_HOST_SUFFIX: &str = ".fbsbx.com";

/// The MIME types saved by default, with the extension each is saved under.
const KNOWN_TYPES: &[(&str, &str)] = &[
    ("image/jpeg", "jpg"),
    ("image/png", "png"),
    ("image/webp", "webp"),
    ("image/gif", "gif"),
    ("audio/ogg", "ogg"),
    ("audio/mpeg", "mp3"),
    ("audio/aac", "aac"),
    ("audio/mp4", "m4a"),
    ("audio/amr", "amr"),
    ("video/mp4", "mp4"),
    ("video/3gpp", "3gp"),
    ("application/pdf", "pdf"),
    ("text/plain", "txt"),
];

/// The default `allow_types`.
pub fn default_allow_types() -> Vec<String> {
    KNOWN_TYPES.iter().map(|(t, _)| (*t).to_string()).collect()
}

/// `type/subtype` in lowercase, without parameters (`audio/ogg; codecs=opus` → `audio/ogg`).
pub fn normalize_mime(raw: &str) -> String {
    raw.split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The extension a MIME type is saved under: from the table, or `bin` for an allowed type it
/// does not name. Never from the payload's file name.
fn extension_for(mime: &str) -> &'static str {
    KNOWN_TYPES
        .iter()
        .find(|(t, _)| *t == mime)
        .map_or("bin", |(_, ext)| ext)
}

/// Limits of media handling (`channels.whatsapp.media.*`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MediaSettings {
    /// Largest file saved, in bytes.
    pub max_bytes: u64,
    /// MIME types saved (`type/subtype`, lowercase).
    pub allow_types: Vec<String>,
    /// Deadline of one fetch (metadata and download together).
    pub timeout: Duration,
    /// Background retries after a passing failure (0 = none).
    pub retries: u32,
    /// Wait before the first background retry (before jitter); doubled for each next one.
    pub retry_delay: Duration,
}

impl Default for MediaSettings {
    fn default() -> Self {
        Self {
            max_bytes: DEFAULT_MAX_BYTES,
            allow_types: default_allow_types(),
            timeout: DEFAULT_TIMEOUT,
            retries: DEFAULT_RETRIES,
            retry_delay: Duration::from_secs(5),
        }
    }
}

impl MediaSettings {
    fn allows(&self, mime: &str) -> bool {
        self.allow_types.iter().any(|t| normalize_mime(t) == mime)
    }
}

/// Where WhatsApp media come from.
#[derive(Clone)]
pub struct GraphSource {
    /// `channels.whatsapp.graph_base`.
    pub graph_base: String,
    /// `channels.whatsapp.api_version`.
    pub api_version: String,
    /// `channels.whatsapp.access_token`.
    pub access_token: SecretValue,
}

impl std::fmt::Debug for GraphSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GraphSource")
            .field("graph_base", &super::dispatch::origin_of(&self.graph_base))
            .field("api_version", &self.api_version)
            .field("access_token", &self.access_token)
            .finish()
    }
}

/// Why a media file was not saved. Never carries a token or a URL's path.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MediaError {
    /// The message names no (usable) media id.
    #[error("the message names no media id")]
    NoId,
    /// The MIME type is not on the allow-list.
    #[error("media type {0} is not allowed")]
    TypeNotAllowed(String),
    /// The file is larger than `max_bytes`.
    #[error("media is larger than {0} bytes")]
    TooLarge(u64),
    /// The bytes do not hash to the SHA-256 the webhook gave.
    #[error("media checksum does not match")]
    ChecksumMismatch,
    /// Neither the webhook nor the Graph API gave a checksum to verify against.
    #[error("no checksum to verify the media against")]
    NoChecksum,
    /// The fetch took longer than the deadline.
    #[error("media download timed out")]
    Timeout,
    /// The Graph API or the media host answered with this status.
    #[error("media download answered http {0}")]
    Status(u16),
    /// The request failed (connection, reading the answer).
    #[error("media download failed: {0}")]
    Network(String),
    /// The download URL is not on `graph_base` nor on Meta's media host (or a bridge URL not on
    /// the bridge's own origin).
    #[error("media url is not on an allowed host")]
    ForeignHost,
    /// The Graph API's answer was not the expected JSON.
    #[error("the graph api answer is not a media object")]
    BadAnswer,
    /// The inline data is not base64.
    #[error("inline attachment is not base64")]
    BadInline,
    /// The attachment has neither inline data nor a URL.
    #[error("attachment has no data")]
    NoData,
    /// Media fetching is not configured for this channel.
    #[error("media fetching is not configured")]
    NotConfigured,
    /// The file could not be written.
    #[error("cannot save media: {0}")]
    Io(String),
}

impl MediaError {
    /// Whether a later attempt may succeed (timeouts, 429/5xx, network failures).
    pub fn is_passing(&self) -> bool {
        match self {
            MediaError::Timeout | MediaError::Network(_) | MediaError::Io(_) => true,
            MediaError::Status(code) => *code == 429 || *code >= 500,
            _ => false,
        }
    }
}

/// A saved media file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SavedMedia {
    /// Where it is (absolute).
    pub path: PathBuf,
    /// Its (allow-listed) MIME type.
    pub mime_type: String,
    /// Its size.
    pub bytes: u64,
}

/// Which session each saved media file belongs to: recorded when a message's media is saved
/// for it, asked by the executor before an external sender's `read_file` under the media root
/// (all senders' files share that directory; a sender reads only their own conversation's).
/// Keys are paths relative to the media root, both sides canonical.
#[derive(Clone)]
pub struct MediaOwners {
    tree: crate::store::KvTree,
    root: PathBuf,
}

impl std::fmt::Debug for MediaOwners {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaOwners")
            .field("root", &self.root)
            .finish()
    }
}

impl MediaOwners {
    /// The owners of the files under `root` (`workspace/media`), kept in `db`.
    pub fn new(
        db: &crate::store::StoreDb,
        root: PathBuf,
    ) -> Result<Self, crate::store::StoreError> {
        Ok(Self {
            tree: db.tree(crate::store::TreeName::Media)?,
            root,
        })
    }

    /// The media root, canonical when it exists.
    fn canonical_root(&self) -> PathBuf {
        std::fs::canonicalize(&self.root).unwrap_or_else(|_| self.root.clone())
    }

    /// Whether `path` (canonical) is the media root or under it.
    pub fn covers(&self, path: &Path) -> bool {
        path.starts_with(self.canonical_root()) || path.starts_with(&self.root)
    }

    fn key(&self, path: &Path) -> Option<String> {
        let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        let relative = path
            .strip_prefix(self.canonical_root())
            .or_else(|_| path.strip_prefix(&self.root))
            .ok()?;
        relative
            .to_str()
            .filter(|r| !r.is_empty())
            .map(str::to_string)
    }

    /// Records that the saved file `path` belongs to `session`.
    pub fn record(&self, path: &Path, session: &str) -> Result<(), crate::store::StoreError> {
        match self.key(path) {
            Some(key) => self.tree.insert(key, session.as_bytes()).map(|_| ()),
            None => Ok(()),
        }
    }

    /// The session `path` (canonical, under the root) was saved for; `None` when unknown.
    pub fn owner(&self, path: &Path) -> Option<String> {
        let value = self.tree.get(self.key(path)?).ok()??;
        String::from_utf8(value).ok()
    }

    /// Retention (run by the pruner, on the blocking pool): looks at up to `limit` entries
    /// after `cursor` and removes each saved file last written before `cutoff` together with
    /// its entry, and the entry of a file already gone. Only a regular file at its recorded
    /// place is removed: an entry whose key is not a plain relative path, whose file is not a
    /// regular file (a symlink, a directory) or whose directory resolves elsewhere (a
    /// symlinked directory) loses its entry and leaves the disk alone. Returns the files
    /// removed and whether entries remain after the cursor (`cursor` is `None` at the end).
    pub fn prune(
        &self,
        cutoff: std::time::SystemTime,
        cursor: &mut Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(usize, bool), crate::store::StoreError> {
        let limit = limit.max(1);
        let page = self.tree.scan_after("", cursor.as_deref(), limit)?;
        let more = page.len() >= limit;
        let root = self.canonical_root();
        let mut batch = crate::store::KvBatch::default();
        let mut removed = 0;
        for (key, _) in &page {
            *cursor = Some(key.clone());
            match self.expired_file(&root, key, cutoff) {
                Expired::Keep => continue,
                Expired::Forget => {}
                Expired::Remove(path) => match std::fs::remove_file(&path) {
                    Ok(()) => removed += 1,
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    // Kept with its entry: the next pass tries again.
                    Err(e) => {
                        tracing::warn!(error = %e, "retention could not remove a media file");
                        continue;
                    }
                },
            }
            batch.remove(key);
        }
        self.tree.apply(batch)?;
        if !more {
            *cursor = None;
        }
        Ok((removed, more))
    }

    /// What retention does with the entry `key` (see [`MediaOwners::prune`]).
    fn expired_file(&self, root: &Path, key: &[u8], cutoff: std::time::SystemTime) -> Expired {
        use std::path::Component;
        let Some(relative) = std::str::from_utf8(key).ok().map(Path::new) else {
            return Expired::Forget;
        };
        if relative.as_os_str().is_empty()
            || !relative
                .components()
                .all(|c| matches!(c, Component::Normal(_)))
        {
            return Expired::Forget;
        }
        let path = root.join(relative);
        let metadata = match std::fs::symlink_metadata(&path) {
            Ok(metadata) => metadata,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Expired::Forget,
            Err(_) => return Expired::Keep,
        };
        let in_place = path
            .parent()
            .and_then(|dir| std::fs::canonicalize(dir).ok())
            .is_some_and(|dir| Some(dir.as_path()) == root.join(relative).parent());
        if !metadata.file_type().is_file() || !in_place {
            return Expired::Forget;
        }
        match metadata.modified() {
            Ok(written) if written < cutoff => Expired::Remove(path),
            Ok(_) => Expired::Keep,
            Err(_) => Expired::Keep,
        }
    }
}

/// Retention's verdict on one media entry.
enum Expired {
    /// Younger than the retention (or unreadable now): keep file and entry.
    Keep,
    /// Nothing to remove on disk: drop the entry only.
    Forget,
    /// Remove this file, then its entry.
    Remove(PathBuf),
}

/// Fetches and saves media. Cheap to clone; shared by a channel's hand-overs and the
/// background retries.
#[derive(Clone)]
pub struct MediaFetcher {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    graph: Option<GraphSource>,
    /// `workspace/media`.
    root: PathBuf,
    settings: MediaSettings,
    /// Where a saved file's session is recorded.
    owners: Option<MediaOwners>,
}

impl std::fmt::Debug for MediaFetcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MediaFetcher")
            .field("graph", &self.inner.graph)
            .field("root", &self.inner.root)
            .field("settings", &self.inner.settings)
            .finish()
    }
}

/// A file name component for a message id: the id itself where it is made of letters, digits
/// and `._-=+` (every `wamid…` is), other bytes percent-encoded, never starting with a dot,
/// and hashed when it would be too long for a file name.
fn file_stem(message_id: &str) -> String {
    let mut encoded = String::with_capacity(message_id.len());
    for byte in message_id.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'.' | b'_' | b'-' | b'=' | b'+') {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    let encoded = match encoded.strip_prefix('.') {
        Some(rest) => format!("%2E{rest}"),
        None => encoded,
    };
    if encoded.len() > 160 {
        blake3::hash(message_id.as_bytes()).to_hex()[..40].to_string()
    } else {
        encoded
    }
}

/// The SHA-256 a webhook or the Graph API gave, as bytes (hex or base64).
fn decode_sha256(raw: &str) -> Option<[u8; 32]> {
    let raw = raw.trim();
    let bytes = if raw.len() == 64 {
        hex::decode(raw).ok()?
    } else {
        base64::engine::general_purpose::STANDARD
            .decode(raw)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(raw))
            .ok()?
    };
    bytes.try_into().ok()
}

impl MediaFetcher {
    /// A fetcher saving under `media_root` (`workspace/media`), fetching WhatsApp media from
    /// `graph` (bridges pass `None`) with `http` (no redirects: [`super::dispatch::http_client`]).
    pub fn new(
        http: reqwest::Client,
        graph: Option<GraphSource>,
        media_root: PathBuf,
        settings: MediaSettings,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                http,
                graph,
                root: media_root,
                settings,
                owners: None,
            }),
        }
    }

    /// The same fetcher, recording each saved file's session in `owners`
    /// ([`MediaFetcher::record_owner`]).
    pub fn with_owners(self, owners: MediaOwners) -> Self {
        let inner = Arc::try_unwrap(self.inner).unwrap_or_else(|shared| Inner {
            http: shared.http.clone(),
            graph: shared.graph.clone(),
            root: shared.root.clone(),
            settings: shared.settings.clone(),
            owners: None,
        });
        Self {
            inner: Arc::new(Inner {
                owners: Some(owners),
                ..inner
            }),
        }
    }

    /// Records that the file saved at `path` belongs to `session` (what lets an external
    /// sender of that session, and only them, read it). A failure is logged: the file then
    /// stays unreadable to external senders.
    pub fn record_owner(&self, path: &Path, session: &str) {
        if let Some(owners) = &self.inner.owners {
            if let Err(e) = owners.record(path, session) {
                tracing::warn!(error = %e, "media owner not recorded");
            }
        }
    }

    /// The limits in force.
    pub fn settings(&self) -> &MediaSettings {
        &self.inner.settings
    }

    /// Where a file of `channel`'s message `message_id` is saved (`index` > 0 for further
    /// attachments of one bridge message).
    pub fn path_for(&self, channel: &str, message_id: &str, index: usize, mime: &str) -> PathBuf {
        let stem = file_stem(message_id);
        let name = match index {
            0 => format!("{stem}.{}", extension_for(mime)),
            n => format!("{stem}-{n}.{}", extension_for(mime)),
        };
        self.inner.root.join(encode_component(channel)).join(name)
    }

    /// Fetches one WhatsApp media object and saves it; a passing failure is retried in the
    /// background up to `retries` times (the caller goes on with the failure).
    pub async fn fetch_whatsapp(
        &self,
        channel: &str,
        message_id: &str,
        media: &MediaRef,
    ) -> Result<SavedMedia, MediaError> {
        let result = self.fetch_whatsapp_once(channel, message_id, media).await;
        if let Err(error) = &result {
            if error.is_passing() && self.inner.settings.retries > 0 {
                self.retry_in_background(channel, message_id, media);
            }
        }
        result
    }

    fn retry_in_background(&self, channel: &str, message_id: &str, media: &MediaRef) {
        let this = self.clone();
        let (channel, message_id, media) =
            (channel.to_string(), message_id.to_string(), media.clone());
        actix::spawn(async move {
            let settings = &this.inner.settings;
            let base_ms = u64::try_from(settings.retry_delay.as_millis()).unwrap_or(u64::MAX);
            // The foreground fetch was the first attempt; `retries` more follow it.
            let backoff = Backoff::new(base_ms, u64::MAX, settings.retries.saturating_add(1));
            let mut retries = backoff.retries();
            while let Some(delay) = retries.next_delay() {
                let attempt = retries.failures();
                tokio::time::sleep(delay).await;
                match this
                    .fetch_whatsapp_once(&channel, &message_id, &media)
                    .await
                {
                    Ok(saved) => {
                        tracing::info!(%channel, attempt, bytes = saved.bytes, "media saved on a background retry");
                        return;
                    }
                    Err(error) if error.is_passing() => {
                        tracing::warn!(%channel, attempt, %error, "media retry failed");
                    }
                    Err(error) => {
                        tracing::warn!(%channel, attempt, %error, "media retry given up");
                        return;
                    }
                }
            }
        });
    }

    async fn fetch_whatsapp_once(
        &self,
        channel: &str,
        message_id: &str,
        media: &MediaRef,
    ) -> Result<SavedMedia, MediaError> {
        let deadline = self.inner.settings.timeout;
        match tokio::time::timeout(deadline, self.whatsapp_steps(channel, message_id, media)).await
        {
            Ok(result) => result,
            Err(_) => Err(MediaError::Timeout),
        }
    }

    async fn whatsapp_steps(
        &self,
        channel: &str,
        message_id: &str,
        media: &MediaRef,
    ) -> Result<SavedMedia, MediaError> {
        let graph = self.inner.graph.as_ref().ok_or(MediaError::NotConfigured)?;
        let settings = &self.inner.settings;
        let id = media
            .id
            .as_deref()
            .filter(|id| {
                !id.is_empty()
                    && id.len() <= 128
                    && id
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
            })
            .ok_or(MediaError::NoId)?;
        if let Some(declared) = media.mime_type.as_deref().map(normalize_mime) {
            if !settings.allows(&declared) {
                return Err(MediaError::TypeNotAllowed(declared));
            }
        }
        let authorization =
            super::dispatch::bearer(&graph.access_token).ok_or(MediaError::NotConfigured)?;
        let base = graph.graph_base.trim_end_matches('/');
        let versioned = format!("{base}/{}/{id}", graph.api_version.trim_matches('/'));
        let lookup = |url: String| {
            self.inner
                .http
                .get(url)
                .header(reqwest::header::AUTHORIZATION, authorization.clone())
                .send()
        };
        let mut answer = lookup(versioned)
            .await
            .map_err(|e| MediaError::Network(super::dispatch::error_reason(&e)))?;
        if answer.status() == reqwest::StatusCode::NOT_FOUND {
            // The Graph API also answers without a version (the app's default one).
            answer = lookup(format!("{base}/{id}"))
                .await
                .map_err(|e| MediaError::Network(super::dispatch::error_reason(&e)))?;
        }
        if !answer.status().is_success() {
            return Err(MediaError::Status(answer.status().as_u16()));
        }
        let object: serde_json::Value = read_capped(answer, 64 * 1024)
            .await
            .and_then(|bytes| serde_json::from_slice(&bytes).map_err(|_| MediaError::BadAnswer))?;
        let url = object["url"].as_str().ok_or(MediaError::BadAnswer)?;
        let mime = object["mime_type"]
            .as_str()
            .or(media.mime_type.as_deref())
            .map(normalize_mime)
            .ok_or(MediaError::BadAnswer)?;
        if !settings.allows(&mime) {
            return Err(MediaError::TypeNotAllowed(mime));
        }
        let size = match &object["file_size"] {
            serde_json::Value::Number(n) => n.as_u64(),
            serde_json::Value::String(s) => s.parse().ok(),
            _ => None,
        };
        if size.is_some_and(|s| s > settings.max_bytes) {
            return Err(MediaError::TooLarge(settings.max_bytes));
        }
        let expected = media
            .sha256
            .as_deref()
            .or(object["sha256"].as_str())
            .and_then(decode_sha256)
            .ok_or(MediaError::NoChecksum)?;
        if !download_host_allowed(url, base) {
            return Err(MediaError::ForeignHost);
        }
        let answer = self
            .inner
            .http
            .get(url)
            .header(reqwest::header::AUTHORIZATION, authorization)
            .send()
            .await
            .map_err(|e| MediaError::Network(super::dispatch::error_reason(&e)))?;
        if !answer.status().is_success() {
            return Err(MediaError::Status(answer.status().as_u16()));
        }
        let bytes = read_capped(answer, settings.max_bytes).await?;
        let digest: [u8; 32] = Sha256::digest(&bytes).into();
        if !bool::from(subtle::ConstantTimeEq::ct_eq(&digest[..], &expected[..])) {
            return Err(MediaError::ChecksumMismatch);
        }
        let path = self.path_for(channel, message_id, 0, &mime);
        save(&path, &bytes).await?;
        Ok(SavedMedia {
            path,
            mime_type: mime,
            bytes: bytes.len() as u64,
        })
    }

    /// Saves one bridge attachment: inline data (base64), or a URL on `bridge_origin` (the
    /// origin of the bridge's `outbound_url`), with the same limits as WhatsApp media.
    pub async fn save_attachment(
        &self,
        channel: &str,
        message_id: &str,
        index: usize,
        attachment: &Attachment,
        bridge_origin: Option<&str>,
    ) -> Result<SavedMedia, MediaError> {
        let settings = &self.inner.settings;
        let mime = normalize_mime(
            attachment
                .mime_type
                .as_deref()
                .unwrap_or("application/octet-stream"),
        );
        if !settings.allows(&mime) {
            return Err(MediaError::TypeNotAllowed(mime));
        }
        if attachment.size.is_some_and(|s| s > settings.max_bytes) {
            return Err(MediaError::TooLarge(settings.max_bytes));
        }
        let bytes = match (&attachment.data, &attachment.url) {
            (Some(data), _) => {
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data.trim())
                    .map_err(|_| MediaError::BadInline)?;
                if bytes.len() as u64 > settings.max_bytes {
                    return Err(MediaError::TooLarge(settings.max_bytes));
                }
                bytes
            }
            (None, Some(url)) => {
                let origin = bridge_origin.ok_or(MediaError::ForeignHost)?;
                if !same_origin(url, origin) {
                    return Err(MediaError::ForeignHost);
                }
                let fetch =
                    async {
                        let answer =
                            self.inner.http.get(url).send().await.map_err(|e| {
                                MediaError::Network(super::dispatch::error_reason(&e))
                            })?;
                        if !answer.status().is_success() {
                            return Err(MediaError::Status(answer.status().as_u16()));
                        }
                        read_capped(answer, settings.max_bytes).await
                    };
                tokio::time::timeout(settings.timeout, fetch)
                    .await
                    .map_err(|_| MediaError::Timeout)??
            }
            (None, None) => return Err(MediaError::NoData),
        };
        let path = self.path_for(channel, message_id, index, &mime);
        save(&path, &bytes).await?;
        Ok(SavedMedia {
            path,
            mime_type: mime,
            bytes: bytes.len() as u64,
        })
    }
}

/// Reads an answer's body, refusing it (without reading further) once it passes `max` bytes.
async fn read_capped(mut answer: reqwest::Response, max: u64) -> Result<Vec<u8>, MediaError> {
    if answer.content_length().is_some_and(|n| n > max) {
        return Err(MediaError::TooLarge(max));
    }
    let mut out = Vec::new();
    while let Some(chunk) = answer
        .chunk()
        .await
        .map_err(|e| MediaError::Network(super::dispatch::error_reason(&e)))?
    {
        if (out.len() + chunk.len()) as u64 > max {
            return Err(MediaError::TooLarge(max));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn same_origin(url: &str, origin_of: &str) -> bool {
    match (reqwest::Url::parse(url), reqwest::Url::parse(origin_of)) {
        (Ok(a), Ok(b)) => a.origin() == b.origin() && a.username().is_empty(),
        _ => false,
    }
}

/// The token goes only to `graph_base`'s origin or to Meta's media host over https.
fn download_host_allowed(url: &str, graph_base: &str) -> bool {
    if same_origin(url, graph_base) {
        return true;
    }
    match reqwest::Url::parse(url) {
        Ok(parsed) => {
            parsed.scheme() == "https"
                && parsed.username().is_empty()
                && parsed.port().is_none()
                && parsed
                    .host_str()
                    .is_some_and(|h| h.ends_with(META_MEDIA_HOST_SUFFIX))
        }
        Err(_) => false,
    }
}

/// Writes `bytes` to a fresh 0600 file beside `path` and renames it into place, under 0700
/// directories; nothing is ever executable.
async fn save(path: &Path, bytes: &[u8]) -> Result<(), MediaError> {
    let path = path.to_path_buf();
    let bytes = bytes.to_vec();
    let io = |e: std::io::Error| MediaError::Io(e.kind().to_string());
    tokio::task::spawn_blocking(move || -> Result<(), MediaError> {
        use std::io::Write;
        let dir = path.parent().ok_or(MediaError::Io("no directory".into()))?;
        crate::fsutil::create_private_dir(dir).map_err(io)?;
        let tmp = dir.join(format!(
            ".{}.part-{}",
            path.file_name().and_then(|n| n.to_str()).unwrap_or("media"),
            std::process::id()
        ));
        let _ = std::fs::remove_file(&tmp);
        let mut file = crate::fsutil::create_private_new(&tmp).map_err(io)?;
        let written = file
            .write_all(&bytes)
            .and_then(|()| file.sync_all())
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(error) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(io(error));
        }
        Ok(())
    })
    .await
    .map_err(|_| MediaError::Io("the writer stopped".into()))?
}

#[cfg(test)]
mod tests;

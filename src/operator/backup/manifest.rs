//! The manifest `MANIFEST.json`: every file of a backup with its BLAKE3 and size, the audit
//! head, and `mac`, a keyed BLAKE3 over the manifest's canonical bytes without `mac`.
//!
//! Owns: the manifest's two formats (`kafclaw-backup-1`: checksums only, no sizes, no MAC —
//! written before manifests were authenticated; `kafclaw-backup-2`), parsing them strictly
//! (every name in the layout, every checksum well formed), canonical bytes and the MAC.
//! Must not: trust a manifest whose MAC did not verify for more than bounding what is read.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::layout::{self, Part};

/// Manifests written before they were authenticated (checksums only).
pub const FORMAT_V1: &str = "kafclaw-backup-1";
/// The current format: sizes and a MAC.
pub const FORMAT: &str = "kafclaw-backup-2";
/// Domain separation of the MAC (the backup key is used for nothing else).
const MAC_CONTEXT: &[u8] = b"kafclaw-backup-manifest-mac-2\0";

/// One file as the manifest lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// BLAKE3, lowercase hex.
    pub blake3: String,
    /// Its size; `None` in a version-1 manifest.
    pub size: Option<u64>,
}

/// A parsed manifest.
#[derive(Clone, Debug)]
pub struct Manifest {
    /// The whole document (for the audit head, the MAC and the report).
    pub doc: Value,
    /// Every file but the manifest, by name.
    pub files: BTreeMap<String, Listed>,
}

/// The outcome of checking a manifest's MAC.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MacCheck {
    /// The MAC matches: the manifest was written by a holder of the backup key.
    Valid,
    /// A MAC is present and does not match: the manifest was altered.
    Invalid,
    /// No MAC (a version-1 manifest, or one stripped of it).
    Missing,
}

/// Why a manifest is refused.
#[derive(Debug, thiserror::Error)]
pub enum ManifestError {
    /// Not JSON, not an object.
    #[error("the manifest is not a JSON object")]
    NotJson,
    /// A format this version does not read.
    #[error("unknown backup format {0:?}: use the kafclaw version that wrote it")]
    UnknownFormat(String),
    /// A file entry that is not a name in the layout with a well-formed checksum.
    #[error("the manifest's entry {0:?} is malformed")]
    BadEntry(String),
}

impl Manifest {
    /// Parses and checks the shape of a manifest (nothing is trusted yet).
    pub fn parse(bytes: &[u8]) -> Result<Self, ManifestError> {
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| ManifestError::NotJson)?;
        let Some(obj) = doc.as_object() else {
            return Err(ManifestError::NotJson);
        };
        let format = obj.get("format").and_then(Value::as_str).unwrap_or("");
        let v1 = match format {
            FORMAT_V1 => true,
            FORMAT => false,
            other => {
                return Err(ManifestError::UnknownFormat(
                    other.chars().take(64).collect(),
                ))
            }
        };
        let mut files = BTreeMap::new();
        let listed = obj
            .get("files")
            .and_then(Value::as_object)
            .ok_or_else(|| ManifestError::BadEntry("files".into()))?;
        for (name, entry) in listed {
            let bad = || ManifestError::BadEntry(name.chars().take(120).collect());
            match layout::classify(name.as_bytes(), false) {
                Ok((_, part)) if part != Part::Manifest => {}
                _ => return Err(bad()),
            }
            let (blake3, size) = if v1 {
                (entry.as_str(), None)
            } else {
                let size = entry["size"].as_u64().ok_or_else(bad)?;
                (entry["blake3"].as_str(), Some(size))
            };
            let blake3 = blake3.filter(|h| is_hex64(h)).ok_or_else(bad)?;
            files.insert(
                name.clone(),
                Listed {
                    blake3: blake3.to_string(),
                    size,
                },
            );
        }
        Ok(Self { doc, files })
    }

    /// The sum of the listed sizes (0 for a version-1 manifest).
    pub fn total_size(&self) -> u64 {
        self.files
            .values()
            .filter_map(|l| l.size)
            .fold(0, u64::saturating_add)
    }

    /// Checks `mac` with `key` (constant time).
    pub fn check_mac(&self, key: &[u8; 32]) -> MacCheck {
        let Some(given) = self.doc["mac"].as_str() else {
            return MacCheck::Missing;
        };
        match blake3::Hash::from_hex(given) {
            // blake3::Hash's equality is constant-time.
            Ok(given) if given == mac_of(key, &self.doc) => MacCheck::Valid,
            _ => MacCheck::Invalid,
        }
    }
}

/// Builds a version-2 manifest for `files` with the fields of `meta`, MAC'd with `key`.
pub fn build(meta: Map<String, Value>, files: &BTreeMap<String, Listed>, key: &[u8; 32]) -> Value {
    let mut doc = meta;
    doc.insert("format".into(), json!(FORMAT));
    let listed: Map<String, Value> = files
        .iter()
        .map(|(name, l)| {
            (
                name.clone(),
                json!({"blake3": l.blake3, "size": l.size.unwrap_or(0)}),
            )
        })
        .collect();
    doc.insert("files".into(), Value::Object(listed));
    doc.remove("mac");
    let mut doc = Value::Object(doc);
    let mac = mac_of(key, &doc).to_hex().to_string();
    doc["mac"] = json!(mac);
    doc
}

/// The keyed BLAKE3 of `doc`'s canonical bytes without its `mac` field.
fn mac_of(key: &[u8; 32], doc: &Value) -> blake3::Hash {
    let mut without = doc.clone();
    if let Some(obj) = without.as_object_mut() {
        obj.remove("mac");
    }
    let mut bytes = Vec::new();
    canonical(&without, &mut bytes);
    let mut hasher = blake3::Hasher::new_keyed(key);
    hasher.update(MAC_CONTEXT);
    hasher.update(&bytes);
    hasher.finalize()
}

/// JSON with object keys sorted at every level and no insignificant white space, so the MAC
/// does not depend on how a map was ordered or the file was pretty-printed.
pub fn canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push(b'{');
            for (i, k) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                out.extend_from_slice(Value::from(k.as_str()).to_string().as_bytes());
                out.push(b':');
                canonical(&map[k], out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(item, out);
            }
            out.push(b']');
        }
        other => out.extend_from_slice(other.to_string().as_bytes()),
    }
}

fn is_hex64(s: &str) -> bool {
    s.len() == 64
        && s.bytes()
            .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
}

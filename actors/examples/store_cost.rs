//! What a store holds, by tree and key family (issue 20): keys, key bytes and value bytes, so
//! the store's cost per message can be read off a soak's store.
//!
//! ```text
//! cargo run --release -p kafclaw-actors --example store_cost -- ~/.kafclaw/timeline.db [MESSAGES]
//! ```
//!
//! The store must not be open elsewhere (stop the gateway first). A key family is the key up
//! to its second `/` or `:` (`inbox/whatsapp`, `dedupe/whatsapp`, `h/m`, …). With MESSAGES,
//! bytes per message are printed too.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::ExitCode;

use kafclaw_actors::store::{StoreDb, TreeName};

fn family(key: &[u8]) -> String {
    let text = String::from_utf8_lossy(key);
    if !text.bytes().all(|b| b.is_ascii_graphic()) {
        return "(binary)".into();
    }
    // The first two components, numbers folded (`t/N`, `inbox/whatsapp`).
    text.split(['/', ':'])
        .take(2)
        .map(|part| {
            if !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()) {
                "N"
            } else {
                part
            }
        })
        .collect::<Vec<_>>()
        .join("/")
        .chars()
        .take(40)
        .collect()
}

fn main() -> ExitCode {
    let mut args = std::env::args().skip(1);
    let Some(path) = args.next().map(PathBuf::from) else {
        eprintln!("usage: store_cost STORE_DIR [MESSAGES] [--dump FAMILY]");
        return ExitCode::from(2);
    };
    let messages: Option<f64> = args.next().and_then(|m| m.parse().ok());
    let db = match StoreDb::open(&path) {
        Ok(db) => db,
        Err(e) => {
            eprintln!("store_cost: {e}");
            return ExitCode::from(1);
        }
    };
    println!(
        "{:<10} {:<28} {:>9} {:>11} {:>12} {:>10}",
        "tree", "family", "keys", "key_bytes", "value_bytes", "B/message"
    );
    let mut total = 0u64;
    for name in TreeName::ALL {
        let Ok(tree) = db.tree(name) else { continue };
        let mut families: BTreeMap<String, (u64, u64, u64)> = BTreeMap::new();
        let _ = tree.for_each(|k, v| {
            let entry = families.entry(family(k)).or_default();
            entry.0 += 1;
            entry.1 += k.len() as u64;
            entry.2 += v.len() as u64;
            true
        });
        for (family, (keys, kb, vb)) in families {
            total += kb + vb;
            let per = messages.map_or(String::new(), |m| format!("{:.0}", (kb + vb) as f64 / m));
            println!(
                "{:<10} {:<28} {keys:>9} {kb:>11} {vb:>12} {per:>10}",
                name.as_str(),
                family
            );
        }
    }
    let disk = db.size_on_disk().unwrap_or(0);
    let per = |b: u64| {
        messages.map_or(String::new(), |m| {
            format!(", {:.0} B/message", b as f64 / m)
        })
    };
    println!(
        "logical {total} bytes{}; on disk {disk} bytes{}",
        per(total),
        per(disk)
    );
    ExitCode::SUCCESS
}

//! Regenerates the generated reference pages: `docs/config.md` (from the key table and the
//! comments of `config/default.toml`) and `docs/http.md` (from `docs/openapi.yaml`).
//!
//! `cargo run --example docs` writes both; `cargo run --example docs -- --check` writes
//! nothing and exits 1 when a page is out of date (`tests/it/docs.rs` checks the same).

#[path = "docs/render.rs"]
mod render;

use std::path::Path;
use std::process::ExitCode;

fn main() -> ExitCode {
    let check = std::env::args().skip(1).any(|a| a == "--check");
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let read = |rel: &str| {
        std::fs::read_to_string(root.join(rel)).map_err(|e| format!("cannot read {rel}: {e}"))
    };
    let pages = read("config/default.toml")
        .and_then(|toml| render::config_markdown(&toml))
        .map(|md| ("docs/config.md", md))
        .and_then(|config| {
            let http = read("docs/openapi.yaml").and_then(|y| render::http_markdown(&y))?;
            Ok([config, ("docs/http.md", http)])
        });
    let pages = match pages {
        Ok(pages) => pages,
        Err(e) => {
            eprintln!("docs: {e}");
            return ExitCode::from(2);
        }
    };
    let mut stale = false;
    for (rel, text) in pages {
        let path = root.join(rel);
        let current = std::fs::read_to_string(&path).unwrap_or_default();
        if current == text {
            println!("{rel}: up to date");
        } else if check {
            println!("{rel}: out of date (run `cargo run --example docs`)");
            stale = true;
        } else if let Err(e) = std::fs::write(&path, text) {
            eprintln!("docs: cannot write {rel}: {e}");
            return ExitCode::from(2);
        } else {
            println!("{rel}: written");
        }
    }
    if stale {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}

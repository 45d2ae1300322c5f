//! The `SKILL.md` front-matter parser.
//!
//! Properties: parsing never panics; a parsed manifest, written back as front matter,
//! parses back equal (its positional order up to reordering); a manifest
//! built from arbitrary fields round-trips the same way whenever the first parse accepts it;
//! parsing is deterministic.
#![no_main]

use arbitrary::Arbitrary;
use kafclaw::skills::manifest::SkillManifest;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum Input<'a> {
    Text(&'a str),
    Fields {
        name: String,
        description: String,
        version: String,
        tools: Vec<String>,
        entry: Option<String>,
        network: bool,
        credentials: Vec<String>,
        body: &'a str,
    },
}

fn front_matter(manifest: &SkillManifest, body: &str) -> String {
    let yaml = serde_yaml_ng::to_string(manifest).expect("a manifest serialises");
    format!("---\n{yaml}---\n{body}")
}

fn structured(input: Input<'_>) {
    let text = match input {
        Input::Text(text) => text.to_string(),
        Input::Fields {
            name,
            description,
            version,
            tools,
            entry,
            network,
            credentials,
            body,
        } => {
            let manifest = SkillManifest {
                name,
                description,
                version,
                tools,
                entry,
                args: None,
                arg_order: Vec::new(),
                network,
                credentials,
            };
            front_matter(&manifest, body)
        }
    };
    let parsed = SkillManifest::parse(&text);
    assert_eq!(SkillManifest::parse(&text), parsed);
    if let Ok(manifest) = parsed {
        let again = front_matter(&manifest, "");
        let mut reparsed = SkillManifest::parse(&again).expect("a written manifest parses");
        // The positional order is the front matter's own and is not written back (the
        // schema is a JSON object, keyed in sorted order): the same names, maybe reordered.
        let mut order = manifest.arg_order.clone();
        order.sort();
        reparsed.arg_order.sort();
        assert_eq!(reparsed.arg_order, order, "{again:?}");
        reparsed.arg_order = manifest.arg_order.clone();
        assert_eq!(reparsed, manifest, "{again:?}");
    }
}

/// Raw mode: the bytes are a whole `SKILL.md`.
fn raw(bytes: &[u8]) {
    if let Ok(text) = std::str::from_utf8(bytes) {
        structured(Input::Text(text));
    }
}

fuzz_target!(|data: &[u8]| kafclaw_fuzz::two_modes(data, raw, structured));

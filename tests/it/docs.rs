//! The documentation inside the repository cannot drift from the code: the generated pages
//! (`docs/config.md`, `docs/http.md`) equal what `cargo run --example docs` renders now,
//! `config/default.toml` documents every key of the key table, `docs/audit.md` and
//! `docs/control.md` name exactly the kinds, control messages and socket operations the code
//! has, and every link of the Markdown files resolves to a file inside the repository.

use std::collections::BTreeSet;
use std::path::{Component, Path, PathBuf};

#[path = "../../examples/docs/render.rs"]
mod render;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(root().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
}

/// A generated page must equal its rendering; the message says how to regenerate it.
fn check_generated(rel: &str, rendered: Result<String, String>) {
    let rendered = rendered.unwrap_or_else(|e| panic!("cannot render {rel}: {e}"));
    let current = read(rel);
    if current != rendered {
        let line = current
            .lines()
            .zip(rendered.lines())
            .position(|(a, b)| a != b)
            .unwrap_or_else(|| current.lines().count().min(rendered.lines().count()));
        panic!(
            "{rel} is out of date from line {} on: run `cargo run --example docs`",
            line + 1
        );
    }
}

#[test]
fn config_md_is_generated_from_the_key_table_and_default_toml() {
    check_generated(
        "docs/config.md",
        render::config_markdown(&read("config/default.toml")),
    );
}

#[test]
fn http_md_is_generated_from_openapi_yaml() {
    check_generated(
        "docs/http.md",
        render::http_markdown(&read("docs/openapi.yaml")),
    );
}

#[test]
fn default_toml_documents_every_key_of_the_table_once() {
    let toml = read("config/default.toml");
    let documented = render::check_documentation(&toml).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(documented.len(), kafclaw::settings::keys::KEYS.len());
    // The check catches what it is for: a key without its comment, a key left out, a key
    // twice, an active key that is not in the table.
    let cases = [
        (
            toml.replace(
                "# Log level filter (error, warn, info, debug, trace, or a tracing directive list). KAFCLAW_LOG_LEVEL\n",
                "",
            ),
            "log.level has no comment above it",
        ),
        (
            toml.replace("# require_mention = false\n", ""),
            "channels.whatsapp.require_mention is not in config/default.toml",
        ),
        (
            format!("{toml}\n[log]\n# Again.\nlevel = \"debug\"\n"),
            "log.level is documented twice",
        ),
        (
            toml.replace("[log]\n", "[log]\n# A typo.\nlevle = \"info\"\n"),
            "log.levle is not in the key table",
        ),
        (
            toml.replace("\nmax_retries = 3", "\n# max_retries = 3"),
            "providers.openai.max_retries is commented out but has a default",
        ),
    ];
    for (text, expected) in cases {
        let problem = render::check_documentation(&text)
            .err()
            .unwrap_or_else(|| panic!("not caught: {expected}"));
        assert!(problem.contains(expected), "{problem}");
    }
}

/// Every `.rs` file under the crates' sources.
fn sources() -> Vec<(PathBuf, String)> {
    fn walk(dir: &Path, out: &mut Vec<(PathBuf, String)>) {
        let mut entries: Vec<_> = std::fs::read_dir(dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.expect("directory entry").path())
            .collect();
        entries.sort();
        for path in entries {
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|x| x == "rs") {
                let text = std::fs::read_to_string(&path).expect("source file");
                out.push((path, text));
            }
        }
    }
    let mut out = Vec::new();
    walk(&root().join("src"), &mut out);
    walk(&root().join("actors/src"), &mut out);
    out
}

/// The strings of `Enum::Variant … => "name"` match arms anywhere in the sources.
fn names_mapped_by(enum_name: &str) -> BTreeSet<String> {
    let prefix = format!("{enum_name}::");
    let mut names = BTreeSet::new();
    for (_, text) in sources() {
        for line in text.lines() {
            let line = line.trim();
            if !line.starts_with(&prefix) {
                continue;
            }
            if let Some((_, rest)) = line.split_once("=> \"") {
                if let Some((name, _)) = rest.split_once('"') {
                    names.insert(name.to_string());
                }
            }
        }
    }
    names
}

/// The names written as `` `name` `` at the start of a table row of `text`'s section
/// `heading` (up to the next heading of the same or a higher level).
fn table_names(text: &str, heading: &str) -> BTreeSet<String> {
    let level = heading.chars().take_while(|c| *c == '#').count();
    let mut inside = false;
    let mut names = BTreeSet::new();
    for line in text.lines() {
        if line.starts_with('#') {
            let this = line.chars().take_while(|c| *c == '#').count();
            if line.trim() == heading {
                inside = true;
                continue;
            }
            if inside && this <= level {
                break;
            }
        }
        if !inside {
            continue;
        }
        if let Some(rest) = line.strip_prefix("| `") {
            if let Some((name, _)) = rest.split_once('`') {
                names.insert(name.to_string());
            }
        }
    }
    names
}

fn assert_same(what: &str, in_code: &BTreeSet<String>, in_doc: &BTreeSet<String>) {
    assert!(!in_code.is_empty(), "no {what} found in the code");
    let undocumented: Vec<_> = in_code.difference(in_doc).collect();
    let unknown: Vec<_> = in_doc.difference(in_code).collect();
    assert!(
        undocumented.is_empty() && unknown.is_empty(),
        "{what}: undocumented {undocumented:?}, documented but not in the code {unknown:?}"
    );
}

#[test]
fn audit_md_lists_every_record_kind_the_code_has() {
    let in_code = names_mapped_by("AuditKind");
    let in_doc = table_names(&read("docs/audit.md"), "## Record kinds");
    assert_same("audit record kinds", &in_code, &in_doc);
}

#[test]
fn control_md_lists_every_control_message_and_socket_operation() {
    let doc = read("docs/control.md");
    assert_same(
        "control message types",
        &names_mapped_by("ControlMessage"),
        &table_names(&doc, "## Control messages"),
    );
    assert_same(
        "control socket operations",
        &names_mapped_by("Operation"),
        &table_names(&doc, "## Control socket operations"),
    );
}

/// The Markdown files a reader of the repository follows links in.
fn markdown_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = [
        "README.md",
        "ARCHITECTURE.md",
        "SECURITY.md",
        "CHANGELOG.md",
        "BENCHMARKS.md",
    ]
    .iter()
    .map(|f| root().join(f))
    .collect();
    for dir in ["docs", "deploy", "deploy/bridge-example"] {
        if let Ok(entries) = std::fs::read_dir(root().join(dir)) {
            let mut found: Vec<PathBuf> = entries
                .map(|e| e.expect("directory entry").path())
                .filter(|p| p.extension().is_some_and(|x| x == "md"))
                .collect();
            found.sort();
            files.extend(found);
        }
    }
    files
}

/// The targets of `[text](target)` links outside code spans and code blocks.
fn links(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
            continue;
        }
        if fenced {
            continue;
        }
        // Drop code spans: a `[x](y)` inside backticks is text, not a link.
        let mut plain = String::new();
        for (i, part) in line.split('`').enumerate() {
            if i.is_multiple_of(2) {
                plain.push_str(part);
            }
        }
        let mut rest = plain.as_str();
        while let Some(at) = rest.find("](") {
            let after = &rest[at + 2..];
            match after.find(')') {
                Some(end) => {
                    out.push(after[..end].trim().to_string());
                    rest = &after[end..];
                }
                None => break,
            }
        }
    }
    out
}

/// GitHub's heading anchors: lower case, punctuation dropped, spaces as `-`.
fn anchors(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let mut fenced = false;
    for line in text.lines() {
        if line.trim_start().starts_with("```") {
            fenced = !fenced;
        }
        if fenced || !line.starts_with('#') {
            continue;
        }
        let title = line.trim_start_matches('#').trim().to_lowercase();
        out.insert(
            title
                .chars()
                .filter(|c| c.is_alphanumeric() || matches!(c, ' ' | '-' | '_'))
                .map(|c| if c == ' ' { '-' } else { c })
                .collect(),
        );
    }
    out
}

/// `path` with `.` and `..` folded, or `None` when it climbs above the start.
fn normalize(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    return None;
                }
            }
            Component::Normal(p) => out.push(p),
            Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(out)
}

#[test]
fn every_link_of_the_markdown_files_resolves_inside_the_repository() {
    let mut broken = Vec::new();
    for file in markdown_files() {
        let rel_file = file
            .strip_prefix(root())
            .expect("inside the root")
            .to_path_buf();
        let text = std::fs::read_to_string(&file)
            .unwrap_or_else(|e| panic!("{}: {e}", rel_file.display()));
        for target in links(&text) {
            let (path, anchor) = match target.split_once('#') {
                Some((p, a)) => (p, Some(a)),
                None => (target.as_str(), None),
            };
            let resolved = if path.is_empty() {
                Some(rel_file.clone())
            } else if path.contains("://") || path.starts_with("mailto:") {
                None
            } else {
                normalize(&rel_file.parent().unwrap_or(Path::new("")).join(path))
            };
            let Some(resolved) = resolved else {
                broken.push(format!(
                    "{}: {target} leaves the repository",
                    rel_file.display()
                ));
                continue;
            };
            let on_disk = root().join(&resolved);
            if !on_disk.exists() {
                broken.push(format!("{}: {target} does not exist", rel_file.display()));
                continue;
            }
            if let Some(anchor) = anchor {
                let is_markdown = on_disk.extension().is_some_and(|x| x == "md");
                if is_markdown {
                    let target_text = std::fs::read_to_string(&on_disk).expect("markdown file");
                    if !anchors(&target_text).contains(anchor) {
                        broken.push(format!(
                            "{}: {target} has no such heading",
                            rel_file.display()
                        ));
                    }
                }
            }
        }
    }
    assert!(broken.is_empty(), "broken links:\n{}", broken.join("\n"));
}

#[test]
fn the_link_check_catches_links_that_leave_the_repository() {
    let text = "see [the contract](../shared/spec/CONTRACT.md), [web](https://example.com/x), \
                `[code](../not-a-link)` and [ok](docs/http.md#routes)";
    assert_eq!(
        links(text),
        [
            "../shared/spec/CONTRACT.md",
            "https://example.com/x",
            "docs/http.md#routes"
        ]
    );
    assert_eq!(normalize(Path::new("../shared/spec/CONTRACT.md")), None);
    assert_eq!(
        normalize(Path::new("docs/../config/default.toml")),
        Some(PathBuf::from("config/default.toml"))
    );
    assert!(anchors("## GET /api/v1/status\n").contains("get-apiv1status"));
}

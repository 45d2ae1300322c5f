//! The content checks of the verifier: download-and-run, encoded shell payloads, and the
//! links a skill points to.
//!
//! Owns: scanning one file's text into findings, and the link policy over a whole skill.
//! Must not: quote file content in a finding (a link's host at most).

use base64::Engine;

use super::{Finding, FindingKind, LinkPolicy};

/// Programs that run what they are fed.
const SHELLS: &[&str] = &[
    "sh", "bash", "zsh", "dash", "ksh", "fish", "python", "python3", "perl", "ruby", "node",
];
/// Fetchers.
const FETCHERS: &[&str] = &["curl", "wget", "fetch"];
/// Decoders of encoded payloads.
const DECODERS: &[&str] = &[
    "base64 -d",
    "base64 --decode",
    "base64 -D",
    "xxd -r",
    "openssl base64 -d",
    "openssl enc -d",
];
/// The shortest base64 or hex run that is decoded and looked at.
const MIN_BLOB: usize = 24;
/// Decoded text with one of these is a shell payload.
const SHELL_MARKERS: &[&str] = &[
    "#!/",
    "/bin/sh",
    "/bin/bash",
    "curl ",
    "wget ",
    "rm -rf",
    "/dev/tcp",
    "chmod +x",
    "| sh",
    "|sh",
    "eval ",
    "nc -e",
];

/// The findings of one file's text (`rel` names it), and the links it holds.
pub fn scan_text(rel: &str, text: &str, findings: &mut Vec<Finding>, links: &mut Vec<String>) {
    for (n, line) in text.lines().enumerate() {
        let at = || format!("line {}", n + 1);
        if download_exec(line) {
            findings.push(Finding::new(
                FindingKind::DownloadExec,
                rel,
                format!(
                    "{}: downloads and runs a program (`curl … | sh` style)",
                    at()
                ),
            ));
        }
        if decode_exec(line) {
            findings.push(Finding::new(
                FindingKind::EncodedPayload,
                rel,
                format!("{}: decodes an encoded payload into a shell", at()),
            ));
        } else if let Some(kind) = encoded_blob(line) {
            findings.push(Finding::new(
                FindingKind::EncodedPayload,
                rel,
                format!("{}: a {kind}-encoded shell payload", at()),
            ));
        }
        links.extend(links_in(line));
    }
}

/// The words of a shell line, split on blanks and the operators that matter here.
fn words(line: &str) -> Vec<String> {
    let spaced = line
        .replace('|', " | ")
        .replace("$(", " $( ")
        .replace("<(", " $( ")
        .replace(['`', ';', ')', '"', '\''], " ");
    spaced
        .split_whitespace()
        .map(|w| w.to_lowercase())
        .collect()
}

fn is_shell(word: &str) -> bool {
    let base = word.rsplit('/').next().unwrap_or(word);
    SHELLS.contains(&base)
}

fn is_fetcher(word: &str) -> bool {
    let base = word.rsplit('/').next().unwrap_or(word);
    FETCHERS.contains(&base)
}

/// The first program word after position `i` (skipping `sudo`, `env`, `-x` flags).
fn next_program(words: &[String], i: usize) -> Option<&str> {
    words[i..].iter().map(String::as_str).find(|w| {
        !matches!(*w, "sudo" | "env" | "exec" | "command")
            && !w.starts_with('-')
            && !w.contains('=')
    })
}

/// `curl … | sh`, `wget -O- … | sudo bash`, `sh -c "$(curl …)"`, `bash <(curl …)`.
fn download_exec(line: &str) -> bool {
    let words = words(line);
    let Some(fetch) = words.iter().position(|w| is_fetcher(w)) else {
        return false;
    };
    // Piped into a shell after the fetch.
    let piped = words[fetch..]
        .iter()
        .enumerate()
        .filter(|(_, w)| *w == "|")
        .any(|(j, _)| next_program(&words, fetch + j + 1).is_some_and(is_shell));
    // The fetch inside a substitution given to a shell or eval before it.
    let substituted = words[..fetch].iter().any(|w| w == "$(" || w == "(")
        && words[..fetch]
            .iter()
            .any(|w| is_shell(w) || w == "eval" || w == "source" || w == ".");
    piped || substituted
}

/// `echo … | base64 -d | sh`, `xxd -r -p <<< … | bash`, `eval "$(echo … | base64 -d)"`.
fn decode_exec(line: &str) -> bool {
    let lower = line.to_lowercase();
    let Some(at) = DECODERS.iter().filter_map(|d| lower.find(d)).min() else {
        return false;
    };
    let words = words(line);
    let after_pipe = lower[at..].split('|').skip(1).any(|part| {
        words_of(part)
            .first()
            .is_some_and(|w| is_shell(w) || w == "sudo")
    });
    let wrapped = ["eval", "sh -c", "bash -c", "source"]
        .iter()
        .any(|w| lower[..at].contains(w));
    after_pipe || wrapped || words.iter().any(|w| w == "eval") && lower.contains("$(")
}

fn words_of(part: &str) -> Vec<String> {
    words(part)
}

/// A run of base64 or hex (`\x41` escapes too) whose decoded text looks like shell.
fn encoded_blob(line: &str) -> Option<&'static str> {
    let escaped: String = line.replace("\\x", "");
    let runs = |pred: fn(char) -> bool, s: &str| -> Vec<String> {
        s.split(|c: char| !pred(c))
            .filter(|r| r.len() >= MIN_BLOB)
            .map(String::from)
            .collect()
    };
    for run in runs(|c| c.is_ascii_hexdigit(), &escaped) {
        let even = &run[..run.len() & !1];
        if let Ok(bytes) = hex::decode(even) {
            if looks_like_shell(&bytes) {
                return Some("hex");
            }
        }
    }
    for run in runs(
        |c| c.is_ascii_alphanumeric() || matches!(c, '+' | '/' | '='),
        line,
    ) {
        let trimmed = run.trim_end_matches('=');
        let trimmed = trimmed.rsplit('=').next().unwrap_or(trimmed);
        let engine = base64::engine::general_purpose::STANDARD_NO_PAD;
        let cut = &trimmed[..trimmed.len() - trimmed.len() % 4];
        let bytes = engine.decode(trimmed).or_else(|_| engine.decode(cut));
        if let Ok(bytes) = bytes {
            if looks_like_shell(&bytes) {
                return Some("base64");
            }
        }
    }
    None
}

fn looks_like_shell(bytes: &[u8]) -> bool {
    let Ok(text) = std::str::from_utf8(bytes) else {
        return false;
    };
    let text = text.to_lowercase();
    SHELL_MARKERS.iter().any(|m| text.contains(m)) || download_exec(&text)
}

/// The `http://` and `https://` links of a line.
fn links_in(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let lower = line.to_lowercase();
    let mut from = 0;
    while let Some(i) = ["http://", "https://"]
        .iter()
        .filter_map(|p| lower[from..].find(p))
        .min()
    {
        let start = from + i;
        let end = lower[start..]
            .find(|c: char| c.is_whitespace() || matches!(c, ')' | '>' | '"' | '\'' | ']' | '`'))
            .map_or(lower.len(), |e| start + e);
        out.push(lower[start..end].to_string());
        from = end;
    }
    out
}

/// The host of a link (`https://user@Host:443/x` → `host`).
pub fn host_of(link: &str) -> &str {
    let rest = link.split_once("://").map_or(link, |(_, r)| r);
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    let host = authority.rsplit('@').next().unwrap_or("");
    host.split(':').next().unwrap_or("").trim_end_matches('.')
}

/// The link policy's warnings over every link of a skill.
pub fn check_links(links: &[(String, String)], policy: &LinkPolicy, findings: &mut Vec<Finding>) {
    for (rel, link) in links {
        let host = host_of(link);
        if link.starts_with("http://") {
            findings.push(Finding::new(
                FindingKind::InsecureLink,
                rel,
                format!("a plain http:// link to {host}"),
            ));
        }
        let allowed = policy.allow_domains.iter().any(|d| {
            let d = d
                .trim_start_matches("*.")
                .trim_end_matches('.')
                .to_lowercase();
            host == d || host.ends_with(&format!(".{d}"))
        });
        if !allowed {
            findings.push(Finding::new(
                FindingKind::LinkDomain,
                rel,
                format!("links to {host}, outside skills.link_policy.allow_domains"),
            ));
        }
    }
    if links.len() > policy.max_links {
        findings.push(Finding::new(
            FindingKind::TooManyLinks,
            "",
            format!(
                "{} links, more than skills.link_policy.max_links ({})",
                links.len(),
                policy.max_links
            ),
        ));
    }
}

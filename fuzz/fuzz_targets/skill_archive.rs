//! The skill archive verifier and installer (`kafclaw skills install FILE`), fed tar archives
//! whose entries the fuzzer chooses (any name bytes, type, mode and content; a `SKILL.md`
//! whose front matter is valid or not) or raw bytes.
//!
//! Properties: an installed skill has a valid name, holds only regular files and directories
//! inside its own directory (no link, no device, no FIFO, no setuid/setgid or group/world
//! write bit), matches its pins exactly (`verify_installed` finds nothing), and its entry, when
//! named, is one of its files.
#![no_main]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use kafclaw::skills::install::{install, read_pins, verify_installed};
use kafclaw::skills::{valid_name, LinkPolicy, SkillsDir};
use kafclaw_actors::paths::Home;
use libfuzzer_sys::fuzz_target;

#[derive(Arbitrary, Debug)]
enum EntryType {
    Regular,
    Directory,
    Symlink,
    HardLink,
    Fifo,
    Char,
    Other(u8),
}

#[derive(Arbitrary, Debug)]
enum EntryName<'a> {
    SkillMd,
    Script,
    Nested,
    Raw(&'a [u8]),
}

#[derive(Arbitrary, Debug)]
struct Entry<'a> {
    name: EntryName<'a>,
    in_top_dir: bool,
    kind: EntryType,
    mode: u16,
    link: &'a [u8],
    content: &'a [u8],
}

#[derive(Arbitrary, Debug)]
enum Archive<'a> {
    Raw(&'a [u8]),
    Built {
        front_matter: Option<(&'a str, &'a str, bool)>,
        entries: Vec<Entry<'a>>,
    },
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    archive: Archive<'a>,
    accept_warnings: bool,
}

fn home() -> &'static Home {
    static HOME: OnceLock<Home> = OnceLock::new();
    HOME.get_or_init(|| {
        let root = fs::canonicalize(tempfile::tempdir().unwrap().keep()).unwrap();
        Home::new(root)
    })
}

fn header(name: &[u8], kind: &EntryType, mode: u16, link: &[u8], size: u64) -> tar::Header {
    let mut header = tar::Header::new_ustar();
    let bytes = header.as_mut_bytes();
    let n = name.len().min(100);
    bytes[..n].copy_from_slice(&name[..n]);
    let l = link.len().min(100);
    bytes[157..157 + l].copy_from_slice(&link[..l]);
    header.set_mode(u32::from(mode) & 0o7777);
    header.set_size(size);
    header.set_entry_type(match kind {
        EntryType::Regular => tar::EntryType::Regular,
        EntryType::Directory => tar::EntryType::Directory,
        EntryType::Symlink => tar::EntryType::Symlink,
        EntryType::HardLink => tar::EntryType::Link,
        EntryType::Fifo => tar::EntryType::Fifo,
        EntryType::Char => tar::EntryType::Char,
        EntryType::Other(b) => tar::EntryType::new(*b),
    });
    header.set_cksum();
    header
}

fn build(front_matter: &Option<(&str, &str, bool)>, entries: &[Entry<'_>]) -> Vec<u8> {
    let mut builder = tar::Builder::new(Vec::new());
    if let Some((name, description, with_entry)) = front_matter {
        let entry = if *with_entry { "entry: run.sh\n" } else { "" };
        let text = format!(
            "---\nname: {name}\ndescription: {description}\nversion: 1.0.0\n{entry}---\nbody\n"
        );
        let h = header(
            b"SKILL.md",
            &EntryType::Regular,
            0o644,
            b"",
            text.len() as u64,
        );
        builder.append(&h, text.as_bytes()).unwrap();
    }
    for entry in entries.iter().take(16) {
        let mut name = if entry.in_top_dir {
            b"top/".to_vec()
        } else {
            Vec::new()
        };
        name.extend_from_slice(match entry.name {
            EntryName::SkillMd => b"SKILL.md",
            EntryName::Script => b"run.sh",
            EntryName::Nested => b"lib/util.txt",
            EntryName::Raw(raw) => raw,
        });
        let content: &[u8] = match entry.kind {
            EntryType::Regular => entry.content,
            _ => &[],
        };
        let h = header(
            &name,
            &entry.kind,
            entry.mode,
            entry.link,
            content.len() as u64,
        );
        builder.append(&h, content).unwrap();
    }
    builder.into_inner().unwrap()
}

fn check_tree(root: &Path, dir: &Path) {
    for entry in fs::read_dir(dir).unwrap() {
        let entry = entry.unwrap();
        let meta = fs::symlink_metadata(entry.path()).unwrap();
        let mode = meta.permissions().mode();
        assert!(
            meta.is_file() || meta.is_dir(),
            "{:?} is neither file nor directory",
            entry.path()
        );
        assert_eq!(mode & 0o6022, 0, "{:?} has mode {mode:o}", entry.path());
        assert!(entry.path().starts_with(root));
        if meta.is_dir() {
            check_tree(root, &entry.path());
        }
    }
}

fn structured(input: Input<'_>) {
    let home = home();
    let _ = fs::remove_dir_all(home.root().join("skills"));
    let bytes = match &input.archive {
        Archive::Raw(raw) => raw.to_vec(),
        Archive::Built {
            front_matter,
            entries,
        } => build(front_matter, entries),
    };
    let source = home.root().join("skill.tar");
    fs::write(&source, &bytes).unwrap();
    let dir = SkillsDir::of(home);
    let Ok(installed) = install(&dir, &source, &LinkPolicy::default(), input.accept_warnings)
    else {
        return;
    };
    let name = &installed.manifest.name;
    assert!(valid_name(name), "installed under {name:?}");
    let root = dir.skill(name);
    assert!(root.starts_with(dir.installed()));
    check_tree(&root, &root);
    let problems = verify_installed(&dir, name).unwrap();
    assert!(problems.is_empty(), "{problems:?}");
    let pins = read_pins(&dir, name).unwrap();
    assert_eq!(pins, installed.pins);
    if let Some(entry) = &installed.manifest.entry {
        assert!(
            pins.files.contains_key(entry),
            "entry {entry:?} is not pinned"
        );
    }
    if !input.accept_warnings {
        assert!(installed.warnings.is_empty());
    }
}

/// Raw mode: the bytes are the archive file (plain or zstd tar).
fn raw(bytes: &[u8]) {
    structured(Input {
        archive: Archive::Raw(bytes),
        accept_warnings: false,
    });
}

fuzz_target!(|data: &[u8]| kafclaw_fuzz::two_modes(data, raw, structured));

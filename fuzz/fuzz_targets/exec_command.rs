//! The `exec` check: the command splitter, the per-program argv rules and path confinement,
//! over a file tree the fuzzer builds inside the roots (directories, files, symlinks pointing
//! anywhere, a hard link to the vault key).
//!
//! Properties: an accepted command runs an allowed program by absolute path with
//! `argv[0]` its bare name, in a working directory inside the roots; every argument (and
//! every `name=value` value) that names a path resolves, the way the kernel will, inside the
//! workspace or the work repo and never to a secret; a command with a shell metacharacter
//! outside quotes is never accepted.
#![no_main]

use std::fs;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use arbitrary::Arbitrary;
use kafclaw_actors::executor::{
    resolve_existing_prefix, split_command, CommandChecker, Confinement, DEFAULT_ALLOW,
};
use kafclaw_actors::paths::Home;
use libfuzzer_sys::fuzz_target;

struct Fixture {
    home: Home,
    workspace: PathBuf,
    work_repo: PathBuf,
    checker: CommandChecker,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let root = tempfile::tempdir().unwrap().keep();
        let root = fs::canonicalize(root).unwrap();
        let home = Home::new(&root);
        home.ensure_state_dirs().unwrap();
        let workspace = home.default_workspace();
        let work_repo = home.default_work_repo();
        fs::create_dir_all(&workspace).unwrap();
        fs::create_dir_all(&work_repo).unwrap();
        fs::write(home.key_file(), "KEY").unwrap();
        fs::write(home.env_file(), "KAFCLAW_GATEWAY_AUTH_TOKEN=secret\n").unwrap();
        fs::write(home.config_file(), "{}").unwrap();
        let allow: Vec<String> = DEFAULT_ALLOW.iter().map(|s| s.to_string()).collect();
        let confinement = Confinement::new(&workspace, &work_repo, &home);
        let (checker, _) = CommandChecker::new(&allow, confinement, true);
        Fixture {
            home,
            workspace,
            work_repo,
            checker,
        }
    })
}

#[derive(Arbitrary, Debug, Clone, Copy)]
enum Name {
    A,
    B,
    C,
    Git,
    Dotted,
}

impl Name {
    fn as_str(self) -> &'static str {
        match self {
            Name::A => "a",
            Name::B => "b",
            Name::C => "c",
            Name::Git => ".git",
            Name::Dotted => ".hidden",
        }
    }
}

#[derive(Arbitrary, Debug)]
enum Target {
    Sibling(Vec<Name>),
    Parent,
    GrandParent,
    Etc,
    Root,
    KeyFile,
    EnvFile,
    StateDir,
    HomeRoot,
    Workspace,
    Missing,
}

#[derive(Arbitrary, Debug)]
enum Kind {
    Dir,
    File,
    Symlink(Target),
    HardLinkToKey,
}

#[derive(Arbitrary, Debug)]
struct Entry {
    in_workspace: bool,
    path: Vec<Name>,
    kind: Kind,
}

#[derive(Arbitrary, Debug)]
enum Part<'a> {
    Raw(&'a str),
    TreePath(bool, Vec<Name>),
    Option(&'a str),
    Assign(&'a str, Vec<Name>),
    Dots(u8),
}

#[derive(Arbitrary, Debug)]
enum Command<'a> {
    Raw(&'a str),
    Built(u8, Vec<Part<'a>>),
}

#[derive(Arbitrary, Debug)]
struct Input<'a> {
    tree: Vec<Entry>,
    command: Command<'a>,
    working_dir: Option<Vec<Name>>,
    raw_working_dir: Option<&'a str>,
}

fn join(names: &[Name]) -> String {
    let parts: Vec<&str> = names.iter().take(4).map(|n| n.as_str()).collect();
    if parts.is_empty() {
        ".".into()
    } else {
        parts.join("/")
    }
}

fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', ""))
}

fn build_tree(f: &Fixture, tree: &[Entry]) {
    for root in [&f.workspace, &f.work_repo] {
        let _ = fs::remove_dir_all(root.join("t"));
        fs::create_dir_all(root.join("t")).unwrap();
    }
    for entry in tree.iter().take(24) {
        let base = if entry.in_workspace {
            &f.workspace
        } else {
            &f.work_repo
        };
        let path = base.join("t").join(join(&entry.path));
        if let Some(parent) = path.parent() {
            if fs::create_dir_all(parent).is_err() {
                continue;
            }
        }
        let _ = match &entry.kind {
            Kind::Dir => fs::create_dir_all(&path),
            Kind::File => fs::write(&path, "x"),
            Kind::HardLinkToKey => fs::hard_link(f.home.key_file(), &path),
            Kind::Symlink(target) => {
                let to: PathBuf = match target {
                    Target::Sibling(names) => PathBuf::from(join(names)),
                    Target::Parent => "..".into(),
                    Target::GrandParent => "../../..".into(),
                    Target::Etc => "/etc".into(),
                    Target::Root => "/".into(),
                    Target::KeyFile => f.home.key_file(),
                    Target::EnvFile => f.home.env_file(),
                    Target::StateDir => f.home.state_dir(),
                    Target::HomeRoot => f.home.root().to_path_buf(),
                    Target::Workspace => f.workspace.clone(),
                    Target::Missing => "missing/x".into(),
                };
                symlink(to, &path)
            }
        };
    }
}

fn is_secret(f: &Fixture, resolved: &Path) -> bool {
    let key = fs::metadata(f.home.key_file()).unwrap();
    let same_as_key = fs::metadata(resolved)
        .map(|m| m.dev() == key.dev() && m.ino() == key.ino())
        .unwrap_or(false);
    let state = f.home.state_dir();
    let in_state = resolved.starts_with(&state)
        && !resolved.starts_with(&f.workspace)
        && !resolved.starts_with(&f.work_repo);
    same_as_key || in_state || resolved.starts_with(f.home.env_file())
}

fn inside_roots(f: &Fixture, resolved: &Path) -> bool {
    resolved.starts_with(&f.workspace) || resolved.starts_with(&f.work_repo)
}

fn structured(input: Input<'_>) {
    let f = fixture();
    build_tree(f, &input.tree);
    let command = match &input.command {
        Command::Raw(raw) => raw.to_string(),
        Command::Built(program, parts) => {
            let mut words =
                vec![DEFAULT_ALLOW[usize::from(*program) % DEFAULT_ALLOW.len()].to_string()];
            for part in parts.iter().take(8) {
                words.push(match part {
                    Part::Raw(raw) => raw.to_string(),
                    Part::TreePath(workspace, names) => {
                        let root = if *workspace { "../workspace/t" } else { "t" };
                        format!("{root}/{}", join(names))
                    }
                    Part::Option(option) => quote(&format!("-{option}")),
                    Part::Assign(name, names) => quote(&format!("{name}=t/{}", join(names))),
                    Part::Dots(n) => "../".repeat(usize::from(*n % 6)),
                });
            }
            words.join(" ")
        }
    };
    let working_dir = match (&input.working_dir, input.raw_working_dir) {
        (Some(names), _) => Some(format!("t/{}", join(names))),
        (None, raw) => raw.map(str::to_string),
    };
    let Ok(checked) = f.checker.check(&command, working_dir.as_deref()) else {
        return;
    };
    assert!(checked.program.is_absolute(), "{command:?}");
    let name = checked.argv[0].as_str();
    assert!(DEFAULT_ALLOW.contains(&name), "{command:?} runs {name:?}");
    assert!(
        inside_roots(f, &checked.cwd),
        "{command:?} in {:?}",
        checked.cwd
    );
    assert!(
        !is_secret(f, &checked.cwd),
        "{command:?} in {:?}",
        checked.cwd
    );
    // The property the checker exists for: every path an argument names resolves inside
    // the roots and never to a secret.
    let argv = split_command(&command).expect("an accepted command splits");
    for arg in &argv[1..] {
        let mut candidates = Vec::new();
        if !arg.starts_with('-') {
            candidates.push(arg.as_str());
        }
        if let Some((_, value)) = arg.split_once('=') {
            candidates.push(value);
        }
        for candidate in candidates {
            if candidate.is_empty() {
                continue;
            }
            let joined = checked.cwd.join(candidate);
            let looks_like_path = candidate.contains('/')
                || candidate.starts_with('.')
                || fs::symlink_metadata(&joined).is_ok();
            if !looks_like_path {
                continue;
            }
            let resolved = resolve_existing_prefix(&joined)
                .unwrap_or_else(|e| panic!("{command:?}: {candidate:?} does not resolve: {e}"));
            assert!(
                inside_roots(f, &resolved),
                "{command:?}: {candidate:?} resolves to {resolved:?}"
            );
            assert!(
                !is_secret(f, &resolved),
                "{command:?}: {candidate:?} resolves to the secret {resolved:?}"
            );
        }
    }
    // A shell metacharacter outside quotes is never accepted (commands without quoting,
    // escapes or comments, so that the appended character stands outside quotes).
    if command.contains(['\'', '"', '\\', '#']) {
        return;
    }
    for meta in [";", "|", "&", "`", "$(", ">", "<"] {
        let with = format!("{command} {meta} x");
        assert!(
            f.checker.check(&with, working_dir.as_deref()).is_err(),
            "{with:?}"
        );
    }
}

/// Raw mode: the bytes are a command (UTF-8), run from the work repo over an empty tree.
fn raw(bytes: &[u8]) {
    if let Ok(command) = std::str::from_utf8(bytes) {
        structured(Input {
            tree: Vec::new(),
            command: Command::Raw(command),
            working_dir: None,
            raw_working_dir: None,
        });
    }
}

fuzz_target!(|data: &[u8]| kafclaw_fuzz::two_modes(data, raw, structured));

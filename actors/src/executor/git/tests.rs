//! git pinning: version detection, the working-directory refusals, the environment and
//! overrides, the old-git fallback, and — run for real with both gits on this machine — that
//! pinning alone (the working-directory refusal bypassed) runs no planted or attached program.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;
use crate::executor::sandbox::{self, KernelJail};
use crate::executor::tests::Fixture;
use crate::executor::CheckedCommand;

/// The gits to try: the one `FIXED_PATH` finds first and Debian's, when installed.
fn gits() -> Vec<PathBuf> {
    ["/usr/local/bin/git", "/usr/bin/git"]
        .iter()
        .map(PathBuf::from)
        .filter(|p| p.exists())
        .collect()
}

/// Runs git on the test's side, with no user or system configuration.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", crate::executor::FIXED_PATH)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A fixture whose work repo is a repository with one commit of `README`.
fn repository() -> Option<Fixture> {
    let f = Fixture::new();
    if !f.git_init() {
        eprintln!("git is not installed; skipping");
        return None;
    }
    fs::write(f.work_repo.join("README"), "committed\n").unwrap();
    git(&f.work_repo, &["add", "README"]);
    git(
        &f.work_repo,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "one",
        ],
    );
    Some(f)
}

fn new_git() -> GitPin {
    GitPin::from_version_output(Some("git version 2.47.3"))
}

#[test]
fn the_version_decides_whether_attributes_come_from_the_empty_tree() {
    for (text, attr_source) in [
        (Some("git version 2.47.3"), true),
        (Some("git version 2.40.0"), true),
        (Some("git version 2.40.0.windows.1"), true),
        (Some("git version 3.0.0"), true),
        (Some("git version 2.39.5"), false),
        (Some("git version 1.8.3.1"), false),
        (Some("not git"), false),
        (None, false),
    ] {
        assert_eq!(
            GitPin::from_version_output(text).has_attr_source(),
            attr_source,
            "{text:?}"
        );
    }
}

#[test]
fn working_directories_in_other_git_directories_are_refused() {
    let Some(f) = repository() else { return };
    let repo = &f.work_repo;
    let plant = |dir: &str| {
        for sub in ["objects", "refs"] {
            fs::create_dir_all(repo.join(dir).join(sub)).unwrap();
        }
        fs::write(repo.join(dir).join("HEAD"), "ref: refs/heads/main\n").unwrap();
    };
    plant("bare");
    fs::create_dir_all(repo.join("bare/refs/heads/deep")).unwrap();
    plant("a/b/nested");
    fs::create_dir_all(repo.join("a/b/nested/objects/info")).unwrap();
    fs::create_dir_all(repo.join("checkout/src")).unwrap();
    fs::write(repo.join("checkout/.git"), "gitdir: /elsewhere/.git\n").unwrap();
    fs::create_dir_all(repo.join("inner/.git")).unwrap();
    fs::create_dir_all(repo.join("plain/dir")).unwrap();
    let pin = new_git();
    for (cwd, refused_at) in [
        ("bare", Some("bare")),
        ("bare/refs/heads/deep", Some("bare")),
        ("a/b/nested", Some("a/b/nested")),
        ("a/b/nested/objects/info", Some("a/b/nested")),
        ("checkout", Some("checkout")),
        ("checkout/src", Some("checkout")),
        ("inner", Some("inner")),
        ("inner/.git", Some("inner/.git")),
        ("plain/dir", None),
        ("a/b", None),
        (".git", None),
        (".git/refs", None),
        ("", None),
    ] {
        let mut argv = vec!["git".to_string(), "status".to_string()];
        let result = pin.pin(repo, &repo.join(cwd), &mut argv);
        match refused_at {
            Some(at) => assert_eq!(
                result,
                Err(Denial::GitDirectoryWorkingDir(at.to_string())),
                "{cwd}"
            ),
            None => assert!(result.is_ok(), "{cwd}: {result:?}"),
        }
    }
    let mut argv = vec!["git".to_string(), "log".to_string()];
    assert_eq!(
        pin.pin(repo, &f.workspace, &mut argv),
        Err(Denial::GitOutsideWorkRepo(
            f.workspace.display().to_string()
        ))
    );
}

#[test]
fn without_a_real_git_directory_nothing_is_pinned_and_git_is_refused() {
    let f = Fixture::new();
    let pin = new_git();
    let mut argv = vec!["git".to_string(), "status".to_string()];
    // No .git at all (a repository above the work repo does not count).
    assert_eq!(
        pin.pin(&f.work_repo, &f.work_repo, &mut argv),
        Err(Denial::GitNoRepository)
    );
    // A .git file pointing elsewhere.
    fs::write(f.work_repo.join(".git"), "gitdir: /tmp/elsewhere\n").unwrap();
    assert_eq!(
        pin.pin(&f.work_repo, &f.work_repo, &mut argv),
        Err(Denial::GitNoRepository)
    );
    fs::remove_file(f.work_repo.join(".git")).unwrap();
    // A .git symlink to a real repository.
    let elsewhere = tempfile::tempdir().unwrap();
    git(elsewhere.path(), &["init", "-q"]);
    std::os::unix::fs::symlink(elsewhere.path().join(".git"), f.work_repo.join(".git")).unwrap();
    assert_eq!(
        pin.pin(&f.work_repo, &f.work_repo, &mut argv),
        Err(Denial::GitNoRepository)
    );
    // An empty .git directory is no repository either.
    fs::remove_file(f.work_repo.join(".git")).unwrap();
    fs::create_dir(f.work_repo.join(".git")).unwrap();
    assert_eq!(
        pin.pin(&f.work_repo, &f.work_repo, &mut argv),
        Err(Denial::GitNoRepository)
    );
}

#[test]
fn every_call_is_pinned_by_environment_and_overrides() {
    let Some(f) = repository() else { return };
    let repo = &f.work_repo;
    let mut argv: Vec<String> = ["git", "--no-pager", "blame", "README"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let env = new_git().pin(repo, repo, &mut argv).unwrap();
    let get = |k: &str| {
        env.iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("{k} not set: {env:?}"))
    };
    assert_eq!(get("GIT_DIR"), repo.join(".git").display().to_string());
    assert_eq!(get("GIT_WORK_TREE"), repo.display().to_string());
    assert_eq!(get("GIT_CONFIG_GLOBAL"), "/dev/null");
    assert_eq!(get("GIT_CONFIG_NOSYSTEM"), "1");
    assert_eq!(get("GIT_ATTR_NOSYSTEM"), "1");
    assert_eq!(get("GIT_ATTR_SOURCE"), EMPTY_TREE);
    assert_eq!(
        get("GIT_CEILING_DIRECTORIES"),
        repo.parent().unwrap().display().to_string()
    );
    for o in [
        "safe.bareRepository=explicit",
        "core.fsmonitor=false",
        "core.hooksPath=/dev/null",
        "core.sshCommand=false",
        "credential.helper=",
        &format!("attr.tree={EMPTY_TREE}"),
    ] {
        let at = argv
            .iter()
            .position(|a| a == o)
            .unwrap_or_else(|| panic!("{o}"));
        assert_eq!(argv[at - 1], "-c", "{o}");
    }
    let blame = argv.iter().position(|a| a == "blame").unwrap();
    assert_eq!(&argv[blame..], ["blame", "--no-textconv", "README"]);

    let mut argv: Vec<String> = ["git", "diff", "HEAD"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    new_git().pin(repo, repo, &mut argv).unwrap();
    let diff = argv.iter().position(|a| a == "diff").unwrap();
    assert_eq!(
        &argv[diff..],
        ["diff", "--no-ext-diff", "--no-textconv", "HEAD"]
    );
    // An old git gets no GIT_ATTR_SOURCE (it would ignore it): its filters are overridden.
    let old = GitPin::from_version_output(Some("git version 2.39.5"));
    let mut argv = vec!["git".to_string(), "status".to_string()];
    let env = old.pin(repo, repo, &mut argv).unwrap();
    assert!(env.iter().all(|(k, _)| k != "GIT_ATTR_SOURCE"));
}

#[test]
fn an_old_git_gets_every_pinned_filter_turned_off_or_is_refused() {
    let Some(f) = repository() else { return };
    let git_dir = f.work_repo.join(".git");
    let config = git_dir.join("config");
    let base = fs::read_to_string(&config).unwrap();
    fs::write(
        &config,
        format!("{base}[filter \"lfs\"]\n\tclean = git-lfs clean\n[Filter \"MixedCase\"] smudge = x\n[filter.legacy]\n\tclean = y\n"),
    )
    .unwrap();
    let overrides = neutralized_filters(&git_dir).unwrap();
    for name in ["lfs", "MixedCase", "legacy"] {
        for key in ["clean=", "smudge=", "process=", "required=false"] {
            let o = format!("filter.{name}.{key}");
            assert!(overrides.contains(&o), "{o} not in {overrides:?}");
        }
    }
    for (tail, what) in [
        ("[include]\n\tpath = /x\n", "[include]"),
        (
            "[includeIf \"gitdir:/x\"]\n\tpath = /x\n",
            "[includeIf \"gitdir:/x\"]",
        ),
        ("[filter \"a=b\"]\n\tclean = x\n", "[filter \"a=b\"]"),
    ] {
        fs::write(&config, format!("{base}{tail}")).unwrap();
        assert_eq!(
            neutralized_filters(&git_dir),
            Err(Denial::GitConfigUnpinnable(what.to_string()))
        );
    }
    fs::write(&config, &base).unwrap();
    fs::write(git_dir.join("config.worktree"), "").unwrap();
    assert_eq!(
        neutralized_filters(&git_dir),
        Err(Denial::GitConfigUnpinnable("config.worktree".into()))
    );
}

/// Runs `command` the way the executor would, except in `cwd` (bypassing the
/// working-directory refusal) and without the kernel jail (which would also stop the marker
/// from being written): pinning is the only layer left. Fails if `marker` appeared.
async fn runs_marker(f: &Fixture, git: &Path, command: &str, cwd: &Path, marker: &Path) -> String {
    let mut checker = f.checker();
    checker.set_git_for_test(git);
    let mut checked: CheckedCommand = checker.check(command, None).unwrap();
    checked.cwd = cwd.to_path_buf();
    let jail = KernelJail::unconfined(&f.work_repo);
    let limits = crate::executor::SandboxLimits::default();
    let report = sandbox::run(&checked, &f.work_repo, &jail, &limits)
        .await
        .unwrap();
    assert!(
        !marker.exists(),
        "{git:?} {command:?} in {cwd:?} ran a program: {report:?}"
    );
    String::from_utf8_lossy(&report.stdout.bytes).into_owned()
}

#[actix_rt::test]
async fn pinning_alone_runs_no_planted_or_attached_program_with_either_git() {
    for git_program in gits() {
        let Some(f) = repository() else { return };
        let outside = tempfile::tempdir().unwrap();
        let marker = outside.path().join("ran");
        let repo = f.work_repo.clone();
        let head = git(&repo, &["rev-parse", "HEAD"]);
        // The planted repository, complete.
        let evil = repo.join("evil");
        for sub in ["refs/heads", "objects/info", "info"] {
            fs::create_dir_all(evil.join(sub)).unwrap();
        }
        fs::write(evil.join("HEAD"), "ref: refs/heads/main\n").unwrap();
        fs::write(evil.join("refs/heads/main"), format!("{head}\n")).unwrap();
        fs::write(
            evil.join("objects/info/alternates"),
            format!("{}\n", repo.join(".git/objects").display()),
        )
        .unwrap();
        fs::write(evil.join("info/attributes"), "* filter=x diff=x\n").unwrap();
        let touch = format!("touch {}", marker.display());
        fs::write(
            evil.join("config"),
            format!("[core]\n\tbare = false\n\tworktree = .\n\tfsmonitor = {touch}\n\tpager = {touch}\n[filter \"x\"]\n\tclean = {touch}\n[diff \"x\"]\n\ttextconv = {touch}\n"),
        )
        .unwrap();
        fs::write(evil.join("README"), "committed\nand changed\n").unwrap();
        // The pinned config defines a filter; a work-tree .gitattributes attaches it.
        git(
            &repo,
            &["config", "filter.op.clean", &format!("{touch}; cat")],
        );
        git(
            &repo,
            &["config", "diff.op.textconv", &format!("{touch}; cat")],
        );
        fs::write(repo.join(".gitattributes"), "* filter=op diff=op\n").unwrap();
        fs::write(repo.join("README"), "committed\nchanged\n").unwrap();

        for command in ["git blame README", "git diff", "git status", "git log -p"] {
            runs_marker(&f, &git_program, command, &evil, &marker).await;
            let out = runs_marker(&f, &git_program, command, &repo, &marker).await;
            if command == "git diff" {
                assert!(out.contains("+changed"), "{git_program:?}: {out}");
            }
        }
    }
}

//! Issue 11 §1 and §2 against the real binary: git never discovers a repository or reads
//! configuration a tool can write, launchers keep the gateway from starting, and the kernel
//! (Landlock) confines every `exec` child. Each test proves with a marker file or a listener
//! that nothing ran, connected or leaked.

use std::collections::HashMap;
use std::net::TcpListener;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::harness::{client, run, Gateway, Options, TOKEN};
use crate::model_server::{self, ModelServer};

/// One tool call the scripted model makes.
type Call = (&'static str, Value);

/// A home whose work repo is a git repository with one commit (`README`), and a directory
/// outside the home for markers and foreign repositories.
struct Lab {
    home: tempfile::TempDir,
    outside: tempfile::TempDir,
}

impl Lab {
    fn new() -> Lab {
        let lab = Lab::bare();
        let repo = lab.repo();
        git(&repo, &["init", "-q", "-b", "main"]);
        std::fs::write(repo.join("README"), "hello from the work repo\n").unwrap();
        git(&repo, &["add", "README"]);
        git(
            &repo,
            &[
                "-c",
                "user.name=t",
                "-c",
                "user.email=t@t",
                "commit",
                "-qm",
                "init",
            ],
        );
        lab
    }

    /// A home whose work repo exists but is no repository.
    fn bare() -> Lab {
        let home = tempfile::tempdir().unwrap();
        let outside = tempfile::tempdir().unwrap();
        let kafclaw = home.path().join(".kafclaw");
        let repo = kafclaw.join("work-repo");
        std::fs::create_dir_all(&repo).unwrap();
        for dir in [&kafclaw, &repo] {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
        }
        Lab { home, outside }
    }

    fn repo(&self) -> PathBuf {
        self.home.path().join(".kafclaw/work-repo")
    }

    fn marker(&self, name: &str) -> PathBuf {
        self.outside.path().join(name)
    }

    fn write(&self, relative: &str, text: &str) {
        let path = self.repo().join(relative);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }

    /// Lays out, inside the work repo at `dir`, a repository skeleton whose config holds
    /// `config_tail`: `HEAD`, `refs/heads/main`, alternates to the real objects.
    fn plant(&self, dir: &str, config_tail: &str) {
        let repo = self.repo();
        let head = git(&repo, &["rev-parse", "HEAD"]);
        self.write(&format!("{dir}/HEAD"), "ref: refs/heads/main\n");
        self.write(&format!("{dir}/refs/heads/main"), &format!("{head}\n"));
        self.write(
            &format!("{dir}/objects/info/alternates"),
            &format!("{}\n", repo.join(".git/objects").display()),
        );
        self.write(
            &format!("{dir}/config"),
            &format!(
                "[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tworktree = .\n{config_tail}"
            ),
        );
        self.write(&format!("{dir}/README"), "hello from the work repo\n");
    }

    /// Starts a gateway on this home with a model that makes `calls` in one turn.
    fn start(self, calls: &[Call], env: &[(&str, &str)]) -> (Gateway, ModelServer, Self) {
        let mut script: Vec<_> = calls
            .iter()
            .map(|(tool, args)| model_server::tool_call(tool, args.clone()))
            .collect();
        script.push(model_server::text("done", 1, 1));
        let server = ModelServer::start(script);
        let mut options = Options::default()
            .token()
            .env("KAFCLAW_PROVIDERS_OPENAI_API_BASE", &server.base)
            .env("KAFCLAW_PROVIDERS_OPENAI_MODEL", "test-model")
            .env(
                "KAFCLAW_PROVIDERS_OPENAI_API_KEY",
                "sk-test-0123456789abcdef",
            )
            .env("KAFCLAW_PROVIDERS_OPENAI_MAX_RETRIES", "0")
            // These tests make many denied exec calls on purpose: no incident for them.
            .env("KAFCLAW_INCIDENTS_DENIED_HIGH_RISK_PER_SENDER", "1000");
        for (k, v) in env {
            options = options.env(k, v);
        }
        let Lab { home, outside } = self;
        let gw = Gateway::start_in(home, options);
        let rest = Lab {
            home: tempfile::tempdir().unwrap(),
            outside,
        };
        (gw, server, rest)
    }
}

/// Runs git on the test's side (setting up fixtures), with no user or system configuration.
fn git(dir: &Path, args: &[&str]) -> String {
    let out = Command::new("git")
        .args(args)
        .current_dir(dir)
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Sends one chat message and returns what each tool call answered, in order.
async fn turn(gw: &Gateway, server: &ModelServer) -> Vec<String> {
    let res = client()
        .post(gw.gw_url("/chat"))
        .header("Authorization", format!("Bearer {TOKEN}"))
        .json(&json!({"message": "go", "session": "confinement"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let seen = server.seen();
    let last = seen.last().expect("the model was asked");
    last.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["role"] == "tool")
        .map(|m| m["content"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn exec(command: &str, working_dir: Option<&str>) -> Call {
    match working_dir {
        Some(dir) => ("exec", json!({"command": command, "working_dir": dir})),
        None => ("exec", json!({"command": command})),
    }
}

fn write_file(path: &str, content: &str) -> Call {
    ("write_file", json!({"path": path, "content": content}))
}

// ---------------------------------------------------------------------------------------
// §1 git.

/// Git tests run with the kernel sandbox off as well: pinning must hold on its own (with
/// Landlock on, the planted `touch` could not write its marker anyway).
const SANDBOXES: [&str; 2] = ["off", "auto"];

#[tokio::test]
async fn git_blame_in_a_repository_planted_with_write_file_runs_no_filter() {
    for sandbox in SANDBOXES {
        git_blame_in_a_planted_repository(sandbox).await;
    }
}

async fn git_blame_in_a_planted_repository(sandbox: &str) {
    let lab = Lab::new();
    let marker = lab.marker("filter-ran");
    let head = git(&lab.repo(), &["rev-parse", "HEAD"]);
    let objects = lab.repo().join(".git/objects");
    let config = format!(
        "[core]\n\trepositoryformatversion = 0\n\tbare = false\n\tworktree = .\n[filter \"x\"]\n\tclean = touch {} && cat\n",
        marker.display()
    );
    let calls = [
        write_file("evil/HEAD", "ref: refs/heads/main\n"),
        write_file("evil/refs/heads/main", &format!("{head}\n")),
        write_file(
            "evil/objects/info/alternates",
            &format!("{}\n", objects.display()),
        ),
        write_file("evil/info/attributes", "* filter=x\n"),
        write_file("evil/config", &config),
        write_file("evil/README", "hello from the work repo\n"),
        exec("git blame README", Some("evil")),
    ];
    let (gw, server, _lab) = lab.start(&calls, &[("KAFCLAW_TOOLS_EXEC_SANDBOX", sandbox)]);
    let results = turn(&gw, &server).await;
    assert_eq!(results.len(), 7, "{results:?}");
    assert!(!marker.exists(), "the planted filter ran: {results:?}");
    assert!(
        results[6].starts_with("denied") && results[6].contains("git directory"),
        "{}",
        results[6]
    );
}

#[tokio::test]
async fn planted_repository_variants_run_nothing_and_leak_nothing() {
    for sandbox in SANDBOXES {
        planted_repository_variants(sandbox).await;
    }
}

async fn planted_repository_variants(sandbox: &str) {
    let lab = Lab::new();
    let m = |n: &str| lab.marker(n).display().to_string();
    // A foreign repository outside the home, holding a blob the agent must not read.
    let foreign = lab.outside.path().join("foreign");
    std::fs::create_dir_all(&foreign).unwrap();
    git(&foreign, &["init", "-q"]);
    std::fs::write(foreign.join("secret.txt"), "FOREIGN-SECRET-BLOB\n").unwrap();
    let blob = git(&foreign, &["hash-object", "-w", "secret.txt"]);
    git(&foreign, &["add", "secret.txt"]);
    git(
        &foreign,
        &[
            "-c",
            "user.name=t",
            "-c",
            "user.email=t@t",
            "commit",
            "-qm",
            "f",
        ],
    );

    lab.plant(
        "filter",
        &format!("[filter \"x\"]\n\tclean = touch {}\n", m("filter")),
    );
    lab.write("filter/info/attributes", "* filter=x\n");
    lab.plant(
        "textconv",
        &format!("[diff \"t\"]\n\ttextconv = touch {}\n", m("textconv")),
    );
    lab.write("textconv/info/attributes", "* diff=t\n");
    lab.plant(
        "pager",
        &format!("[core]\n\tpager = touch {}\n", m("pager")),
    );
    lab.plant(
        "fsmonitor",
        &format!("[core]\n\tfsmonitor = touch {}\n", m("fsmonitor")),
    );
    lab.write(
        "included.cfg",
        &format!("[filter \"i\"]\n\tclean = touch {}\n", m("include")),
    );
    lab.plant(
        "include",
        &format!(
            "[include]\n\tpath = {}\n",
            lab.repo().join("included.cfg").display()
        ),
    );
    lab.write("include/info/attributes", "* filter=i\n");
    lab.plant("alternates", "");
    lab.write(
        "alternates/objects/info/alternates",
        &format!("{}\n", foreign.join(".git/objects").display()),
    );
    lab.plant("deep", "");
    std::fs::create_dir_all(lab.repo().join("deep/refs/sub")).unwrap();
    // A `.git` file pointing at the foreign repository (tools cannot write one; a checkout
    // might carry it).
    lab.write(
        "gitfile/.git",
        &format!("gitdir: {}\n", foreign.join(".git").display()),
    );

    let calls = [
        exec("git blame README", Some("filter")),
        exec("git diff HEAD", Some("filter")),
        exec("git log -p", Some("textconv")),
        exec("git show HEAD", Some("textconv")),
        exec("git log", Some("pager")),
        exec("git status", Some("fsmonitor")),
        exec("git diff HEAD", Some("include")),
        exec(&format!("git show {blob}"), Some("alternates")),
        exec("git status", Some("deep/refs/sub")),
        exec("git log --stat", Some("gitfile")),
        exec(&format!("git show {blob}"), None),
        exec(&format!("git cat-file -p {blob}"), None),
    ];
    let (gw, server, lab) = lab.start(&calls, &[("KAFCLAW_TOOLS_EXEC_SANDBOX", sandbox)]);
    let results = turn(&gw, &server).await;
    assert_eq!(results.len(), calls.len(), "{results:?}");
    for name in ["filter", "textconv", "pager", "fsmonitor", "include"] {
        assert!(
            !lab.outside.path().join(name).exists(),
            "{name}: a planted program ran: {results:#?}"
        );
    }
    for (call, result) in calls.iter().zip(&results) {
        assert!(
            !result.contains("FOREIGN-SECRET-BLOB") && !result.contains("secret.txt"),
            "{call:?} read the foreign repository: {result}"
        );
    }
    for (i, result) in results.iter().enumerate().take(10) {
        assert!(
            result.starts_with("denied") && result.contains("git directory"),
            "call {i} {:?}: {result}",
            calls[i]
        );
    }
}

#[tokio::test]
async fn work_tree_attributes_cannot_attach_a_filter_of_the_pinned_config() {
    for sandbox in SANDBOXES {
        work_tree_attributes(sandbox).await;
    }
}

async fn work_tree_attributes(sandbox: &str) {
    let lab = Lab::new();
    let marker = lab.marker("pinned-filter");
    // The operator's repository defines a filter; the agent attaches it to every file.
    git(
        &lab.repo(),
        &[
            "config",
            "filter.lfsish.clean",
            &format!("touch {} && cat", marker.display()),
        ],
    );
    git(
        &lab.repo(),
        &[
            "config",
            "diff.conv.textconv",
            &format!("touch {}.textconv && cat", marker.display()),
        ],
    );
    let calls = [
        write_file(".gitattributes", "* filter=lfsish diff=conv\n"),
        write_file("sub/.gitattributes", "* filter=lfsish diff=conv\n"),
        write_file("README", "changed by the agent\n"),
        write_file("sub/file", "new\n"),
        exec("git diff", None),
        exec("git status --short", None),
        exec("git blame README", None),
        exec("git diff", Some("sub")),
        exec("git log -p -1", None),
    ];
    let (gw, server, _lab) = lab.start(&calls, &[("KAFCLAW_TOOLS_EXEC_SANDBOX", sandbox)]);
    let results = turn(&gw, &server).await;
    assert_eq!(results.len(), calls.len(), "{results:?}");
    assert!(
        !marker.exists(),
        "a work-tree .gitattributes started the pinned filter: {results:#?}"
    );
    assert!(
        !PathBuf::from(format!("{}.textconv", marker.display())).exists(),
        "a work-tree .gitattributes started the pinned textconv: {results:#?}"
    );
    // git still works on the pinned repository.
    assert!(
        results[4].contains("changed by the agent"),
        "{}",
        results[4]
    );
    assert!(results[5].contains("M README"), "{}", results[5]);
}

#[tokio::test]
async fn without_a_work_repo_repository_git_is_refused_instead_of_discovering() {
    let lab = Lab::bare();
    // A repository above the work repo (the home itself) and a planted skeleton at its root.
    git(lab.home.path(), &["init", "-q"]);
    let calls = [
        write_file("HEAD", "ref: refs/heads/main\n"),
        write_file("refs/heads/.keep", ""),
        write_file("objects/.keep", ""),
        write_file("config", "[core]\n\tbare = true\n"),
        exec("git status", None),
        exec("git log", None),
    ];
    let (gw, server, _lab) = lab.start(&calls, &[]);
    let results = turn(&gw, &server).await;
    assert_eq!(results.len(), calls.len(), "{results:?}");
    for result in &results[4..] {
        assert!(
            result.starts_with("denied") && result.contains("no repository"),
            "{result}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// §1 launchers.

#[test]
fn a_launcher_on_the_allow_list_stops_the_gateway_with_one_line() {
    for (allow, named) in [
        ("git,env", vec!["env"]),
        ("xargs,ls,timeout", vec!["xargs", "timeout"]),
        ("awk", vec!["awk"]),
        ("python3,perl", vec!["python3", "perl"]),
        (
            "tar,nice,nohup,stdbuf,setsid",
            vec!["tar", "nice", "nohup", "stdbuf", "setsid"],
        ),
        ("sh,bash,dash", vec!["sh", "bash", "dash"]),
        (
            "sudo,ssh,strace,rsync",
            vec!["sudo", "ssh", "strace", "rsync"],
        ),
    ] {
        let home = tempfile::tempdir().unwrap();
        let env = HashMap::from([("KAFCLAW_TOOLS_EXEC_ALLOW".to_string(), allow.to_string())]);
        let (code, out, err) = run(
            home.path(),
            &env,
            &["gateway", "--port", "0", "--dashboard-port", "0"],
        );
        assert_eq!(code, 2, "{allow}: {out}{err}");
        assert!(!out.starts_with("ready"), "{allow}: {out}");
        let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("kafclaw:")).collect();
        assert_eq!(lines.len(), 1, "{allow}: {err}");
        for name in named {
            assert!(
                lines[0].contains(&format!("{name} ")) || lines[0].contains(&format!("{name}:")),
                "{allow}: {name} not named in {}",
                lines[0]
            );
        }

        let (code, out, _) = run(home.path(), &env, &["--json", "security", "check"]);
        assert_eq!(code, 1, "{out}");
        let doc: Value = serde_json::from_str(out.trim()).unwrap();
        let row = doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "exec_launchers")
            .cloned()
            .unwrap_or_else(|| panic!("no exec_launchers row: {doc:#}"));
        assert_eq!(row["status"], "fail", "{allow}: {row}");
    }
}

#[tokio::test]
async fn find_and_sed_run_without_their_program_running_forms() {
    // With the kernel sandbox off too: the rules must hold on their own (under Landlock a
    // reader could not write its marker into the work repo anyway).
    for sandbox in SANDBOXES {
        find_and_sed(sandbox).await;
    }
}

async fn find_and_sed(sandbox: &str) {
    let lab = Lab::new();
    lab.write("notes.txt", "alpha\n");
    let calls = [
        exec("find . -name notes.txt -exec touch ran-exec {} +", None),
        exec("find . -execdir touch ran-execdir {} +", None),
        exec("find . -fprint ran-fprint", None),
        exec("find . -delete", None),
        exec("find -L . -name x", None),
        exec("sed -n '1e touch ran-sed-e' notes.txt", None),
        exec("sed 's/alpha/beta/w ran-sed-w' notes.txt", None),
        exec("sed -i s/alpha/beta/ notes.txt", None),
        exec("find . -name notes.txt", None),
        exec("sed s/alpha/beta/ notes.txt", None),
    ];
    let (gw, server, _lab) = lab.start(
        &calls,
        &[
            ("KAFCLAW_TOOLS_EXEC_ALLOW", "find,sed,ls"),
            ("KAFCLAW_TOOLS_EXEC_SANDBOX", sandbox),
        ],
    );
    let results = turn(&gw, &server).await;
    assert_eq!(results.len(), calls.len(), "{results:?}");
    let repo = gw.home_path().join(".kafclaw/work-repo");
    for name in [
        "ran-exec",
        "ran-execdir",
        "ran-fprint",
        "ran-sed-e",
        "ran-sed-w",
    ] {
        assert!(!repo.join(name).exists(), "{name}: {results:#?}");
    }
    assert!(repo.join("notes.txt").exists());
    assert_eq!(
        std::fs::read_to_string(repo.join("notes.txt")).unwrap(),
        "alpha\n"
    );
    for result in &results[..5] {
        assert!(result.starts_with("denied"), "{result}");
    }
    assert!(results[8].contains("./notes.txt"), "{}", results[8]);
    assert!(results[9].contains("beta"), "{}", results[9]);
}

// ---------------------------------------------------------------------------------------
// §2 the kernel.

#[tokio::test]
async fn with_path_checks_off_the_kernel_still_refuses_the_rest_of_the_home() {
    // Path checks off with the kernel sandbox off does not start at all (isolation.rs).
    for (sandbox, confined) in [("auto", true), ("landlock", true)] {
        let lab = Lab::bare();
        let private = lab.home.path().join("private");
        std::fs::create_dir_all(&private).unwrap();
        std::fs::write(private.join("id_rsa"), "PRIVATE-KEY-MATERIAL\n").unwrap();
        std::os::unix::fs::symlink(&private, lab.repo().join("private_link")).unwrap();
        let id_rsa = private.join("id_rsa").display().to_string();
        let calls = [
            exec(&format!("cat {id_rsa}"), None),
            exec("cat private_link/id_rsa", None),
            exec("grep -r KEY private_link", None),
            exec("ls ../..", None),
        ];
        let (gw, server, _lab) = lab.start(
            &calls,
            &[
                ("KAFCLAW_TOOLS_EXEC_RESTRICT_WORKSPACE", "false"),
                ("KAFCLAW_TOOLS_EXEC_SANDBOX", sandbox),
            ],
        );
        let results = turn(&gw, &server).await;
        assert_eq!(results.len(), calls.len(), "{results:?}");
        for result in &results[..3] {
            assert_eq!(
                !result.contains("PRIVATE-KEY-MATERIAL"),
                confined,
                "sandbox={sandbox}: {result}"
            );
        }
        if confined {
            assert!(
                results[0].contains("Permission denied"),
                "sandbox={sandbox}: {}",
                results[0]
            );
            assert!(!results[3].contains("private"), "{}", results[3]);
        }
    }
}

#[tokio::test]
async fn a_child_cannot_connect_to_a_loopback_port() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            if stream.is_ok() {
                counter.fetch_add(1, Ordering::SeqCst);
            }
        }
    });
    for (sandbox, refused) in [("auto", true), ("off", false)] {
        let before = accepted.load(Ordering::SeqCst);
        let lab = Lab::bare();
        let calls = [exec(
            &format!("curl -sS --max-time 3 http://127.0.0.1:{port}/"),
            None,
        )];
        let (gw, server, _lab) = lab.start(
            &calls,
            &[
                ("KAFCLAW_TOOLS_EXEC_ALLOW", "curl"),
                ("KAFCLAW_TOOLS_EXEC_SANDBOX", sandbox),
            ],
        );
        let results = turn(&gw, &server).await;
        let after = accepted.load(Ordering::SeqCst);
        assert_eq!(after == before, refused, "sandbox={sandbox}: {results:?}");
    }
}

#[test]
fn status_and_security_check_report_the_sandbox() {
    let home = tempfile::tempdir().unwrap();
    let row = crate::harness::report_row;
    let (_, out, _) = run(home.path(), &HashMap::new(), &["--json", "status"]);
    let doc: Value = serde_json::from_str(out.trim()).unwrap();
    let sandbox = row(&doc, "exec_sandbox");
    assert!(
        sandbox["message"].as_str().unwrap().contains("landlock"),
        "{sandbox}"
    );
    let (_, out, _) = run(
        home.path(),
        &HashMap::new(),
        &["--json", "security", "check"],
    );
    let doc: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row(&doc, "exec_sandbox")["status"], "pass", "{doc:#}");
    assert_eq!(row(&doc, "exec_launchers")["status"], "pass", "{doc:#}");

    let off = HashMap::from([("KAFCLAW_TOOLS_EXEC_SANDBOX".to_string(), "off".to_string())]);
    let (_, out, _) = run(home.path(), &off, &["--json", "security", "check"]);
    let doc: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(row(&doc, "exec_sandbox")["status"], "fail", "{doc:#}");
    let (_, out, _) = run(home.path(), &off, &["--json", "status"]);
    let doc: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(
        row(&doc, "exec_sandbox")["message"]
            .as_str()
            .unwrap()
            .contains("off"),
        "{doc:#}"
    );

    let bad = HashMap::from([(
        "KAFCLAW_TOOLS_EXEC_SANDBOX".to_string(),
        "chroot".to_string(),
    )]);
    let (code, _, err) = run(
        home.path(),
        &bad,
        &["gateway", "--port", "0", "--dashboard-port", "0"],
    );
    assert_eq!(code, 2);
    assert!(err.contains("tools.exec.sandbox"), "{err}");
}

#[test]
fn security_check_lists_hard_links_to_secret_files() {
    let home = tempfile::tempdir().unwrap();
    let (code, out, err) = run(home.path(), &HashMap::new(), &["doctor", "--fix"]);
    assert_eq!(code, 0, "{out}{err}");
    let kafclaw = home.path().join(".kafclaw");
    let tomb = home.path().join(".config/kafclaw/tomb.rr");
    assert!(tomb.exists(), "doctor --fix creates the vault key");
    let row = |doc: &Value| -> Value {
        doc["checks"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == "hard_links")
            .cloned()
            .unwrap_or_else(|| panic!("no hard_links row: {doc:#}"))
    };
    let check = || -> Value {
        let (_, out, _) = run(
            home.path(),
            &HashMap::new(),
            &["--json", "security", "check"],
        );
        serde_json::from_str(out.trim()).unwrap()
    };
    assert_eq!(row(&check())["status"], "pass");

    for dir in ["work-repo/deep/er", "workspace"] {
        std::fs::create_dir_all(kafclaw.join(dir)).unwrap();
    }
    std::fs::hard_link(&tomb, kafclaw.join("work-repo/deep/er/notes.bin")).unwrap();
    std::fs::hard_link(&tomb, kafclaw.join("workspace/copy")).unwrap();
    let doc = check();
    let found = row(&doc);
    assert_eq!(found["status"], "fail", "{found}");
    let message = found["message"].as_str().unwrap();
    assert!(message.contains("notes.bin"), "{message}");
    assert!(message.contains("copy"), "{message}");
    assert!(message.contains("tomb.rr"), "{message}");
}

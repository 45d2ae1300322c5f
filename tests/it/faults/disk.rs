//! The disk under the state directory full: a small tmpfs mounted over `~/.kafclaw` in a
//! private mount namespace of the gateway child (`unshare --mount`; root only), filled and
//! emptied by the test through `/proc/<pid>/root`. Below `store.min_free_mib` free the gateway
//! refuses new work (503) while what it had acknowledged is still answered from the reserve,
//! and it takes work again by itself once space returns. Where the test cannot mount (not
//! root, no `unshare`), test-hooks builds inject the free space the gateway measures instead
//! (`KAFCLAW_TEST_FREE_BYTES_FILE`); that variant also runs on its own everywhere.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use super::{assert_healthy, options, post_messages, Graph};
use crate::exactly_once::fixture::{post_bridge, post_whatsapp, OWNERS};
use crate::harness::{client, Gateway, Options, BIN, TOKEN};
use crate::model_server::{turn_step, ModelServer, Reply};

/// Mounts a tmpfs of `$2` bytes over `$1` (keeping what was there), then runs the rest.
const MOUNT_SMALL_FS: &str = r#"set -e
state=$1; size=$2; shift 2
seed=$(mktemp -d)
cp -a "$state/." "$seed/"
mount -t tmpfs -o "size=$size,mode=0700" kafclaw-faults "$state"
cp -a "$seed/." "$state/"
rm -rf "$seed"
exec "$@""#;

/// True when this machine lets the test mount a tmpfs in a private mount namespace.
fn small_fs_possible() -> bool {
    let dir = tempfile::tempdir().unwrap();
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(r#"mount -t tmpfs -o size=1m kafclaw-probe "$0""#)
        .arg(dir.path())
        .output()
        .is_ok_and(|o| o.status.success())
}

/// `options` run on a tmpfs of `size` over the state directory of `home`.
fn on_small_fs(options: Options, home: &Path, size: &str) -> Options {
    let state = home.join(".kafclaw");
    std::fs::create_dir_all(&state).unwrap();
    let mut options = options;
    options.launcher = ["unshare", "--mount", "--propagation", "private", "sh", "-c"]
        .iter()
        .map(|s| s.to_string())
        .chain([
            MOUNT_SMALL_FS.to_string(),
            "small-fs".into(),
            state.display().to_string(),
            size.into(),
        ])
        .collect();
    options
}

/// The gateway's state directory as the test reaches it (through its mount namespace).
fn state_of(gw: &Gateway) -> PathBuf {
    let pid = gw.child.as_ref().unwrap().id();
    PathBuf::from(format!("/proc/{pid}/root"))
        .join(gw.home.path().strip_prefix("/").unwrap().join(".kafclaw"))
}

/// Bytes free for the gateway on the file system of `path`.
fn free_bytes(path: &Path) -> u64 {
    let stat = rustix::fs::statvfs(path).unwrap();
    stat.f_bavail * stat.f_frsize
}

/// Fills the file system under `state` until `leave` bytes are free (file `filler`).
fn fill_to(state: &Path, leave: u64) {
    let path = state.join("filler");
    let mut file = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 256 * 1024];
    loop {
        let free = free_bytes(state);
        if free <= leave {
            break;
        }
        let n = (free - leave).min(chunk.len() as u64) as usize;
        file.write_all(&chunk[..n]).unwrap();
    }
    file.sync_all().unwrap();
}

/// `kafclaw audit verify` inside the gateway's mount namespace (it asks the running gateway).
fn verify_audit_in(gw: &Gateway) {
    let pid = gw.child.as_ref().unwrap().id().to_string();
    let out = Command::new("nsenter")
        .args(["--target", &pid, "--mount", "--", BIN, "--home"])
        .arg(gw.home.path())
        .args(["audit", "verify"])
        .env_clear()
        .env("PATH", "/usr/local/bin:/usr/bin:/bin")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit verify: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A model that answers `reply to <text>`, slowly for texts starting `slow`.
fn model() -> ModelServer {
    ModelServer::start_with(|_, request| {
        let (text, _) = turn_step(&request.json())?;
        let reply = Reply::text(&format!("reply to {text}"), 3, 2);
        Some(if text.starts_with("slow") {
            reply.with_delay(Duration::from_secs(3))
        } else {
            reply
        })
    })
}

/// Waits (deadline) until the gateway's stderr holds `needle`: its lines arrive through a
/// reader thread, a moment after they were written.
async fn wait_log(gw: &mut Gateway, needle: &str) {
    let start = std::time::Instant::now();
    while !gw.stderr().contains(needle) {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "no log line {needle:?}:\n{}",
            gw.stderr()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Posts one message; its status.
async fn post_one(gw: &Gateway, id: &str, text: &str) -> StatusCode {
    post_whatsapp(&format!("http://{}", gw.gateway), OWNERS[0], id, text)
        .await
        .unwrap()
}

/// How a test makes the disk full.
enum Disk {
    /// A real small file system over the state directory, filled by a file.
    Tmpfs,
    /// The free space the gateway measures, read from this file (test-hooks builds only).
    #[cfg(feature = "test-hooks")]
    Injected(tempfile::TempDir),
}

impl Disk {
    /// `options` for a gateway on this disk in `home`.
    fn options(&self, options: Options, home: &Path) -> Options {
        match self {
            Disk::Tmpfs => on_small_fs(options, home, "48m"),
            #[cfg(feature = "test-hooks")]
            Disk::Injected(dir) => {
                let file = dir.path().join("free");
                std::fs::write(&file, (1u64 << 40).to_string()).unwrap();
                options.env(kafclaw::http::space::FREE_BYTES_ENV, file.to_str().unwrap())
            }
        }
    }

    /// Leaves 4 MiB free (below the test's reserve of 8).
    fn fill(&self, gw: &Gateway) {
        match self {
            Disk::Tmpfs => {
                fill_to(&state_of(gw), 4 << 20);
            }
            #[cfg(feature = "test-hooks")]
            Disk::Injected(dir) => {
                std::fs::write(dir.path().join("free"), (4u64 << 20).to_string()).unwrap()
            }
        }
    }

    /// Gives the space back.
    fn free(&self, gw: &Gateway) {
        match self {
            Disk::Tmpfs => std::fs::remove_file(state_of(gw).join("filler")).unwrap(),
            #[cfg(feature = "test-hooks")]
            Disk::Injected(dir) => {
                std::fs::write(dir.path().join("free"), (1u64 << 40).to_string()).unwrap()
            }
        }
    }
}

#[tokio::test]
async fn a_full_disk_refuses_new_work_keeps_what_was_acknowledged_and_recovers_by_itself() {
    if small_fs_possible() {
        full_disk(Disk::Tmpfs).await;
        return;
    }
    #[cfg(feature = "test-hooks")]
    full_disk(Disk::Injected(tempfile::tempdir().unwrap())).await;
    #[cfg(not(feature = "test-hooks"))]
    eprintln!("skipped: no tmpfs (needs root and unshare) and no test-hooks build");
}

/// The injection point behaves as the real file system, so the fallback is known to work.
#[cfg(feature = "test-hooks")]
#[tokio::test]
async fn an_injected_full_disk_is_refused_and_recovered_from_like_a_real_one() {
    full_disk(Disk::Injected(tempfile::tempdir().unwrap())).await;
}

async fn full_disk(disk: Disk) {
    let model = model();
    let graph = Graph::accepting();
    let home = tempfile::tempdir().unwrap();
    let mut options = options(&model, &graph).env("KAFCLAW_STORE_MIN_FREE_MIB", "8");
    std::fs::create_dir_all(home.path().join(".kafclaw")).unwrap();
    std::fs::write(
        home.path().join(".kafclaw/config.json"),
        options.config_json.take().unwrap(),
    )
    .unwrap();
    let options = disk.options(options, home.path());
    let mut gw = Gateway::start_in(home, options);

    // Acknowledged while there is room; their turns are still running when the disk fills.
    let kept = post_messages(&gw, "slow", 3).await;
    disk.fill(&gw);

    // New work is refused with 503 and a reason, before anything is stored or asked.
    for i in 0..3 {
        let id = format!("wamid.refused.{i}");
        assert_eq!(
            post_one(&gw, &id, "refused").await,
            StatusCode::SERVICE_UNAVAILABLE
        );
    }
    let url = format!("http://{}", gw.gateway);
    assert_eq!(
        post_bridge(&url, "U1", "b.refused", "refused bridge")
            .await
            .unwrap(),
        StatusCode::SERVICE_UNAVAILABLE
    );
    let res = client()
        .post(gw.gw_url("/chat"))
        .bearer_auth(TOKEN)
        .json(&json!({"message": "refused chat"}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(res.headers()["retry-after"], "30");
    let body: serde_json::Value = res.json().await.unwrap();
    assert_eq!(body["error"], "the disk is full; retry later", "{body}");
    wait_log(&mut gw, "the state directory's file system is full").await;

    // What was acknowledged is answered, once, from the reserve.
    graph.wait_answered(&kept, Duration::from_secs(30)).await;
    assert!(
        model
            .seen()
            .iter()
            .all(|s| !s.body.to_string().contains("refused")),
        "a refused message reached the model"
    );

    // Space returns: work is taken again without a restart.
    disk.free(&gw);
    let start = std::time::Instant::now();
    while post_one(&gw, "wamid.after", "after").await != StatusCode::OK {
        assert!(start.elapsed() < Duration::from_secs(10), "did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = vec!["wamid.after".to_string()];
    graph.wait_answered(&after, Duration::from_secs(15)).await;
    let mut all = kept.clone();
    all.extend(after);
    graph.answered_once(&all);
    assert!(graph.accepted().keys().all(|id| !id.contains("refused")));
    wait_log(&mut gw, "accepting new work again").await;
    assert_healthy(&gw).await;
    verify_audit_in(&gw);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

#[tokio::test]
async fn a_disk_filled_to_its_last_byte_while_idle_is_refused_and_recovered_from() {
    if !small_fs_possible() {
        eprintln!("skipped: this machine does not let the test mount a tmpfs (root and unshare)");
        return;
    }
    let model = model();
    let graph = Graph::accepting();
    let home = tempfile::tempdir().unwrap();
    // The default reserve (64 MiB) on a 24 MiB file system: an eighth of it, 3 MiB.
    let mut options = options(&model, &graph);
    std::fs::create_dir_all(home.path().join(".kafclaw")).unwrap();
    std::fs::write(
        home.path().join(".kafclaw/config.json"),
        options.config_json.take().unwrap(),
    )
    .unwrap();
    let options = on_small_fs(options, home.path(), "24m");
    let mut gw = Gateway::start_in(home, options);
    let before = post_messages(&gw, "before", 2).await;
    graph.wait_answered(&before, Duration::from_secs(15)).await;

    fill_to(&state_of(&gw), 0);
    assert_eq!(
        post_one(&gw, "wamid.refused", "refused").await,
        StatusCode::SERVICE_UNAVAILABLE
    );
    // A while on the full disk: the gateway's own background writes (store flushes, pruning,
    // the timeline) must not break it either.
    tokio::time::sleep(Duration::from_secs(3)).await;

    std::fs::remove_file(state_of(&gw).join("filler")).unwrap();
    let start = std::time::Instant::now();
    while post_one(&gw, "wamid.after", "after").await != StatusCode::OK {
        assert!(start.elapsed() < Duration::from_secs(10), "did not recover");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = vec!["wamid.after".to_string()];
    graph.wait_answered(&after, Duration::from_secs(15)).await;
    let mut all = before.clone();
    all.extend(after);
    graph.answered_once(&all);
    assert_healthy(&gw).await;
    verify_audit_in(&gw);
    gw.signal("TERM");
    assert_eq!(gw.wait_exit(Duration::from_secs(20)).code(), Some(0));
}

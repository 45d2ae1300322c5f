//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`).
//!
//! Each test gets its own chromedriver and browser with a fresh profile under its temporary
//! directory; both are killed (their whole process group) when the [`Browser`] is dropped.
//! Before any page script runs, a listener collects CSP violations, script errors and
//! unhandled rejections into `window.__errors`, and every screenshot checks it is empty.

use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::wd::WebDriverCompatibleCommand;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{json, Value};

/// The flags the closed network here needs (no background requests that stall start-up).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--window-size=1400,2000",
];

/// Installed when missing by `.ci/run`; a developer without them gets a clear failure.
const DRIVER: &str = "chromedriver";

/// Runs before every page script: what the page must never produce.
const COLLECT_ERRORS: &str = "window.__errors = [];\
    addEventListener('securitypolicyviolation', e => window.__errors.push('csp: ' + e.violatedDirective + ' ' + e.blockedURI));\
    addEventListener('error', e => window.__errors.push('error: ' + e.message));\
    addEventListener('unhandledrejection', e => window.__errors.push('rejection: ' + e.reason));";

/// One browser.
pub struct Browser {
    pub client: Client,
    driver: Child,
    dir: PathBuf,
    shots: u32,
}

/// `POST /session/{id}/goog/cdp/execute`: one DevTools command through chromedriver.
#[derive(Debug)]
struct Cdp {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for Cdp {
    fn endpoint(
        &self,
        base_url: &url::Url,
        session_id: Option<&str>,
    ) -> Result<url::Url, url::ParseError> {
        base_url.join(&format!(
            "session/{}/goog/cdp/execute",
            session_id.unwrap_or_default()
        ))
    }

    fn method_and_body(&self, _: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({"cmd": self.cmd, "params": self.params}).to_string();
        (http::Method::POST, Some(body))
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn chromium_binary() -> &'static str {
    ["/usr/lib/chromium/chromium", "/usr/bin/chromium"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("chromium is not installed: apt-get install -y chromium chromium-driver")
}

impl Browser {
    /// Starts chromedriver and a browser with its profile under `dir`.
    pub async fn start(dir: &Path) -> Browser {
        let port = free_port();
        let driver = Command::new(DRIVER)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .expect("chromedriver is not installed: apt-get install -y chromium chromium-driver");
        let mut browser = Browser {
            client: connect(port, dir).await,
            driver,
            dir: dir.to_path_buf(),
            shots: 0,
        };
        browser
            .client
            .issue_cmd(Cdp {
                cmd: "Page.addScriptToEvaluateOnNewDocument",
                params: json!({"source": COLLECT_ERRORS}),
            })
            .await
            .expect("install the error listener");
        browser.shots = 0;
        browser
    }

    /// Opens `url`.
    pub async fn open(&self, url: &str) {
        self.client.goto(url).await.unwrap();
    }

    /// The element `css` once it is displayed.
    pub async fn visible(&self, css: &str) -> Element {
        let start = Instant::now();
        loop {
            if let Ok(element) = self.client.find(Locator::Css(css)).await {
                if element.is_displayed().await.unwrap_or(false) {
                    return element;
                }
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{css} was not displayed; page errors: {:?}",
                self.errors().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the script `condition` (an expression) is true.
    pub async fn until(&self, what: &str, condition: &str) {
        let script = format!("return Boolean({condition});");
        let start = Instant::now();
        loop {
            let value = self.client.execute(&script, vec![]).await.unwrap();
            if value == Value::Bool(true) {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "timed out waiting for {what}; page errors: {:?}",
                self.errors().await
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The text of `css` (empty when absent).
    pub async fn text(&self, css: &str) -> String {
        match self.client.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    /// Types `text` into the input `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let input = self.visible(css).await;
        input.clear().await.unwrap();
        input.send_keys(text).await.unwrap();
    }

    /// Clicks `css` once it is displayed and enabled.
    pub async fn click(&self, css: &str) {
        let start = Instant::now();
        loop {
            let element = self.visible(css).await;
            if element.is_enabled().await.unwrap_or(false) && element.click().await.is_ok() {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(15),
                "{css} never became clickable"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// What the page reported (CSP violations, script errors).
    pub async fn errors(&self) -> Vec<String> {
        let value = self
            .client
            .execute(
                "return window.__errors || ['the error listener is missing'];",
                vec![],
            )
            .await
            .unwrap_or_else(|e| json!([format!("cannot read the page's errors: {e}")]));
        serde_json::from_value(value).unwrap_or_default()
    }

    /// Saves a PNG of the page under the test's directory and fails on any page error.
    pub async fn screenshot(&mut self, name: &str) -> PathBuf {
        self.shots += 1;
        let png = self.client.screenshot().await.unwrap();
        assert!(png.starts_with(b"\x89PNG"), "not a PNG");
        let path = self.dir.join(format!("{:02}-{name}.png", self.shots));
        std::fs::write(&path, png).unwrap();
        let errors = self.errors().await;
        assert!(
            errors.is_empty(),
            "the page logged errors: {errors:?} (screenshot {})",
            path.display()
        );
        path
    }

    /// Closes the browser and stops the driver.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.kill();
    }

    fn kill(&mut self) {
        let group = format!("-{}", self.driver.id());
        let _ = Command::new("kill")
            .args(["-KILL", "--", &group])
            .stderr(Stdio::null())
            .status();
        let _ = self.driver.wait();
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.driver.try_wait().ok().flatten().is_none() {
            self.kill();
        }
    }
}

/// A session once chromedriver answers (it needs a moment to listen).
async fn connect(port: u16, dir: &Path) -> Client {
    let profile = dir.join("chromium-profile");
    std::fs::create_dir_all(&profile).unwrap();
    let mut args: Vec<String> = FLAGS.iter().map(|f| f.to_string()).collect();
    args.push(format!("--user-data-dir={}", profile.display()));
    let mut caps = serde_json::Map::new();
    caps.insert(
        "goog:chromeOptions".into(),
        json!({"binary": chromium_binary(), "args": args}),
    );
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    loop {
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        match ClientBuilder::new(connector)
            .capabilities(caps.clone())
            .connect(&url)
            .await
        {
            Ok(client) => return client,
            Err(e) => {
                assert!(
                    start.elapsed() < Duration::from_secs(30),
                    "no browser session: {e}"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

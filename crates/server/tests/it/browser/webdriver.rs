//! The browser tests' handle on a real headless Chromium: Debian's
//! `chromedriver` and `chromium`, driven over W3C WebDriver by the
//! [`fantoccini`] crate.
//!
//! Why this module exists: fantoccini speaks the protocol, but the page tests
//! also need what no WebDriver client does for them, kept here in one place:
//! starting chromedriver on a free loopback port with one Chromium session in
//! a fresh profile and the flags a test machine needs, cleaning all of it up
//! even when a test panics, full-page screenshots of bounded height, waits
//! that always end, errors that name what was asked, and the policy for a
//! machine without a browser. The tests call the small [`Session`] API below
//! (navigate, find by CSS, click, type, read text and attributes, run a
//! script, cookies, screenshots, [`Session::wait_until`]) and never fantoccini
//! directly, so the client behind it can change without touching them.
//!
//! [`Browser::start`] starts chromedriver on a free loopback port and one
//! Chromium session with a fresh `--user-data-dir`; dropping the [`Browser`]
//! cannot end the session politely (Drop cannot await) but kills chromedriver
//! and every Chromium process started with that profile directory, and
//! removes the directory. [`Browser::close`] ends the session politely first.
//! Only one browser runs at a time in the test binary.
//!
//! Every WebDriver command is bounded ([`COMMAND_TIMEOUT`]; a page load by the
//! session's own `pageLoad` timeout, below it), and so is every wait
//! ([`WAIT_MAX`]).
//!
//! Availability policy: when the binaries are missing, outside CI the tests
//! print a loud `SKIPPED browser tests: …` line and return; with `CI` set (CI
//! always sets it) or `RECARGA_BROWSER_TESTS=1`, a missing browser fails.

use anyhow::{Context, anyhow, bail};
use fantoccini::error::CmdError;
use fantoccini::wd::{Capabilities, WebDriverCompatibleCommand};
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};
use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

/// Longest any wait in the suite may take.
pub const WAIT_MAX: Duration = Duration::from_secs(10);
/// Pause between two probes of a wait.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Bound of one WebDriver command (a page load is bounded by the session's
/// own `pageLoad` timeout, below this).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long chromedriver may take to listen on its port after start.
const DRIVER_START_MAX: Duration = Duration::from_secs(15);
/// The session's page-load and script timeouts, in milliseconds.
const PAGE_LOAD_MS: u64 = 10_000;

/// Tallest full-page screenshot taken.
const SHOT_MAX_HEIGHT: u64 = 4_000;

pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// Only one browser at a time in this test binary: the machine has two cores
/// and Chromium plus a gateway per test is plenty.
static ONE_AT_A_TIME: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(1);

fn required() -> bool {
    std::env::var_os("CI").is_some() || std::env::var("RECARGA_BROWSER_TESTS").is_ok_and(|v| v == "1")
}

/// `Ok(())` when the browser binaries are present. Otherwise: in CI (or with
/// `RECARGA_BROWSER_TESTS=1`) a panic, elsewhere a loud line on stderr and
/// `Err(())` so the caller returns.
pub fn available(test: &str) -> Result<(), ()> {
    let missing: Vec<String> = [chromedriver_path(), chromium_path()]
        .into_iter()
        .filter(|p| !Path::new(p).exists())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let what = format!(
        "{} missing (apt-get install chromium chromium-driver)",
        missing.join(" and ")
    );
    if required() {
        panic!("browser tests are required here (CI or RECARGA_BROWSER_TESTS=1) but {what}");
    }
    // Straight to the process's stderr: the test harness captures `eprintln!`
    // of passing tests, and this line must be seen.
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n*** SKIPPED browser tests: {test}: {what} ***\n");
    Err(())
}

fn chromedriver_path() -> String {
    std::env::var("RECARGA_CHROMEDRIVER").unwrap_or_else(|_| CHROMEDRIVER.into())
}

fn chromium_path() -> String {
    std::env::var("RECARGA_CHROMIUM").unwrap_or_else(|_| CHROMIUM.into())
}

/// chromedriver + one Chromium session.
pub struct Browser {
    pub session: Session,
    driver: tokio::process::Child,
    /// Held for its Drop (after chromedriver's): kills Chromium, removes files.
    _profile: Profile,
    _turn: tokio::sync::SemaphorePermit<'static>,
}

impl std::ops::Deref for Browser {
    type Target = Session;
    fn deref(&self) -> &Session {
        &self.session
    }
}

impl Browser {
    pub async fn start() -> anyhow::Result<Browser> {
        let turn = ONE_AT_A_TIME.acquire().await.context("browser semaphore")?;
        let port = free_port()?;
        // Declared before chromedriver, so dropped after it: an early return
        // below kills chromedriver first, then Chromium, and removes the files.
        let profile = Profile::new();
        let log = &profile.log;
        let mut driver = tokio::process::Command::new(chromedriver_path())
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", chromedriver_path()))?;
        let deadline = Instant::now() + DRIVER_START_MAX;
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            if let Some(status) = driver.try_wait().context("chromedriver")? {
                bail!("chromedriver exited at start ({status}); log: {}", log.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "chromedriver not listening after {DRIVER_START_MAX:?}; log: {}",
                    log.display()
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        // Plain HTTP to loopback: no TLS connector needed.
        let mut builder = ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(capabilities(&profile.dir));
        let url = format!("http://127.0.0.1:{port}");
        let client = tokio::time::timeout(COMMAND_TIMEOUT, builder.connect(&url))
            .await
            .map_err(|_| anyhow!("no Chromium session within {COMMAND_TIMEOUT:?}; log: {}", log.display()))?
            .map_err(|e| {
                anyhow!(
                    "new Chromium session: {}; log: {}",
                    first_line(&e.to_string()),
                    log.display()
                )
            })?;
        Ok(Browser {
            session: Session { client },
            driver,
            _profile: profile,
            _turn: turn,
        })
    }

    /// Ends the session (Chromium exits), then chromedriver.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(COMMAND_TIMEOUT, self.session.client.clone().close()).await;
        let _ = self.driver.kill().await;
    }
}

/// The new session's capabilities: Debian's Chromium, headless, with a
/// profile of its own and nothing that reaches out to the network by itself.
fn capabilities(profile: &Path) -> Capabilities {
    let caps = json!({
        "browserName": "chrome",
        "pageLoadStrategy": "normal",
        "timeouts": { "implicit": 0, "pageLoad": PAGE_LOAD_MS, "script": PAGE_LOAD_MS },
        "goog:chromeOptions": {
            "binary": chromium_path(),
            "args": [
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--window-size=1280,900",
                format!("--user-data-dir={}", profile.display()),
            ]
        }
    });
    match caps {
        Value::Object(map) => map,
        _ => unreachable!("capabilities are a JSON object"),
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Then the fields drop: the session, chromedriver, the profile.
        let _ = self.driver.start_kill();
    }
}

/// A fresh Chromium profile directory and chromedriver's log beside it.
/// Dropping it kills the Chromium processes of that profile and removes both.
struct Profile {
    dir: PathBuf,
    log: PathBuf,
}

impl Profile {
    fn new() -> Profile {
        let dir = recarga_store::testing::temp_dir("chromium-profile");
        let log = dir.with_extension("chromedriver.log");
        Profile { dir, log }
    }
}

impl Drop for Profile {
    fn drop(&mut self) {
        kill_profile_processes(&self.dir);
        let _ = std::fs::remove_dir_all(&self.dir);
        let _ = std::fs::remove_file(&self.log);
    }
}

/// Kills the Chromium processes this browser started: those whose command
/// line names its own profile directory (and nothing else).
fn kill_profile_processes(profile: &Path) {
    let needle = format!("--user-data-dir={}", profile.display());
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return;
    };
    for entry in dir.flatten() {
        let name = entry.file_name();
        let Some(pid) = name.to_str().filter(|s| s.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        if cmdline.split(|&b| b == 0).any(|arg| arg == needle.as_bytes()) {
            let _ = std::process::Command::new("kill")
                .args(["-9", pid])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("bind a free port")?;
    Ok(listener.local_addr().context("local addr")?.port())
}

fn first_line(text: &str) -> &str {
    text.lines().next().unwrap_or("")
}

/// Runs one WebDriver command within [`COMMAND_TIMEOUT`]; a failure names
/// `what` and the first line of the driver's message (chromedriver appends
/// its session info and a native stack trace).
async fn bounded<T>(what: &str, command: impl Future<Output = Result<T, CmdError>>) -> anyhow::Result<T> {
    match tokio::time::timeout(COMMAND_TIMEOUT, command).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(CmdError::Standard(e))) => bail!("webdriver {what}: {}: {}", e.error, first_line(&e.message)),
        Ok(Err(e)) => bail!("webdriver {what}: {}", first_line(&e.to_string())),
        Err(_) => bail!("webdriver {what}: no answer within {COMMAND_TIMEOUT:?}"),
    }
}

/// A found element (valid until its page goes away).
#[derive(Debug, Clone)]
pub struct Element(fantoccini::elements::Element);

/// One WebDriver session.
pub struct Session {
    client: Client,
}

impl Session {
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        bounded(&format!("goto {url}"), self.client.goto(url)).await
    }

    pub async fn current_url(&self) -> anyhow::Result<String> {
        Ok(bounded("current url", self.client.current_url()).await?.into())
    }

    /// The path (and query) of the current page.
    pub async fn current_path(&self) -> anyhow::Result<String> {
        let url = bounded("current url", self.client.current_url()).await?;
        Ok(url[url::Position::BeforePath..].to_string())
    }

    pub async fn source(&self) -> anyhow::Result<String> {
        bounded("source", self.client.source()).await
    }

    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let found = bounded(&format!("find {css}"), self.client.find(Locator::Css(css))).await?;
        Ok(Element(found))
    }

    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        let found = bounded(&format!("find all {css}"), self.client.find_all(Locator::Css(css))).await?;
        Ok(found.into_iter().map(Element).collect())
    }

    /// Whether at least one element matches now.
    pub async fn exists(&self, css: &str) -> anyhow::Result<bool> {
        Ok(!self.find_all(css).await?.is_empty())
    }

    pub async fn click(&self, el: &Element) -> anyhow::Result<()> {
        bounded("click", el.0.click()).await
    }

    pub async fn clear(&self, el: &Element) -> anyhow::Result<()> {
        bounded("clear", el.0.clear()).await
    }

    pub async fn send_keys(&self, el: &Element, text: &str) -> anyhow::Result<()> {
        bounded("send keys", el.0.send_keys(text)).await
    }

    /// The rendered text of an element.
    pub async fn text_of(&self, el: &Element) -> anyhow::Result<String> {
        bounded("element text", el.0.text()).await
    }

    pub async fn attribute(&self, el: &Element, name: &str) -> anyhow::Result<Option<String>> {
        bounded(&format!("attribute {name}"), el.0.attr(name)).await
    }

    pub async fn tag_name(&self, el: &Element) -> anyhow::Result<String> {
        Ok(bounded("tag name", el.0.tag_name()).await?.to_ascii_lowercase())
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let el = self.find(css).await?;
        self.text_of(&el).await
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        bounded("execute script", self.client.execute(script, args)).await
    }

    /// Every cookie the browser holds for the current page, HttpOnly ones included.
    pub async fn cookies(&self) -> anyhow::Result<Vec<(String, String)>> {
        let cookies = bounded("cookies", self.client.get_all_cookies()).await?;
        Ok(cookies
            .iter()
            .map(|c| (c.name().to_string(), c.value().to_string()))
            .collect())
    }

    /// The cookies as one `Cookie:` header value, to replay with reqwest.
    pub async fn cookie_header(&self) -> anyhow::Result<String> {
        Ok(self
            .cookies()
            .await?
            .iter()
            .map(|(n, v)| format!("{n}={v}"))
            .collect::<Vec<_>>()
            .join("; "))
    }

    pub async fn set_window_size(&self, width: u32, height: u32) -> anyhow::Result<()> {
        bounded("set window size", self.client.set_window_size(width, height)).await
    }

    /// A PNG of the whole page (up to [`SHOT_MAX_HEIGHT`] pixels tall, through
    /// Chromium's DevTools command; the viewport alone if that is refused),
    /// written to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = match self.full_page_png().await {
            Ok(png) => png,
            Err(_) => bounded("screenshot", self.client.screenshot()).await?,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))
    }

    async fn full_page_png(&self) -> anyhow::Result<Vec<u8>> {
        let size = self
            .execute(
                "const e = document.documentElement; return [window.innerWidth, Math.max(e.scrollHeight, e.clientHeight)];",
                vec![],
            )
            .await?;
        let width = size[0].as_u64().ok_or_else(|| anyhow!("page width: {size}"))?;
        let height = size[1]
            .as_u64()
            .ok_or_else(|| anyhow!("page height: {size}"))?
            .min(SHOT_MAX_HEIGHT);
        let shot = DevTools {
            cmd: "Page.captureScreenshot",
            params: json!({
                "format": "png",
                "captureBeyondViewport": true,
                "clip": { "x": 0, "y": 0, "width": width, "height": height, "scale": 1 }
            }),
        };
        let v = bounded("full-page screenshot", self.client.issue_cmd(shot)).await?;
        let b64 = v["data"].as_str().ok_or_else(|| anyhow!("captureScreenshot: {v}"))?;
        base64_decode(b64)
    }

    /// Probes until `probe` gives `Some`, at most `within` (≤ [`WAIT_MAX`]);
    /// then fails naming `what` and the page it was on.
    pub async fn wait_until<T>(
        &self,
        what: &str,
        within: Duration,
        mut probe: impl AsyncFnMut() -> Option<T>,
    ) -> anyhow::Result<T> {
        let within = within.min(WAIT_MAX);
        let deadline = Instant::now() + within;
        loop {
            if let Some(v) = probe().await {
                return Ok(v);
            }
            if Instant::now() >= deadline {
                let at = self.current_url().await.unwrap_or_default();
                bail!("timed out after {within:?} waiting for {what} (page {at})");
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
    }

    /// Waits until an element matching `css` exists.
    pub async fn wait_for(&self, css: &str) -> anyhow::Result<Element> {
        self.wait_until(&format!("element {css}"), WAIT_MAX, async || self.find(css).await.ok())
            .await
    }

    /// Waits until the first element matching `css` has text satisfying `ok`; returns the text.
    pub async fn wait_text(&self, css: &str, what: &str, ok: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        let mut last = None;
        let found = self
            .wait_until(&format!("{css} {what}"), WAIT_MAX, async || {
                let t = self.text(css).await.ok()?;
                let good = ok(&t);
                last = Some(t.clone());
                good.then_some(t)
            })
            .await;
        found.with_context(|| format!("last text of {css}: {last:?}"))
    }

    /// Waits until the current path satisfies `ok`; returns it.
    pub async fn wait_path(&self, what: &str, ok: impl Fn(&str) -> bool) -> anyhow::Result<String> {
        self.wait_until(&format!("path {what}"), WAIT_MAX, async || {
            self.current_path().await.ok().filter(|p| ok(p))
        })
        .await
    }
}

/// A Chrome DevTools Protocol command, sent through chromedriver's
/// `goog/cdp/execute` extension (fantoccini has no call of its own for it).
#[derive(Debug)]
struct DevTools {
    cmd: &'static str,
    params: Value,
}

impl WebDriverCompatibleCommand for DevTools {
    fn endpoint(&self, base: &url::Url, session: Option<&str>) -> Result<url::Url, url::ParseError> {
        base.join(&format!("session/{}/goog/cdp/execute", session.unwrap_or("none")))
    }

    fn method_and_body(&self, _url: &url::Url) -> (http::Method, Option<String>) {
        let body = json!({ "cmd": self.cmd, "params": self.params });
        (http::Method::POST, Some(body.to_string()))
    }
}

/// Standard base64 (what DevTools screenshots are), padding optional.
fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    use base64::Engine;
    let digits: String = text.chars().filter(|c| !c.is_ascii_whitespace() && *c != '=').collect();
    base64::engine::general_purpose::STANDARD_NO_PAD
        .decode(digits)
        .map_err(|e| anyhow!("not base64: {e}"))
}

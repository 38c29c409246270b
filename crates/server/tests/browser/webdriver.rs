//! A small W3C WebDriver client over reqwest, driving Debian's `chromedriver`
//! and a headless `chromium`: just what the page tests need (navigate, find by
//! CSS, click, type, read text and attributes, run a script, cookies,
//! screenshots) and an explicit, bounded [`Session::wait_until`].
//!
//! [`Browser::start`] starts chromedriver on a free loopback port and one
//! Chromium session with a fresh `--user-data-dir`; dropping the [`Browser`]
//! deletes nothing over HTTP (Drop cannot await) but kills chromedriver and
//! every Chromium process started with that profile directory, and removes
//! the directory. [`Browser::close`] ends the session politely first.
//!
//! Availability policy: when the binaries are missing, outside CI the tests
//! print a loud `SKIPPED browser tests: …` line and return; with `CI` set (CI
//! always sets it) or `RECARGA_BROWSER_TESTS=1`, a missing browser fails.

use anyhow::{Context, anyhow, bail};
use serde_json::{Value, json};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::time::Instant;

/// The W3C key of an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// Longest any wait in the suite may take.
pub const WAIT_MAX: Duration = Duration::from_secs(10);
/// Pause between two probes of a wait.
const POLL_EVERY: Duration = Duration::from_millis(100);
/// Bound of one WebDriver command (a page load is bounded by the session's
/// own `pageLoad` timeout, below this).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(30);
/// How long chromedriver may take to answer `/status` after start.
const DRIVER_START_MAX: Duration = Duration::from_secs(15);

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
    profile: PathBuf,
    log: PathBuf,
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
        let profile = recarga_store::testing::temp_dir("chromium-profile");
        let log = profile.with_extension("chromedriver.log");
        let driver = tokio::process::Command::new(chromedriver_path())
            .arg(format!("--port={port}"))
            .arg(format!("--log-path={}", log.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", chromedriver_path()))?;
        let http = reqwest::Client::builder()
            .timeout(COMMAND_TIMEOUT)
            .build()
            .context("http client")?;
        let base = format!("http://127.0.0.1:{port}");
        let mut browser = Browser {
            session: Session {
                http,
                url: String::new(),
            },
            driver,
            profile,
            log: log.clone(),
            _turn: turn,
        };
        let deadline = Instant::now() + DRIVER_START_MAX;
        loop {
            let ready = match browser.session.http.get(format!("{base}/status")).send().await {
                Ok(res) => res
                    .json::<Value>()
                    .await
                    .is_ok_and(|v| v["value"]["ready"] == json!(true)),
                Err(_) => false,
            };
            if ready {
                break;
            }
            if let Some(status) = browser.driver.try_wait().context("chromedriver")? {
                bail!("chromedriver exited at start ({status}); log: {}", log.display());
            }
            if Instant::now() > deadline {
                bail!(
                    "chromedriver not ready after {DRIVER_START_MAX:?}; log: {}",
                    log.display()
                );
            }
            tokio::time::sleep(POLL_EVERY).await;
        }
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": { "implicit": 0, "pageLoad": 10_000, "script": 10_000 },
                    "goog:chromeOptions": {
                        "binary": chromium_path(),
                        "args": [
                            "--headless",
                            "--no-sandbox",
                            "--disable-gpu",
                            "--no-first-run",
                            "--disable-background-networking",
                            "--disable-component-update",
                            "--disable-sync",
                            "--window-size=1280,900",
                            format!("--user-data-dir={}", browser.profile.display()),
                        ]
                    }
                }
            }
        });
        let res = browser
            .session
            .http
            .post(format!("{base}/session"))
            .json(&caps)
            .send()
            .await
            .context("new session")?;
        let body: Value = res.json().await.context("new session answer")?;
        let id = body["value"]["sessionId"]
            .as_str()
            .ok_or_else(|| anyhow!("no session: {body}"))?;
        browser.session.url = format!("{base}/session/{id}");
        Ok(browser)
    }

    /// Ends the session (Chromium exits), then chromedriver.
    pub async fn close(mut self) {
        let _ = self.session.http.delete(&self.session.url).send().await;
        let _ = self.driver.kill().await;
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        let _ = self.driver.start_kill();
        kill_profile_processes(&self.profile);
        let _ = std::fs::remove_dir_all(&self.profile);
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

/// A found element (valid until its page goes away).
#[derive(Debug, Clone)]
pub struct Element(String);

/// One WebDriver session.
pub struct Session {
    http: reqwest::Client,
    url: String,
}

impl Session {
    async fn send(&self, req: reqwest::RequestBuilder, what: &str) -> anyhow::Result<Value> {
        let res = req.send().await.with_context(|| format!("webdriver {what}"))?;
        let status = res.status();
        let body: Value = res
            .json()
            .await
            .with_context(|| format!("webdriver {what}: answer is not JSON"))?;
        if !status.is_success() {
            let err = body["value"]["error"].as_str().unwrap_or("?");
            let msg = body["value"]["message"].as_str().unwrap_or("");
            let first_line = msg.lines().next().unwrap_or("");
            bail!("webdriver {what}: {status} {err}: {first_line}");
        }
        Ok(body["value"].clone())
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.send(self.http.get(format!("{}{path}", self.url)), path).await
    }

    async fn post(&self, path: &str, body: Value) -> anyhow::Result<Value> {
        self.send(self.http.post(format!("{}{path}", self.url)).json(&body), path)
            .await
    }

    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.post("/url", json!({ "url": url })).await.map(drop)
    }

    pub async fn current_url(&self) -> anyhow::Result<String> {
        let v = self.get("/url").await?;
        v.as_str().map(str::to_string).ok_or_else(|| anyhow!("url: {v}"))
    }

    /// The path (and query) of the current page.
    pub async fn current_path(&self) -> anyhow::Result<String> {
        let url = self.current_url().await?;
        let after_scheme = url.split_once("://").map(|(_, r)| r).unwrap_or(&url);
        Ok(after_scheme
            .find('/')
            .map(|i| after_scheme[i..].to_string())
            .unwrap_or_else(|| "/".into()))
    }

    pub async fn source(&self) -> anyhow::Result<String> {
        let v = self.get("/source").await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    pub async fn find(&self, css: &str) -> anyhow::Result<Element> {
        let v = self
            .post("/element", json!({ "using": "css selector", "value": css }))
            .await
            .with_context(|| format!("find {css}"))?;
        element(&v)
    }

    pub async fn find_all(&self, css: &str) -> anyhow::Result<Vec<Element>> {
        let v = self
            .post("/elements", json!({ "using": "css selector", "value": css }))
            .await?;
        v.as_array()
            .ok_or_else(|| anyhow!("elements: {v}"))?
            .iter()
            .map(element)
            .collect()
    }

    /// Whether at least one element matches now.
    pub async fn exists(&self, css: &str) -> anyhow::Result<bool> {
        Ok(!self.find_all(css).await?.is_empty())
    }

    pub async fn click(&self, el: &Element) -> anyhow::Result<()> {
        self.post(&format!("/element/{}/click", el.0), json!({}))
            .await
            .map(drop)
    }

    pub async fn clear(&self, el: &Element) -> anyhow::Result<()> {
        self.post(&format!("/element/{}/clear", el.0), json!({}))
            .await
            .map(drop)
    }

    pub async fn send_keys(&self, el: &Element, text: &str) -> anyhow::Result<()> {
        self.post(&format!("/element/{}/value", el.0), json!({ "text": text }))
            .await
            .map(drop)
    }

    /// The rendered text of an element.
    pub async fn text_of(&self, el: &Element) -> anyhow::Result<String> {
        let v = self.get(&format!("/element/{}/text", el.0)).await?;
        Ok(v.as_str().unwrap_or_default().to_string())
    }

    pub async fn attribute(&self, el: &Element, name: &str) -> anyhow::Result<Option<String>> {
        let v = self.get(&format!("/element/{}/attribute/{name}", el.0)).await?;
        Ok(v.as_str().map(str::to_string))
    }

    pub async fn tag_name(&self, el: &Element) -> anyhow::Result<String> {
        let v = self.get(&format!("/element/{}/name", el.0)).await?;
        Ok(v.as_str().unwrap_or_default().to_ascii_lowercase())
    }

    /// The rendered text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let el = self.find(css).await?;
        self.text_of(&el).await
    }

    /// Runs `script` (a function body; `arguments` holds `args`) and returns its value.
    pub async fn execute(&self, script: &str, args: Vec<Value>) -> anyhow::Result<Value> {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
            .await
    }

    /// Every cookie the browser holds for the current page, HttpOnly ones included.
    pub async fn cookies(&self) -> anyhow::Result<Vec<(String, String)>> {
        let v = self.get("/cookie").await?;
        Ok(v.as_array()
            .map(|a| {
                a.iter()
                    .map(|c| {
                        (
                            c["name"].as_str().unwrap_or_default().to_string(),
                            c["value"].as_str().unwrap_or_default().to_string(),
                        )
                    })
                    .collect()
            })
            .unwrap_or_default())
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
        self.post("/window/rect", json!({ "width": width, "height": height }))
            .await
            .map(drop)
    }

    /// A PNG of the whole page (up to [`SHOT_MAX_HEIGHT`] pixels tall, through
    /// Chromium's DevTools command; the viewport alone if that is refused),
    /// written to `path`.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let b64 = match self.full_page_png().await {
            Ok(b64) => b64,
            Err(_) => {
                let v = self.get("/screenshot").await?;
                v.as_str().ok_or_else(|| anyhow!("screenshot: {v}"))?.to_string()
            }
        };
        let png = base64_decode(&b64)?;
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        std::fs::write(path, png).with_context(|| format!("write {}", path.display()))
    }

    async fn full_page_png(&self) -> anyhow::Result<String> {
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
        let v = self
            .post(
                "/goog/cdp/execute",
                json!({
                    "cmd": "Page.captureScreenshot",
                    "params": {
                        "format": "png",
                        "captureBeyondViewport": true,
                        "clip": { "x": 0, "y": 0, "width": width, "height": height, "scale": 1 }
                    }
                }),
            )
            .await?;
        v["data"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| anyhow!("captureScreenshot: {v}"))
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

fn element(v: &Value) -> anyhow::Result<Element> {
    v[ELEMENT_KEY]
        .as_str()
        .map(|id| Element(id.to_string()))
        .ok_or_else(|| anyhow!("not an element: {v}"))
}

/// Standard base64 (what WebDriver screenshots are), padding optional.
fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        } as u32)
    }
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'=')
        .collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let mut acc = 0u32;
        for (i, &c) in chunk.iter().enumerate() {
            acc |= value(c).ok_or_else(|| anyhow!("bad base64 byte {c}"))? << (18 - 6 * i);
        }
        let bytes = acc.to_be_bytes();
        let n = match chunk.len() {
            4 => 3,
            3 => 2,
            2 => 1,
            _ => bail!("truncated base64"),
        };
        out.extend_from_slice(&bytes[1..1 + n]);
    }
    Ok(out)
}

#[test]
fn base64_decodes() {
    assert_eq!(base64_decode("aGVsbG8=").expect("decodes"), b"hello");
    assert_eq!(base64_decode("aGVsbG8h").expect("decodes"), b"hello!");
    assert_eq!(base64_decode("aGk").expect("decodes"), b"hi");
}

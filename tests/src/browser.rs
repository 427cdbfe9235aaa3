//! A real headless browser for tests: Debian's Chromium driven by
//! `chromedriver` over the W3C WebDriver protocol (HTTP/1.1 + JSON through
//! [`crate::http::Client`], one connection per command).
//!
//! chromedriver runs inside a namespace of the bed (usually the LB's), so the
//! Chromium it starts shares that namespace and reaches `127.0.0.1:9180` there;
//! the test process opens each connection to chromedriver from a thread that
//! entered the same namespace (a socket keeps the namespace it was made in).
//!
//! ```no_run
//! # fn demo(bed: &alwayson_tests::bed::TestBed) -> anyhow::Result<()> {
//! use alwayson_tests::browser::ChromeDriver;
//! let driver = ChromeDriver::start(bed, bed.lb_ns())?;
//! let browser = driver.session((1280, 900))?;
//! browser.navigate("http://127.0.0.1:9180/")?;
//! browser.wait_for("a refresh", std::time::Duration::from_secs(5), "return document.body.dataset.updated >= 1")?;
//! let rows = browser.find_all("tr[data-backend]")?;
//! let state = rows[0].attribute("data-state")?;
//! # Ok(()) }
//! ```
//!
//! Cleanup, also on panic: dropping a [`Session`] deletes it (chromedriver
//! closes its Chromium); dropping the [`ChromeDriver`] stops chromedriver, then
//! SIGKILLs whatever is still running with this driver's profile directory on
//! its command line or below chromedriver in the process tree, and kills and
//! reaps the Chromium processes this process adopted as the child subreaper
//! (set by [`ChromeDriver::start`]: Chromium's crash handler double-forks),
//! so no Chromium outlives the test, not even as a zombie. The subreaper flag
//! is never cleared: it stays set for the rest of the test process.
//! The /proc searches live in [`crate::proc_scan`].

use std::{
    cell::Cell,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, bail, ensure, Context as _, Result};
use base64::{engine::general_purpose::STANDARD as BASE64, Engine as _};
use serde_json::{json, Value};

use crate::{
    bed::TestBed,
    http::{Client, Request},
    netns::Netns,
    proc_scan,
    process::Process,
    wait::{try_wait_until, wait_until},
};

/// Debian's Chromium (package `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver (package `chromium-driver`), found on PATH.
pub const CHROMEDRIVER: &str = "chromedriver";
/// chromedriver's own default port; free in a test namespace.
pub const DEFAULT_PORT: u16 = 9515;
/// How W3C WebDriver marks an element reference in JSON.
const ELEMENT_KEY: &str = "element-6066-11e4-a52e-4f735466cecf";
/// One command, page loads and session creation included.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const STARTUP: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

/// A `chromedriver --port=P` process in a namespace, stopped on drop.
pub struct ChromeDriver<'b> {
    ns: &'b Netns,
    /// To chromedriver, from inside `ns`.
    client: Client,
    process: Process,
    /// Chromium profiles live below here (unique per bed); also the marker
    /// that finds leftover Chromium processes.
    profiles: PathBuf,
    sessions: Cell<u32>,
}

impl<'b> ChromeDriver<'b> {
    /// Starts chromedriver in `ns` on [`DEFAULT_PORT`] and waits until it is ready.
    pub fn start(bed: &TestBed, ns: &'b Netns) -> Result<Self> {
        Self::start_on(bed, ns, DEFAULT_PORT)
    }

    pub fn start_on(bed: &TestBed, ns: &'b Netns, port: u16) -> Result<Self> {
        installed(CHROMIUM).context("install Debian's chromium (cargo xtask setup)")?;
        // Chromium double-forks its crash handler, and a killed chromedriver
        // orphans its browser: as the subreaper, this process adopts them
        // (not init), so dropping the driver can kill and reap every one.
        // The flag stays set for the rest of the test process (nothing here
        // clears it): any orphan below it from then on is adopted by it, not
        // by init, and is reaped only if something waits for it. Tests fork
        // little else; a driver's drop reaps the `chrom*` ones.
        // SAFETY: prctl(PR_SET_CHILD_SUBREAPER) only changes who adopts orphans.
        unsafe { libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) };
        let profiles = bed.temp_dir().join(format!("chromium-{port}"));
        std::fs::create_dir_all(&profiles).with_context(|| format!("creating {}", profiles.display()))?;
        let process = bed
            .spawn(ns, CHROMEDRIVER, &[format!("--port={port}")], &format!("chromedriver-{port}"))
            .context("starting chromedriver: install Debian's chromium-driver (cargo xtask setup)")?;
        let mut driver = Self {
            ns,
            client: Client::tcp_in(ns, SocketAddr::from((Ipv4Addr::LOCALHOST, port)))
                .timeout(COMMAND_TIMEOUT),
            process,
            profiles,
            sessions: Cell::new(0),
        };
        driver.wait_ready()?;
        Ok(driver)
    }

    fn wait_ready(&mut self) -> Result<()> {
        let mut last = String::new();
        let ready = try_wait_until("chromedriver to be ready", STARTUP, POLL, || {
            match self.command("GET", "/status", None) {
                Ok(status) if status["ready"] == json!(true) => return Ok(Some(())),
                Ok(status) => last = format!("last status {status}"),
                Err(e) => last = format!("last error {e:#}"),
            }
            ensure!(self.process.running(), "chromedriver exited before it was ready");
            Ok(None)
        });
        ready.map_err(|e| anyhow!("{e:#}: {last}; log:\n{}", self.process.log()))
    }

    /// chromedriver's output so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// The directory that holds this driver's Chromium profiles: every Chromium
    /// it starts has it on its command line (`pgrep -f` finds them).
    pub fn profiles_dir(&self) -> &Path {
        &self.profiles
    }

    /// A new headless Chromium with a fresh profile and a `width`×`height` window.
    pub fn session(&self, (width, height): (u32, u32)) -> Result<Session<'_, 'b>> {
        let n = self.sessions.get() + 1;
        self.sessions.set(n);
        let profile = self.profiles.join(format!("profile-{n}"));
        std::fs::create_dir_all(&profile).with_context(|| format!("creating {}", profile.display()))?;
        let args = [
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-dev-shm-usage".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--no-default-browser-check".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-extensions".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ];
        let caps = json!({
            "capabilities": {
                "alwaysMatch": {
                    "browserName": "chrome",
                    "pageLoadStrategy": "normal",
                    "timeouts": { "script": 10_000, "pageLoad": 20_000, "implicit": 0 },
                    "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
                }
            }
        });
        let value = self
            .command("POST", "/session", Some(&caps))
            .with_context(|| format!("creating a Chromium session; chromedriver log:\n{}", self.log()))?;
        let id = value["sessionId"].as_str().ok_or_else(|| anyhow!("no sessionId in {value}"))?.to_string();
        Ok(Session { driver: self, id, profile })
    }

    /// One WebDriver command: `value` of the answer, or the WebDriver error.
    pub fn command(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        let body = match (method, body) {
            (_, Some(b)) => b.to_string(),
            ("POST", None) => "{}".to_string(),
            _ => String::new(),
        };
        let mut request = Request::new(method, path).header("Accept", "application/json");
        if !body.is_empty() {
            request = request.json(&body);
        }
        let response = self
            .client
            .send(&request)
            .with_context(|| format!("{method} {path} to chromedriver in {}", self.ns.name()))?;
        let (status, body) = (response.status, response.body);
        let mut json: Value = serde_json::from_slice(&body).with_context(|| {
            format!("{method} {path}: answer {status} is not JSON: {}", String::from_utf8_lossy(&body))
        })?;
        let value = json["value"].take();
        if status != 200 {
            let error = value["error"].as_str().unwrap_or("unknown error");
            let message = value["message"].as_str().unwrap_or("");
            bail!("{method} {path}: {status} {error}: {message}");
        }
        Ok(value)
    }
}

impl Drop for ChromeDriver<'_> {
    fn drop(&mut self) {
        let below = proc_scan::descendants(self.process.pid());
        self.process.stop(Duration::from_secs(2));
        let marker = self.profiles.display().to_string();
        let mut pids: Vec<u32> = below.into_iter().filter(|&p| proc_scan::alive(p)).collect();
        pids.extend(proc_scan::pids_with_arg(|a| a.contains(&marker)));
        proc_scan::kill_and_wait(&pids, Duration::from_secs(3));
        proc_scan::reap_children_named("chrom", Duration::from_secs(3));
    }
}

/// A browser (one Chromium, one window); deleted on drop.
pub struct Session<'d, 'b> {
    driver: &'d ChromeDriver<'b>,
    id: String,
    profile: PathBuf,
}

impl Session<'_, '_> {
    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        self.driver.command(method, &format!("/session/{}{path}", self.id), body)
    }

    /// Loads `url` and returns once the page has loaded.
    pub fn navigate(&self, url: &str) -> Result<()> {
        self.cmd("POST", "/url", Some(&json!({ "url": url }))).map(drop)
    }

    pub fn title(&self) -> Result<String> {
        string(self.cmd("GET", "/title", None)?)
    }

    /// Runs `script` as a function body (`return …` gives the result) with
    /// `arguments` = `args` (JSON values; an element would be `{ELEMENT_KEY: id}`).
    pub fn execute(&self, script: &str, args: &[Value]) -> Result<Value> {
        self.cmd("POST", "/execute/sync", Some(&json!({ "script": script, "args": args })))
    }

    /// Runs `script` (a function body, no arguments) until it returns something
    /// truthy (not null, false, 0 or ""), at most `timeout`; returns that value.
    /// `what` names the condition in the error.
    pub fn wait_for(&self, what: &str, timeout: Duration, script: &str) -> Result<Value> {
        let mut last = String::new();
        let value = wait_until(what, timeout, POLL, || match self.execute(script, &[]) {
            Ok(v) if truthy(&v) => Some(v),
            Ok(v) => {
                last = format!("last result {v}");
                None
            }
            Err(e) => {
                last = format!("last error {e:#}");
                None
            }
        });
        value.map_err(|e| anyhow!("{e:#}: {last}"))
    }

    /// The first element matching the CSS selector.
    pub fn find(&self, css: &str) -> Result<Element<'_>> {
        let v = self.cmd("POST", "/element", Some(&json!({ "using": "css selector", "value": css })))?;
        Element::from_json(self, &v).with_context(|| format!("element {css:?}"))
    }

    /// Every element matching the CSS selector (none is not an error).
    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>> {
        let v = self.cmd("POST", "/elements", Some(&json!({ "using": "css selector", "value": css })))?;
        elements(self, v).with_context(|| format!("elements {css:?}"))
    }

    /// The viewport as PNG bytes.
    pub fn screenshot(&self) -> Result<Vec<u8>> {
        let png = BASE64
            .decode(string(self.cmd("GET", "/screenshot", None)?)?)
            .context("the screenshot is not base64")?;
        ensure!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "the screenshot is not a PNG");
        Ok(png)
    }

    /// Writes [`Self::screenshot`] to `path`.
    pub fn save_screenshot(&self, path: &Path) -> Result<()> {
        std::fs::write(path, self.screenshot()?).with_context(|| format!("writing {}", path.display()))
    }
}

impl Drop for Session<'_, '_> {
    fn drop(&mut self) {
        // chromedriver closes the browser and waits for it.
        if let Err(e) = self.cmd("DELETE", "", None) {
            eprintln!("cleanup: deleting WebDriver session {}: {e:#}", self.id);
        }
        let arg = format!("--user-data-dir={}", self.profile.display());
        proc_scan::kill_and_wait(&proc_scan::pids_with_arg(|a| a == arg), Duration::from_secs(3));
    }
}

/// An element of the page (a W3C element reference).
pub struct Element<'s> {
    session: &'s Session<'s, 's>,
    id: String,
}

impl<'s> Element<'s> {
    fn from_json(session: &'s Session<'s, 's>, v: &Value) -> Result<Self> {
        let id = v[ELEMENT_KEY].as_str().ok_or_else(|| anyhow!("not an element reference: {v}"))?;
        Ok(Self { session, id: id.to_string() })
    }

    fn cmd(&self, method: &str, path: &str, body: Option<&Value>) -> Result<Value> {
        self.session.cmd(method, &format!("/element/{}{path}", self.id), body)
    }

    /// The attribute's value, `None` when absent.
    pub fn attribute(&self, name: &str) -> Result<Option<String>> {
        match self.cmd("GET", &format!("/attribute/{name}"), None)? {
            Value::Null => Ok(None),
            v => string(v).map(Some),
        }
    }

    /// The rendered text, as a user sees it.
    pub fn text(&self) -> Result<String> {
        string(self.cmd("GET", "/text", None)?)
    }

    pub fn displayed(&self) -> Result<bool> {
        self.cmd("GET", "/displayed", None)?.as_bool().ok_or_else(|| anyhow!("displayed: not a bool"))
    }

    pub fn find(&self, css: &str) -> Result<Element<'s>> {
        let v = self.cmd("POST", "/element", Some(&json!({ "using": "css selector", "value": css })))?;
        Element::from_json(self.session, &v).with_context(|| format!("element {css:?}"))
    }

    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'s>>> {
        let v = self.cmd("POST", "/elements", Some(&json!({ "using": "css selector", "value": css })))?;
        elements(self.session, v).with_context(|| format!("elements {css:?}"))
    }
}

fn elements<'s>(session: &'s Session<'s, 's>, v: Value) -> Result<Vec<Element<'s>>> {
    match v {
        Value::Array(items) => items.iter().map(|v| Element::from_json(session, v)).collect(),
        other => bail!("expected a list of elements, got {other}"),
    }
}

fn string(v: Value) -> Result<String> {
    match v {
        Value::String(s) => Ok(s),
        other => bail!("expected a string, got {other}"),
    }
}

/// JavaScript's truthiness, for the values WebDriver returns.
fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

fn installed(path: &str) -> Result<()> {
    ensure!(Path::new(path).is_file(), "{path} not found");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truthiness_follows_javascript() {
        for v in [json!(null), json!(false), json!(0), json!(""), json!(0.0)] {
            assert!(!truthy(&v), "{v}");
        }
        for v in [json!(true), json!(1), json!("x"), json!([]), json!({})] {
            assert!(truthy(&v), "{v}");
        }
    }
}

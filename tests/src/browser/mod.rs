//! A real headless browser for tests: Debian's Chromium driven by
//! `chromedriver` over the W3C WebDriver protocol, spoken by the `fantoccini`
//! crate. Its client is async; [`ChromeDriver`] owns a single-threaded tokio
//! runtime and every call here blocks on it, so tests stay synchronous.
//!
//! chromedriver runs inside a namespace of the bed (usually the LB's), so the
//! Chromium it starts shares that namespace and reaches `127.0.0.1:9180` there;
//! the connections to chromedriver are opened from a thread that entered the
//! same namespace ([`connect`]: a socket keeps the namespace it was made in).
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

pub mod connect;
mod session;

use std::{
    cell::Cell,
    future::Future,
    net::{Ipv4Addr, SocketAddr},
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, ensure, Context as _, Result};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::Bytes;
use hyper_util::{client::legacy::Client as HttpClient, rt::TokioExecutor};
use serde_json::{json, Map, Value};

pub use self::session::{Element, Session};
use self::{connect::NetnsConnector, session::truthy};
use crate::{bed::TestBed, netns::Netns, proc_scan, process::Process, wait::try_wait_until};

/// Debian's Chromium (package `chromium`).
pub const CHROMIUM: &str = "/usr/bin/chromium";
/// Debian's chromedriver (package `chromium-driver`), found on PATH.
pub const CHROMEDRIVER: &str = "chromedriver";
/// chromedriver's own default port; free in a test namespace.
pub const DEFAULT_PORT: u16 = 9515;
/// One command, page loads and session creation included.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const STARTUP: Duration = Duration::from_secs(15);
const POLL: Duration = Duration::from_millis(50);

/// A `chromedriver --port=P` process in a namespace, stopped on drop.
pub struct ChromeDriver<'b> {
    ns: &'b Netns,
    /// To chromedriver, from inside `ns`.
    connector: NetnsConnector,
    /// Runs the WebDriver client; its tasks make progress only inside
    /// [`Self::block_on`], which is all they need.
    runtime: tokio::runtime::Runtime,
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
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("a tokio runtime for the WebDriver client")?;
        let profiles = bed.temp_dir().join(format!("chromium-{port}"));
        std::fs::create_dir_all(&profiles).with_context(|| format!("creating {}", profiles.display()))?;
        let process = bed
            .spawn(ns, CHROMEDRIVER, &[format!("--port={port}")], &format!("chromedriver-{port}"))
            .context("starting chromedriver: install Debian's chromium-driver (cargo xtask setup)")?;
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        let mut driver = Self {
            ns,
            connector: NetnsConnector::new(ns.name(), addr, CONNECT_TIMEOUT),
            runtime,
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
            match self.block_on("GET /status", self.status()) {
                Ok(status) if truthy(&status["ready"]) => return Ok(Some(())),
                Ok(status) => last = format!("last status {status}"),
                Err(e) => last = format!("last error {e:#}"),
            }
            ensure!(self.process.running(), "chromedriver exited before it was ready");
            Ok(None)
        });
        ready.map_err(|e| anyhow!("{e:#}: {last}; log:\n{}", self.process.log()))
    }

    /// `value` of chromedriver's `/status`. The one command outside a
    /// session, which fantoccini only issues from a session's client.
    async fn status(&self) -> Result<Value> {
        let http = HttpClient::builder(TokioExecutor::new()).build::<_, Empty<Bytes>>(self.connector.clone());
        let response = http.get(format!("{}status", self.connector.url()).parse()?).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        ensure!(status.is_success(), "{status}: {}", String::from_utf8_lossy(&body));
        let mut json: Value = serde_json::from_slice(&body)
            .with_context(|| format!("not JSON: {}", String::from_utf8_lossy(&body)))?;
        Ok(json["value"].take())
    }

    /// Runs one WebDriver exchange to completion, at most [`COMMAND_TIMEOUT`].
    fn block_on<T, E>(&self, what: &str, call: impl Future<Output = Result<T, E>>) -> Result<T>
    where
        E: Into<anyhow::Error>,
    {
        // The timer is made inside: it needs the runtime's context.
        let outcome = self.runtime.block_on(async { tokio::time::timeout(COMMAND_TIMEOUT, call).await });
        let what = || format!("{what} (chromedriver in {})", self.ns.name());
        match outcome {
            Ok(result) => result.map_err(Into::into).with_context(what),
            Err(_) => Err(anyhow!("no answer in {COMMAND_TIMEOUT:?}")).with_context(what),
        }
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
            "browserName": "chrome",
            "pageLoadStrategy": "normal",
            "timeouts": { "script": 10_000, "pageLoad": 20_000, "implicit": 0 },
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args },
        });
        let Value::Object(caps) = caps else { unreachable!("json!({{…}}) is an object") };
        let client = self
            .block_on("creating a Chromium session", self.connect(caps))
            .with_context(|| format!("chromedriver log:\n{}", self.log()))?;
        Session::new(self, client, profile)
    }

    async fn connect(&self, caps: Map<String, Value>) -> Result<fantoccini::Client> {
        let client = fantoccini::ClientBuilder::new(self.connector.clone())
            .capabilities(caps)
            .connect(&self.connector.url())
            .await?;
        Ok(client)
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

fn installed(path: &str) -> Result<()> {
    ensure!(Path::new(path).is_file(), "{path} not found");
    Ok(())
}

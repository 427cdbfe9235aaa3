//! One Chromium behind a WebDriver session, and the elements of its page:
//! synchronous wrappers over fantoccini's client.

use std::{
    path::{Path, PathBuf},
    time::Duration,
};

use anyhow::{anyhow, ensure, Context as _, Result};
use fantoccini::{elements::Element as WdElement, Locator};
use serde_json::Value;

use super::{ChromeDriver, POLL};
use crate::{proc_scan, wait::wait_until};

/// A browser (one Chromium, one window); deleted on drop.
pub struct Session<'d, 'b> {
    driver: &'d ChromeDriver<'b>,
    client: fantoccini::Client,
    id: String,
    profile: PathBuf,
}

impl<'d, 'b> Session<'d, 'b> {
    pub(super) fn new(
        driver: &'d ChromeDriver<'b>,
        client: fantoccini::Client,
        profile: PathBuf,
    ) -> Result<Self> {
        let mut session = Self { driver, client, id: String::from("(unknown)"), profile };
        // Only for messages; the session is deleted on drop whether or not this works.
        let id = driver.block_on("the session id", session.client.session_id())?;
        session.id = id.ok_or_else(|| anyhow!("chromedriver gave no session id"))?;
        Ok(session)
    }
}

impl Session<'_, '_> {
    fn block_on<T, E: Into<anyhow::Error>>(
        &self,
        what: &str,
        call: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T> {
        self.driver.block_on(&format!("{what} in session {}", self.id), call)
    }

    /// Loads `url` and returns once the page has loaded.
    pub fn navigate(&self, url: &str) -> Result<()> {
        self.block_on(&format!("navigating to {url}"), self.client.goto(url))
    }

    pub fn title(&self) -> Result<String> {
        self.block_on("the title", self.client.title())
    }

    /// Runs `script` as a function body (`return …` gives the result) with
    /// `arguments` = `args` (JSON values).
    pub fn execute(&self, script: &str, args: &[Value]) -> Result<Value> {
        self.block_on("running a script", self.client.execute(script, args.to_vec()))
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
        let element = self.block_on(&format!("element {css:?}"), self.client.find(Locator::Css(css)))?;
        Ok(Element { session: self, element })
    }

    /// Every element matching the CSS selector (none is not an error).
    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'_>>> {
        let all = self.block_on(&format!("elements {css:?}"), self.client.find_all(Locator::Css(css)))?;
        Ok(all.into_iter().map(|element| Element { session: self, element }).collect())
    }

    /// The viewport as PNG bytes.
    pub fn screenshot(&self) -> Result<Vec<u8>> {
        let png = self.block_on("a screenshot", self.client.screenshot())?;
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
        // chromedriver closes the browser and waits for it. Without this,
        // fantoccini would delete the session from a task of the driver's
        // runtime, which runs only while something blocks on it.
        if let Err(e) = self.block_on("deleting the session", self.client.clone().close()) {
            eprintln!("cleanup: {e:#}");
        }
        let arg = format!("--user-data-dir={}", self.profile.display());
        proc_scan::kill_and_wait(&proc_scan::pids_with_arg(|a| a == arg), Duration::from_secs(3));
    }
}

/// An element of the page (a W3C element reference).
pub struct Element<'s> {
    session: &'s Session<'s, 's>,
    element: WdElement,
}

impl<'s> Element<'s> {
    /// The attribute's value, `None` when absent.
    pub fn attribute(&self, name: &str) -> Result<Option<String>> {
        self.session.block_on(&format!("attribute {name:?}"), self.element.attr(name))
    }

    /// The rendered text, as a user sees it.
    pub fn text(&self) -> Result<String> {
        self.session.block_on("an element's text", self.element.text())
    }

    pub fn displayed(&self) -> Result<bool> {
        self.session.block_on("whether an element is displayed", self.element.is_displayed())
    }

    pub fn find(&self, css: &str) -> Result<Element<'s>> {
        let element =
            self.session.block_on(&format!("element {css:?}"), self.element.find(Locator::Css(css)))?;
        Ok(Element { session: self.session, element })
    }

    pub fn find_all(&self, css: &str) -> Result<Vec<Element<'s>>> {
        let what = format!("elements {css:?}");
        let all = self.session.block_on(&what, self.element.find_all(Locator::Css(css)))?;
        Ok(all.into_iter().map(|element| Element { session: self.session, element }).collect())
    }
}

/// JavaScript's truthiness, for the values WebDriver returns.
pub(super) fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64().is_some_and(|f| f != 0.0 && !f.is_nan()),
        Value::String(s) => !s.is_empty(),
        Value::Array(_) | Value::Object(_) => true,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

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

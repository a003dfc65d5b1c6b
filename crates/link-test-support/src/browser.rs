//! A real browser for tests: Debian's headless Chromium, started by the
//! test and driven over the Chrome DevTools Protocol on the WebSocket it
//! opens on 127.0.0.1 (read back from its stderr), with the workspace's own
//! tokio-tungstenite. No WebDriver server, no npm, no new dependency.
//!
//! ```text
//!  test ─► Chromium::launch ─► chromium --headless --remote-debugging-port=0
//!          stderr: "DevTools listening on ws://127.0.0.1:<port>/devtools/browser/<id>"
//!          ─► WebSocket ─► Target.createTarget + attachToTarget (flat session)
//!  goto(url)        Page.navigate, then Page.loadEventFired
//!  eval(js)         Runtime.evaluate (promises awaited, values returned by value)
//!  wait_for(js, d)  a promise in the page: a MutationObserver re-checks `js` on
//!                   every DOM change, and resolves false at deadline `d`
//!  screenshot()     Page.captureScreenshot (PNG bytes)
//! ```
//!
//! Chromium is `/usr/bin/chromium` (`apt-get install -y chromium`; `.ci/run`
//! installs it) or the path in `LINK_CHROMIUM`. When it is missing,
//! [`Chromium::launch`] fails the test with that advice: a browser test
//! never passes without a browser. The process is killed when the handle
//! drops, and its profile directory removed.

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::{Value, json};
use tokio::process::{Child, Command};
use tokio_tungstenite::tungstenite::Message;

use crate::{TempDir, WAIT, Ws};

/// The environment variable naming another Chromium binary.
pub const CHROMIUM_ENV: &str = "LINK_CHROMIUM";
/// Debian's Chromium.
pub const DEFAULT_CHROMIUM: &str = "/usr/bin/chromium";
/// Bound on Chromium's start (a cold start on a loaded CI machine is slow).
const LAUNCH_WAIT: Duration = Duration::from_secs(60);

/// A headless Chromium with one page open. Killed on drop.
pub struct Chromium {
    ws: Ws,
    session: String,
    next_id: u64,
    /// Events read while waiting for a command's answer.
    events: VecDeque<Value>,
    child: Child,
    _profile: TempDir,
}

impl Chromium {
    /// The Chromium binary: `$LINK_CHROMIUM`, else `/usr/bin/chromium`.
    pub fn binary() -> PathBuf {
        std::env::var_os(CHROMIUM_ENV).map_or_else(|| DEFAULT_CHROMIUM.into(), PathBuf::from)
    }

    /// Starts Chromium headless with a fresh profile and opens a blank page
    /// of `width` x `height` CSS pixels. Panics, saying how to install it,
    /// when there is no Chromium.
    pub async fn launch(width: u32, height: u32) -> Self {
        let binary = Self::binary();
        assert!(
            binary.exists(),
            "this test drives a real browser, and there is no Chromium at {}: \
             install Debian's (`apt-get install -y chromium`, which `.ci/run` does) \
             or set {CHROMIUM_ENV} to a Chromium binary",
            binary.display()
        );
        let profile = TempDir::new("chromium-profile");
        let mut command = Command::new(&binary);
        command
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-dev-shm-usage",
                "--disable-extensions",
                "--hide-scrollbars",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--window-size={width},{height}"))
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank");
        let what = format!("chromium ({})", binary.display());
        let (child, url) = crate::process::spawn_until(command, &what, LAUNCH_WAIT, |line| {
            line.trim()
                .strip_prefix("DevTools listening on ")
                .map(str::to_owned)
        })
        .await;
        let ws = crate::connect(&url).await;
        let mut browser = Self {
            ws,
            session: String::new(),
            next_id: 0,
            events: VecDeque::new(),
            child,
            _profile: profile,
        };
        let target = browser
            .command("Target.createTarget", json!({"url": "about:blank"}))
            .await;
        let target_id = target["targetId"].clone();
        let attached = browser
            .command(
                "Target.attachToTarget",
                json!({"targetId": target_id, "flatten": true}),
            )
            .await;
        browser.session = attached["sessionId"]
            .as_str()
            .expect("a session id")
            .to_owned();
        browser.page("Page.enable", json!({})).await;
        browser.page("Runtime.enable", json!({})).await;
        browser.resize(width, height).await;
        browser
    }

    /// Sets the page's viewport to `width` x `height` CSS pixels at a
    /// device scale of 1.
    pub async fn resize(&mut self, width: u32, height: u32) {
        self.page(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": false}),
        )
        .await;
    }

    /// Navigates to `url` and waits for its load event.
    pub async fn goto(&mut self, url: &str) {
        self.events.clear();
        let nav = self.page("Page.navigate", json!({"url": url})).await;
        if let Some(error) = nav.get("errorText").and_then(Value::as_str) {
            panic!("navigation to {url} failed: {error}");
        }
        self.event("Page.loadEventFired").await;
    }

    /// Evaluates `expression` in the page; a promise is awaited. Returns
    /// its value as JSON; panics if it throws.
    pub async fn eval(&mut self, expression: &str) -> Value {
        let r = self
            .page(
                "Runtime.evaluate",
                json!({"expression": expression, "awaitPromise": true, "returnByValue": true}),
            )
            .await;
        if let Some(e) = r.get("exceptionDetails") {
            panic!("{expression}\nthrew: {e}");
        }
        r["result"].get("value").cloned().unwrap_or(Value::Null)
    }

    /// Waits until the JavaScript `condition` holds in the page, re-checked
    /// on every DOM change (a `MutationObserver`), for at most `deadline`
    /// (a timer in the page). True if it held in time. A condition that
    /// throws counts as false.
    pub async fn wait_for(&mut self, condition: &str, deadline: Duration) -> bool {
        let ms = deadline.as_millis();
        let js = format!(
            r#"new Promise((resolve) => {{
  const check = () => {{ try {{ return !!({condition}); }} catch (e) {{ return false; }} }};
  if (check()) return resolve(true);
  const observer = new MutationObserver(() => {{
    if (check()) {{ observer.disconnect(); clearTimeout(timer); resolve(true); }}
  }});
  observer.observe(document.documentElement, {{subtree: true, childList: true, characterData: true, attributes: true}});
  const timer = setTimeout(() => {{ observer.disconnect(); resolve(check()); }}, {ms});
}})"#
        );
        // The hang guard only turns a wedged browser into a failure.
        tokio::time::timeout(deadline + WAIT, self.eval(&js))
            .await
            .expect("the browser did not answer")
            .as_bool()
            .unwrap_or(false)
    }

    /// A PNG of the viewport.
    pub async fn screenshot(&mut self) -> Vec<u8> {
        let r = self
            .page("Page.captureScreenshot", json!({"format": "png"}))
            .await;
        base64_decode(r["data"].as_str().expect("screenshot data"))
    }

    /// Asks Chromium to quit and waits for it (dropping the handle kills
    /// it instead).
    pub async fn close(mut self) {
        let id = self.next_id + 1;
        self.next_id = id;
        let msg = json!({"id": id, "method": "Browser.close"});
        if self.ws.send(Message::text(msg.to_string())).await.is_ok()
            && tokio::time::timeout(WAIT, self.child.wait()).await.is_ok()
        {
            return;
        }
        let _ = self.child.kill().await;
    }

    /// A command to the page's session.
    async fn page(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(&session)).await
    }

    /// A command to the browser.
    async fn command(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None).await
    }

    async fn send(&mut self, method: &str, params: Value, session: Option<&str>) -> Value {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = s.into();
        }
        self.ws
            .send(Message::text(msg.to_string()))
            .await
            .expect("send to chromium");
        tokio::time::timeout(LAUNCH_WAIT, async {
            loop {
                let msg = self.read().await;
                if msg["id"] == id {
                    if let Some(e) = msg.get("error") {
                        panic!("{method} failed: {e}");
                    }
                    return msg["result"].clone();
                }
                if msg.get("method").is_some() {
                    self.events.push_back(msg);
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("chromium did not answer {method}"))
    }

    /// The next event `method` of the page's session.
    async fn event(&mut self, method: &str) -> Value {
        let session = self.session.clone();
        let matches = |m: &Value| m["method"] == method && m["sessionId"] == session.as_str();
        if let Some(i) = self.events.iter().position(matches) {
            return self.events.remove(i).unwrap_or_default();
        }
        tokio::time::timeout(WAIT, async {
            loop {
                let msg = self.read().await;
                if matches(&msg) {
                    return msg;
                }
            }
        })
        .await
        .unwrap_or_else(|_| panic!("no {method} from chromium"))
    }

    async fn read(&mut self) -> Value {
        loop {
            match self.ws.next().await {
                Some(Ok(Message::Text(text))) => {
                    return serde_json::from_str(&text).expect("JSON from chromium");
                }
                Some(Ok(_)) => {}
                Some(Err(e)) => panic!("chromium's DevTools socket failed: {e}"),
                None => panic!("chromium closed its DevTools socket"),
            }
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// Decodes standard base64 (padding optional); panics on other characters.
fn base64_decode(text: &str) -> Vec<u8> {
    let value = |c: u8| -> u32 {
        match c {
            b'A'..=b'Z' => u32::from(c - b'A'),
            b'a'..=b'z' => u32::from(c - b'a') + 26,
            b'0'..=b'9' => u32::from(c - b'0') + 52,
            b'+' => 62,
            b'/' => 63,
            _ => panic!("not base64: {:?}", char::from(c)),
        }
    };
    let digits: Vec<u8> = text.bytes().filter(|&c| c != b'=').collect();
    let mut out = Vec::with_capacity(digits.len() * 3 / 4);
    for chunk in digits.chunks(4) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, &c)| n | value(c) << (18 - 6 * i));
        let bytes = n.to_be_bytes();
        out.extend_from_slice(&bytes[1..chunk.len()]);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_rfc_4648_vectors() {
        for (text, plain) in [
            ("", ""),
            ("Zg==", "f"),
            ("Zm8=", "fo"),
            ("Zm9v", "foo"),
            ("Zm9vYg==", "foob"),
            ("Zm9vYmE=", "fooba"),
            ("Zm9vYmFy", "foobar"),
        ] {
            assert_eq!(base64_decode(text), plain.as_bytes(), "{text}");
        }
    }
}

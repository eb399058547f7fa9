//! A real browser to click in: Debian's `chromedriver` (package `chromium-driver`) driving
//! Debian's `chromium` headless, through the `fantoccini` WebDriver client.
//!
//! Missing either package, the test fails naming it (it never skips): `make test` installs
//! both (its `browser` target).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use crmsync_testkit::{ChildProcess, TempDir, free_port};
use fantoccini::{Client, ClientBuilder, Locator, elements::Element};
use serde_json::{Value, json};

/// How long the page gets to show something after an action.
pub const PATIENCE: Duration = Duration::from_secs(20);

fn on_path(names: &[&str], also: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .chain(also.iter().map(PathBuf::from))
        .find(|p| p.is_file())
}

/// Debian's `chromium`.
pub fn chromium() -> PathBuf {
    on_path(&["chromium", "chromium-browser"], &["/usr/bin/chromium"]).unwrap_or_else(|| {
        panic!(
            "headless Chromium is missing: install Debian's `chromium` package \
             (apt-get install chromium), or run `make test`, which installs it"
        )
    })
}

/// Debian's `chromedriver`, from the `chromium-driver` package.
pub fn chromedriver() -> PathBuf {
    on_path(&["chromedriver"], &["/usr/bin/chromedriver"]).unwrap_or_else(|| {
        panic!(
            "chromedriver is missing: install Debian's `chromium-driver` package \
             (apt-get install chromium-driver), or run `make test`, which installs it"
        )
    })
}

/// A headless Chromium under chromedriver, with one WebDriver session. Dropped, chromedriver
/// is killed (and Chromium with it); [`Browser::close`] ends the session cleanly first.
pub struct Browser {
    pub client: Client,
    driver: ChildProcess,
    _profile: TempDir,
}

impl Browser {
    /// Starts chromedriver on a free port and opens a session with a `width` × `height`
    /// viewport.
    pub async fn start(width: u32, height: u32) -> Self {
        let (browser, driver_bin) = (chromium(), chromedriver());
        let port = free_port();
        let mut cmd = Command::new(driver_bin);
        cmd.arg(format!("--port={port}"));
        let mut driver = ChildProcess::spawn("chromedriver", cmd);
        let url = format!("http://127.0.0.1:{port}");
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = match http.get(format!("{url}/status")).send().await {
                Ok(r) => r
                    .json::<Value>()
                    .await
                    .ok()
                    .is_some_and(|v| v["value"]["ready"] == true),
                Err(_) => false,
            };
            if ready {
                break;
            }
            assert!(driver.is_running(), "chromedriver exited: {}", driver.output());
            assert!(
                Instant::now() < deadline,
                "chromedriver not ready in 30 s: {}",
                driver.output()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }

        let profile = TempDir::new("chromium-profile");
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": browser,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    format!("--window-size={width},{height}"),
                    format!("--user-data-dir={}", profile.path().display()),
                    "--no-first-run",
                    "--no-default-browser-check",
                    "--disable-extensions",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--lang=en-US",
                ],
            },
        });
        let Value::Object(caps) = caps else { unreachable!() };
        let mut connector = hyper_util::client::legacy::connect::HttpConnector::new();
        connector.enforce_http(true);
        let client = tokio::time::timeout(
            Duration::from_secs(60),
            ClientBuilder::new(connector).capabilities(caps).connect(&url),
        )
        .await
        .expect("a WebDriver session within 60 s")
        .unwrap_or_else(|e| panic!("chromedriver opened no session: {e}\n{}", driver.output()));
        let b = Self {
            client,
            driver,
            _profile: profile,
        };
        b.viewport(width, height).await;
        b
    }

    /// Sizes the window so that the viewport (`innerWidth` × `innerHeight`) is `width` ×
    /// `height`.
    pub async fn viewport(&self, width: u32, height: u32) {
        let want = (u64::from(width), u64::from(height));
        let mut window = want;
        let mut inner = (0, 0);
        // The window may be bigger than its viewport (by whatever frame the browser draws),
        // and a resize lands a moment after WebDriver answers: size, wait for it to settle,
        // correct by the difference.
        for _ in 0..3 {
            self.client
                .set_window_size(window.0 as u32, window.1 as u32)
                .await
                .expect("set window size");
            inner = self.settled_viewport().await;
            if inner == want {
                return;
            }
            window = (
                (window.0 + want.0).saturating_sub(inner.0),
                (window.1 + want.1).saturating_sub(inner.1),
            );
        }
        panic!("the viewport could not be sized to {width}×{height}: it is {inner:?}");
    }

    /// `innerWidth` × `innerHeight` once it stays the same over a few frames.
    async fn settled_viewport(&self) -> (u64, u64) {
        let read = || async {
            let v = self.js("return [window.innerWidth, window.innerHeight]").await;
            (v[0].as_u64().unwrap_or(0), v[1].as_u64().unwrap_or(0))
        };
        let mut last = read().await;
        let mut same = 0;
        let deadline = Instant::now() + Duration::from_secs(5);
        while same < 3 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let now = read().await;
            same = if now == last { same + 1 } else { 0 };
            last = now;
        }
        last
    }

    pub async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("open {url}: {e}"));
    }

    /// Runs `script` (a function body: `return ...`) in the page.
    pub async fn js(&self, script: &str) -> Value {
        self.client
            .execute(script, Vec::new())
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Polls `script` until it returns something truthy (not null, false, 0 or ""); returns it.
    pub async fn until(&self, what: &str, script: &str) -> Value {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let v = self.js(script).await;
            let truthy = match &v {
                Value::Null => false,
                Value::Bool(b) => *b,
                Value::Number(n) => n.as_f64() != Some(0.0),
                Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let flash = self.js("return document.getElementById('flash')?.textContent").await;
                let banner = self.js("return document.getElementById('banner')?.textContent").await;
                panic!("timed out after {PATIENCE:?} waiting for {what} (flash: {flash}, banner: {banner})");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The element at `css`, once it is there.
    pub async fn find(&self, css: &str) -> Element {
        self.client
            .wait()
            .at_most(PATIENCE)
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("no element {css}: {e}"))
    }

    /// Clicks the element at `css` as a person would (scrolled into view, the mouse at its
    /// middle).
    pub async fn click(&self, css: &str) {
        let e = self.find(css).await;
        e.click().await.unwrap_or_else(|err| panic!("click {css}: {err}"));
    }

    /// Types `text` into the element at `css`.
    pub async fn type_into(&self, css: &str, text: &str) {
        let e = self.find(css).await;
        e.send_keys(text)
            .await
            .unwrap_or_else(|err| panic!("type into {css}: {err}"));
    }

    /// The page's HTML as it stands.
    pub async fn dom(&self) -> String {
        self.client.source().await.expect("page source")
    }

    /// A screenshot of the whole page at `width` px wide (the window is made as tall as the
    /// page for it, then given back its `height`), written to `path` as PNG.
    pub async fn screenshot_page(&self, width: u32, height: u32, path: &Path) {
        let full = self
            .js("return Math.ceil(document.documentElement.scrollHeight)")
            .await
            .as_u64()
            .unwrap_or(u64::from(height));
        self.viewport(width, full.clamp(u64::from(height), 8_000) as u32).await;
        // Let the charts redraw at the new size.
        self.js("return new Promise(r => requestAnimationFrame(() => requestAnimationFrame(() => r(true))))")
            .await;
        let png = self.client.screenshot().await.expect("screenshot");
        assert!(png.starts_with(b"\x89PNG\r\n\x1a\n"), "a PNG");
        std::fs::write(path, &png).unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        self.viewport(width, height).await;
    }

    /// Ends the session and chromedriver.
    pub async fn close(mut self) {
        let _ = tokio::time::timeout(Duration::from_secs(20), self.client.clone().close()).await;
        self.driver.kill();
    }
}

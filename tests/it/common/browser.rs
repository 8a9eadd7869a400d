//! Headless Chromium for tests, driven through WebDriver (Debian's `chromedriver`, started per
//! test in a process group of its own), and [`Ui`]: the steps a test takes in it, each failing
//! with its context and a screenshot.
//!
//! Needs `/usr/bin/chromium` and `/usr/bin/chromedriver`: `scripts/install-test-deps` installs
//! them. Without them a test fails (it never skips).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::elements::Element;
use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::{Value, json};

pub const CHROMIUM: &str = "/usr/bin/chromium";
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// How long one step may wait for the page it expects.
pub const STEP_TIMEOUT: Duration = Duration::from_secs(20);

/// A `chromedriver` child process, killed (with the browser it started) when dropped, also when
/// the test panics.
pub struct ChromeDriver {
    child: Child,
    url: String,
    log: PathBuf,
    /// The browser's profile; removed after the processes are gone (field order: dropped last).
    profile: tempfile::TempDir,
}

impl ChromeDriver {
    /// Starts chromedriver on a free port, its log in `log_dir`, and waits until it answers.
    pub async fn start(log_dir: &Path) -> ChromeDriver {
        for binary in [CHROMIUM, CHROMEDRIVER] {
            assert!(
                Path::new(binary).exists(),
                "{binary} is missing: the browser test needs Chromium and chromedriver. \
                 Run scripts/install-test-deps (as root, or with sudo) and run the test again."
            );
        }
        let port = {
            let listener = TcpListener::bind("127.0.0.1:0").expect("a free port");
            listener.local_addr().expect("port").port()
        };
        let log_path = log_dir.join("chromedriver.log");
        let log = std::fs::File::create(&log_path)
            .unwrap_or_else(|e| panic!("creating {}: {e}", log_path.display()));
        let mut command = Command::new(CHROMEDRIVER);
        command
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // A process group of its own: dropping the guard ends chromedriver and every browser
        // process it started, whatever state they are in.
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let child = command.spawn().unwrap_or_else(|e| {
            panic!("starting {CHROMEDRIVER}: {e}; run scripts/install-test-deps")
        });
        let mut driver = ChromeDriver {
            child,
            url: format!("http://127.0.0.1:{port}"),
            log: log_path,
            profile: tempfile::tempdir().expect("browser profile dir"),
        };
        driver.wait_until_ready().await;
        driver
    }

    pub async fn wait_until_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        let status_url = format!("{}/status", self.url);
        loop {
            if let Ok(response) = reqwest::get(&status_url).await
                && let Ok(status) = response.json::<Value>().await
                && status["value"]["ready"] == true
            {
                return;
            }
            if let Ok(Some(exit)) = self.child.try_wait() {
                panic!("chromedriver stopped ({exit}); see {}", self.log.display());
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on {status_url} within 20 s; see {}",
                self.log.display()
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn capabilities(&self) -> serde_json::Map<String, Value> {
        let caps = json!({
            "browserName": "chrome",
            "goog:chromeOptions": {
                "binary": CHROMIUM,
                "args": [
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-quic",
                    "--no-first-run",
                    "--disable-background-networking",
                    "--disable-component-update",
                    "--disable-sync",
                    "--window-size=1280,900",
                    format!("--user-data-dir={}", self.profile.path().display()),
                ],
            },
        });
        caps.as_object().unwrap().clone()
    }

    pub async fn connect(&self) -> Client {
        let mut builder =
            ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new());
        builder.capabilities(self.capabilities());
        builder
            .connect(&self.url)
            .await
            .unwrap_or_else(|e| panic!("chromedriver could not start {CHROMIUM}: {e}"))
    }
}

impl Drop for ChromeDriver {
    fn drop(&mut self) {
        // Only the process group this test started (its id is chromedriver's pid).
        let group = format!("-{}", self.child.id());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn screenshot_root() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("target")
        .join("screenshots");
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("creating {}: {e}", dir.display()));
    dir
}

/// `target/screenshots/[<group>/]<backend>/`, emptied: where a walk's screenshots land.
pub fn fresh_screenshots(group: Option<&str>, backend: super::Backend) -> PathBuf {
    let mut dir = screenshot_root();
    if let Some(group) = group {
        dir = dir.join(group);
    }
    let dir = dir.join(match backend {
        super::Backend::Sqlite => "sqlite",
        super::Backend::Postgres => "postgres",
    });
    std::fs::create_dir_all(&dir).expect("screenshot dir");
    for old in std::fs::read_dir(&dir).expect("screenshot dir").flatten() {
        let _ = std::fs::remove_file(old.path());
    }
    dir
}

/// The browser, with helpers that fail with the step's context and save screenshots.
pub struct Ui {
    pub client: Client,
    pub base: String,
    pub shots: PathBuf,
}

impl Ui {
    pub async fn goto(&self, path: &str) {
        self.client
            .goto(&format!("{}{path}", self.base))
            .await
            .unwrap_or_else(|e| panic!("opening {path}: {e}"));
    }

    pub async fn find(&self, css: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(STEP_TIMEOUT)
            .for_element(Locator::Css(css))
            .await
        {
            Ok(element) => element,
            Err(e) => {
                self.shot("zz-failure").await;
                panic!(
                    "no `{css}` on {}: {e} (see zz-failure.png)",
                    self.path().await
                )
            }
        }
    }

    pub async fn find_xpath(&self, xpath: &str) -> Element {
        match self
            .client
            .wait()
            .at_most(STEP_TIMEOUT)
            .for_element(Locator::XPath(xpath))
            .await
        {
            Ok(element) => element,
            Err(e) => {
                self.shot("zz-failure").await;
                panic!(
                    "no `{xpath}` on {}: {e} (see zz-failure.png)",
                    self.path().await
                )
            }
        }
    }

    pub async fn text(&self, css: &str) -> String {
        self.find(css)
            .await
            .text()
            .await
            .unwrap_or_else(|e| panic!("text of `{css}`: {e}"))
    }

    /// Types `text` into the field `css`, replacing what it held.
    pub async fn fill(&self, css: &str, text: &str) {
        let field = self.find(css).await;
        field
            .clear()
            .await
            .unwrap_or_else(|e| panic!("clearing `{css}`: {e}"));
        field
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("typing into `{css}`: {e}"));
    }

    pub async fn click(&self, css: &str) {
        self.find(css)
            .await
            .click()
            .await
            .unwrap_or_else(|e| panic!("clicking `{css}`: {e}"));
    }

    pub async fn path(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => match url.query() {
                Some(q) => format!("{}?{q}", url.path()),
                None => url.path().to_owned(),
            },
            Err(e) => format!("<unknown page: {e}>"),
        }
    }

    pub async fn script(&self, script: &str) -> Value {
        self.client
            .execute(script, vec![])
            .await
            .unwrap_or_else(|e| panic!("running `{script}`: {e}"))
    }

    /// Waits until the element `css` of a fully loaded page contains `text` (after a click that
    /// navigates, the old page may still be there for a moment).
    pub async fn wait_for_text(&self, css: &str, text: &str) -> Element {
        let deadline = Instant::now() + STEP_TIMEOUT;
        loop {
            let loaded = self
                .client
                .execute("return document.readyState", vec![])
                .await
                .ok()
                == Some(json!("complete"));
            if loaded && let Ok(element) = self.client.find(Locator::Css(css)).await {
                if let Ok(found) = element.text().await
                    && found.contains(text)
                {
                    return element;
                }
            }
            if Instant::now() > deadline {
                let seen = match self.client.find(Locator::Css(css)).await {
                    Ok(element) => element.text().await.unwrap_or_default(),
                    Err(_) => "<no such element>".into(),
                };
                self.shot("zz-failure").await;
                panic!(
                    "`{css}` never showed “{text}” on {} (it shows “{seen}”; see zz-failure.png)",
                    self.path().await
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Saves a PNG of the whole page (the window is stretched to the page's height for it).
    pub async fn shot(&self, name: &str) {
        let height = self
            .script("return Math.max(document.documentElement.scrollHeight, window.innerHeight) + (window.outerHeight - window.innerHeight)")
            .await
            .as_u64()
            .unwrap_or(900)
            .clamp(900, 6000) as u32;
        self.client
            .set_window_size(1280, height)
            .await
            .expect("resizing the window");
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("screenshot {name}: {e}"));
        self.client
            .set_window_size(1280, 900)
            .await
            .expect("resizing the window back");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }
}

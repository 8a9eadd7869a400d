//! The real `tenantry` binary run as a command, with a data directory and a database of its own.

use std::path::PathBuf;
use std::process::Stdio;

use serde_json::Value;

use super::{Backend, TestDatabase, random_master_key};

const BIN: &str = env!("CARGO_BIN_EXE_tenantry");

pub struct Cli {
    pub dir: tempfile::TempDir,
    pub database: TestDatabase,
    pub master_key: String,
    pub env: Vec<(String, String)>,
}

pub struct Run {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
}

impl Cli {
    pub async fn new(backend: Backend) -> Cli {
        let dir = tempfile::tempdir().unwrap();
        let database = TestDatabase::create(backend, dir.path()).await;
        Cli {
            dir,
            database,
            master_key: random_master_key(),
            env: Vec::new(),
        }
    }

    pub fn file(&self, name: &str, text: &str) -> PathBuf {
        let path = self.dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    pub async fn run(&self, args: &[&str]) -> Run {
        let mut command = tokio::process::Command::new(BIN);
        command
            .args(args)
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", self.dir.path())
            .env("USER", "operator")
            .env("TENANTRY_DATA_DIR", self.dir.path())
            .env("DATABASE_URL", &self.database.url)
            .env("TENANTRY_MASTER_KEY", &self.master_key)
            .env("TENANTRY_PROVISIONING__POLL_INTERVAL_MS", "100")
            // The OpenID provider test double listens on loopback.
            .env("TENANTRY_AUTH__ALLOW_LOOPBACK_PROVIDERS", "true")
            .current_dir(self.dir.path())
            .stdin(Stdio::null());
        for (k, v) in &self.env {
            command.env(k, v);
        }
        let output = tokio::time::timeout(std::time::Duration::from_secs(120), command.output())
            .await
            .expect("tenantry finishes")
            .expect("tenantry runs");
        Run {
            ok: output.status.success(),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    pub async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert!(
            run.ok,
            "tenantry {args:?} failed:\n{}\n{}",
            run.stdout, run.stderr
        );
        run.stdout
    }

    /// `/metrics` of a server started (in this process) on this installation's database, as
    /// a replica that did none of the work the commands did would answer it.
    pub async fn server_metrics(&self) -> String {
        let config = tenantry::config::Config {
            data_dir: self.dir.path().to_path_buf(),
            database_url: Some(self.database.url.clone()),
            master_key: Some(self.master_key.clone()),
            database_pool_size: 2,
            log_level: "off".into(),
            ..tenantry::config::Config::default()
        };
        let (ctx, _) = tenantry::app::open(config).await.expect("open the server");
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let server = tenantry::app::start(ctx, listener).expect("start the server");
        let metrics = reqwest::get(format!("http://{}/metrics", server.addr))
            .await
            .expect("scrape")
            .text()
            .await
            .expect("metrics");
        server.worker_stop.notify_one();
        let _ = server.worker.await;
        server.handle.stop(true).await;
        metrics
    }

    pub async fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--output", "json"];
        all.extend_from_slice(args);
        let out = self.ok(&all).await;
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }
}

//! `tenantry serve` as a real process of its own, on a database the test prepared: for tests of
//! several replicas and of crashes (SIGKILL).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use tokio::io::AsyncBufReadExt as _;

pub const BIN: &str = env!("CARGO_BIN_EXE_tenantry");

/// A running `tenantry serve`.
pub struct ServerProcess {
    pub child: tokio::process::Child,
    pub base: String,
    pub data_dir: PathBuf,
}

impl ServerProcess {
    /// Starts a server on `database_url` with `master_key` and more `TENANTRY_*` `settings`,
    /// and waits until it listens.
    pub async fn start(
        database_url: &str,
        master_key: &str,
        data_dir: &Path,
        settings: &[(&str, &str)],
    ) -> ServerProcess {
        std::fs::create_dir_all(data_dir).unwrap();
        let mut command = tokio::process::Command::new(BIN);
        command
            .arg("serve")
            .env_clear()
            .env("PATH", std::env::var_os("PATH").unwrap_or_default())
            .env("HOME", data_dir)
            .env("TENANTRY_DATA_DIR", data_dir)
            .env("TENANTRY_BIND", "127.0.0.1:0")
            .env("DATABASE_URL", database_url)
            .env("TENANTRY_MASTER_KEY", master_key)
            .env("TENANTRY_LOG_LEVEL", "warn")
            // The OpenID provider test double listens on loopback.
            .env("TENANTRY_AUTH__ALLOW_LOOPBACK_PROVIDERS", "true")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true);
        for (key, value) in settings {
            command.env(key, value);
        }
        let mut child = command.spawn().expect("start tenantry serve");
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let base = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await.unwrap() {
                if let Some(url) = line.split("listening on ").nth(1) {
                    return url.trim().to_owned();
                }
            }
            panic!("tenantry serve ended without listening");
        })
        .await
        .expect("the server starts within a minute");
        // Keep draining stdout so the server never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        ServerProcess {
            child,
            base,
            data_dir: data_dir.to_path_buf(),
        }
    }

    /// SIGKILL: no shutdown, no cleanup, like a machine that lost power.
    pub async fn kill(mut self) {
        let pid = self.child.id().expect("running").to_string();
        let status = std::process::Command::new("kill")
            .args(["-KILL", &pid])
            .status()
            .unwrap();
        assert!(status.success());
        let _ = self.child.wait().await;
    }
}

/// A PostgreSQL database of its own for servers started with [`ServerProcess::start`], opened
/// (migrated) once with a master key, and a platform-admin token on it.
pub struct SharedDatabase {
    pub database: super::TestDatabase,
    pub master_key: String,
    /// The registry as the test sees it (the servers are processes of their own).
    pub ctx: tenantry::context::Context,
    pub token: String,
    pub dir: tempfile::TempDir,
}

impl SharedDatabase {
    pub async fn create() -> SharedDatabase {
        let dir = tempfile::tempdir().unwrap();
        let database = super::TestDatabase::create(super::Backend::Postgres, dir.path()).await;
        let master_key = super::random_master_key();
        let mut config = super::test_config(dir.path(), &database.url);
        config.master_key = Some(master_key.clone());
        let (ctx, _) = tenantry::app::open(config).await.expect("opens");
        let token = tenantry::auth::create_platform_token(
            &ctx,
            &tenantry::audit::Actor::system(),
            "ops",
            tenantry::auth::Role::PlatformAdmin,
            None,
        )
        .await
        .unwrap()
        .token;
        SharedDatabase {
            database,
            master_key,
            ctx,
            token,
            dir,
        }
    }

    /// Starts a server named `name` on the database, with more `TENANTRY_*` `settings`.
    pub async fn server(&self, name: &str, settings: &[(&str, &str)]) -> ServerProcess {
        ServerProcess::start(
            &self.database.url,
            &self.master_key,
            &self.dir.path().join(name),
            settings,
        )
        .await
    }
}

//! The `tenantry` binary as an operator runs it: a subprocess configured only through the
//! environment and files, against SQLite and PostgreSQL.
//!
//! Every child starts from an empty environment (no inherited `TENANTRY_*`), with `PATH`, `HOME`,
//! `USER` (the CLI's audit actor is `cli:$USER`), `TENANTRY_DATA_DIR` and `DATABASE_URL`, in the
//! test's own directory. The master key is the managed key file the binary generates in the data
//! directory unless a test sets `TENANTRY_MASTER_KEY`.

use crate::common;

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::common::{Backend, TestDatabase};
use diesel::QueryableByName;
use diesel::sql_types::BigInt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _};

use tenantry::config::Config;
use tenantry::context::Context;
use tenantry::secrets::{Keyring, MasterKey};
use tenantry::store::Db;

const BIN: &str = env!("CARGO_BIN_EXE_tenantry");
/// `$USER` of every child: its audit actor is `cli:cli-tester`.
const USER: &str = "cli-tester";
const ACTOR: &str = "cli:cli-tester";
/// Longest a single command may take before the test fails (the child is killed).
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// Harness

/// The outcome of one run of the binary.
#[derive(Debug)]
struct Run {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Asserts a failure reported as exactly one line `error: …` on stderr; returns that line.
    fn one_line_error(&self, what: &str) -> String {
        assert!(!self.status.success(), "{what} should fail: {self:#?}");
        let stderr = self.stderr.trim_end_matches('\n');
        assert_eq!(
            stderr.lines().count(),
            1,
            "{what}: one line on stderr expected: {self:#?}"
        );
        assert!(
            stderr.starts_with("error: "),
            "{what}: the line should start with `error: `: {self:#?}"
        );
        stderr.to_owned()
    }
}

/// One test's data directory and database, and extra environment for the children.
struct Cli {
    backend: Backend,
    dir: tempfile::TempDir,
    database: TestDatabase,
    env: Vec<(String, String)>,
}

impl Cli {
    async fn new(backend: Backend) -> Cli {
        let dir = tempfile::tempdir().expect("temp dir");
        let database = TestDatabase::create(backend, dir.path()).await;
        Cli {
            backend,
            dir,
            database,
            env: Vec::new(),
        }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut command = bare_command(self.path());
        command
            .args(args)
            .env("TENANTRY_DATA_DIR", self.path())
            .env("DATABASE_URL", &self.database.url)
            // The OpenID provider test double listens on loopback.
            .env("TENANTRY_AUTH__ALLOW_LOOPBACK_PROVIDERS", "true");
        for (key, value) in &self.env {
            command.env(key, value);
        }
        command
    }

    async fn run(&self, args: &[&str]) -> Run {
        run_command(self.command(args), None).await
    }

    async fn run_with_stdin(&self, args: &[&str], stdin: &str) -> Run {
        run_command(self.command(args), Some(stdin)).await
    }

    /// Runs a command that must succeed; returns its stdout.
    async fn ok(&self, args: &[&str]) -> String {
        let run = self.run(args).await;
        assert!(run.status.success(), "tenantry {args:?} failed: {run:#?}");
        run.stdout
    }

    /// Runs a command that must succeed with `--output json`; returns the parsed output.
    async fn json(&self, args: &[&str]) -> Value {
        let mut args = args.to_vec();
        args.extend(["--output", "json"]);
        let stdout = self.ok(&args).await;
        serde_json::from_str(&stdout)
            .unwrap_or_else(|e| panic!("tenantry {args:?} printed no JSON ({e}): {stdout}"))
    }

    /// Runs a command that must fail with one line on stderr; returns the line.
    async fn fails(&self, args: &[&str]) -> String {
        self.run(args)
            .await
            .one_line_error(&format!("tenantry {args:?}"))
    }

    /// The audit records, newest first (through the CLI).
    async fn audit(&self) -> Vec<Value> {
        self.json(&["audit", "list", "--limit", "500"]).await["items"]
            .as_array()
            .expect("items")
            .clone()
    }

    /// The slugs of every tenant (through the CLI).
    async fn slugs(&self) -> Vec<String> {
        slugs(&self.json(&["tenant", "list", "--limit", "200"]).await)
    }

    /// Writes a file in the test directory (mode 0600) and returns its path.
    fn write_file(&self, name: &str, content: &str) -> PathBuf {
        let path = self.path().join(name);
        std::fs::write(&path, content).expect("write file");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).expect("chmod");
        path
    }

    fn key_file(&self) -> PathBuf {
        self.path().join("master.key")
    }

    /// A configuration for the library equal to what the children get from the environment.
    fn config(&self) -> Config {
        let mut config = Config {
            data_dir: self.path().to_path_buf(),
            database_url: Some(self.database.url.clone()),
            database_pool_size: 2,
            log_level: "off".into(),
            ..Config::default()
        };
        if let Some((_, key)) = self.env.iter().find(|(k, _)| k == "TENANTRY_MASTER_KEY") {
            config.master_key = Some(key.clone());
        }
        config
    }

    /// Opens the database through the library with `keyring`.
    async fn context(&self, keyring: Keyring) -> Context {
        tenantry::app::open_with_keyring(self.config(), keyring)
            .await
            .expect("open the database")
    }

    /// Runs one SQL statement directly on the database (outside the binary); returns rows changed.
    async fn execute_sql(&self, statement: &str) -> usize {
        use diesel_async::RunQueryDsl as _;
        let db = Db::connect_without_migrations(&self.database.url, 1)
            .await
            .expect("connect");
        let mut conn = db.conn().await.expect("connection");
        tenantry::with_conn!(conn, |c| diesel::sql_query(statement).execute(c).await)
            .expect(statement)
    }

    /// Runs `SELECT count(*) AS n …` directly on the database.
    async fn count_sql(&self, query: &str) -> i64 {
        use diesel_async::RunQueryDsl as _;
        #[derive(QueryableByName)]
        struct Count {
            #[diesel(sql_type = BigInt)]
            n: i64,
        }
        let db = Db::connect_without_migrations(&self.database.url, 1)
            .await
            .expect("connect");
        let mut conn = db.conn().await.expect("connection");
        tenantry::with_conn!(conn, |c| diesel::sql_query(query)
            .get_result::<Count>(c)
            .await)
        .expect(query)
        .n
    }

    /// Whether the database has the schema (migrations ran).
    async fn has_schema(&self) -> bool {
        match self.backend {
            Backend::Sqlite => {
                let file = self.path().join("tenantry.db");
                file.exists()
                    && self.count_sql("SELECT count(*) AS n FROM sqlite_master WHERE name = 'audit_log'").await > 0
            }
            Backend::Postgres => {
                self.count_sql("SELECT count(*) AS n FROM information_schema.tables WHERE table_name = 'audit_log'")
                    .await
                    > 0
            }
        }
    }

    /// The SQLite database file and its WAL, as bytes (empty for PostgreSQL).
    fn sqlite_bytes(&self) -> Vec<u8> {
        let mut bytes = Vec::new();
        if self.backend == Backend::Sqlite {
            for suffix in ["", "-wal"] {
                if let Ok(b) = std::fs::read(format!(
                    "{}{suffix}",
                    self.path().join("tenantry.db").display()
                )) {
                    bytes.extend(b);
                }
            }
        }
        bytes
    }

    async fn finish(self) {
        self.database.drop_database().await;
    }
}

/// The binary with an empty environment but for `PATH`, `HOME` and `USER`, run in `dir` (so that
/// no `./tenantry.toml` of the working tree is read).
fn bare_command(dir: &Path) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(BIN);
    command
        .env_clear()
        .env(
            "PATH",
            std::env::var_os("PATH").unwrap_or_else(|| "/usr/bin:/bin".into()),
        )
        .env("HOME", dir)
        .env("USER", USER)
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    command
}

async fn run_command(mut command: tokio::process::Command, stdin: Option<&str>) -> Run {
    if stdin.is_some() {
        command.stdin(Stdio::piped());
    }
    let mut child = command.spawn().expect("start tenantry");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().expect("stdin");
        pipe.write_all(text.as_bytes()).await.expect("write stdin");
        drop(pipe);
    }
    let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
        .await
        .expect("tenantry finishes in time")
        .expect("wait for tenantry");
    Run {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

fn slugs(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|t| t["slug"].as_str().expect("slug").to_owned())
        .collect()
}

fn file_mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// A `tenantry serve` child whose stdout and stderr lines are collected as they come.
struct Server {
    child: tokio::process::Child,
    stdout: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
    readers: Vec<tokio::task::JoinHandle<()>>,
}

impl Server {
    fn spawn(mut command: tokio::process::Command) -> Server {
        let mut child = command.spawn().expect("start tenantry serve");
        let collect = |pipe: Box<dyn tokio::io::AsyncRead + Unpin + Send>| {
            let lines = Arc::new(Mutex::new(Vec::new()));
            let sink = lines.clone();
            let reader = tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(pipe).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    sink.lock().unwrap().push(line);
                }
            });
            (lines, reader)
        };
        let (stdout, out_reader) = collect(Box::new(child.stdout.take().expect("stdout")));
        let (stderr, err_reader) = collect(Box::new(child.stderr.take().expect("stderr")));
        Server {
            child,
            stdout,
            stderr,
            readers: vec![out_reader, err_reader],
        }
    }

    /// Waits until stdout has a line containing `needle`; returns it.
    async fn wait_for_line(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + COMMAND_TIMEOUT;
        loop {
            if let Some(line) = self
                .stdout
                .lock()
                .unwrap()
                .iter()
                .find(|l| l.contains(needle))
            {
                return line.clone();
            }
            if let Ok(Some(status)) = self.child.try_wait() {
                // Let the readers drain what is left before reporting.
                tokio::time::sleep(Duration::from_millis(100)).await;
                panic!(
                    "tenantry serve exited ({status}) before printing `{needle}`: {}",
                    self.transcript()
                );
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no `{needle}` from tenantry serve: {}",
                self.transcript()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The base URL from `… listening on http://ADDR`.
    async fn base_url(&mut self) -> String {
        let line = self.wait_for_line("listening on http://").await;
        line.split("listening on ")
            .nth(1)
            .expect("address")
            .trim()
            .to_owned()
    }

    fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    fn transcript(&self) -> String {
        format!(
            "\n--- stdout\n{}\n--- stderr\n{}",
            self.stdout.lock().unwrap().join("\n"),
            self.stderr.lock().unwrap().join("\n")
        )
    }

    /// Sends SIGTERM (with `kill`, the crate has no libc binding) and waits for the exit; returns
    /// the exit status and everything the server printed on stdout.
    async fn terminate(mut self) -> (ExitStatus, Vec<String>) {
        let pid = self.child.id().expect("server still running");
        let kill = std::process::Command::new("kill")
            .args(["-TERM", &pid.to_string()])
            .status()
            .expect("run kill");
        assert!(kill.success(), "kill -TERM {pid} failed");
        let status = match tokio::time::timeout(Duration::from_secs(20), self.child.wait()).await {
            Ok(status) => status.expect("wait for tenantry serve"),
            Err(_) => panic!(
                "tenantry serve did not exit after SIGTERM: {}",
                self.transcript()
            ),
        };
        for reader in self.readers.drain(..) {
            let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
        }
        (status, self.stdout_lines())
    }
}

/// A client that keeps cookies and does not follow redirects.
fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .expect("client")
}

/// Logs in to the portal with its login form (CSRF double-submit cookie included); returns the
/// status of the form's POST and its `Location`.
async fn portal_login(
    client: &reqwest::Client,
    base: &str,
    username: &str,
    password: &str,
) -> (StatusCode, Option<String>) {
    let page = client
        .get(format!("{base}/login"))
        .send()
        .await
        .expect("GET /login");
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.expect("login page");
    let marker = r#"name="csrf" value=""#;
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("no CSRF field in the login page: {html}"))
        + marker.len();
    let csrf = &html[start..start + html[start..].find('"').expect("end of the CSRF value")];
    let response = client
        .post(format!("{base}/login"))
        .form(&[
            ("username", username),
            ("password", password),
            ("csrf", csrf),
            ("next", "/"),
        ])
        .send()
        .await
        .expect("POST /login");
    let location = response
        .headers()
        .get("location")
        .map(|v| v.to_str().expect("ascii").to_owned());
    (response.status(), location)
}

/// Creates `acme` with a client secret from a file and a database URI from standard input.
const ACME_SECRET: &str = "acme-client-secret-1";
const ACME_DB_URI: &str = "postgresql://acme_user:pa%40ss-w0rd@db.acme.example:5432/acme_db";

async fn create_acme(cli: &Cli) -> Value {
    let secret_file = cli.write_file("acme-secret", &format!("{ACME_SECRET}\n"));
    let run = cli
        .run_with_stdin(
            &[
                "tenant",
                "create",
                "--slug",
                "acme",
                "--name",
                "Acme Corporation",
                "--tier",
                "enterprise",
                "--contact-email",
                "ops@acme.example",
                "--oauth-issuer",
                "https://acme.okta.example/oauth2/default",
                "--client-id",
                "0oa-acme",
                "--client-secret-file",
                secret_file.to_str().unwrap(),
                "--db-uri-file",
                "-",
                "--output",
                "json",
            ],
            &format!("{ACME_DB_URI}\n"),
        )
        .await;
    assert!(run.status.success(), "tenant create: {run:#?}");
    serde_json::from_str(&run.stdout).expect("JSON")
}

/// Asserts that no secret (nor any sealed value) appears in `text`.
fn assert_no_secret(text: &str, secrets: &[&str]) {
    for secret in secrets {
        assert!(!text.contains(secret), "secret `{secret}` printed: {text}");
    }
    assert!(
        !text.contains("pa%40ss"),
        "database password printed: {text}"
    );
    assert!(!text.contains("tsk1:"), "sealed value printed: {text}");
}

// ---------------------------------------------------------------------------------------------
// Tests that need no database

/// Every command path of the CLI.
const COMMANDS: &[&str] = &[
    "serve",
    "migrate",
    "tenant",
    "tenant create",
    "tenant list",
    "tenant show",
    "tenant update",
    "tenant suspend",
    "tenant reactivate",
    "tenant cancel",
    "tenant delete",
    "tenant restore",
    "tenant rollback-secret",
    "admin",
    "admin set-password",
    "admin token",
    "admin token create",
    "admin token list",
    "admin token revoke",
    "key",
    "key find",
    "audit",
    "audit list",
    "audit verify",
    "secrets",
    "secrets rotate-key",
    "openapi",
    "spec",
    "spec convert",
    "tenant health",
    "tenant export",
    "tenant import",
    "plugin",
    "plugin install",
    "plugin list",
    "plugin inspect",
    "plugin grant",
    "plugin revoke",
    "plugin enable",
    "plugin disable",
    "plugin new",
    "plugin check",
];

#[tokio::test]
async fn every_subcommand_answers_help_with_exit_0_and_touches_nothing() {
    let dir = tempfile::tempdir().expect("temp dir");
    for path in COMMANDS {
        let mut args: Vec<&str> = path.split(' ').collect();
        args.push("--help");
        let mut command = bare_command(dir.path());
        command
            .args(&args)
            .env("TENANTRY_DATA_DIR", dir.path().join("data"));
        let run = run_command(command, None).await;
        assert!(run.status.success(), "tenantry {path} --help: {run:#?}");
        assert!(
            run.stdout.contains(&format!("Usage: tenantry {path}")),
            "tenantry {path} --help: {}",
            run.stdout
        );
        assert!(
            run.stderr.is_empty(),
            "tenantry {path} --help wrote to stderr: {}",
            run.stderr
        );
    }
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "--help created files: {left:?}");
}

#[tokio::test]
async fn mysql_database_url_exits_non_zero_with_one_line_naming_the_supported_schemes_without_the_password()
 {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = bare_command(dir.path());
    command
        .args(["tenant", "list"])
        .env("TENANTRY_DATA_DIR", dir.path())
        .env(
            "DATABASE_URL",
            "mysql://app:hunter2-secret@db.example:3306/tenantry",
        );
    let line = run_command(command, None)
        .await
        .one_line_error("DATABASE_URL=mysql://…");
    assert!(line.contains("DATABASE_URL"), "{line}");
    assert!(
        line.contains("sqlite://") && line.contains("postgres://"),
        "{line}"
    );
    assert!(line.contains("mysql://app:***@db.example"), "{line}");
    assert!(!line.contains("hunter2"), "the password is printed: {line}");
}

#[tokio::test]
async fn first_serve_with_an_empty_data_dir_says_where_and_how_to_log_in_and_stops_on_sigterm() {
    let dir = tempfile::tempdir().expect("temp dir");
    let data = dir.path().join("data");
    let mut command = bare_command(dir.path());
    command
        .args(["serve", "--bind", "127.0.0.1:0"])
        .env("TENANTRY_DATA_DIR", &data);
    let mut server = Server::spawn(command);
    let base = server.base_url().await;
    let login_line = server.wait_for_line("first start:").await;
    let lines = server.stdout_lines();
    assert!(
        base.starts_with("http://127.0.0.1:") && !base.ends_with(":0"),
        "{base}"
    );

    let database = lines
        .iter()
        .find(|l| l.starts_with("database: "))
        .expect("a `database:` line");
    assert_eq!(
        database,
        &format!(
            "database: sqlite://{} (sqlite)",
            data.join("tenantry.db").display()
        )
    );
    let password_file = data.join("initial-admin-password");
    assert!(
        login_line.contains(&format!("{base}/login")),
        "{login_line}"
    );
    assert!(login_line.contains("`admin`"), "{login_line}");
    assert!(
        login_line.contains(&password_file.display().to_string()),
        "{login_line}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.contains("tenantry admin token create")),
        "{lines:?}"
    );

    assert!(
        !server.transcript().contains('\u{1b}'),
        "logs written to a pipe carry no terminal colour codes: {}",
        server.transcript()
    );
    assert_eq!(file_mode(&password_file), 0o600, "initial-admin-password");
    assert_eq!(file_mode(&data.join("master.key")), 0o600, "master.key");
    let password = std::fs::read_to_string(&password_file).expect("password file");
    let password = password.trim_end();
    assert!(
        password.len() >= 12,
        "generated password too short: {password:?}"
    );
    assert!(
        !lines.join("\n").contains(password),
        "the password itself is printed"
    );

    // The way it tells to log in works.
    let client = http_client();
    let (status, location) = portal_login(&client, &base, "admin", password).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{}", server.transcript());
    assert_eq!(location.as_deref(), Some("/"));

    let (status, _) = server.terminate().await;
    assert!(
        status.success(),
        "serve should exit cleanly on SIGTERM: {status}"
    );
}

// ---------------------------------------------------------------------------------------------
// Tests against each backend

backend_tests!(
    migrate_applies_migrations_and_a_second_run_says_the_schema_is_up_to_date,
    token_create_prints_a_tny_token_that_list_shows_without_its_secret_and_revoke_marks_revoked,
    token_with_the_name_of_a_live_token_exits_non_zero_with_one_line,
    tenant_lifecycle_through_the_cli_never_prints_secrets,
    tenant_list_filters_by_status_tier_and_search,
    illegal_transition_exits_non_zero_naming_the_current_status_and_stores_nothing,
    bad_slug_exits_non_zero_naming_the_slug_rule_and_stores_nothing,
    set_password_reads_stdin_refuses_short_ones_and_the_new_password_logs_in_over_http,
    audit_list_shows_cli_actions_with_the_cli_actor,
    audit_verify_passes_an_intact_chain_and_fails_naming_a_changed_record,
    audit_verify_fails_when_the_newest_record_is_deleted,
    rotate_key_with_the_managed_key_file_reseals_every_secret_and_retires_the_old_key,
    rotate_key_with_the_master_key_from_the_environment_needs_a_new_key_file,
    export_then_purge_then_import_restores_the_tenant,
    rotate_key_with_a_new_key_file_and_the_managed_key_file_installs_that_key,
    tenant_health_reports_the_database_round_trip_and_fails_when_unreachable,
    sso_settings_test_connection_setup_links_and_sessions_from_the_cli,
    plugins_are_installed_granted_enabled_and_disabled_from_the_cli,
    plugin_changes_from_the_cli_bind_the_next_call_of_a_running_server,
    rotate_key_with_a_new_key_file_reseals_under_that_key,
    config_file_with_an_unknown_key_exits_non_zero_naming_the_key_before_touching_anything,
    unknown_tenantry_env_var_exits_non_zero_naming_it_before_touching_anything,
    serve_with_a_bad_bind_address_exits_non_zero_with_one_line_before_touching_anything,
    backup_writes_every_tenant_and_skips_the_unchanged_next_time,
    a_bundle_for_another_installation_is_resealed_to_its_key,
    commands_never_rewrite_the_platform_tenant_only_migrate_applies_admin_tenant,
    an_action_without_user_is_audited_as_the_account_of_the_uid,
);

async fn a_bundle_for_another_installation_is_resealed_to_its_key(backend: Backend) {
    let source = Cli::new(backend).await;
    let target = Cli::new(backend).await;
    let created = create_acme(&source).await;
    let plain = source.path().join("plain.tar");
    source
        .ok(&[
            "tenant",
            "export",
            "acme",
            "--file",
            plain.to_str().unwrap(),
        ])
        .await;
    // Sealed with the source's key: the target cannot open it, says so, and keeps nothing.
    let refused = target
        .fails(&["tenant", "import", "--file", plain.to_str().unwrap()])
        .await;
    assert!(
        refused.contains("sealed with master key") && refused.contains("--recipient-key"),
        "{refused}"
    );
    target.fails(&["tenant", "show", "acme"]).await;
    // Re-sealed to the target's key (never masked): it imports there with its secrets.
    // The target's own key file, as its operator would hand it over.
    let key_file = target.path().join("master.key");
    assert!(key_file.is_file(), "the target made its key");
    let resealed = source.path().join("resealed.tar");
    source
        .ok(&[
            "tenant",
            "export",
            "acme",
            "--recipient-key",
            key_file.to_str().unwrap(),
            "--file",
            resealed.to_str().unwrap(),
        ])
        .await;
    let outcome = target
        .json(&["tenant", "import", "--file", resealed.to_str().unwrap()])
        .await;
    assert_eq!(outcome["ok"], true, "{outcome}");
    let shown = target.json(&["tenant", "show", "acme"]).await;
    assert_eq!(shown["id"], created["id"]);
    assert_eq!(
        shown["client_secret"]["fingerprint"], created["client_secret"]["fingerprint"],
        "the same secret, opened with the target's key"
    );
    let bad_key = source.write_file("bad.key", "not a key");
    let line = source
        .fails(&[
            "tenant",
            "export",
            "acme",
            "--recipient-key",
            bad_key.to_str().unwrap(),
        ])
        .await;
    assert!(line.contains("not a master key file"), "{line}");
    source.finish().await;
    target.finish().await;
}

async fn backup_writes_every_tenant_and_skips_the_unchanged_next_time(backend: Backend) {
    let cli = Cli::new(backend).await;
    // Installed as an operator installs: `migrate` makes the platform tenant.
    cli.ok(&["migrate"]).await;
    for slug in ["acme", "globex"] {
        cli.ok(&["tenant", "create", "--slug", slug, "--name", slug])
            .await;
    }
    let dir = cli.dir.path().join("backups");
    let dir_arg = dir.to_str().unwrap();
    let first = cli.json(&["backup", "--dir", dir_arg]).await;
    assert_eq!(
        first["exported"],
        serde_json::json!(["acme", "admin", "globex"]),
        "{first}"
    );
    use std::os::unix::fs::PermissionsExt as _;
    for slug in ["admin", "acme", "globex"] {
        let file = dir.join(format!("{slug}.tar"));
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600, "{slug}");
    }
    // Nothing changed: nothing is exported again.
    let second = cli.ok(&["backup", "--dir", dir_arg]).await;
    assert!(second.contains("0 exported, 3 unchanged"), "{second}");
    // What changes beside the tenant's record is picked up too: a new API key, an override.
    cli.ok(&["tenant", "api-key", "create", "acme", "--name", "ci"])
        .await;
    let keyed = cli.json(&["backup", "--dir", dir_arg]).await;
    assert_eq!(keyed["exported"], serde_json::json!(["acme"]), "{keyed}");
    cli.ok(&["tenant", "quota", "set", "globex", "--limit", "users=7"])
        .await;
    let overridden = cli.json(&["backup", "--dir", dir_arg]).await;
    assert_eq!(
        overridden["exported"],
        serde_json::json!(["globex"]),
        "{overridden}"
    );
    // A change is picked up; a purged tenant's last file is kept, and restores it.
    cli.ok(&["tenant", "update", "acme", "--name", "Acme Corp"])
        .await;
    cli.ok(&["tenant", "cancel", "globex", "--reason", "left"])
        .await;
    let third = cli.json(&["backup", "--dir", dir_arg]).await;
    assert_eq!(
        third["exported"],
        serde_json::json!(["acme", "globex"]),
        "{third}"
    );
    cli.ok(&["tenant", "delete", "globex", "--hard", "--force"])
        .await;
    let fourth = cli.ok(&["backup", "--dir", dir_arg]).await;
    assert!(
        fourth.contains("no longer in the registry (their last file is kept): globex"),
        "{fourth}"
    );
    let globex = dir.join("globex.tar");
    cli.ok(&["tenant", "import", "--file", globex.to_str().unwrap()])
        .await;
    let restored = cli.json(&["tenant", "show", "globex"]).await;
    assert_eq!(restored["status"], "canceled", "{restored}");
    let acme =
        tenantry::bundles::Bundle::from_tar(&std::fs::read(dir.join("acme.tar")).unwrap()).unwrap();
    let record: serde_json::Value = acme.json("registry/tenant.json").unwrap();
    assert_eq!(record["name"], "Acme Corp");
    // --full exports every tenant again.
    let full = cli.json(&["backup", "--dir", dir_arg, "--full"]).await;
    assert_eq!(full["unchanged"], serde_json::json!([]), "{full}");
    // Each tenant's earlier bundles are kept beside the newest, up to --keep in all.
    let acme_files = || {
        let mut names: Vec<String> = std::fs::read_dir(&dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("acme.") && n.ends_with(".tar"))
            .collect();
        names.sort();
        names
    };
    assert_eq!(acme_files().len(), 4, "{:?}", acme_files());
    cli.ok(&["tenant", "update", "acme", "--name", "Acme Inc"])
        .await;
    cli.ok(&["backup", "--dir", dir_arg, "--keep", "2"]).await;
    let files = acme_files();
    assert_eq!(files.len(), 2, "{files:?}");
    assert!(files.contains(&"acme.tar".to_owned()), "{files:?}");
    let newest =
        tenantry::bundles::Bundle::from_tar(&std::fs::read(dir.join("acme.tar")).unwrap()).unwrap();
    let record: serde_json::Value = newest.json("registry/tenant.json").unwrap();
    assert_eq!(record["name"], "Acme Inc");
    let refused = cli.run(&["backup", "--dir", dir_arg, "--keep", "0"]).await;
    assert!(!refused.status.success(), "{}", refused.stdout);
    assert!(
        refused.stderr.contains("invalid value '0' for '--keep"),
        "{}",
        refused.stderr
    );
}

async fn migrate_applies_migrations_and_a_second_run_says_the_schema_is_up_to_date(
    backend: Backend,
) {
    let cli = Cli::new(backend).await;
    let first = cli.json(&["migrate"]).await;
    let applied = first["applied"].as_array().expect("applied");
    assert!(
        !applied.is_empty(),
        "a fresh database gets migrations: {first}"
    );
    assert!(cli.has_schema().await);
    let database = first["database"].as_str().expect("database").to_owned();
    match backend {
        Backend::Sqlite => assert_eq!(database, cli.database.url),
        Backend::Postgres => assert!(database.starts_with("postgres://"), "{database}"),
    }

    let second = cli.ok(&["migrate"]).await;
    assert_eq!(
        second.trim_end(),
        format!("{database}: schema is up to date")
    );
    let third = cli.json(&["migrate"]).await;
    assert_eq!(third["applied"], serde_json::json!([]));
    cli.finish().await;
}

async fn token_create_prints_a_tny_token_that_list_shows_without_its_secret_and_revoke_marks_revoked(
    backend: Backend,
) {
    let cli = Cli::new(backend).await;
    let created = cli
        .json(&["admin", "token", "create", "--name", "ci"])
        .await;
    let token = created["token"].as_str().expect("token").to_owned();
    assert!(token.starts_with("tny_"), "{token}");
    let (prefix, secret) = token["tny_".len()..]
        .split_once('_')
        .expect("tny_<prefix>_<secret>");
    assert_eq!(created["prefix"], prefix);
    assert_eq!(created["name"], "ci");
    assert_eq!(created["role"], "platform-admin");
    assert_eq!(created["created_by"], ACTOR);

    let listing = cli
        .ok(&["admin", "token", "list", "--output", "json"])
        .await;
    assert!(
        !listing.contains(secret),
        "the token's secret is listed: {listing}"
    );
    let tokens: Value = serde_json::from_str(&listing).expect("JSON");
    let tokens = tokens.as_array().expect("an array");
    assert_eq!(tokens.len(), 1, "{tokens:?}");
    assert_eq!(tokens[0]["name"], "ci");
    assert_eq!(tokens[0]["id"], created["id"]);
    assert_eq!(tokens[0]["prefix"], prefix);
    assert!(tokens[0].get("token").is_none(), "{}", tokens[0]);
    assert!(tokens[0]["revoked_at"].is_null());
    // Never used yet: its last use says so, and the list shows it.
    let listing = cli.ok(&["admin", "token", "list"]).await;
    assert!(
        listing
            .lines()
            .next()
            .unwrap()
            .ends_with("STATE  LAST USED"),
        "{listing}"
    );
    assert!(
        listing
            .lines()
            .any(|l| l.contains("ci") && l.contains(" live ") && l.ends_with("never")),
        "{listing}"
    );

    // The printed token is the one that authenticates.
    let ctx = cli
        .context(Keyring::load(&cli.config()).expect("keyring").0)
        .await;
    let principal = tenantry::auth::authenticate_token(&ctx, &token)
        .await
        .expect("lookup");
    assert_eq!(principal.expect("the token authenticates").name, "token:ci");
    // Its use shows in the list, so that unused tokens can be told from used ones.
    let used = cli.json(&["admin", "token", "list"]).await;
    let last_used = used[0]["last_used_at"]
        .as_str()
        .expect("last_used_at")
        .to_owned();
    let listing = cli.ok(&["admin", "token", "list"]).await;
    assert!(
        listing
            .lines()
            .any(|l| l.contains("ci") && l.contains(" live ") && !l.ends_with("never")),
        "{listing} ({last_used})"
    );

    let revoked = cli.ok(&["admin", "token", "revoke", "ci"]).await;
    assert_eq!(revoked.trim_end(), "token `ci` revoked");
    let tokens = cli.json(&["admin", "token", "list"]).await;
    assert!(tokens[0]["revoked_at"].is_string(), "{tokens}");
    assert!(
        cli.ok(&["admin", "token", "list"])
            .await
            .lines()
            .any(|l| l.contains("ci") && l.contains(" revoked "))
    );
    assert!(
        tenantry::auth::authenticate_token(&ctx, &token)
            .await
            .expect("lookup")
            .is_none(),
        "a revoked token still works"
    );

    let line = cli
        .fails(&["admin", "token", "revoke", "no-such-token"])
        .await;
    assert!(line.contains("no-such-token"), "{line}");
    cli.finish().await;
}

async fn token_with_the_name_of_a_live_token_exits_non_zero_with_one_line(backend: Backend) {
    let cli = Cli::new(backend).await;
    cli.json(&["admin", "token", "create", "--name", "ci"])
        .await;
    let audit_before = cli.audit().await.len();
    let run = cli.run(&["admin", "token", "create", "--name", "ci"]).await;
    let line = run.one_line_error("a second live token named ci");
    assert!(
        line.contains("`ci`") && line.contains("already exists"),
        "{line}"
    );
    assert!(
        !run.stdout.contains("tny_"),
        "a token is printed: {}",
        run.stdout
    );
    assert_eq!(
        cli.json(&["admin", "token", "list"])
            .await
            .as_array()
            .unwrap()
            .len(),
        1,
        "nothing stored"
    );
    assert_eq!(
        cli.audit().await.len(),
        audit_before,
        "no audit record for the refused token"
    );

    // Once revoked, the name is free again.
    cli.ok(&["admin", "token", "revoke", "ci"]).await;
    let again = cli
        .json(&["admin", "token", "create", "--name", "ci"])
        .await;
    assert!(again["token"].as_str().unwrap().starts_with("tny_"));
    cli.finish().await;
}

async fn tenant_lifecycle_through_the_cli_never_prints_secrets(backend: Backend) {
    let cli = Cli::new(backend).await;
    // Installed as an operator installs: `migrate` makes the platform tenant.
    cli.ok(&["migrate"]).await;
    let created = create_acme(&cli).await;
    assert_eq!(created["slug"], "acme");
    assert_eq!(created["status"], "active");
    assert_eq!(created["tier"], "enterprise");
    // A tenant is named by its id as well as its slug (audit records and webhooks carry it).
    let id = created["id"].as_str().unwrap();
    assert_eq!(cli.json(&["tenant", "show", id]).await["slug"], "acme");
    let found = cli.json(&["tenant", "list", "--search", id]).await;
    assert_eq!(slugs(&found), ["acme"]);
    assert_eq!(created["client_secret"]["set"], true);
    assert_eq!(created["db_uri"]["set"], true);
    assert_no_secret(&created.to_string(), &[ACME_SECRET]);
    let fingerprint = created["client_secret"]["fingerprint"]
        .as_str()
        .expect("fingerprint")
        .to_owned();
    assert_eq!(fingerprint.len(), 8);
    assert_eq!(
        fingerprint,
        tenantry::secrets::fingerprint(ACME_SECRET),
        "the file's trailing newline is not part of the secret"
    );
    assert_eq!(
        created["db_uri"]["fingerprint"],
        tenantry::secrets::fingerprint(ACME_DB_URI),
        "stdin's trailing newline is not part of the URI"
    );

    // What was stored is exactly the file's secret and stdin's URI.
    {
        let ctx = cli
            .context(Keyring::load(&cli.config()).expect("keyring").0)
            .await;
        let row = tenantry::store::tenants::find_by_slug(&mut ctx.db.conn().await.unwrap(), "acme")
            .await
            .unwrap()
            .expect("acme stored");
        let open = |sealed: &Option<String>, field: &str| {
            ctx.keyring
                .open(
                    sealed.as_deref().expect("sealed"),
                    &tenantry::tenants::secret_context(&row.id, field),
                )
                .expect("opens")
        };
        assert_eq!(open(&row.client_secret, "client_secret"), ACME_SECRET);
        assert_eq!(open(&row.db_uri, "db_uri"), ACME_DB_URI);
    }

    // show, as text and as JSON: set/fingerprint only.
    let text = cli.ok(&["tenant", "show", "acme"]).await;
    assert_no_secret(&text, &[ACME_SECRET]);
    assert!(text.contains("name:           Acme Corporation"), "{text}");
    assert!(
        text.contains(&format!("client_secret:  set ({fingerprint})")),
        "{text}"
    );
    assert!(text.contains("db_uri:         set ("), "{text}");
    assert!(
        text.contains(&format!("- → active  by {ACTOR}: created")),
        "{text}"
    );
    let shown = cli
        .ok(&["tenant", "show", "acme", "--output", "json"])
        .await;
    assert_no_secret(&shown, &[ACME_SECRET]);
    let shown: Value = serde_json::from_str(&shown).expect("JSON");
    assert_eq!(shown["client_secret"], created["client_secret"]);
    assert_eq!(shown["contact"]["email"], "ops@acme.example");
    assert_eq!(shown["history"].as_array().unwrap().len(), 1);

    // update: fields and a new client secret (the old one is kept for a rollback).
    let new_secret_file = cli.write_file("acme-secret-2", "acme-client-secret-2\n");
    let updated = cli
        .ok(&[
            "tenant",
            "update",
            "acme",
            "--name",
            "Acme Inc",
            "--tier",
            "professional",
            "--client-secret-file",
            new_secret_file.to_str().unwrap(),
        ])
        .await;
    assert_eq!(updated.trim_end(), "updated tenant acme (version 2)");
    let shown = cli.json(&["tenant", "show", "acme"]).await;
    assert_no_secret(&shown.to_string(), &[ACME_SECRET, "acme-client-secret-2"]);
    assert_eq!(shown["name"], "Acme Inc");
    assert_eq!(shown["tier"], "professional");
    assert_eq!(
        shown["client_secret"]["fingerprint"],
        tenantry::secrets::fingerprint("acme-client-secret-2")
    );
    assert_eq!(
        shown["client_secret_previous"]["fingerprint"],
        fingerprint.as_str()
    );
    let rolled = cli.ok(&["tenant", "rollback-secret", "acme"]).await;
    assert_eq!(
        rolled.trim_end(),
        format!("tenant acme client secret rolled back to {fingerprint}")
    );

    // The lifecycle, each step with its reason.
    for (args, expected) in [
        (
            vec!["suspend", "acme", "--reason", "payment failure"],
            "suspended",
        ),
        (vec!["reactivate", "acme", "--reason", "paid"], "active"),
        (
            vec!["cancel", "acme", "--reason", "contract ended"],
            "canceled",
        ),
        (vec!["restore", "acme", "--reason", "renewed"], "active"),
        (
            vec!["delete", "acme", "--reason", "customer left"],
            "deleted",
        ),
        (vec!["restore", "acme", "--reason", "came back"], "active"),
        (
            vec!["cancel", "acme", "--reason", "left for good"],
            "canceled",
        ),
    ] {
        let mut full = vec!["tenant"];
        full.extend(&args);
        let out = cli.ok(&full).await;
        assert_eq!(
            out.trim_end(),
            format!("tenant acme is now {expected}"),
            "{args:?}"
        );
    }
    let shown = cli.json(&["tenant", "show", "acme"]).await;
    assert_eq!(shown["status"], "canceled");
    assert_eq!(shown["status_reason"], "left for good");
    assert!(shown["retention_ends_at"].is_string());
    let history = shown["history"].as_array().unwrap();
    let reasons: Vec<&str> = history
        .iter()
        .map(|h| h["reason"].as_str().unwrap())
        .collect();
    assert_eq!(
        reasons,
        [
            "left for good",
            "came back",
            "customer left",
            "renewed",
            "contract ended",
            "paid",
            "payment failure",
            "created"
        ]
    );
    assert!(history.iter().all(|h| h["actor"] == ACTOR), "{history:?}");

    // Purge: not before the retention period without --force; --force needs --hard.
    let line = cli.fails(&["tenant", "delete", "acme", "--hard"]).await;
    assert!(line.contains("retention period"), "{line}");
    let run = cli.run(&["tenant", "delete", "acme", "--force"]).await;
    assert!(
        !run.status.success(),
        "--force without --hard is refused: {run:#?}"
    );
    let purged = cli
        .ok(&[
            "tenant",
            "delete",
            "acme",
            "--hard",
            "--force",
            "--reason",
            "gdpr request",
        ])
        .await;
    assert_eq!(purged.trim_end(), "tenant acme purged");
    let line = cli.fails(&["tenant", "show", "acme"]).await;
    assert!(line.contains("`acme` not found"), "{line}");
    assert_eq!(cli.slugs().await, ["admin"]);

    // The whole story is in the audit log, by the CLI's actor, without a secret.
    let audit = cli.audit().await;
    assert_no_secret(
        &serde_json::to_string(&audit).unwrap(),
        &[ACME_SECRET, "acme-client-secret-2"],
    );
    let actions: Vec<&str> = audit
        .iter()
        .filter(|r| r["tenant"] == "acme")
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions.first(), Some(&"tenant.purge"));
    assert_eq!(actions.last(), Some(&"tenant.create"));
    assert_eq!(actions.len(), 11, "{actions:?}");
    assert!(
        audit
            .iter()
            .filter(|r| r["tenant"] == "acme")
            .all(|r| r["actor"] == ACTOR)
    );
    cli.finish().await;
}

async fn tenant_list_filters_by_status_tier_and_search(backend: Backend) {
    let cli = Cli::new(backend).await;
    // Installed as an operator installs: `migrate` makes the platform tenant.
    cli.ok(&["migrate"]).await;
    for (slug, name, tier) in [
        ("shop-one", "Shop Number One", "starter"),
        ("shop-two", "Shop Number Two", "enterprise"),
        ("depot", "Central Depot", "starter"),
    ] {
        cli.ok(&[
            "tenant", "create", "--slug", slug, "--name", name, "--tier", tier,
        ])
        .await;
    }
    cli.ok(&[
        "tenant",
        "suspend",
        "shop-two",
        "--reason",
        "payment failure",
    ])
    .await;

    assert_eq!(
        cli.slugs().await,
        ["admin", "depot", "shop-one", "shop-two"]
    );
    assert_eq!(
        slugs(&cli.json(&["tenant", "list", "--status", "suspended"]).await),
        ["shop-two"]
    );
    assert_eq!(
        slugs(&cli.json(&["tenant", "list", "--tier", "starter"]).await),
        ["depot", "shop-one"]
    );
    assert_eq!(
        slugs(&cli.json(&["tenant", "list", "--search", "number"]).await),
        ["shop-one", "shop-two"]
    );
    assert_eq!(
        slugs(
            &cli.json(&["tenant", "list", "--search", "shop", "--status", "active"])
                .await
        ),
        ["shop-one"]
    );

    // A page at a time, continued with the cursor.
    let first = cli.json(&["tenant", "list", "--limit", "2"]).await;
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = cli
        .json(&["tenant", "list", "--limit", "2", "--cursor", &cursor])
        .await;
    let mut all = slugs(&first);
    all.extend(slugs(&second));
    assert_eq!(all, ["admin", "depot", "shop-one", "shop-two"]);
    assert!(second["next_cursor"].is_null());

    let text = cli.ok(&["tenant", "list", "--tier", "starter"]).await;
    let lines: Vec<&str> = text.lines().collect();
    assert!(lines[0].starts_with("SLUG"), "{text}");
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        lines[1].starts_with("depot")
            && lines[1].contains("active")
            && lines[1].contains("Central Depot"),
        "{text}"
    );

    let line = cli.fails(&["tenant", "list", "--status", "sleeping"]).await;
    assert!(line.contains("status"), "{line}");
    cli.finish().await;
}

async fn illegal_transition_exits_non_zero_naming_the_current_status_and_stores_nothing(
    backend: Backend,
) {
    let cli = Cli::new(backend).await;
    // Installed as an operator installs: `migrate` makes the platform tenant.
    cli.ok(&["migrate"]).await;
    cli.ok(&["tenant", "create", "--slug", "acme", "--name", "Acme"])
        .await;
    let audit_before = cli.audit().await.len();

    let line = cli
        .fails(&["tenant", "reactivate", "acme", "--reason", "why not"])
        .await;
    assert!(
        line.contains("cannot reactivate tenant `acme`: it is active"),
        "{line}"
    );
    let line = cli
        .fails(&["tenant", "restore", "acme", "--reason", "why not"])
        .await;
    assert!(line.contains("it is active"), "{line}");
    let line = cli
        .fails(&["tenant", "delete", "acme", "--hard", "--force"])
        .await;
    assert!(line.contains("it is active"), "{line}");
    cli.ok(&["tenant", "suspend", "acme", "--reason", "payment failure"])
        .await;
    let line = cli
        .fails(&["tenant", "suspend", "acme", "--reason", "again"])
        .await;
    assert!(line.contains("it is suspended"), "{line}");
    let line = cli
        .fails(&["tenant", "suspend", "acme", "--reason", "  "])
        .await;
    assert!(line.contains("reason"), "{line}");
    let line = cli
        .fails(&["tenant", "suspend", "admin", "--reason", "oops"])
        .await;
    assert!(line.contains("platform"), "{line}");

    let shown = cli.json(&["tenant", "show", "acme"]).await;
    assert_eq!(shown["status"], "suspended");
    assert_eq!(shown["version"], 2);
    assert_eq!(
        shown["history"].as_array().unwrap().len(),
        2,
        "refused transitions leave no history"
    );
    assert_eq!(
        cli.audit().await.len(),
        audit_before + 1,
        "only the suspension is audited"
    );
    cli.finish().await;
}

async fn bad_slug_exits_non_zero_naming_the_slug_rule_and_stores_nothing(backend: Backend) {
    let cli = Cli::new(backend).await;
    cli.ok(&["migrate"]).await;
    let tenants_before = cli.slugs().await;
    let audit_before = cli.audit().await.len();
    for (slug, rule) in [
        (
            "Bad_Slug",
            "slug: may contain only lowercase letters a-z, digits 0-9 and hyphens",
        ),
        ("ab", "slug: must be 3 to 63 characters long"),
        ("-acme", "slug: must not start or end with a hyphen"),
        ("www", "slug: is reserved by the platform"),
    ] {
        let line = cli
            .fails(&["tenant", "create", &format!("--slug={slug}"), "--name", "X"])
            .await;
        assert_eq!(line, format!("error: {rule}"), "slug {slug}");
    }
    // Other refused creates store nothing either.
    let line = cli
        .fails(&[
            "tenant", "create", "--slug", "acme", "--name", "Acme", "--tier", "gold",
        ])
        .await;
    assert!(line.contains("tier"), "{line}");
    let missing = cli.path().join("no-such-file");
    let line = cli
        .fails(&[
            "tenant",
            "create",
            "--slug",
            "acme",
            "--name",
            "Acme",
            "--oauth-issuer",
            "https://idp.example.com",
            "--client-id",
            "cid",
            "--client-secret-file",
            missing.to_str().unwrap(),
        ])
        .await;
    assert!(line.contains(&missing.display().to_string()), "{line}");

    assert_eq!(cli.slugs().await, tenants_before, "nothing stored");
    assert_eq!(cli.audit().await.len(), audit_before, "nothing audited");
    cli.finish().await;
}

async fn set_password_reads_stdin_refuses_short_ones_and_the_new_password_logs_in_over_http(
    backend: Backend,
) {
    let cli = Cli::new(backend).await;
    let password = "a long enough passphrase";
    let run = cli
        .run_with_stdin(&["admin", "set-password"], "short-pass1\n")
        .await;
    let line = run.one_line_error("an 11-character password");
    assert!(line.contains("at least 12 characters"), "{line}");
    assert!(
        cli.audit()
            .await
            .iter()
            .all(|r| r["action"] != "admin.password_set"),
        "a refused password is not set"
    );

    let run = cli
        .run_with_stdin(&["admin", "set-password"], &format!("{password}\n"))
        .await;
    assert!(run.status.success(), "{run:#?}");
    assert_eq!(run.stdout.trim_end(), "password of `admin` set");
    assert!(!run.stdout.contains(password) && !run.stderr.contains(password));

    // Log in through the portal of a server started on a free port.
    let mut command = cli.command(&["serve", "--bind", "127.0.0.1:0"]);
    command.env("TENANTRY_LOG_LEVEL", "warn");
    let mut server = Server::spawn(command);
    let base = server.base_url().await;
    server.wait_for_line("admin portal:").await;
    let client = http_client();
    let (status, _) = portal_login(&client, &base, "admin", "short-pass1").await;
    assert_eq!(
        status,
        StatusCode::UNAUTHORIZED,
        "the refused password does not log in"
    );
    let (status, location) = portal_login(&client, &base, "admin", password).await;
    assert_eq!(status, StatusCode::SEE_OTHER, "{}", server.transcript());
    assert_eq!(location.as_deref(), Some("/"));
    let dashboard = client.get(format!("{base}/")).send().await.expect("GET /");
    assert_eq!(
        dashboard.status(),
        StatusCode::OK,
        "the session cookie opens the dashboard"
    );
    let (status, stdout) = server.terminate().await;
    assert!(status.success(), "{status}");
    assert!(
        !stdout.iter().any(|l| l.contains("first start")),
        "a password was set: none is generated: {stdout:?}"
    );
    assert!(!cli.path().join("initial-admin-password").exists());

    let audit = cli.audit().await;
    let set = audit
        .iter()
        .find(|r| r["action"] == "admin.password_set")
        .expect("audited");
    assert_eq!(set["actor"], ACTOR);
    assert!(!serde_json::to_string(&audit).unwrap().contains(password));
    cli.finish().await;
}

async fn audit_list_shows_cli_actions_with_the_cli_actor(backend: Backend) {
    let cli = Cli::new(backend).await;
    // Installed as an operator installs: `migrate` makes the platform tenant.
    cli.ok(&["migrate"]).await;
    cli.ok(&["tenant", "create", "--slug", "acme", "--name", "Acme"])
        .await;
    cli.ok(&["tenant", "suspend", "acme", "--reason", "payment failure"])
        .await;
    let token = cli
        .json(&["admin", "token", "create", "--name", "ci"])
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();

    let audit = cli.audit().await;
    let mine: Vec<(&str, &str)> = audit
        .iter()
        .filter(|r| r["actor"] == ACTOR)
        .map(|r| {
            (
                r["action"].as_str().unwrap(),
                r["tenant"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        mine,
        [
            ("admin.token_create", "-"),
            ("tenant.suspend", "acme"),
            ("tenant.create", "acme")
        ]
    );
    // The platform tenant was created by the system when `migrate` applied [admin_tenant].
    assert!(audit.iter().any(|r| r["actor"] == "system"
        && r["tenant"] == "admin"
        && r["action"] == "tenant.create"));
    assert_eq!(audit[1]["details"]["reason"], "payment failure");
    let secret = token.rsplit('_').next().unwrap();
    assert_eq!(secret.len(), 32);
    assert!(
        !serde_json::to_string(&audit).unwrap().contains(secret),
        "the token's secret is audited"
    );

    let filtered = cli
        .json(&["audit", "list", "--actor", ACTOR, "--action", "tenant."])
        .await;
    let actions: Vec<&str> = filtered["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["action"].as_str().unwrap())
        .collect();
    assert_eq!(actions, ["tenant.suspend", "tenant.create"]);
    let page = cli.json(&["audit", "list", "--limit", "1"]).await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_before"], page["items"][0]["seq"]);

    let text = cli.ok(&["audit", "list", "--tenant", "acme"]).await;
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(
        text.lines()
            .all(|l| l.contains(ACTOR) && l.contains("acme")),
        "{text}"
    );
    cli.finish().await;
}

/// Three audit records: the platform tenant (1), then two tenants created by the CLI (2, 3).
async fn three_audit_records(cli: &Cli) {
    cli.ok(&["migrate"]).await;
    cli.ok(&["tenant", "create", "--slug", "acme", "--name", "Acme"])
        .await;
    cli.ok(&["tenant", "create", "--slug", "globex", "--name", "Globex"])
        .await;
    let seqs: Vec<i64> = cli
        .audit()
        .await
        .iter()
        .map(|r| r["seq"].as_i64().unwrap())
        .collect();
    // The platform tenant, the six built-in plugins recorded at the first start, two tenants.
    assert_eq!(seqs, [9, 8, 7, 6, 5, 4, 3, 2, 1]);
}

async fn audit_verify_passes_an_intact_chain_and_fails_naming_a_changed_record(backend: Backend) {
    let cli = Cli::new(backend).await;
    three_audit_records(&cli).await;
    let out = cli.ok(&["audit", "verify"]).await;
    assert_eq!(out.trim_end(), "audit chain intact: 9 records");
    let report = cli.json(&["audit", "verify"]).await;
    assert_eq!(report["ok"], true);
    assert_eq!(report["records"], 9);

    assert_eq!(
        (&report["from_seq"], &report["checked"]),
        (&json!(10), &json!(0)),
        "the first check left a checkpoint at the head: {report}"
    );

    // The check left a checkpoint: the next hashes only what came after it.
    cli.ok(&["tenant", "create", "--slug", "initech", "--name", "Initech"])
        .await;
    let out = cli.ok(&["audit", "verify"]).await;
    assert_eq!(
        out.trim_end(),
        "audit chain intact: 10 records (1 checked from record 10, the rest at an earlier check; --full checks them all)"
    );

    // A changed old record whose stored hash was left alone is found by a full check; a
    // checkpoint's own record is checked every time.
    let changed = cli
        .execute_sql(r#"UPDATE audit_log SET details = '{"name":"Evil Corp"}' WHERE seq = 2"#)
        .await;
    assert_eq!(changed, 1);
    cli.ok(&["audit", "verify"]).await;
    let run = cli.run(&["audit", "verify", "--full"]).await;
    let line = run.one_line_error("audit verify after a changed record");
    assert_eq!(line, "error: audit chain is broken at record 2");
    assert_eq!(
        run.stdout.trim_end(),
        "audit chain BROKEN: record 2 was changed after it was written"
    );
    let run = cli
        .run(&["audit", "verify", "--full", "--output", "json"])
        .await;
    assert!(!run.status.success());
    let report: Value = serde_json::from_str(&run.stdout).expect("JSON");
    assert_eq!(report["ok"], false);
    assert_eq!(report["first_broken_seq"], 2);
    let changed = cli
        .execute_sql(r#"UPDATE audit_log SET details = '{"name":"Evil Corp"}' WHERE seq = 10"#)
        .await;
    assert_eq!(changed, 1);
    let run = cli.run(&["audit", "verify"]).await;
    assert_eq!(
        run.one_line_error("audit verify after the checkpoint's record changed"),
        "error: audit chain is broken at record 10"
    );
    assert!(
        run.stdout
            .contains("record 10 was changed after it was verified at"),
        "{run:#?}"
    );
    cli.finish().await;
}

async fn audit_verify_fails_when_the_newest_record_is_deleted(backend: Backend) {
    let cli = Cli::new(backend).await;
    three_audit_records(&cli).await;
    cli.ok(&["audit", "verify"]).await;
    let removed = cli
        .execute_sql("DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)")
        .await;
    assert_eq!(removed, 1);
    let run = cli.run(&["audit", "verify"]).await;
    let line = run.one_line_error("audit verify after the newest record was deleted");
    assert_eq!(line, "error: audit chain is broken at record 9");
    assert!(run.stdout.contains("records were removed"), "{run:#?}");
    cli.finish().await;
}

/// Two tenants with three secrets and a kept previous client secret: four sealed values.
async fn tenants_with_secrets(cli: &Cli) {
    create_acme(cli).await;
    let new_secret = cli.write_file("acme-secret-2", "acme-client-secret-2");
    cli.ok(&[
        "tenant",
        "update",
        "acme",
        "--client-secret-file",
        new_secret.to_str().unwrap(),
    ])
    .await;
    let globex = cli.write_file("globex-secret", "globex-client-secret\n");
    cli.ok(&[
        "tenant",
        "create",
        "--slug",
        "globex",
        "--name",
        "Globex",
        "--oauth-issuer",
        "https://globex.example",
        "--client-id",
        "globex",
        "--client-secret-file",
        globex.to_str().unwrap(),
    ])
    .await;
}

/// Opens every sealed value through the library with `keyring` alone and compares it to what was
/// stored; every value must be sealed under `key_id`.
async fn assert_secrets_open(cli: &Cli, keyring: Keyring, key_id: &str) {
    let ctx = cli.context(keyring).await;
    let mut conn = ctx.db.conn().await.unwrap();
    let mut checked = 0;
    for (slug, field, expected) in [
        ("acme", "client_secret", "acme-client-secret-2"),
        ("acme", "client_secret_previous", ACME_SECRET),
        ("acme", "db_uri", ACME_DB_URI),
        ("globex", "client_secret", "globex-client-secret"),
    ] {
        let row = tenantry::store::tenants::find_by_slug(&mut conn, slug)
            .await
            .unwrap()
            .expect("tenant");
        let sealed = match field {
            "client_secret" => row.client_secret,
            "client_secret_previous" => row.client_secret_previous,
            _ => row.db_uri,
        }
        .expect("sealed value");
        assert!(
            sealed.starts_with(&format!("tsk1:{key_id}:")),
            "{slug}.{field} is not sealed under {key_id}: {sealed}"
        );
        let context_field = if field == "db_uri" {
            "db_uri"
        } else {
            "client_secret"
        };
        let opened = ctx
            .keyring
            .open(
                &sealed,
                &tenantry::tenants::secret_context(&row.id, context_field),
            )
            .unwrap_or_else(|e| panic!("{slug}.{field} does not open: {e}"));
        assert_eq!(opened, expected, "{slug}.{field}");
        checked += 1;
    }
    assert_eq!(checked, 4);
}

/// How many sealed values in the database are under `key_id`.
async fn sealed_under(cli: &Cli, key_id: &str) -> i64 {
    let pattern = format!("tsk1:{key_id}:%");
    cli.count_sql(&format!(
        "SELECT count(*) AS n FROM tenants WHERE client_secret LIKE '{pattern}' \
         OR client_secret_previous LIKE '{pattern}' OR db_uri LIKE '{pattern}'"
    ))
    .await
}

async fn rotate_key_with_the_managed_key_file_reseals_every_secret_and_retires_the_old_key(
    backend: Backend,
) {
    let cli = Cli::new(backend).await;
    tenants_with_secrets(&cli).await;
    let old_id = MasterKey::read_file(&cli.key_file())
        .expect("the generated key file")
        .id()
        .to_owned();
    assert_eq!(sealed_under(&cli, &old_id).await, 2, "acme and globex rows");

    let report = cli.json(&["secrets", "rotate-key"]).await;
    assert_eq!(report["old_key_id"], old_id.as_str());
    let new_id = report["new_key_id"]
        .as_str()
        .expect("new key id")
        .to_owned();
    assert_ne!(new_id, old_id, "the key id changes");
    assert_eq!(report["resealed"], 4);
    assert_eq!(report["key_file"], cli.key_file().display().to_string());

    // Key files: the new key in place, the old one retired beside it, both owner-only.
    assert_eq!(MasterKey::read_file(&cli.key_file()).unwrap().id(), new_id);
    let retired = cli.path().join(format!("master.key.retired-{old_id}"));
    assert!(retired.is_file(), "{} missing", retired.display());
    assert_eq!(MasterKey::read_file(&retired).unwrap().id(), old_id);
    assert_eq!(file_mode(&cli.key_file()), 0o600);
    assert_eq!(file_mode(&retired), 0o600);
    assert!(!cli.path().join("master.key.next").exists());

    // Every secret opens with the keyring as loaded from the data directory, and with the new key
    // alone: each was re-sealed, none relies on the retired key.
    let (loaded, _) = Keyring::load(&cli.config()).expect("keyring");
    assert_eq!(loaded.primary_id(), new_id);
    assert_secrets_open(&cli, loaded, &new_id).await;
    let new_key = MasterKey::read_file(&cli.key_file()).unwrap();
    assert_secrets_open(&cli, Keyring::new(new_key, Vec::new()), &new_id).await;

    // No ciphertext under the old key is left, in the rows or (SQLite) anywhere in the file.
    assert_eq!(sealed_under(&cli, &old_id).await, 0);
    let needle = format!("tsk1:{old_id}:");
    let bytes = cli.sqlite_bytes();
    if backend == Backend::Sqlite {
        let current = format!("tsk1:{new_id}:");
        assert!(
            bytes
                .windows(current.len())
                .any(|w| w == current.as_bytes()),
            "the search finds sealed values"
        );
    }
    assert!(
        !bytes.windows(needle.len()).any(|w| w == needle.as_bytes()),
        "the SQLite database file still holds ciphertext under the old key {old_id}"
    );

    // The CLI keeps working with the new key, and the rotation is audited.
    let shown = cli.json(&["tenant", "show", "acme"]).await;
    assert_eq!(shown["db_uri"]["set"], true);
    let rotations = cli
        .json(&["audit", "list", "--action", "secrets.rotate_key"])
        .await;
    let record = &rotations["items"][0];
    assert_eq!(record["actor"], ACTOR);
    assert_eq!(record["details"]["from_key"], old_id.as_str());
    assert_eq!(record["details"]["to_key"], new_id.as_str());
    cli.ok(&["audit", "verify"]).await;
    cli.finish().await;
}

async fn rotate_key_with_the_master_key_from_the_environment_needs_a_new_key_file(
    backend: Backend,
) {
    let mut cli = Cli::new(backend).await;
    let key = common::random_master_key();
    cli.set_env("TENANTRY_MASTER_KEY", &key);
    let key_id = MasterKey::from_base64(&key).unwrap().id().to_owned();
    tenants_with_secrets(&cli).await;
    let audit_before = cli.audit().await.len();

    let line = cli.fails(&["secrets", "rotate-key"]).await;
    assert!(line.contains("TENANTRY_MASTER_KEY"), "{line}");
    assert!(line.contains("--new-key-file"), "{line}");
    assert!(!line.contains(&key), "the key is printed: {line}");

    assert!(
        !cli.key_file().exists(),
        "no key file is generated when the key comes from the environment"
    );
    assert_eq!(sealed_under(&cli, &key_id).await, 2, "nothing re-sealed");
    assert_eq!(cli.audit().await.len(), audit_before, "nothing audited");
    cli.finish().await;
}

async fn rotate_key_with_a_new_key_file_reseals_under_that_key(backend: Backend) {
    let mut cli = Cli::new(backend).await;
    let old_key = common::random_master_key();
    cli.set_env("TENANTRY_MASTER_KEY", &old_key);
    let old_id = MasterKey::from_base64(&old_key).unwrap().id().to_owned();
    tenants_with_secrets(&cli).await;

    // The key in use is not a new key.
    let same = cli.write_file("same.key", &format!("{old_key}\n"));
    let line = cli
        .fails(&[
            "secrets",
            "rotate-key",
            "--new-key-file",
            same.to_str().unwrap(),
        ])
        .await;
    assert!(line.contains("already in use"), "{line}");

    let new_key = common::random_master_key();
    let new_id = MasterKey::from_base64(&new_key).unwrap().id().to_owned();
    let new_file = cli.write_file("new.key", &format!("{new_key}\n"));
    let out = cli
        .ok(&[
            "secrets",
            "rotate-key",
            "--new-key-file",
            new_file.to_str().unwrap(),
        ])
        .await;
    assert!(
        out.starts_with(&format!("re-sealed 4 secrets: key {old_id} → {new_id}")),
        "{out}"
    );
    assert!(
        out.contains("TENANTRY_MASTER_KEY"),
        "it tells what to do next: {out}"
    );
    assert!(!out.contains(&new_key), "the key is printed: {out}");
    assert!(!cli.key_file().exists());

    let new = MasterKey::from_base64(&new_key).unwrap();
    assert_secrets_open(&cli, Keyring::new(new, Vec::new()), &new_id).await;
    assert_eq!(sealed_under(&cli, &old_id).await, 0);

    let rotations = cli
        .json(&["audit", "list", "--action", "secrets.rotate_key"])
        .await;
    assert_eq!(
        rotations["items"][0]["details"]["from_key"],
        old_id.as_str()
    );
    assert_eq!(rotations["items"][0]["details"]["to_key"], new_id.as_str());

    // With TENANTRY_MASTER_KEY pointed at the new key, as told, the CLI opens every secret again
    // (a further rotation opens them all).
    cli.set_env("TENANTRY_MASTER_KEY", &new_key);
    let third = cli.write_file("third.key", &common::random_master_key());
    let report = cli
        .json(&[
            "secrets",
            "rotate-key",
            "--new-key-file",
            third.to_str().unwrap(),
        ])
        .await;
    assert_eq!(report["old_key_id"], new_id.as_str());
    assert_eq!(report["resealed"], 4);
    cli.finish().await;
}

async fn config_file_with_an_unknown_key_exits_non_zero_naming_the_key_before_touching_anything(
    backend: Backend,
) {
    let mut cli = Cli::new(backend).await;
    let config = cli.write_file(
        "tenantry-test.toml",
        "retention_days = 10\ncolour = \"red\"\n",
    );
    cli.set_env("TENANTRY_CONFIG", config.to_str().unwrap());
    let line = cli.fails(&["tenant", "list"]).await;
    assert!(line.contains("`colour`"), "{line}");
    assert!(
        line.contains("tenantry-test.toml"),
        "the line names the file: {line}"
    );
    let line = cli.fails(&["migrate"]).await;
    assert!(line.contains("`colour`"), "{line}");
    assert!(!cli.key_file().exists(), "no master key generated");
    assert!(!cli.has_schema().await, "the database is untouched");

    // The same file without the typo works.
    cli.write_file("tenantry-test.toml", "retention_days = 10\n");
    cli.ok(&["tenant", "list"]).await;
    cli.finish().await;
}

async fn unknown_tenantry_env_var_exits_non_zero_naming_it_before_touching_anything(
    backend: Backend,
) {
    let mut cli = Cli::new(backend).await;
    cli.set_env("TENANTRY_FOO", "1");
    let line = cli.fails(&["tenant", "list"]).await;
    assert!(line.to_lowercase().contains("foo"), "{line}");
    assert!(
        line.contains("TENANTRY_"),
        "the line says it is an environment variable: {line}"
    );
    assert!(!cli.key_file().exists(), "no master key generated");
    assert!(!cli.has_schema().await, "the database is untouched");
    cli.finish().await;
}

async fn serve_with_a_bad_bind_address_exits_non_zero_with_one_line_before_touching_anything(
    backend: Backend,
) {
    let cli = Cli::new(backend).await;
    let line = cli.fails(&["serve", "--bind", "not-an-address"]).await;
    assert!(line.contains("not-an-address"), "{line}");
    assert!(
        line.contains("127.0.0.1:8080"),
        "the line shows what an address looks like: {line}"
    );
    assert!(!cli.key_file().exists(), "no master key generated");
    assert!(
        !cli.path().join("initial-admin-password").exists(),
        "no admin password generated"
    );
    assert!(!cli.has_schema().await, "the database is untouched");

    // The same rule holds for TENANTRY_BIND.
    let mut cli = cli;
    cli.set_env("TENANTRY_BIND", "not-an-address");
    let line = cli.fails(&["serve"]).await;
    assert!(line.contains("not-an-address"), "{line}");
    cli.finish().await;
}

async fn export_then_purge_then_import_restores_the_tenant(backend: Backend) {
    let cli = Cli::new(backend).await;
    let created = create_acme(&cli).await;
    cli.ok(&[
        "tenant", "api-key", "create", "acme", "--name", "ci", "--role", "member",
    ])
    .await;
    let bundle_path = cli.path().join("acme.tar");
    let bundle_arg = bundle_path.to_str().unwrap().to_owned();
    cli.ok(&["tenant", "export", "acme", "--file", &bundle_arg])
        .await;
    assert_eq!(
        file_mode(&bundle_path),
        0o600,
        "the bundle is readable by its owner only"
    );
    let bytes = std::fs::read(&bundle_path).unwrap();
    let text = String::from_utf8_lossy(&bytes);
    assert!(
        !text.contains(ACME_SECRET),
        "secrets stay sealed in the bundle"
    );
    let bundle = tenantry::bundles::Bundle::from_tar(&bytes).unwrap();
    assert_eq!(bundle.manifest.format, "tenantry.tenant-bundle/v2");
    let paths: Vec<&str> = bundle
        .manifest
        .parts
        .iter()
        .map(|p| p.path.as_str())
        .collect();
    for part in [
        "registry/tenant.json",
        "registry/status_history.json",
        "registry/sso.json",
        "registry/api_keys.json",
        "registry/quota_overrides.json",
        "registry/usage_counters.json",
        "audit/records.json",
        "provisioning/resources.json",
    ] {
        assert!(paths.contains(&part), "{part} in {paths:?}");
    }
    let excluded: Vec<&str> = bundle
        .manifest
        .excluded
        .iter()
        .map(|e| e.name.as_str())
        .collect();
    assert!(excluded.contains(&"sessions"), "{excluded:?}");
    let keys: serde_json::Value = bundle.json("registry/api_keys.json").unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert!(keys[0]["secret_hash"].is_string(), "hashes only: {keys}");
    let sso: serde_json::Value = bundle.json("registry/sso.json").unwrap();
    assert!(
        sso["client_secret"].as_str().unwrap().starts_with("tsk1:"),
        "{sso}"
    );

    let exists = cli
        .fails(&["tenant", "import", "--file", &bundle_arg])
        .await;
    assert!(exists.contains("already exists"), "{exists}");

    cli.ok(&["tenant", "cancel", "acme", "--reason", "leaving"])
        .await;
    cli.ok(&[
        "tenant", "delete", "acme", "--hard", "--force", "--reason", "purge",
    ])
    .await;
    cli.fails(&["tenant", "show", "acme"]).await;

    // A bundle changed after the export is refused, and nothing is written.
    let mut tampered = bytes.clone();
    let at = tampered
        .windows(4)
        .position(|w| w == b"Acme")
        .expect("the name is in the bundle");
    tampered[at] = b'X';
    let tampered_path = cli.path().join("tampered.tar");
    std::fs::write(&tampered_path, &tampered).unwrap();
    let refused = cli
        .fails(&[
            "tenant",
            "import",
            "--file",
            tampered_path.to_str().unwrap(),
        ])
        .await;
    assert!(refused.contains("SHA-256"), "{refused}");
    cli.fails(&["tenant", "show", "acme"]).await;

    // A dry run says what would be created, and creates nothing.
    let plan = cli
        .ok(&["tenant", "import", "--file", &bundle_arg, "--dry-run"])
        .await;
    assert!(
        plan.contains("would restore tenant acme") && plan.contains("+ 1 api keys"),
        "{plan}"
    );
    assert!(plan.contains("- sessions (not in the bundle"), "{plan}");
    cli.fails(&["tenant", "show", "acme"]).await;

    let restored = cli.json(&["tenant", "import", "--file", &bundle_arg]).await;
    assert_eq!(restored["ok"], true, "{restored}");
    assert_eq!(restored["differences"], serde_json::json!([]), "{restored}");
    let shown = cli.json(&["tenant", "show", "acme"]).await;
    assert_eq!(shown["id"], created["id"]);
    assert_eq!(shown["status"], created["status"]);
    assert_eq!(
        shown["client_secret"]["fingerprint"],
        created["client_secret"]["fingerprint"]
    );
    let listed = cli.json(&["tenant", "api-key", "list", "acme"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    let actions: Vec<String> = cli
        .audit()
        .await
        .iter()
        .map(|r| r["action"].as_str().unwrap_or_default().to_owned())
        .collect();
    assert!(
        actions.contains(&"tenant.export".to_owned())
            && actions.contains(&"tenant.import".to_owned()),
        "{actions:?}"
    );

    // The JSON bundle of earlier versions is still written and read.
    let json_path = cli.path().join("acme.json");
    cli.ok(&[
        "tenant",
        "export",
        "acme",
        "--format",
        "json",
        "--file",
        json_path.to_str().unwrap(),
    ])
    .await;
    assert!(
        std::fs::read_to_string(&json_path)
            .unwrap()
            .contains("tenantry.tenant-bundle/v1")
    );
    cli.finish().await;
}

async fn rotate_key_with_a_new_key_file_and_the_managed_key_file_installs_that_key(
    backend: Backend,
) {
    let cli = Cli::new(backend).await;
    tenants_with_secrets(&cli).await;
    let old = std::fs::read_to_string(cli.key_file()).unwrap();
    let old_id = tenantry::secrets::MasterKey::from_base64(&old)
        .unwrap()
        .id()
        .to_owned();
    let supplied = common::random_master_key();
    let supplied_path = cli.write_file("supplied.key", &supplied);
    let report = cli
        .json(&[
            "secrets",
            "rotate-key",
            "--new-key-file",
            supplied_path.to_str().unwrap(),
        ])
        .await;
    let new_id = tenantry::secrets::MasterKey::from_base64(&supplied)
        .unwrap()
        .id()
        .to_owned();
    assert_eq!(report["new_key_id"], new_id.as_str());
    assert_eq!(
        std::fs::read_to_string(cli.key_file()).unwrap().trim(),
        supplied.trim(),
        "the supplied key is installed"
    );
    assert!(
        cli.path()
            .join(format!("master.key.retired-{old_id}"))
            .exists()
    );
    assert_eq!(file_mode(&cli.key_file()), 0o600);
    assert_secrets_open(
        &cli,
        Keyring::new(
            tenantry::secrets::MasterKey::from_base64(&supplied).unwrap(),
            vec![],
        ),
        &new_id,
    )
    .await;
    cli.finish().await;
}

async fn tenant_health_reports_the_database_round_trip_and_fails_when_unreachable(
    backend: Backend,
) {
    let cli = Cli::new(backend).await;
    let good = cli.write_file("good.uri", &common::postgres_admin_url());
    let bad = cli.write_file("bad.uri", "postgresql://u:hidden-pw@127.0.0.1:1/db");
    cli.ok(&[
        "tenant",
        "create",
        "--slug",
        "good",
        "--name",
        "Good",
        "--db-uri-file",
        good.to_str().unwrap(),
    ])
    .await;
    cli.ok(&[
        "tenant",
        "create",
        "--slug",
        "down",
        "--name",
        "Down",
        "--db-uri-file",
        bad.to_str().unwrap(),
    ])
    .await;
    let text = cli.ok(&["tenant", "health", "good"]).await;
    assert!(text.starts_with("tenant good: healthy\n"), "{text}");
    assert!(text.contains("serving: healthy (active)"), "{text}");
    assert!(text.contains("database: connected in"), "{text}");
    let run = cli.run(&["tenant", "health", "down"]).await;
    assert!(!run.status.success());
    // The first line and the error say the same: not healthy, and why.
    assert!(
        run.stdout
            .starts_with("tenant down: not healthy (database: unreachable)\n"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("database: unreachable"),
        "{}",
        run.stdout
    );
    assert_eq!(
        run.stderr.trim_end(),
        "error: tenant down is not healthy: database: unreachable"
    );
    assert!(!run.stdout.contains("hidden-pw") && !run.stderr.contains("hidden-pw"));
    cli.finish().await;
}

/// `tenant sso …` against a real OpenID provider, `tenant session …`, and `tenant health`
/// with the identity provider's check.
async fn sso_settings_test_connection_setup_links_and_sessions_from_the_cli(backend: Backend) {
    let op = common::oidc::OidcProviders::start(
        json!({"issuers": [{"name": "idp", "clients": [], "users": []}]}),
    )
    .await;
    let issuer = op.issuer("idp").await;
    let cli = Cli::new(backend).await;
    cli.ok(&["tenant", "create", "--slug", "acme", "--name", "Acme"])
        .await;
    let secret = cli.write_file("secret", "cli-secret\n");
    let shown = cli
        .ok(&[
            "tenant",
            "sso",
            "set",
            "acme",
            "--oauth-issuer",
            &issuer,
            "--client-id",
            "acme-app",
            "--client-secret-file",
            secret.to_str().unwrap(),
            "--scopes",
            "openid,email,groups",
            "--role-claim",
            "groups",
            "--role-map",
            "acme-admins=tenant-admin",
            "--default-role",
            "none",
        ])
        .await;
    assert!(shown.contains("SSO configured"), "{shown}");
    assert!(shown.contains("acme-admins → tenant-admin"), "{shown}");
    assert!(shown.contains("/t/acme/callback"), "{shown}");
    assert!(!shown.contains("cli-secret"), "{shown}");
    let settings = cli.json(&["tenant", "sso", "show", "acme"]).await;
    assert_eq!(settings["oauth_issuer"], json!(issuer));
    assert_eq!(settings["client_secret"]["set"], true);
    assert_eq!(settings["role_mapping"]["default_role"], "none");
    let line = cli
        .fails(&[
            "tenant",
            "sso",
            "set",
            "acme",
            "--role-map",
            "x=platform-admin",
        ])
        .await;
    assert!(line.contains("role_mapping.values.x"), "{line}");

    let report = cli.ok(&["tenant", "sso", "test", "acme"]).await;
    assert!(report.starts_with(&format!("ok: {issuer}")), "{report}");
    assert!(report.contains("discovery: HTTP 200 in"), "{report}");
    let run = cli
        .run(&[
            "tenant",
            "sso",
            "test",
            "acme",
            "--oauth-issuer",
            "http://127.0.0.1:9",
        ])
        .await;
    assert!(
        !run.status.success(),
        "an unreachable issuer fails the command"
    );
    assert!(
        run.stdout.contains("could not be fetched"),
        "{}",
        run.stdout
    );

    let health = cli.ok(&["tenant", "health", "acme"]).await;
    assert!(health.contains("oauth: healthy (discovery "), "{health}");

    let link = cli
        .ok(&[
            "tenant",
            "sso",
            "setup-link",
            "acme",
            "--expires-in-hours",
            "4",
        ])
        .await;
    assert!(link.contains("/t/acme/setup/tsl_"), "{link}");
    let links = cli.json(&["tenant", "sso", "setup-links", "acme"]).await;
    let id = links[0]["id"].as_str().unwrap().to_owned();
    assert_eq!(links[0]["status"], "usable");
    cli.ok(&["tenant", "sso", "revoke-link", "acme", &id]).await;
    assert_eq!(
        cli.json(&["tenant", "sso", "setup-links", "acme"]).await[0]["status"],
        "revoked"
    );

    assert_eq!(
        cli.json(&["tenant", "session", "list", "acme"]).await,
        json!([])
    );
    let line = cli
        .fails(&["tenant", "session", "revoke", "acme", "nosuchsession"])
        .await;
    assert!(line.contains("not found"), "{line}");

    let off = cli.ok(&["tenant", "sso", "set", "acme", "--disable"]).await;
    assert!(off.contains("SSO not configured"), "{off}");
    let actions: Vec<String> = cli
        .audit()
        .await
        .iter()
        .map(|r| r["action"].as_str().unwrap().to_owned())
        .collect();
    for action in [
        "tenant.update",
        "tenant.sso_setup_link_create",
        "tenant.sso_setup_link_revoke",
    ] {
        assert!(
            actions.contains(&action.to_owned()),
            "{action} in {actions:?}"
        );
    }
    cli.finish().await;
}

async fn plugins_are_installed_granted_enabled_and_disabled_from_the_cli(backend: Backend) {
    let cli = Cli::new(backend).await;
    let listed = cli.ok(&["plugin", "list"]).await;
    for builtin in [
        "template-renderer",
        "tier-quota",
        "superset",
        "airflow",
        "crm",
    ] {
        assert!(listed.contains(builtin), "{listed}");
    }
    let probe = format!(
        "{}/probe.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    let checked = cli.ok(&["plugin", "check", &probe]).await;
    assert!(
        checked.contains("requests secrets: probe-token, other-token"),
        "{checked}"
    );
    let installed = cli.json(&["plugin", "install", &probe]).await;
    assert_eq!(installed["name"], "probe");
    assert_eq!(installed["world"], "provisioner");
    let secret = cli.write_file("token.txt", "probe-secret-value\n");
    let granted = cli
        .json(&[
            "plugin",
            "grant",
            "probe",
            "--secret",
            "probe-token",
            "--value-file",
            secret.to_str().unwrap(),
        ])
        .await;
    assert_eq!(
        granted["granted"]["secrets"],
        serde_json::json!(["probe-token"])
    );
    let refused = cli
        .fails(&["plugin", "grant", "probe", "--host", "example.com"])
        .await;
    assert!(
        refused.contains("does not request host `example.com`"),
        "{refused}"
    );
    cli.ok(&["plugin", "grant", "probe", "--host", "127.0.0.1"])
        .await;
    let inspected = cli.ok(&["plugin", "inspect", "probe"]).await;
    assert!(
        inspected.contains("hosts:   requested 127.0.0.1, localhost | granted 127.0.0.1"),
        "{inspected}"
    );
    assert!(!inspected.contains("probe-secret-value"));
    cli.ok(&["plugin", "revoke", "probe", "--host", "127.0.0.1"])
        .await;
    let enabled = cli
        .ok(&["plugin", "enable", "probe", "--deadline-ms", "1234"])
        .await;
    assert!(enabled.contains("deadline 1234 ms"), "{enabled}");
    let disabled = cli.json(&["plugin", "disable", "probe"]).await;
    assert_eq!(disabled["enabled"], false);
    let corrupt = cli.write_file("bad.wasm", "not wasm");
    let bad = cli
        .fails(&["plugin", "install", corrupt.to_str().unwrap()])
        .await;
    assert!(bad.contains("not WebAssembly"), "{bad}");
    let actions: Vec<String> = cli
        .audit()
        .await
        .iter()
        .map(|r| r["action"].as_str().unwrap_or_default().to_owned())
        .collect();
    for action in [
        "plugin.install",
        "plugin.grant",
        "plugin.revoke",
        "plugin.enable",
        "plugin.disable",
    ] {
        assert!(
            actions.contains(&action.to_owned()),
            "{action} audited: {actions:?}"
        );
    }
    cli.finish().await;
}

/// A loopback HTTP server that answers 200 to anything and counts the requests it received.
async fn counting_server() -> (String, Arc<std::sync::atomic::AtomicUsize>) {
    let hits = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hit", listener.local_addr().unwrap());
    let counter = hits.clone();
    tokio::spawn(async move {
        loop {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
                use tokio::io::AsyncReadExt as _;
                let mut buffer = [0u8; 4096];
                let _ = stream.read(&mut buffer).await;
                let _ = stream
                    .write_all(
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                    )
                    .await;
            });
        }
    });
    (url, hits)
}

/// A tenant provisioned into the `probe` plugin, which acts on `settings` while the server
/// plans it: the server's answer.
async fn provision_probe(
    base: &str,
    token: &str,
    slug: &str,
    settings: Value,
) -> (StatusCode, Value) {
    let response = http_client()
        .post(format!("{base}/api/v1/tenant/provision"))
        .bearer_auth(token)
        .json(&json!({
            "tenant": { "slug": slug, "name": format!("Tenant {slug}") },
            "backends": { "probe": settings },
        }))
        .send()
        .await
        .expect("provision");
    let status = response.status();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Waits (at most 30 s) until every provisioning run has ended, succeeded or failed.
async fn runs_ended(cli: &Cli) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let runs = cli.json(&["run", "list", "--limit", "100"]).await;
        let open: Vec<&Value> = runs
            .as_array()
            .expect("a list of runs")
            .iter()
            .filter(|run| !matches!(run["status"].as_str(), Some("succeeded" | "failed")))
            .collect();
        if open.is_empty() {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "runs still open after 30 s: {open:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `plugin inspect` (CLI, from the database) and the running server's API agree on the calls
/// made, once the server has reported them (about once a second).
/// The calls the CLI and the API agree on, once the figure holds still: a call a disable stopped
/// is counted when its instance has ended, which on a loaded machine can be after its answer.
async fn agreed_calls(cli: &Cli, base: &str, token: &str) -> u64 {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let mut last = None;
    let mut same = 0;
    loop {
        let inspected = cli.json(&["plugin", "inspect", "probe"]).await;
        let served: Value = http_client()
            .get(format!("{base}/api/v1/plugin/probe"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let (a, b) = (&inspected["stats"]["calls"], &served["stats"]["calls"]);
        if a == b && a.as_u64().is_some_and(|n| n > 0) {
            let calls = a.as_u64();
            same = if calls == last { same + 1 } else { 0 };
            last = calls;
            if same == 3 {
                return calls.unwrap();
            }
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "CLI {inspected} and API {served} disagree on the calls"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn plugin_changes_from_the_cli_bind_the_next_call_of_a_running_server(backend: Backend) {
    let cli = Cli::new(backend).await;
    let token = cli
        .json(&["admin", "token", "create", "--name", "ops"])
        .await["token"]
        .as_str()
        .unwrap()
        .to_owned();
    let serve = || {
        let mut command = cli.command(&["serve", "--bind", "127.0.0.1:0"]);
        command.env("TENANTRY_PROVISIONING__POLL_INTERVAL_MS", "200");
        Server::spawn(command)
    };
    let mut server = serve();
    let base = server.base_url().await;
    let (url, hits) = counting_server().await;
    let reach = json!({ "do": "http", "url": url });

    // Installed while the server runs: its next request sees it.
    let probe = format!(
        "{}/probe.wasm",
        tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
    );
    cli.ok(&["plugin", "install", &probe]).await;
    let (status, body) = provision_probe(&base, &token, "probe-one", reach.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "no host granted yet"
    );

    // A host granted by the CLI is reachable at the next call.
    cli.ok(&["plugin", "grant", "probe", "--host", "127.0.0.1"])
        .await;
    let (status, body) = provision_probe(&base, &token, "probe-two", reach.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "granted: reached"
    );

    // Revoked by the CLI: the very next call cannot reach it.
    cli.ok(&["plugin", "revoke", "probe", "--host", "127.0.0.1"])
        .await;
    let (status, body) = provision_probe(&base, &token, "probe-three", reach.clone()).await;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        1,
        "revoked: not reached again"
    );

    // A deadline set by the CLI stops the next call at that deadline.
    cli.ok(&["plugin", "enable", "probe", "--deadline-ms", "1500"])
        .await;
    let started = tokio::time::Instant::now();
    let (status, body) =
        provision_probe(&base, &token, "probe-loop", json!({ "do": "loop" })).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("deadline of 1500 ms"),
        "{body}"
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "stopped at 1500 ms"
    );

    // Disabled by the CLI while a call runs on the server: the server hears it on the change
    // feed and stops the call, long before its deadline.
    cli.ok(&["plugin", "enable", "probe", "--deadline-ms", "60000"])
        .await;
    let looping = {
        let (base, token) = (base.clone(), token.clone());
        tokio::spawn(async move {
            let started = tokio::time::Instant::now();
            let answer =
                provision_probe(&base, &token, "probe-stopped", json!({ "do": "loop" })).await;
            (answer, started.elapsed())
        })
    };
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(!looping.is_finished(), "the loop runs until stopped");
    cli.ok(&["plugin", "disable", "probe"]).await;
    let ((status, body), took) = looping.await.unwrap();
    assert!(
        body.to_string()
            .contains("was stopped while it ran: it was disabled while the call ran"),
        "{status}: {body}"
    );
    assert!(
        took < Duration::from_secs(15),
        "stopped {took:?} after it began, under a deadline of 60 s"
    );

    // Disabled by the CLI: the next request is refused, and nothing is stored.
    let (status, body) = provision_probe(&base, &token, "probe-four", reach.clone()).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert!(body.to_string().contains("`probe` is disabled"), "{body}");
    assert!(!cli.slugs().await.contains(&"probe-four".to_owned()));
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 1);

    // The call statistics agree between the CLI and the server, and survive a restart. The runs
    // above go on in the background (a compensation calls the plugin after the answer): only once
    // every one has ended is the count final.
    runs_ended(&cli).await;
    let calls = agreed_calls(&cli, &base, &token).await;
    let (status, _) = server.terminate().await;
    assert!(status.success());
    let mut server = serve();
    let base = server.base_url().await;
    assert_eq!(agreed_calls(&cli, &base, &token).await, calls);
    server.terminate().await;
    cli.finish().await;
}

// ---------------------------------------------------------------------------------------------
// The CLI reads the platform's configuration and never rewrites it

/// The platform tenant as `tenant show` prints it, without its status history (read-only).
async fn platform_tenant(cli: &Cli) -> Value {
    let mut shown = cli.json(&["tenant", "show", "admin"]).await;
    if let Some(object) = shown.as_object_mut() {
        object.remove("history");
    }
    shown
}

async fn commands_never_rewrite_the_platform_tenant_only_migrate_applies_admin_tenant(
    backend: Backend,
) {
    let mut cli = Cli::new(backend).await;
    // The server's settings, applied by `migrate` (as by `serve`), the database URI under the
    // name the API also accepts.
    cli.set_env(
        "TENANTRY_ADMIN_TENANT__SCOPES",
        "openid,profile,email,groups",
    );
    cli.set_env(
        "TENANTRY_ADMIN_TENANT__DB_SQLALCHEMY_URI",
        "postgresql://reporter:s3cret-pw@db.example:5432/platform",
    );
    cli.ok(&["migrate"]).await;
    let admin = platform_tenant(&cli).await;
    assert_eq!(
        admin["scopes"],
        json!(["openid", "profile", "email", "groups"]),
        "{admin}"
    );
    assert_eq!(admin["db_uri"]["set"], true, "{admin}");
    assert!(!admin.to_string().contains("s3cret-pw"));
    let audit = cli.audit().await;

    // Another operator's shell: other scopes, and a client secret without its client id.
    cli.env
        .retain(|(k, _)| k != "TENANTRY_ADMIN_TENANT__DB_SQLALCHEMY_URI");
    cli.set_env("TENANTRY_ADMIN_TENANT__SCOPES", "openid");
    cli.set_env("TENANTRY_ADMIN_TENANT__CLIENT_SECRET", "not-the-servers");
    for command in [
        &["template", "list"][..],
        &["tenant", "list"],
        &["audit", "list"],
        &["plugin", "list"],
        &["admin", "token", "list"],
    ] {
        cli.ok(command).await;
    }
    assert_eq!(
        platform_tenant(&cli).await,
        admin,
        "the platform tenant changed"
    );
    assert_eq!(
        cli.audit().await,
        audit,
        "a read-only command wrote to the audit log"
    );
    // Actions that write other things leave the platform tenant alone too.
    cli.ok(&["tenant", "create", "--slug", "acme", "--name", "Acme"])
        .await;
    assert_eq!(platform_tenant(&cli).await, admin);
    assert_eq!(cli.audit().await.len(), audit.len() + 1);

    // `migrate` applies the configuration: refused whole, naming the field and where to fix it.
    let line = cli.fails(&["migrate"]).await;
    assert!(
        line.contains("admin_tenant configuration is invalid")
            && line.contains("client_id")
            && line.contains("TENANTRY_ADMIN_TENANT__"),
        "{line}"
    );
    assert!(!line.contains("not-the-servers"), "{line}");
    assert_eq!(platform_tenant(&cli).await, admin);
    // Both names of the database URI at once: refused before anything is read.
    cli.set_env("TENANTRY_ADMIN_TENANT__CLIENT_ID", "platform-client");
    cli.set_env(
        "TENANTRY_ADMIN_TENANT__DB_URI",
        "postgresql://a@db.example/x",
    );
    cli.set_env(
        "TENANTRY_ADMIN_TENANT__DB_SQLALCHEMY_URI",
        "postgresql://b@db.example/x",
    );
    let line = cli.fails(&["migrate"]).await;
    assert!(
        line.contains("db_uri or db_sqlalchemy_uri, not both"),
        "{line}"
    );
    cli.finish().await;
}

async fn an_action_without_user_is_audited_as_the_account_of_the_uid(backend: Backend) {
    let cli = Cli::new(backend).await;
    let mut command = cli.command(&["tenant", "create", "--slug", "acme", "--name", "Acme"]);
    command.env_remove("USER");
    let run = run_command(command, None).await;
    assert!(run.status.success(), "{run:#?}");
    let account = whoami::username().expect("the uid's account");
    let created = cli
        .audit()
        .await
        .into_iter()
        .find(|r| r["action"] == "tenant.create" && r["tenant"] == "acme")
        .expect("the creation is audited");
    assert_eq!(created["actor"], format!("cli:{account}"));
    assert_ne!(created["actor"], "cli:unknown");
    cli.finish().await;
}

#[tokio::test]
async fn output_into_a_closed_pipe_ends_quietly_without_a_panic() {
    let dir = tempfile::tempdir().expect("temp dir");
    for args in [&["tenant", "list"][..], &["openapi"]] {
        let mut command = bare_command(dir.path());
        command.args(args).env("TENANTRY_DATA_DIR", dir.path());
        let mut child = command.spawn().expect("start tenantry");
        // The reader goes away before the command has written anything (`tenantry … | head`
        // once head has its lines).
        drop(child.stdout.take());
        let output = tokio::time::timeout(COMMAND_TIMEOUT, child.wait_with_output())
            .await
            .expect("tenantry finishes in time")
            .expect("wait for tenantry");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            !stderr.contains("panicked") && !stderr.contains("RUST_BACKTRACE"),
            "tenantry {args:?} panicked: {stderr}"
        );
        assert!(output.status.success(), "tenantry {args:?}: {stderr}");
    }
}

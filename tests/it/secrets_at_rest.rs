//! Secrets never reach the database in plaintext, nor any log line: the real binary is run with
//! debug logging, fed secrets through the API, and its output and database are searched.

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use crate::common::{Backend, TestDatabase};
use diesel::QueryableByName;
use diesel::sql_types::Text;
use diesel_async::{AsyncConnection, AsyncPgConnection, RunQueryDsl};
use serde_json::json;

backend_tests!(no_plaintext_secret_in_the_database_or_any_log_line);

const CLIENT_SECRET: &str = "cs-Plaintext-7f3a9c";
const ROTATED_SECRET: &str = "cs-Rotated-4b8e21";
const DB_PASSWORD: &str = "dbpw-Plaintext-91d2";
const ADMIN_PASSWORD: &str = "admin-Plaintext-55e0c";

fn tenantry(dir: &std::path::Path, database_url: &str) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_tenantry"));
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TENANTRY_DATA_DIR", dir)
        .env("DATABASE_URL", database_url)
        .env("TENANTRY_LOG_LEVEL", "debug")
        .env("TENANTRY_BOOTSTRAP_ADMIN_PASSWORD", ADMIN_PASSWORD)
        .current_dir(dir);
    cmd
}

struct Server(Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(QueryableByName)]
struct RowText {
    #[diesel(sql_type = Text)]
    row: String,
}

async fn postgres_contents(url: &str) -> String {
    let mut conn = AsyncPgConnection::establish(url).await.expect("connect");
    let mut all = String::new();
    for table in [
        "tenants",
        "tenant_status_history",
        "audit_log",
        "audit_head",
        "admin_users",
        "api_keys",
        "sessions",
    ] {
        let rows: Vec<RowText> =
            diesel::sql_query(format!("SELECT CAST(t AS TEXT) AS row FROM {table} t"))
                .load(&mut conn)
                .await
                .expect("dump table");
        for r in rows {
            all.push_str(&r.row);
            all.push('\n');
        }
    }
    all
}

async fn no_plaintext_secret_in_the_database_or_any_log_line(backend: Backend) {
    let dir = tempfile::tempdir().unwrap();
    let database = TestDatabase::create(backend, dir.path()).await;

    let output = tenantry(dir.path(), &database.url)
        .args([
            "admin", "token", "create", "--name", "probe", "--output", "json",
        ])
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let token: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    let token = token["token"].as_str().unwrap().to_owned();
    let token_secret = token.rsplit('_').next().unwrap().to_owned();

    let log_path = dir.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut child = tenantry(dir.path(), &database.url)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let server = Server(child);
    let mut lines = BufReader::new(stdout).lines();
    let first = lines
        .next()
        .expect("serve prints where it listens")
        .unwrap();
    let base = first
        .split("listening on ")
        .nth(1)
        .expect("listening line")
        .trim()
        .to_owned();
    let stdout_rest =
        std::thread::spawn(move || lines.map_while(Result::ok).collect::<Vec<_>>().join("\n"));

    let client = reqwest::Client::new();
    let created = client
        .post(format!("{base}/api/v1/tenant"))
        .bearer_auth(&token)
        .json(&json!({
            "slug": "acme", "name": "Acme",
            "oauth_issuer": "https://acme.okta.com/oauth2/default", "client_id": "cid",
            "client_secret": CLIENT_SECRET,
            "db_uri": format!("postgresql://acme:{DB_PASSWORD}@db.example.com:5432/acme")
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    let body = created.text().await.unwrap();
    let patched = client
        .patch(format!("{base}/api/v1/tenant/acme"))
        .bearer_auth(&token)
        .json(&json!({ "client_secret": ROTATED_SECRET }))
        .send()
        .await
        .unwrap();
    assert_eq!(patched.status(), 200);
    // A refused request that carries a secret is not logged either.
    let refused = client
        .post(format!("{base}/api/v1/tenant"))
        .bearer_auth(&token)
        .json(&json!({ "slug": "Bad Slug", "name": "x", "client_secret": CLIENT_SECRET, "client_id": "c" }))
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 422);
    let refused_body = refused.text().await.unwrap();
    let login = client
        .post(format!("{base}/login"))
        .form(&[
            ("username", "admin"),
            ("password", ADMIN_PASSWORD),
            ("csrf", "x"),
        ])
        .send()
        .await
        .unwrap();
    assert!(
        login.status().is_client_error(),
        "a login without the CSRF cookie is refused"
    );

    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(server);
    let stdout = stdout_rest.join().unwrap();
    let logs = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        logs.contains("DEBUG") || logs.contains("INFO"),
        "the server did log: {logs}"
    );

    let database_contents = match backend {
        Backend::Sqlite => {
            let mut bytes = Vec::new();
            for suffix in ["", "-wal", "-shm"] {
                if let Ok(b) = std::fs::read(dir.path().join(format!("tenantry.db{suffix}"))) {
                    bytes.extend(b);
                }
            }
            String::from_utf8_lossy(&bytes).into_owned()
        }
        Backend::Postgres => postgres_contents(&database.url).await,
    };
    assert!(
        database_contents.contains("acme"),
        "the database was searched"
    );

    for secret in [
        CLIENT_SECRET,
        ROTATED_SECRET,
        DB_PASSWORD,
        ADMIN_PASSWORD,
        token_secret.as_str(),
    ] {
        assert!(
            !database_contents.contains(secret),
            "{secret} is in the database"
        );
        assert!(!logs.contains(secret), "{secret} is in the logs");
        assert!(!stdout.contains(secret), "{secret} is on stdout");
        assert!(
            !body.contains(secret) && !refused_body.contains(secret),
            "{secret} is in a response"
        );
    }
    database.drop_database().await;
}

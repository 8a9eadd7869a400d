//! Two real server processes (`tenantry serve`) on one PostgreSQL, each caching API keys,
//! sessions and tenants: a change made on one is refused by the other within a second, through
//! the change feed (`LISTEN/NOTIFY`).
//!
//! - a key revoked, a session ended and a tenant suspended on server A are refused by server B
//!   within 1 s, although B had them cached;
//! - a rotated key keeps working on B until its grace period ends, to the second;
//! - a change B cannot hear (its listener's connection is cut) is still honoured: B bypasses
//!   its caches until it listens again, and starts them empty;
//! - a plugin's host grant revoked on A binds B's calls of the plugin within a second, and binds
//!   B's very next call even when its notification is lost;
//! - a server whose listener answers but hears no notification (a transaction-pooling proxy
//!   between it and PostgreSQL, here a test double that drops them) is not live: it bypasses its
//!   caches, and every change made elsewhere binds it at once.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

use crate::common::process::{ServerProcess, SharedDatabase};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tenantry::audit::Actor;
use tenantry::auth::{self, Principal, Role, TenantScope};

struct Setup {
    shared: SharedDatabase,
    ctx: tenantry::context::Context,
    token: String,
    a: ServerProcess,
    b: ServerProcess,
}

async fn setup() -> Setup {
    let shared = SharedDatabase::create().await;
    let a = shared.server("a", &[]).await;
    let b = shared.server("b", &[]).await;
    Setup {
        ctx: shared.ctx.clone(),
        token: shared.token.clone(),
        shared,
        a,
        b,
    }
}

impl Setup {
    async fn admin(&self, method: reqwest::Method, path: &str, body: Value) -> Value {
        let response = reqwest::Client::new()
            .request(method, format!("{}{path}", self.a.base))
            .bearer_auth(&self.token)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert!(
            response.status().is_success(),
            "{path}: {}",
            response.status()
        );
        response.json().await.unwrap_or(Value::Null)
    }

    async fn new_key(&self, slug: &str, name: &str) -> (String, String) {
        let key = self
            .admin(
                reqwest::Method::POST,
                &format!("/api/v1/tenant/{slug}/api-keys"),
                json!({ "name": name }),
            )
            .await;
        (
            key["id"].as_str().unwrap().to_owned(),
            key["token"].as_str().unwrap().to_owned(),
        )
    }

    /// Installs the probe plugin through server A and grants it 127.0.0.1.
    async fn install_probe_granted(&self, http: &reqwest::Client) {
        let probe = std::fs::read(format!(
            "{}/probe.wasm",
            tenantry::plugin_host::builtins::BUILT_PLUGINS_WASM_DIR
        ))
        .unwrap();
        let installed = http
            .post(format!("{}/api/v1/plugin", self.a.base))
            .bearer_auth(&self.token)
            .header("content-type", "application/wasm")
            .body(probe)
            .send()
            .await
            .unwrap();
        assert_eq!(installed.status(), StatusCode::CREATED);
        self.admin(
            reqwest::Method::POST,
            "/api/v1/plugin/probe/grants",
            json!({ "kind": "host", "name": "127.0.0.1" }),
        )
        .await;
    }

    async fn shutdown(self) {
        self.a.kill().await;
        self.b.kill().await;
        drop(self.ctx);
        self.shared.database.drop_database().await;
    }
}

/// How a request on a server authenticates.
#[derive(Clone, Copy)]
enum Credential<'a> {
    Key(&'a str),
    Cookie(&'a str),
}

async fn get(server: &ServerProcess, path: &str, credential: Credential<'_>) -> StatusCode {
    let request = reqwest::Client::new().get(format!("{}{path}", server.base));
    let request = match credential {
        Credential::Key(token) => request.bearer_auth(token),
        Credential::Cookie(cookie) => {
            request.header("cookie", format!("tenantry_tenant_acme={cookie}"))
        }
    };
    request.send().await.unwrap().status()
}

/// Asks `server` until it answers `expected` (at most 3 s); how long that took.
async fn until(
    server: &ServerProcess,
    credential: Credential<'_>,
    expected: StatusCode,
) -> Duration {
    let started = Instant::now();
    loop {
        let status = get(server, "/api/v1/tenant/acme", credential).await;
        if status == expected {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(3),
            "still {status} after 3 s, expected {expected}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `server`'s count of cache lookups of `cache` with `result`.
async fn lookups(server: &ServerProcess, cache: &str, result: &str) -> u64 {
    let text = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let series = format!("tenantry_cache_lookups_total{{cache=\"{cache}\",result=\"{result}\"}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&series))
        .map_or(0, |n| n.trim().parse().unwrap())
}

async fn metric(server: &ServerProcess, name: &str) -> Option<String> {
    let text = reqwest::get(format!("{}/metrics", server.base))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{name} ")).map(str::to_owned))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_revoked_a_session_ended_and_a_tenant_suspended_on_one_server_are_refused_by_the_other_within_a_second()
 {
    let setup = setup().await;
    let tenant = setup
        .admin(
            reqwest::Method::POST,
            "/api/v1/tenant",
            json!({ "slug": "acme", "name": "Acme", "tier": "enterprise" }),
        )
        .await;
    let (key_id, key) = setup.new_key("acme", "revoked").await;
    let (_, other_key) = setup.new_key("acme", "kept").await;
    let scope = TenantScope {
        id: tenant["id"].as_str().unwrap().to_owned(),
        slug: "acme".into(),
    };
    let user = Principal {
        name: "user:acme/alice@acme.example".into(),
        role: Role::Member,
        tenant: Some(scope),
        key: None,
    };
    let (cookie, session) =
        auth::start_session(&setup.ctx, &user, &Actor::system(), None, None, None)
            .await
            .unwrap();

    // B has them cached: a repeated request is a hit. (A row loaded while a change made on A
    // is still on its way to B is not kept, so the first rounds may all be misses.)
    let warming = Instant::now();
    loop {
        for credential in [
            Credential::Key(&key),
            Credential::Key(&other_key),
            Credential::Cookie(&cookie),
        ] {
            for _ in 0..2 {
                assert_eq!(
                    get(&setup.b, "/api/v1/tenant/acme", credential).await,
                    StatusCode::OK
                );
            }
        }
        if lookups(&setup.b, "key", "hit").await >= 2
            && lookups(&setup.b, "session", "hit").await >= 1
            && lookups(&setup.b, "tenant", "hit").await >= 3
        {
            break;
        }
        assert!(
            warming.elapsed() < Duration::from_secs(3),
            "B does not keep what it loaded"
        );
    }

    // Revoked on A: refused by B within a second.
    setup
        .admin(
            reqwest::Method::DELETE,
            &format!("/api/v1/tenant/acme/api-keys/{key_id}"),
            Value::Null,
        )
        .await;
    let took = until(&setup.b, Credential::Key(&key), StatusCode::UNAUTHORIZED).await;
    assert!(
        took < Duration::from_secs(1),
        "the revoked key worked on B for {took:?}"
    );
    assert_eq!(
        get(&setup.b, "/api/v1/tenant/acme", Credential::Key(&other_key)).await,
        StatusCode::OK,
        "another key of the tenant is not touched"
    );

    // The session ended on A: B sends its user away within a second.
    setup
        .admin(
            reqwest::Method::DELETE,
            &format!("/api/v1/tenant/acme/sessions/{}", session.handle),
            Value::Null,
        )
        .await;
    let took = until(
        &setup.b,
        Credential::Cookie(&cookie),
        StatusCode::UNAUTHORIZED,
    )
    .await;
    assert!(
        took < Duration::from_secs(1),
        "the ended session worked on B for {took:?}"
    );

    // The tenant suspended on A: its keys get 403 on B within a second.
    setup
        .admin(
            reqwest::Method::POST,
            "/api/v1/tenant/acme/suspend",
            json!({ "reason": "unpaid invoice" }),
        )
        .await;
    let took = until(&setup.b, Credential::Key(&other_key), StatusCode::FORBIDDEN).await;
    assert!(
        took < Duration::from_secs(1),
        "the suspended tenant's key worked on B for {took:?}"
    );
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_works_on_the_other_server_until_its_grace_period_ends_to_the_second() {
    let setup = setup().await;
    setup
        .admin(
            reqwest::Method::POST,
            "/api/v1/tenant",
            json!({ "slug": "acme", "name": "Acme", "tier": "enterprise" }),
        )
        .await;
    let (key_id, key) = setup.new_key("acme", "rotated").await;
    assert_eq!(
        get(&setup.b, "/api/v1/tenant/acme", Credential::Key(&key)).await,
        StatusCode::OK
    );
    let rotated = setup
        .admin(
            reqwest::Method::POST,
            &format!("/api/v1/tenant/acme/api-keys/{key_id}/rotate"),
            json!({ "grace_minutes": 1 }),
        )
        .await;
    let new_key = rotated["token"].as_str().unwrap().to_owned();
    let grace_until = {
        let keys = reqwest::Client::new()
            .get(format!("{}/api/v1/tenant/acme/api-keys", setup.a.base))
            .bearer_auth(&setup.token)
            .send()
            .await
            .unwrap()
            .json::<Value>()
            .await
            .unwrap();
        let old = keys
            .as_array()
            .unwrap()
            .iter()
            .find(|k| k["id"] == key_id)
            .unwrap()
            .clone();
        chrono::DateTime::parse_from_rfc3339(old["expires_at"].as_str().unwrap())
            .unwrap()
            .with_timezone(&chrono::Utc)
    };
    assert_eq!(
        get(&setup.b, "/api/v1/tenant/acme", Credential::Key(&new_key)).await,
        StatusCode::OK
    );
    // Until a second before the grace period ends, the old key works on B…
    let before = grace_until - chrono::Duration::seconds(1);
    while chrono::Utc::now() < before {
        assert_eq!(
            get(&setup.b, "/api/v1/tenant/acme", Credential::Key(&key)).await,
            StatusCode::OK,
            "the old key stopped before its grace period ended ({grace_until})"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    // …and from a second after, it does not.
    let after = grace_until + chrono::Duration::seconds(1);
    tokio::time::sleep((after - chrono::Utc::now()).to_std().unwrap_or_default()).await;
    assert_eq!(
        get(&setup.b, "/api/v1/tenant/acme", Credential::Key(&key)).await,
        StatusCode::UNAUTHORIZED,
        "the old key worked past its grace period ({grace_until})"
    );
    assert_eq!(
        get(&setup.b, "/api/v1/tenant/acme", Credential::Key(&new_key)).await,
        StatusCode::OK
    );
    setup.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_whose_listener_is_cut_honours_the_changes_it_could_not_hear() {
    let setup = setup().await;
    setup
        .admin(
            reqwest::Method::POST,
            "/api/v1/tenant",
            json!({ "slug": "acme", "name": "Acme", "tier": "enterprise" }),
        )
        .await;
    let (key_id, key) = setup.new_key("acme", "cut").await;
    // B holds the key once a request is served from its cache (a read that overlapped a change
    // it heard is not kept, so the first reads may not be).
    let started = Instant::now();
    loop {
        let hits = lookups(&setup.b, "key", "hit").await;
        assert_eq!(
            get(&setup.b, "/api/v1/tenant/acme", Credential::Key(&key)).await,
            StatusCode::OK
        );
        if lookups(&setup.b, "key", "hit").await > hits {
            break;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B never served the key from its cache"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&setup.b, "tenantry_change_feed_live")
            .await
            .as_deref(),
        Some("1")
    );
    // The key revoked with the triggers off: a change whose notification was lost.
    let mut conn = setup.ctx.db.conn().await.unwrap();
    tenantry::with_conn!(conn, |c| {
        use diesel_async::{RunQueryDsl as _, SimpleAsyncConnection as _};
        c.batch_execute("SET session_replication_role = replica")
            .await
            .unwrap();
        diesel::sql_query("UPDATE api_keys SET revoked_at = now() WHERE id = $1")
            .bind::<diesel::sql_types::Text, _>(&key_id)
            .execute(c)
            .await
            .unwrap();
        c.batch_execute("SET session_replication_role = DEFAULT")
            .await
            .unwrap();
    });
    assert_eq!(
        get(&setup.b, "/api/v1/tenant/acme", Credential::Key(&key)).await,
        StatusCode::OK,
        "B did not hear it: it still holds the key's row"
    );
    // Its listener cut: B forgets what it holds, and the key is refused.
    let bypassed = lookups(&setup.b, "key", "bypass").await;
    tenantry::with_conn!(conn, |c| {
        use diesel_async::RunQueryDsl as _;
        diesel::sql_query(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE application_name = 'tenantry change listener' AND datname = current_database()",
        )
        .execute(c)
        .await
        .unwrap()
    });
    drop(conn);
    let took = until(&setup.b, Credential::Key(&key), StatusCode::UNAUTHORIZED).await;
    assert!(
        took < Duration::from_secs(2),
        "the lost change was honoured only after {took:?}"
    );
    // The listener comes back by itself, and the caches serve again.
    let started = Instant::now();
    while metric(&setup.b, "tenantry_change_feed_live")
        .await
        .as_deref()
        != Some("1")
    {
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "B's listener did not come back"
        );
        get(&setup.b, "/api/v1/tenant/acme", Credential::Key(&key)).await;
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let hits = lookups(&setup.b, "tenant", "hit").await;
    let (_, fresh) = setup.new_key("acme", "fresh").await;
    for _ in 0..2 {
        assert_eq!(
            get(&setup.b, "/api/v1/tenant/acme", Credential::Key(&fresh)).await,
            StatusCode::OK
        );
    }
    assert!(lookups(&setup.b, "tenant", "hit").await > hits);
    println!(
        "lost change honoured after {took:?}; requests that bypassed the cache meanwhile: {}",
        lookups(&setup.b, "key", "bypass").await - bypassed
    );
    setup.shutdown().await;
}

/// A local HTTP server counting the requests it gets: what a plugin reaches.
async fn counting_server() -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
    let hits = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hit", listener.local_addr().unwrap());
    let counter = hits.clone();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            tokio::spawn(async move {
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_grant_revoked_on_one_server_binds_the_others_calls_within_a_second() {
    let setup = setup().await;
    let http = reqwest::Client::new();
    setup.install_probe_granted(&http).await;
    let (url, hits) = counting_server().await;
    // The probe plugin reaches `url` while B plans a tenant into it.
    let provision = |slug: String| {
        let http = http.clone();
        let token = setup.token.clone();
        let base = setup.b.base.clone();
        let url = url.clone();
        async move {
            let response = http
                .post(format!("{base}/api/v1/tenant/provision"))
                .bearer_auth(token)
                .json(&json!({
                    "tenant": { "slug": slug, "name": format!("Tenant {slug}") },
                    "backends": { "probe": { "do": "http", "url": url } },
                }))
                .send()
                .await
                .unwrap();
            assert_eq!(response.status(), StatusCode::ACCEPTED);
        }
    };
    provision("probe-one".into()).await;
    provision("probe-two".into()).await;
    let reached = hits.load(std::sync::atomic::Ordering::SeqCst);
    assert_eq!(reached, 2, "granted: B's calls reach the host");

    let revoked_at = Instant::now();
    let response = http
        .delete(format!(
            "{}/api/v1/plugin/probe/grants/host/127.0.0.1",
            setup.a.base
        ))
        .bearer_auth(&setup.token)
        .send()
        .await
        .unwrap();
    assert!(response.status().is_success(), "{}", response.status());
    // Within a second, B's calls of the plugin no longer reach the host.
    let mut n = 0;
    loop {
        n += 1;
        let before = hits.load(std::sync::atomic::Ordering::SeqCst);
        provision(format!("probe-after-{n}")).await;
        if hits.load(std::sync::atomic::Ordering::SeqCst) == before {
            break;
        }
        assert!(
            revoked_at.elapsed() < Duration::from_secs(1),
            "B's calls still reached the host {:?} after the revoke",
            revoked_at.elapsed()
        );
    }
    let took = revoked_at.elapsed();
    assert!(took < Duration::from_secs(1), "{took:?}");
    for i in 0..3 {
        let before = hits.load(std::sync::atomic::Ordering::SeqCst);
        provision(format!("probe-later-{i}")).await;
        assert_eq!(
            hits.load(std::sync::atomic::Ordering::SeqCst),
            before,
            "revoked for good"
        );
    }
    setup.shutdown().await;
}

/// Runs `statements` on the shared database with the triggers off: changes whose
/// notifications are lost.
async fn unheard(ctx: &tenantry::context::Context, statements: &str) {
    let mut conn = ctx.db.conn().await.unwrap();
    let statements = format!(
        "SET session_replication_role = replica; {statements}; SET session_replication_role = DEFAULT"
    );
    tenantry::with_conn!(conn, |c| {
        use diesel_async::SimpleAsyncConnection as _;
        c.batch_execute(&statements).await.unwrap()
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plugin_grant_revoked_whose_notification_was_lost_binds_the_next_call() {
    let setup = setup().await;
    let http = reqwest::Client::new();
    setup.install_probe_granted(&http).await;
    let (url, hits) = counting_server().await;
    let provision = |slug: &str| {
        http.post(format!("{}/api/v1/tenant/provision", setup.b.base))
            .bearer_auth(&setup.token)
            .json(&json!({
                "tenant": { "slug": slug, "name": format!("Tenant {slug}") },
                "backends": { "probe": { "do": "http", "url": url } },
            }))
            .send()
    };
    for slug in ["probe-one", "probe-two"] {
        assert_eq!(
            provision(slug).await.unwrap().status(),
            StatusCode::ACCEPTED
        );
    }
    assert_eq!(hits.load(std::sync::atomic::Ordering::SeqCst), 2, "granted");
    assert_eq!(
        metric(&setup.b, "tenantry_change_feed_live")
            .await
            .as_deref(),
        Some("1"),
        "B hears changes: its caches are trusted"
    );

    // Revoked as the store does it (the grant gone, the revision bumped), with no
    // notification: B's very next call must not reach the host.
    unheard(
        &setup.ctx,
        "DELETE FROM plugin_grants WHERE plugin = 'probe' AND kind = 'host'; \
         UPDATE plugins SET revision = revision + 1 WHERE name = 'probe'",
    )
    .await;
    assert_eq!(
        provision("probe-after").await.unwrap().status(),
        StatusCode::ACCEPTED
    );
    assert_eq!(
        hits.load(std::sync::atomic::Ordering::SeqCst),
        2,
        "B's next call still reached the host after the revoke"
    );
    setup.shutdown().await;
}

/// A test double of a transaction-pooling proxy (PgBouncer) as the change feed meets it: it
/// passes everything between a server and PostgreSQL both ways except the notifications
/// PostgreSQL sends (`NotificationResponse`, message type `A`), which it drops. `LISTEN`
/// succeeds and every query is answered, yet no notification ever arrives. The port it
/// listens on.
async fn notification_dropping_proxy(upstream: String) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((client, _)) = listener.accept().await {
            let upstream = upstream.clone();
            tokio::spawn(async move {
                let Ok(server) = tokio::net::TcpStream::connect(&upstream).await else {
                    return;
                };
                let _ = client.set_nodelay(true);
                let _ = server.set_nodelay(true);
                let (mut from_client, mut to_client) = client.into_split();
                let (mut from_server, mut to_server) = server.into_split();
                let up = tokio::io::copy(&mut from_client, &mut to_server);
                // Server to client: typed messages (the client asks for no TLS, so there is
                // no untyped answer to an SSLRequest): a type byte and a length that counts
                // itself.
                let down = async move {
                    let mut head = [0u8; 5];
                    while from_server.read_exact(&mut head).await.is_ok() {
                        let length = u32::from_be_bytes(head[1..].try_into().unwrap()) as usize;
                        let mut message = head.to_vec();
                        message.resize(1 + length, 0);
                        if from_server.read_exact(&mut message[5..]).await.is_err() {
                            break;
                        }
                        if head[0] != b'A' && to_client.write_all(&message).await.is_err() {
                            break;
                        }
                    }
                    let _ = to_client.shutdown().await;
                };
                tokio::select! {
                    _ = up => {}
                    _ = down => {}
                }
            });
        }
    });
    port
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_that_hears_no_notifications_is_not_live_and_every_change_binds_it_at_once() {
    let shared = SharedDatabase::create().await;
    let a = shared.server("a", &[]).await;
    let direct = url::Url::parse(&shared.database.url).unwrap();
    let upstream = format!(
        "{}:{}",
        direct.host_str().unwrap(),
        direct.port().unwrap_or(5432)
    );
    let mut proxied = direct.clone();
    proxied.set_host(Some("127.0.0.1")).unwrap();
    proxied
        .set_port(Some(notification_dropping_proxy(upstream).await))
        .unwrap();
    proxied.query_pairs_mut().append_pair("sslmode", "disable");
    let b = ServerProcess::start(
        proxied.as_str(),
        &shared.master_key,
        &shared.dir.path().join("b"),
        &[],
    )
    .await;
    let setup = Setup {
        ctx: shared.ctx.clone(),
        token: shared.token.clone(),
        shared,
        a,
        b,
    };
    setup
        .admin(
            reqwest::Method::POST,
            "/api/v1/tenant",
            json!({ "slug": "acme", "name": "Acme", "tier": "enterprise" }),
        )
        .await;
    let (key_id, key) = setup.new_key("acme", "unheard").await;
    // B's listener connected, its LISTEN succeeded and it is answered, but none of its
    // heartbeats arrives: past the heartbeat deadline (3 s) it is not live.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let bypassed = lookups(&setup.b, "key", "bypass").await;
    for _ in 0..2 {
        assert_eq!(
            get(&setup.b, "/api/v1/tenant/acme", Credential::Key(&key)).await,
            StatusCode::OK
        );
    }
    assert_eq!(
        metric(&setup.b, "tenantry_change_feed_live")
            .await
            .as_deref(),
        Some("0"),
        "a listener that hears nothing is not live"
    );
    assert!(
        lookups(&setup.b, "key", "bypass").await >= bypassed + 2,
        "B's key cache is bypassed"
    );
    // Revoked on A (its notification never reaches B): refused by B at once.
    setup
        .admin(
            reqwest::Method::DELETE,
            &format!("/api/v1/tenant/acme/api-keys/{key_id}"),
            Value::Null,
        )
        .await;
    assert_eq!(
        get(&setup.b, "/api/v1/tenant/acme", Credential::Key(&key)).await,
        StatusCode::UNAUTHORIZED,
        "B still honoured a key revoked on A"
    );
    setup.shutdown().await;
}

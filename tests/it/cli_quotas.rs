//! Quotas and usage from the command line, with the real binary against SQLite and PostgreSQL.

use crate::common;

use crate::common::Backend;
use crate::common::cli::Cli;
use serde_json::Value;

backend_tests!(
    quotas_and_usage_from_the_cli,
    alerts_and_webhooks_from_the_cli
);

fn quota<'a>(list: &'a Value, metric: &str) -> &'a Value {
    list.as_array()
        .expect("a list")
        .iter()
        .find(|q| q["metric"] == metric)
        .unwrap_or_else(|| panic!("no {metric} in {list}"))
}

async fn quotas_and_usage_from_the_cli(backend: Backend) {
    let cli = Cli::new(backend).await;
    cli.ok(&["tenant", "create", "--slug", "acme", "--name", "Acme"])
        .await;

    let set = cli
        .json(&[
            "tenant",
            "quota",
            "set",
            "acme",
            "--limit",
            "agents=3",
            "--limit",
            "llm_tokens_per_day=100",
            "--soft",
            "storage_gb",
        ])
        .await;
    assert_eq!(quota(&set, "agents")["limit"], 3);
    assert_eq!(quota(&set, "storage_gb")["hard"], false);
    assert_eq!(
        quota(&set, "storage_gb")["limit"],
        1,
        "the tier's limit, made soft"
    );

    let counted = cli
        .json(&[
            "usage",
            "report",
            "acme",
            "--metric",
            "llm_tokens_per_day",
            "--increment",
            "60",
            "--id",
            "e1",
        ])
        .await;
    assert_eq!(counted["counted"], 1);
    let again = cli
        .json(&[
            "usage",
            "report",
            "acme",
            "--metric",
            "llm_tokens_per_day",
            "--increment",
            "60",
            "--id",
            "e1",
        ])
        .await;
    assert_eq!(again["duplicates"], 1);
    // Past the hard limit: refused, one line naming the metric and the limit.
    let refused = cli
        .run(&[
            "usage",
            "report",
            "acme",
            "--metric",
            "llm_tokens_per_day",
            "--increment",
            "50",
            "--id",
            "e2",
        ])
        .await;
    assert!(!refused.ok, "{}", refused.stdout);
    assert!(
        refused.stderr.contains("llm_tokens_per_day") && refused.stderr.contains("limit of 100"),
        "{}",
        refused.stderr
    );
    // A gauge takes a value, not an increment.
    let wrong = cli
        .run(&[
            "usage",
            "report",
            "acme",
            "--metric",
            "agents",
            "--increment",
            "1",
            "--id",
            "g",
        ])
        .await;
    assert!(!wrong.ok);
    assert!(wrong.stderr.contains("value"), "{}", wrong.stderr);

    let summary = cli.json(&["tenant", "usage", "acme"]).await;
    assert_eq!(summary["tier"], "free");
    assert_eq!(quota(&summary["metrics"], "llm_tokens_per_day")["used"], 60);
    let text = cli.ok(&["tenant", "usage", "acme"]).await;
    let line = text
        .lines()
        .find(|l| l.starts_with("llm_tokens_per_day"))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("60") && line.contains("100"), "{line}");

    let cleared = cli
        .json(&[
            "tenant",
            "quota",
            "set",
            "acme",
            "--limit",
            "agents=default",
        ])
        .await;
    assert_eq!(quota(&cleared, "agents")["limit"], 10);
    let bad = cli
        .run(&["tenant", "quota", "set", "acme", "--limit", "widgets=5"])
        .await;
    assert!(!bad.ok);
    assert!(
        bad.stderr.contains("`widgets` is not a metric"),
        "{}",
        bad.stderr
    );
    let shown = cli.json(&["tenant", "quota", "show", "acme"]).await;
    assert_eq!(quota(&shown, "llm_tokens_per_day")["limit"], 100);

    // A policy's decision on the tenant's real usage, or on usage given in a file; nothing
    // changes.
    let decision = cli
        .json(&[
            "plugin",
            "call",
            "tier-quota",
            "evaluate",
            "--tenant",
            "acme",
        ])
        .await;
    assert_eq!(
        quota(&decision["metrics"], "llm_tokens_per_day")["used"],
        60
    );
    assert_eq!(
        quota(&decision["metrics"], "llm_tokens_per_day")["limit"],
        100
    );
    assert_eq!(decision["allowed"], true);
    let usage = cli.file("usage.json", r#"{"agents": 10}"#);
    let decision = cli
        .json(&[
            "plugin",
            "call",
            "tier-quota",
            "evaluate",
            "--tenant",
            "acme",
            "--usage",
            usage.to_str().unwrap(),
        ])
        .await;
    assert_eq!(quota(&decision["metrics"], "agents")["severity"], "blocked");
    assert_eq!(decision["allowed"], false);
    let text = cli
        .ok(&[
            "plugin",
            "call",
            "tier-quota",
            "evaluate",
            "--tenant",
            "acme",
        ])
        .await;
    assert!(text.starts_with("tier-quota on acme: allowed"), "{text}");
    let plugin = cli.json(&["plugin", "inspect", "tier-quota"]).await;
    assert!(
        plugin["stats"]["calls"].as_u64().unwrap() >= 3,
        "the calls count like the server's: {plugin}"
    );
    let policy = cli.json(&["tenant", "quota", "policy", "acme"]).await;
    assert_eq!(policy["policy"], "tier-quota");
    let wrong = cli
        .run(&[
            "tenant",
            "quota",
            "policy",
            "acme",
            "--use",
            "template-renderer",
        ])
        .await;
    assert!(!wrong.ok);
    assert!(
        wrong.stderr.contains("not a quota policy"),
        "{}",
        wrong.stderr
    );
}

async fn alerts_and_webhooks_from_the_cli(backend: Backend) {
    let cli = Cli::new(backend).await;
    cli.ok(&["tenant", "create", "--slug", "acme", "--name", "Acme"])
        .await;
    // Nothing listens on port 9: the delivery stays pending in the outbox.
    let hook = cli
        .json(&[
            "webhook",
            "add",
            "http://127.0.0.1:9/hooks",
            "--event",
            "alert.raised",
            "--description",
            "pager",
        ])
        .await;
    let id = hook["id"].as_str().unwrap().to_owned();
    assert!(hook["secret"].as_str().unwrap().starts_with("whsec_"));
    let bad = cli
        .run(&[
            "webhook",
            "add",
            "http://127.0.0.1:9/h",
            "--event",
            "everything",
        ])
        .await;
    assert!(!bad.ok);
    assert!(bad.stderr.contains("events[0]"), "{}", bad.stderr);

    // 9 of the free tier's 10 agents, evaluated as a server's evaluator does.
    cli.ok(&[
        "usage", "report", "acme", "--metric", "agents", "--value", "9", "--id", "a1",
    ])
    .await;
    let mut config = common::test_config(cli.dir.path(), &cli.database.url);
    config.master_key = Some(cli.master_key.clone());
    let (ctx, _) = tenantry::app::open(config).await.expect("opens");
    let tenant = tenantry::tenants::get(&ctx, "acme").await.unwrap();
    let changes = tenantry::alerts::evaluate::evaluate_tenant(&ctx, &tenant)
        .await
        .unwrap();
    assert_eq!(changes.raised.len(), 1, "{changes:?}");

    let listed = cli.json(&["alerts", "list"]).await;
    let alert = &listed["items"][0];
    assert_eq!(alert["tenant"], "acme");
    assert_eq!(alert["kind"], "quota");
    assert_eq!(alert["subject"], "agents");
    assert_eq!(alert["severity"], "warning");
    let text = cli.ok(&["alerts", "list", "--tenant", "acme"]).await;
    assert!(text.starts_with("RAISED"), "{text}");
    assert!(
        text.contains("acme") && text.contains("warning") && text.contains("9 of its 10 agents"),
        "{text}"
    );
    let none = cli.ok(&["alerts", "list", "--status", "resolved"]).await;
    assert_eq!(none.trim(), "no alerts");
    let bad = cli.run(&["alerts", "list", "--severity", "loud"]).await;
    assert!(!bad.ok);
    assert!(bad.stderr.contains("severity"), "{}", bad.stderr);

    // The raise waits in the outbox for a server to deliver it.
    let deliveries = cli.json(&["webhook", "deliveries", &id]).await;
    assert_eq!(deliveries["items"].as_array().unwrap().len(), 1);
    assert_eq!(deliveries["items"][0]["event_type"], "alert.raised");
    assert_eq!(deliveries["items"][0]["status"], "pending");
    let list = cli.ok(&["webhook", "list"]).await;
    assert!(list.contains("1 pending, 0 delivered, 0 failed"), "{list}");
    assert!(!list.contains("whsec_"), "the secret is shown once");
    cli.ok(&["webhook", "remove", &id]).await;
    assert_eq!(cli.json(&["webhook", "list"]).await, serde_json::json!([]));
}

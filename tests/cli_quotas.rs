//! Quotas and usage from the command line, with the real binary against SQLite and PostgreSQL.

mod common;

use common::Backend;
use common::cli::Cli;
use serde_json::Value;

backend_tests!(quotas_and_usage_from_the_cli);

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

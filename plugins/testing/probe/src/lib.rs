//! A test plugin whose `plan` does what the request asks, to test the host's sandbox:
//! `{"do": "loop"}`, `"grow-memory"`, `"trap"`, `"panic"`, `"read-file"`, `"env"`, `"socket"`,
//! `"http"` (with `"url"` and `"headers"`), `"sleep"` (with `"ms"`: WASI's clock),
//! `"slow-apply"` (one step whose apply sleeps `"sleep_ms"` or waits on `"url"`), `"many-steps"` (with `"steps"`), `"big-input"` (one step of `"bytes"`), `"secret"` (with `"name"`), `"state"` (with `"value"`: stores it,
//! reads it back after a pause, and reports every key it sees), `"print"` (writes to stdout), `"log"` (logs `"message"`).
//! The answer is a single step whose input is a JSON report. `apply` answers a step whose input
//! is `{"output_bytes": N}` with an output of N bytes; `export-tenant` of a tenant `export-N`
//! hands over N bytes.

use std::io::Write as _;

use tenantry_plugin_sdk::provisioner::{
    BundlePart, Measurement, Outcome, PluginError, PluginInfo, Provisioner, Step, Tenant,
};
use tenantry_plugin_sdk::{http, log, secrets, state};

struct Probe;

fn report(value: serde_json::Value) -> Result<Vec<Step>, PluginError> {
    Ok(vec![Step {
        id: "report".into(),
        description: "what the probe saw".into(),
        input: value.to_string(),
    }])
}

impl Provisioner for Probe {
    fn describe() -> PluginInfo {
        PluginInfo {
            name: "probe".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            description: "sandbox test plugin".into(),
        }
    }

    /// For a tenant whose slug is `measure-N`: N measurements (`m0`, `m1`…), to test the cap.
    fn measure(
        tenant: Tenant,
        _applied: Vec<(Step, Outcome)>,
    ) -> Result<Vec<Measurement>, PluginError> {
        let n = tenant
            .slug
            .strip_prefix("measure-")
            .and_then(|n| n.parse::<usize>().ok())
            .unwrap_or(0);
        Ok((0..n)
            .map(|i| Measurement {
                metric: format!("m{i}"),
                value: 1.0,
            })
            .collect())
    }

    /// Applies a step whose input is `{"output_bytes": N}` with an output of about N bytes, to
    /// test the cap on outcomes; one with `"sleep_ms"` sleeps first, one with `"url"` waits on
    /// that URL first (a slow host).
    fn apply(_tenant: Tenant, step: Step, _key: String) -> Result<Outcome, PluginError> {
        let input: serde_json::Value = serde_json::from_str(&step.input).unwrap_or_default();
        if let Some(ms) = input["sleep_ms"].as_u64() {
            std::thread::sleep(std::time::Duration::from_millis(ms));
        }
        if let Some(url) = input["url"].as_str() {
            http::send(&http::Request {
                method: "GET".into(),
                url: url.into(),
                headers: Vec::new(),
                body: None,
                timeout_ms: None,
            })
            .map_err(|e| PluginError::Transient(format!("{e:?}")))?;
        }
        let n = input["output_bytes"].as_u64().unwrap_or(2) as usize;
        Ok(Outcome {
            output: serde_json::json!({ "x": "x".repeat(n.saturating_sub(8)) }).to_string(),
            manual_follow_up: None,
        })
    }

    /// For a tenant whose slug is `export-N`: a bundle part of N bytes, to test the cap.
    fn export_tenant(
        tenant: Tenant,
        _applied: Vec<(Step, Outcome)>,
    ) -> Result<Option<BundlePart>, PluginError> {
        let n = tenant
            .slug
            .strip_prefix("export-")
            .and_then(|n| n.parse::<usize>().ok());
        Ok(n.map(|n| BundlePart {
            media_type: "application/octet-stream".into(),
            data: vec![7; n],
            instance_specific: Vec::new(),
        }))
    }

    fn plan(tenant: Tenant, request: String) -> Result<Vec<Step>, PluginError> {
        let request: serde_json::Value =
            serde_json::from_str(&request).map_err(|e| PluginError::Permanent(e.to_string()))?;
        // Through the provisioning API the instructions arrive as the probe's backend settings.
        let request = match request.get("do") {
            Some(_) => request,
            None => request["settings"].clone(),
        };
        let arg = |name: &str| request[name].as_str().unwrap_or_default().to_owned();
        match request["do"].as_str().unwrap_or_default() {
            "loop" => {
                let mut n: u64 = 0;
                loop {
                    n = n.wrapping_add(1);
                    std::hint::black_box(n);
                }
            }
            "grow-memory" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "trap" => {
                #[allow(unconditional_recursion)]
                fn deeper(n: u64) -> u64 {
                    std::hint::black_box(deeper(n + 1)) + 1
                }
                report(serde_json::json!({ "never": deeper(0) }))
            }
            "panic" => panic!("the probe panics on purpose"),
            "stack-overflow" => {
                // Large values on the stack: the compiler's stack in linear memory overflows
                // long before WebAssembly's own.
                #[allow(unconditional_recursion)]
                fn deeper(n: u64) -> u64 {
                    let frame = std::hint::black_box([n as u8; 8192]);
                    std::hint::black_box(deeper(n + 1)) + u64::from(frame[(n % 8192) as usize])
                }
                report(serde_json::json!({ "never": deeper(0) }))
            }
            "exit" => std::process::exit(3),
            "read-file" => {
                let result = std::fs::read_to_string("/etc/passwd");
                report(
                    serde_json::json!({ "read": result.is_ok(), "error": result.err().map(|e| e.to_string()) }),
                )
            }
            "env" => {
                let vars: Vec<String> = std::env::vars().map(|(k, _)| k).collect();
                let args: Vec<String> = std::env::args().collect();
                report(serde_json::json!({ "vars": vars, "args": args }))
            }
            "socket" => {
                let result = std::net::TcpStream::connect("127.0.0.1:5432");
                report(
                    serde_json::json!({ "connected": result.is_ok(), "error": result.err().map(|e| e.to_string()) }),
                )
            }
            "http" => match http::send(&http::Request {
                method: "GET".into(),
                url: arg("url"),
                // `"headers": {"name": "value"}`, sent as given.
                headers: request["headers"]
                    .as_object()
                    .map(|headers| {
                        headers
                            .iter()
                            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
                            .collect()
                    })
                    .unwrap_or_default(),
                body: None,
                timeout_ms: None,
            }) {
                Ok(response) => report(
                    serde_json::json!({ "status": response.status, "body": String::from_utf8_lossy(&response.body) }),
                ),
                Err(err) => report(serde_json::json!({ "error": format!("{err:?}") })),
            },
            "secret" => match secrets::get(&arg("name")) {
                Ok(value) => report(serde_json::json!({ "value": value })),
                Err(err) => report(serde_json::json!({ "error": err })),
            },
            "state" => {
                let value = arg("value");
                state::set("mine", value.as_bytes()).map_err(PluginError::Permanent)?;
                // Give other calls time to interleave.
                let until = std::time::Instant::now() + std::time::Duration::from_millis(20);
                while std::time::Instant::now() < until {
                    std::hint::spin_loop();
                }
                let read = state::get("mine").map(|v| String::from_utf8_lossy(&v).into_owned());
                report(
                    serde_json::json!({ "tenant": tenant.slug, "wrote": value, "read": read, "keys": state::keys() }),
                )
            }
            "log" => {
                log::info(&arg("message"));
                report(serde_json::json!({ "logged": true }))
            }
            "slow-apply" => Ok(vec![Step {
                id: "slow".into(),
                description: "a step whose apply sleeps or waits on a host".into(),
                input:
                    serde_json::json!({ "sleep_ms": request["sleep_ms"], "url": request["url"] })
                        .to_string(),
            }]),
            "many-steps" => {
                let n = request["steps"].as_u64().unwrap_or(1);
                Ok((0..n)
                    .map(|i| Step {
                        id: format!("s{i}"),
                        description: "one of many".into(),
                        input: "{}".into(),
                    })
                    .collect())
            }
            "big-input" => {
                let n = request["bytes"].as_u64().unwrap_or(1) as usize;
                Ok(vec![Step {
                    id: "big".into(),
                    description: "a big step".into(),
                    input: serde_json::json!({ "x": "x".repeat(n) }).to_string(),
                }])
            }
            "sleep" => {
                let ms = request["ms"].as_u64().unwrap_or(1000);
                std::thread::sleep(std::time::Duration::from_millis(ms));
                report(serde_json::json!({ "slept_ms": ms }))
            }
            "print" => {
                log::info("the probe logs a line");
                let mut out = std::io::stdout();
                for i in 0..10_000 {
                    let _ = writeln!(out, "stdout line {i} {}", "x".repeat(100));
                }
                let _ = writeln!(std::io::stderr(), "a line on stderr");
                report(serde_json::json!({ "printed": true }))
            }
            "println" => {
                // `println!` panics when a write fails: past the output cap, none must.
                for i in 0..2_000 {
                    println!("println line {i} {}", "y".repeat(100));
                }
                report(serde_json::json!({ "printed": true }))
            }
            other => Err(PluginError::Permanent(format!(
                "unknown probe action `{other}`"
            ))),
        }
    }
}

tenantry_plugin_sdk::register_provisioner!(Probe);

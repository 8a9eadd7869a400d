//! A small client of a real Apache Superset's REST API, for tests that check what the `superset`
//! plugin left there. Superset comes from `scripts/backends/up` (run by `scripts/test`), which sets
//! `SUPERSET_URL`, `SUPERSET_USERNAME` and `SUPERSET_PASSWORD`; without them a test fails, saying so.
//!
//! ```ignore
//! let superset = SupersetClient::from_env().await;
//! assert!(superset.database_named("tenantry-acme-primary").await.is_some());
//! ```

use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Superset's address and credentials from the environment; panics (never skips) without them.
pub fn env() -> (String, String, String) {
    let get = |name: &str| {
        std::env::var(name)
            .ok()
            .filter(|v| !v.is_empty())
            .unwrap_or_else(|| {
                panic!(
                    "{name} is not set: this test needs a real Apache Superset. Run it through \
                 `scripts/test` (which starts one), or start one with `scripts/backends/up DIR \
                 superset` and export the lines of DIR/env (SUPERSET_URL, SUPERSET_USERNAME, \
                 SUPERSET_PASSWORD)"
                )
            })
    };
    (
        get("SUPERSET_URL").trim_end_matches('/').to_string(),
        get("SUPERSET_USERNAME"),
        get("SUPERSET_PASSWORD"),
    )
}

/// A logged-in session (bearer token, CSRF token and session cookie).
pub struct SupersetClient {
    pub url: String,
    pub username: String,
    pub password: String,
    http: reqwest::Client,
    token: String,
    csrf: String,
}

/// A rison string literal.
pub fn rison_string(value: &str) -> String {
    format!("'{}'", value.replace('!', "!!").replace('\'', "!'"))
}

impl SupersetClient {
    /// Logs in to the Superset of `SUPERSET_URL`.
    pub async fn from_env() -> SupersetClient {
        let (url, username, password) = env();
        SupersetClient::connect(&url, &username, &password).await
    }

    pub async fn connect(url: &str, username: &str, password: &str) -> SupersetClient {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .build()
            .expect("HTTP client");
        let login = http
            .post(format!("{url}/api/v1/security/login"))
            .json(&json!({"username": username, "password": password, "provider": "db", "refresh": true}))
            .send()
            .await
            .unwrap_or_else(|e| {
                panic!("Superset at {url} is not reachable ({e}): start it with scripts/backends/up")
            });
        assert_eq!(login.status(), StatusCode::OK, "Superset login at {url}");
        let token = login.json::<Value>().await.unwrap()["access_token"]
            .as_str()
            .expect("access_token")
            .to_string();
        let csrf = http
            .get(format!("{url}/api/v1/security/csrf_token/"))
            .bearer_auth(&token)
            .send()
            .await
            .expect("CSRF token")
            .json::<Value>()
            .await
            .unwrap()["result"]
            .as_str()
            .expect("CSRF token")
            .to_string();
        SupersetClient {
            url: url.to_string(),
            username: username.to_string(),
            password: password.to_string(),
            http,
            token,
            csrf,
        }
    }

    /// Any call; the body is `Null` when the answer is not JSON.
    pub async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        let mut request = self
            .http
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token)
            .header("X-CSRFToken", &self.csrf)
            .header("Referer", format!("{}/", self.url));
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("Superset answers");
        let status = response.status();
        let text = response.text().await.unwrap_or_default();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(Method::GET, path, None).await
    }

    /// Deletes `/api/v1/{resource}/{id}`.
    pub async fn delete(&self, resource: &str, id: i64) -> StatusCode {
        self.send(Method::DELETE, &format!("/api/v1/{resource}/{id}"), None)
            .await
            .0
    }

    /// The rows of `/api/v1/{resource}/` whose `column` equals `value` (rison filter `eq`).
    pub async fn list_where(&self, resource: &str, column: &str, value: &str) -> Vec<Value> {
        let q = format!(
            "(filters:!((col:{column},opr:eq,value:{})),page_size:100)",
            rison_string(value)
        );
        let q: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
        let (status, body) = self.get(&format!("/api/v1/{resource}/?q={q}")).await;
        assert_eq!(status, StatusCode::OK, "list {resource}: {body}");
        body["result"].as_array().cloned().unwrap_or_default()
    }

    async fn one(&self, resource: &str, column: &str, value: &str) -> Option<Value> {
        let rows: Vec<Value> = self
            .list_where(resource, column, value)
            .await
            .into_iter()
            .filter(|r| r[column].as_str().is_none_or(|v| v == value))
            .collect();
        assert!(
            rows.len() <= 1,
            "more than one {resource} with {column} = {value}: {rows:?}"
        );
        rows.into_iter().next()
    }

    /// The database connection named `name` (the list's row: `id`, `database_name`…).
    pub async fn database_named(&self, name: &str) -> Option<Value> {
        self.one("database", "database_name", name).await
    }

    /// How many database connections are named `name`.
    pub async fn databases_named(&self, name: &str) -> usize {
        self.list_where("database", "database_name", name)
            .await
            .len()
    }

    /// The role named `name` (`id`, `name`).
    pub async fn role_named(&self, name: &str) -> Option<Value> {
        self.one("security/roles", "name", name).await
    }

    /// The permissions of a role: `id`, `permission_name`, `view_menu_name`.
    pub async fn role_permissions(&self, role_id: i64) -> Vec<Value> {
        let (status, body) = self
            .get(&format!("/api/v1/security/roles/{role_id}/permissions/"))
            .await;
        assert_eq!(status, StatusCode::OK, "role permissions: {body}");
        body["result"].as_array().cloned().unwrap_or_default()
    }

    /// The row-level security filter named `name`, in full (`clause`, `roles`, `tables`…) with its
    /// `id`.
    pub async fn rls_named(&self, name: &str) -> Option<Value> {
        let row = self.one("rowlevelsecurity", "name", name).await?;
        let id = row["id"].as_i64().expect("id");
        let (status, mut body) = self.get(&format!("/api/v1/rowlevelsecurity/{id}")).await;
        assert_eq!(status, StatusCode::OK, "RLS filter {id}: {body}");
        body["result"]["id"] = json!(id);
        Some(body["result"].take())
    }

    /// The dashboard titled `title`.
    pub async fn dashboard_titled(&self, title: &str) -> Option<Value> {
        self.one("dashboard", "dashboard_title", title).await
    }

    /// The chart named `name`.
    pub async fn chart_named(&self, name: &str) -> Option<Value> {
        self.one("chart", "slice_name", name).await
    }

    /// The datasets of the database `database_id`.
    pub async fn datasets_of(&self, database_id: i64) -> Vec<Value> {
        let q =
            format!("(filters:!((col:database,opr:rel_o_m,value:{database_id})),page_size:100)");
        let q: String = url::form_urlencoded::byte_serialize(q.as_bytes()).collect();
        let (status, body) = self.get(&format!("/api/v1/dataset/?q={q}")).await;
        assert_eq!(status, StatusCode::OK, "datasets: {body}");
        body["result"].as_array().cloned().unwrap_or_default()
    }

    /// Deletes a database connection with its datasets (Superset refuses to delete a database that
    /// still has datasets).
    pub async fn delete_database(&self, name: &str) {
        let Some(db) = self.database_named(name).await else {
            return;
        };
        let id = db["id"].as_i64().expect("id");
        for dataset in self.datasets_of(id).await {
            let status = self
                .delete("dataset", dataset["id"].as_i64().unwrap())
                .await;
            assert_eq!(status, StatusCode::OK, "delete dataset");
        }
        assert_eq!(
            self.delete("database", id).await,
            StatusCode::OK,
            "delete database {name}"
        );
    }
}

/// An asset template as the host hands it over after rendering: a dataset on `orders`, a chart on
/// it and a dashboard with the chart, in the plugin's `--- file:` format.
pub fn asset_body(slug: &str) -> String {
    format!(
        r#"A dataset, a chart and a dashboard.
--- file: datasets/tenant/orders.yaml
table_name: orders
main_dttm_col: null
description: null
default_endpoint: null
offset: 0
cache_timeout: null
schema: public
sql: null
params: null
template_params: null
filter_select_enabled: true
fetch_values_predicate: null
extra: null
normalize_columns: false
always_filter_main_dttm: false
uuid: 0b1f3c52-2d6e-4c3a-9a57-0c7e1a2b3c4d
metrics:
- metric_name: count
  verbose_name: COUNT(*)
  metric_type: count
  expression: COUNT(*)
  description: null
  d3format: null
  extra: null
  warning_text: null
columns:
- column_name: id
  is_dttm: false
  is_active: true
  type: INTEGER
  groupby: true
  filterable: true
- column_name: tenant_id
  is_dttm: false
  is_active: true
  type: TEXT
  groupby: true
  filterable: true
version: 1.0.0
database_uuid: TENANTRY_DATABASE_UUID
--- file: charts/orders_count.yaml
slice_name: Orders of {slug}
description: null
certified_by: null
certification_details: null
viz_type: big_number_total
params:
  metric: count
  viz_type: big_number_total
query_context: null
cache_timeout: null
uuid: 1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f
version: 1.0.0
dataset_uuid: 0b1f3c52-2d6e-4c3a-9a57-0c7e1a2b3c4d
--- file: dashboards/sales.yaml
dashboard_title: Sales of {slug}
description: null
css: null
slug: null
published: true
uuid: 2d3e4f5a-6b7c-4d8e-9f0a-1b2c3d4e5f6a
position:
  DASHBOARD_VERSION_KEY: v2
  ROOT_ID:
    children:
    - GRID_ID
    id: ROOT_ID
    type: ROOT
  GRID_ID:
    children:
    - ROW-1
    id: GRID_ID
    parents:
    - ROOT_ID
    type: GRID
  ROW-1:
    children:
    - CHART-1
    id: ROW-1
    meta:
      background: BACKGROUND_TRANSPARENT
    type: ROW
    parents:
    - ROOT_ID
    - GRID_ID
  CHART-1:
    children: []
    id: CHART-1
    meta:
      chartId: 0
      height: 50
      sliceName: Orders of {slug}
      uuid: 1c2d3e4f-5a6b-4c7d-8e9f-0a1b2c3d4e5f
      width: 4
    type: CHART
    parents:
    - ROOT_ID
    - GRID_ID
    - ROW-1
metadata: {{}}
version: 1.0.0
"#
    )
}

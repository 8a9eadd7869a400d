//! Airflow's REST API (v2) and the Kubernetes API through the host, on the SDK's backend kit:
//! connection failures, timeouts, 5xx and 429 are `transient`; other 4xx are `permanent` with
//! the backend's own message. No message carries a secret: the granted secrets' values and the
//! passwords a call sends are hidden in every message built here.

use serde_json::{Value, json};
use tenantry_plugin_sdk::backend::uri::percent_encode;
use tenantry_plugin_sdk::backend::{self, Answer, Backend, Body, Redactor, permanent};
use tenantry_plugin_sdk::provisioner::PluginError;

const PLUGIN: &str = "airflow";

fn secret(name: &str) -> Result<String, PluginError> {
    backend::secret(PLUGIN, name)
}

/// What creating a resource did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Created {
    Created,
    /// 409: it was there already.
    Existed,
}

/// Airflow's REST API with a token obtained for this call.
pub struct Airflow {
    api: Backend,
}

impl Airflow {
    /// Reads the granted URL and credentials and gets a token (`POST /auth/token`). `hidden`
    /// holds values of the call's own that no message may show.
    pub fn connect(hidden: Redactor) -> Result<Airflow, PluginError> {
        let url = backend::setting(PLUGIN, "url", "airflow-url")?;
        let mut api = Backend::new("Airflow", PLUGIN, &url).require_http("url")?;
        *api.redactor_mut() = hidden;
        let username = backend::setting(PLUGIN, "username", "airflow-username")?;
        let password = secret("airflow-password")?;
        api.hide(&password);
        let what = "Airflow sign-in";
        let answer = api.json(
            "POST",
            "/auth/token",
            Some(&json!({"username": username, "password": password})),
            what,
        )?;
        match answer.status {
            200 | 201 => {}
            401 | 403 => {
                return Err(permanent(
                    "Airflow sign-in: the credentials airflow-username/airflow-password were refused",
                ));
            }
            _ => return Err(api.status_error(what, &answer)),
        }
        let token = answer.json()["access_token"]
            .as_str()
            .ok_or_else(|| permanent("Airflow sign-in: the answer has no access_token"))?
            .to_string();
        api.hide(&token);
        api.set_header("Authorization", &format!("Bearer {token}"));
        Ok(Airflow { api })
    }

    fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<&Value>,
        what: &str,
    ) -> Result<Answer, PluginError> {
        self.api
            .json(method, &format!("/api/v2/{path}"), body, what)
    }

    /// `total_entries` of a list (`GET /api/v2/{path}`, its query included).
    pub fn count(&self, path: &str, what: &str) -> Result<u64, PluginError> {
        let response = self.call("GET", path, None, what)?;
        if response.status != 200 {
            return Err(self.api.status_error(what, &response));
        }
        response.json()["total_entries"]
            .as_u64()
            .ok_or_else(|| permanent(format!("{what}: Airflow's answer has no total_entries")))
    }

    /// `GET /api/v2/{collection}/{name}`: the resource, or none (404).
    pub fn get(&self, collection: &str, name: &str) -> Result<Option<Value>, PluginError> {
        let what = format!("reading {} `{name}`", singular(collection));
        let response = self.call(
            "GET",
            &format!("{collection}/{}", percent_encode(name)),
            None,
            &what,
        )?;
        match response.status {
            200 => Ok(Some(response.json())),
            404 => Ok(None),
            _ => Err(self.api.status_error(&what, &response)),
        }
    }

    /// `POST /api/v2/{collection}`.
    pub fn create(
        &self,
        collection: &str,
        name: &str,
        body: &Value,
    ) -> Result<Created, PluginError> {
        let what = format!("creating {} `{name}`", singular(collection));
        let response = self.call("POST", collection, Some(body), &what)?;
        match response.status {
            200 | 201 => Ok(Created::Created),
            409 => Ok(Created::Existed),
            _ => Err(self.api.status_error(&what, &response)),
        }
    }

    /// `PATCH /api/v2/{collection}/{name}[?update_mask=…]`.
    pub fn patch(
        &self,
        collection: &str,
        name: &str,
        update_mask: Option<&str>,
        body: &Value,
    ) -> Result<Value, PluginError> {
        let what = format!("updating {} `{name}`", singular(collection));
        let mut path = format!("{collection}/{}", percent_encode(name));
        if let Some(mask) = update_mask {
            path.push_str(&format!("?update_mask={mask}"));
        }
        let response = self.call("PATCH", &path, Some(body), &what)?;
        match response.status {
            200 | 201 | 204 => Ok(response.json()),
            _ => Err(self.api.status_error(&what, &response)),
        }
    }

    /// `DELETE /api/v2/{collection}/{name}`: true when deleted, false when it was gone.
    pub fn delete(&self, collection: &str, name: &str) -> Result<bool, PluginError> {
        let what = format!("deleting {} `{name}`", singular(collection));
        let response = self.call(
            "DELETE",
            &format!("{collection}/{}", percent_encode(name)),
            None,
            &what,
        )?;
        match response.status {
            200 | 202 | 204 => Ok(true),
            404 => Ok(false),
            _ => Err(self.api.status_error(&what, &response)),
        }
    }
}

fn singular(collection: &str) -> &str {
    match collection {
        "pools" => "pool",
        "connections" => "connection",
        "variables" => "variable",
        other => other,
    }
}

/// The Kubernetes API, when the operator granted `kubernetes-url` (and its host).
pub struct Kubernetes {
    api: Backend,
}

impl Kubernetes {
    /// None when no Kubernetes API is configured.
    pub fn configured(hidden: Redactor) -> Option<Kubernetes> {
        let mut api = Backend::new(
            "Kubernetes",
            PLUGIN,
            &backend::optional_setting(PLUGIN, "kubernetes_url", "kubernetes-url")?,
        );
        *api.redactor_mut() = hidden;
        if let Some(token) = backend::optional_secret("kubernetes-token") {
            api.hide(&token);
            api.set_header("Authorization", &format!("Bearer {token}"));
        }
        Some(Kubernetes { api })
    }

    pub fn host(&self) -> String {
        self.api.host()
    }

    /// POSTs an object to its collection; 409 means it exists.
    pub fn create(
        &self,
        collection: &str,
        body: &Value,
        what: &str,
    ) -> Result<Created, PluginError> {
        let response = self.api.json("POST", collection, Some(body), what)?;
        match response.status {
            200..=202 => Ok(Created::Created),
            409 => Ok(Created::Existed),
            _ => Err(self.api.status_error(what, &response)),
        }
    }

    /// GETs an object: None when it does not exist.
    pub fn get(&self, path: &str, what: &str) -> Result<Option<Value>, PluginError> {
        let response = self.api.json("GET", path, None, what)?;
        match response.status {
            200 => Ok(Some(response.json())),
            404 => Ok(None),
            _ => Err(self.api.status_error(what, &response)),
        }
    }

    /// PATCHes an object with a JSON merge patch (RFC 7386), as `kubectl patch --type merge`.
    pub fn merge_patch(&self, path: &str, patch: &Value, what: &str) -> Result<(), PluginError> {
        let response = self.api.send(
            "PATCH",
            path,
            Body::Raw {
                content_type: "application/merge-patch+json",
                bytes: patch.to_string().into_bytes(),
            },
            what,
        )?;
        if response.is_success() {
            Ok(())
        } else {
            Err(self.api.status_error(what, &response))
        }
    }

    /// DELETEs an object: true when deleted, false when it was gone.
    pub fn delete(&self, path: &str, what: &str) -> Result<bool, PluginError> {
        let response = self.api.json("DELETE", path, None, what)?;
        match response.status {
            200 | 202 | 204 => Ok(true),
            404 => Ok(false),
            _ => Err(self.api.status_error(what, &response)),
        }
    }
}

/// Whether a permanent error is the host refusing a host that is not granted.
pub fn is_not_granted(message: &str) -> bool {
    message.contains("is not granted to the airflow plugin (tenantry plugin grant airflow --host")
}

//! A Kubernetes API **test double**: no Kubernetes cluster can run on the test machines, so
//! this tiny actix-web server on loopback stands in for the API server. It keeps the objects
//! POSTed to it and answers like the real API for what the `airflow` plugin does: `POST` to a
//! collection → 201 (409 `AlreadyExists` when the name is taken, 404 when the namespace does not
//! exist), `GET` of an object → 200/404, `PATCH` with a JSON merge patch (RFC 7386, content type
//! `application/merge-patch+json`; 415 for any other) → 200/404, `DELETE` → 200/404 (deleting a namespace deletes
//! everything in it, at once rather than after a `Terminating` phase), 401 without the expected
//! bearer token. It records every request.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::dev::ServerHandle;
use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

#[derive(Default)]
struct State {
    /// Object path (`<collection>/<name>`) → (kind, object).
    objects: BTreeMap<String, (String, Value)>,
    /// `METHOD path` of every request, in order.
    requests: Vec<String>,
}

pub struct KubeDouble {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    pub port: u16,
    state: Arc<Mutex<State>>,
    handle: ServerHandle,
}

fn status(code: u16, reason: &str, message: String) -> HttpResponse {
    HttpResponse::build(actix_web::http::StatusCode::from_u16(code).expect("a status"))
        .content_type("application/json")
        .body(
            json!({
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": message, "reason": reason, "code": code,
            })
            .to_string(),
        )
}

/// The namespace a path is in (`…/namespaces/<ns>/<collection>…`), if any.
fn namespace_of(path: &str) -> Option<&str> {
    let mut parts = path.split('/').skip_while(|p| *p != "namespaces").skip(1);
    let ns = parts.next()?;
    parts.next().map(|_| ns)
}

/// RFC 7386: objects merge key by key, `null` removes, anything else replaces.
fn merge(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = json!({});
    }
    let target = target.as_object_mut().expect("an object");
    for (key, value) in patch {
        if value.is_null() {
            target.remove(key);
        } else {
            merge(target.entry(key.clone()).or_insert(Value::Null), value);
        }
    }
}

async fn handle(
    req: HttpRequest,
    body: web::Bytes,
    data: web::Data<(Arc<Mutex<State>>, Option<String>)>,
) -> HttpResponse {
    let (state, token) = data.get_ref();
    let path = req.path().trim_end_matches('/').to_string();
    let method = req.method().as_str().to_string();
    let mut state = state.lock().expect("kube double state");
    state.requests.push(format!("{method} {path}"));
    if let Some(token) = token {
        let auth = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        if auth != Some(&format!("Bearer {token}")) {
            return status(401, "Unauthorized", "Unauthorized".into());
        }
    }
    match method.as_str() {
        "POST" => {
            let Ok(object) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "the body is not JSON".into());
            };
            let (Some(kind), Some(name)) = (
                object["kind"].as_str().map(str::to_string),
                object["metadata"]["name"].as_str().map(str::to_string),
            ) else {
                return status(422, "Invalid", "kind and metadata.name are required".into());
            };
            if let Some(ns) = namespace_of(&path) {
                if !state
                    .objects
                    .contains_key(&format!("/api/v1/namespaces/{ns}"))
                {
                    return status(404, "NotFound", format!("namespaces \"{ns}\" not found"));
                }
                if object["metadata"]["namespace"]
                    .as_str()
                    .is_some_and(|n| n != ns)
                {
                    return status(
                        400,
                        "BadRequest",
                        "the namespace of the provided object does not match the namespace sent on the request".into(),
                    );
                }
            }
            let key = format!("{path}/{name}");
            if state.objects.contains_key(&key) {
                return status(
                    409,
                    "AlreadyExists",
                    format!("{} \"{name}\" already exists", kind.to_lowercase()),
                );
            }
            state.objects.insert(key, (kind, object.clone()));
            HttpResponse::Created()
                .content_type("application/json")
                .body(object.to_string())
        }
        "GET" => match state.objects.get(&path) {
            Some((_, object)) => HttpResponse::Ok()
                .content_type("application/json")
                .body(object.to_string()),
            None => status(404, "NotFound", format!("{path} not found")),
        },
        "PATCH" => {
            let content_type = req
                .headers()
                .get("content-type")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default();
            if content_type != "application/merge-patch+json" {
                return status(
                    415,
                    "UnsupportedMediaType",
                    format!("the body of the request was in an unknown format: {content_type}"),
                );
            }
            let Ok(patch) = serde_json::from_slice::<Value>(&body) else {
                return status(400, "BadRequest", "the body is not JSON".into());
            };
            let Some((_, object)) = state.objects.get_mut(&path) else {
                return status(404, "NotFound", format!("{path} not found"));
            };
            merge(object, &patch);
            HttpResponse::Ok()
                .content_type("application/json")
                .body(object.to_string())
        }
        "DELETE" => {
            let Some((kind, object)) = state.objects.remove(&path) else {
                return status(404, "NotFound", format!("{path} not found"));
            };
            if kind == "Namespace" {
                let ns = object["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string();
                state
                    .objects
                    .retain(|key, _| namespace_of(key) != Some(ns.as_str()));
            }
            HttpResponse::Ok()
                .content_type("application/json")
                .body(object.to_string())
        }
        _ => status(
            405,
            "MethodNotAllowed",
            format!("{method} is not supported"),
        ),
    }
}

impl KubeDouble {
    /// Starts on an ephemeral loopback port; `token`, when given, is required as a bearer token.
    pub async fn start(token: Option<&str>) -> KubeDouble {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the kube double");
        let port = listener.local_addr().expect("address").port();
        let state = Arc::new(Mutex::new(State::default()));
        let data = web::Data::new((state.clone(), token.map(str::to_string)));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(handle))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        KubeDouble {
            url: format!("http://127.0.0.1:{port}"),
            port,
            state,
            handle,
        }
    }

    /// `(kind, object path)` of every object it holds.
    pub fn objects(&self) -> Vec<(String, String)> {
        self.state
            .lock()
            .expect("kube double state")
            .objects
            .iter()
            .map(|(path, (kind, _))| (kind.clone(), path.clone()))
            .collect()
    }

    /// The kinds of the objects it holds, sorted.
    pub fn kinds(&self) -> Vec<String> {
        let mut kinds: Vec<String> = self.objects().into_iter().map(|(k, _)| k).collect();
        kinds.sort();
        kinds
    }

    /// The object at `path`, if it holds one.
    pub fn object(&self, path: &str) -> Option<Value> {
        self.state
            .lock()
            .expect("kube double state")
            .objects
            .get(path)
            .map(|(_, o)| o.clone())
    }

    /// Changes an object behind the plugin's back (as `kubectl edit` would).
    pub fn edit(&self, path: &str, change: impl FnOnce(&mut Value)) {
        let mut state = self.state.lock().expect("kube double state");
        let (_, object) = state.objects.get_mut(path).expect("the object to edit");
        change(object);
    }

    /// Removes an object behind the plugin's back.
    pub fn remove(&self, path: &str) -> bool {
        self.state
            .lock()
            .expect("kube double state")
            .objects
            .remove(path)
            .is_some()
    }

    /// `METHOD path` of every request received, in order.
    pub fn requests(&self) -> Vec<String> {
        self.state
            .lock()
            .expect("kube double state")
            .requests
            .clone()
    }

    pub async fn stop(self) {
        self.handle.stop(true).await;
    }
}

//! A recording backend for the `recorder` test plugin: a small HTTP server that holds named
//! resources and counts how many times each was created, so that tests can check that every
//! resource exists exactly once after retries, compensation and crashes. It is a test double
//! standing in for "some backend"; the real backends (Superset, Airflow, BottleCRM) have tests of
//! their own.

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::sync::{Arc, Mutex};

use actix_web::{App, HttpResponse, HttpServer, web};
use serde_json::{Value, json};

#[derive(Default)]
pub struct Books {
    /// name → id of the resources that exist.
    pub resources: BTreeMap<String, u64>,
    /// name → how many times it was created (ever).
    pub creations: BTreeMap<String, u64>,
    /// Lifecycle events received, in order.
    pub events: Vec<Value>,
    /// While true every request is answered 503 (the backend is "down").
    pub down: bool,
    /// Requests about this resource are answered 503 (that part of the backend is down).
    pub down_for: Option<String>,
    /// This resource's creation is answered 201 and not kept (a backend that loses it).
    pub loses: Option<String>,
    next_id: u64,
}

pub struct RecorderBackend {
    pub url: String,
    pub books: Arc<Mutex<Books>>,
    handle: actix_web::dev::ServerHandle,
}

impl RecorderBackend {
    pub async fn start() -> RecorderBackend {
        let books = Arc::new(Mutex::new(Books::default()));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let data = web::Data::from(books.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .route("/resources", web::post().to(create))
                .route("/resources/{name}", web::get().to(get))
                .route("/resources/{name}", web::delete().to(remove))
                .route("/events", web::post().to(event))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)
        .expect("listen")
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        RecorderBackend { url, books, handle }
    }

    pub fn exists(&self, name: &str) -> bool {
        self.books.lock().unwrap().resources.contains_key(name)
    }

    pub fn creations(&self, name: &str) -> u64 {
        self.books
            .lock()
            .unwrap()
            .creations
            .get(name)
            .copied()
            .unwrap_or(0)
    }

    /// Names of the resources that exist.
    pub fn names(&self) -> Vec<String> {
        self.books
            .lock()
            .unwrap()
            .resources
            .keys()
            .cloned()
            .collect()
    }

    /// Every creation count above one: resources created more than once.
    pub fn duplicates(&self) -> Vec<(String, u64)> {
        self.books
            .lock()
            .unwrap()
            .creations
            .iter()
            .filter(|(_, n)| **n > 1)
            .map(|(k, n)| (k.clone(), *n))
            .collect()
    }

    pub fn events(&self) -> Vec<Value> {
        self.books.lock().unwrap().events.clone()
    }

    pub fn set_down(&self, down: bool) {
        self.books.lock().unwrap().down = down;
    }

    pub fn set_down_for(&self, name: Option<&str>) {
        self.books.lock().unwrap().down_for = name.map(str::to_owned);
    }

    /// Answers the creation of `name` and keeps nothing of it.
    pub fn set_loses(&self, name: Option<&str>) {
        self.books.lock().unwrap().loses = name.map(str::to_owned);
    }

    /// Removes a resource behind the plugin's back (drift).
    pub fn forget(&self, name: &str) {
        self.books.lock().unwrap().resources.remove(name);
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

fn unavailable() -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(json!({ "error": "down" }))
}

async fn create(books: web::Data<Mutex<Books>>, body: web::Json<Value>) -> HttpResponse {
    let mut b = books.lock().unwrap();
    if b.down {
        return unavailable();
    }
    let name = body["name"].as_str().unwrap_or_default().to_owned();
    if b.down_for.as_deref() == Some(name.as_str()) {
        return unavailable();
    }
    if b.resources.contains_key(&name) {
        return HttpResponse::Conflict().json(json!({ "error": "exists" }));
    }
    b.next_id += 1;
    let id = b.next_id;
    if b.loses.as_deref() == Some(name.as_str()) {
        return HttpResponse::Created().json(json!({ "id": id, "name": name }));
    }
    b.resources.insert(name.clone(), id);
    *b.creations.entry(name.clone()).or_default() += 1;
    HttpResponse::Created().json(json!({ "id": id, "name": name }))
}

async fn get(books: web::Data<Mutex<Books>>, name: web::Path<String>) -> HttpResponse {
    let b = books.lock().unwrap();
    if b.down || b.down_for.as_deref() == Some(name.as_str()) {
        return unavailable();
    }
    match b.resources.get(name.as_str()) {
        Some(id) => HttpResponse::Ok().json(json!({ "id": id, "name": name.as_str() })),
        None => HttpResponse::NotFound().json(json!({ "error": "not found" })),
    }
}

async fn remove(books: web::Data<Mutex<Books>>, name: web::Path<String>) -> HttpResponse {
    let mut b = books.lock().unwrap();
    if b.down {
        return unavailable();
    }
    match b.resources.remove(name.as_str()) {
        Some(_) => HttpResponse::NoContent().finish(),
        None => HttpResponse::NotFound().json(json!({ "error": "not found" })),
    }
}

async fn event(books: web::Data<Mutex<Books>>, body: web::Json<Value>) -> HttpResponse {
    let mut b = books.lock().unwrap();
    if b.down {
        return unavailable();
    }
    b.events.push(body.into_inner());
    HttpResponse::Created().json(json!({}))
}

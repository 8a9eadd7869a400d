//! A local webhook receiver: records every request it gets (headers and body), answers the first
//! `fail_first` of them with 503 (or every one while `always_fail`), and verifies signatures as
//! the Standard Webhooks specification says, independently of the server's own code.

use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{App, HttpRequest, HttpResponse, HttpServer, web};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, Mac as _};
use serde_json::Value;
use sha2::Sha256;

#[derive(Debug, Clone)]
pub struct Received {
    pub id: String,
    pub timestamp: String,
    pub signature: String,
    pub body: String,
}

impl Received {
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.body).expect("a JSON body")
    }

    /// Whether the signature is `secret`'s over id, timestamp and body.
    pub fn signed_by(&self, secret: &str) -> bool {
        let key = STANDARD
            .decode(secret.strip_prefix("whsec_").expect("a whsec_ secret"))
            .expect("base64");
        let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
        mac.update(format!("{}.{}.{}", self.id, self.timestamp, self.body).as_bytes());
        let expected = format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()));
        self.signature.split(' ').any(|s| s == expected)
    }
}

#[derive(Default)]
pub struct Inbox {
    pub received: Vec<Received>,
    pub fail_first: usize,
    pub always_fail: bool,
}

pub struct Receiver {
    pub url: String,
    pub inbox: Arc<Mutex<Inbox>>,
    handle: actix_web::dev::ServerHandle,
}

async fn receive(req: HttpRequest, body: String, inbox: web::Data<Mutex<Inbox>>) -> HttpResponse {
    let header = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    };
    let mut inbox = inbox.lock().unwrap();
    inbox.received.push(Received {
        id: header("webhook-id"),
        timestamp: header("webhook-timestamp"),
        signature: header("webhook-signature"),
        body,
    });
    if inbox.always_fail || inbox.received.len() <= inbox.fail_first {
        HttpResponse::ServiceUnavailable().body("down for maintenance")
    } else {
        HttpResponse::NoContent().finish()
    }
}

impl Receiver {
    pub async fn start(fail_first: usize) -> Receiver {
        let inbox = Arc::new(Mutex::new(Inbox {
            fail_first,
            ..Inbox::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}/hooks/tenantry", listener.local_addr().unwrap());
        let data = web::Data::from(inbox.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .default_service(web::to(receive))
        })
        .workers(1)
        .listen(listener)
        .expect("listen")
        .disable_signals()
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Receiver { url, inbox, handle }
    }

    pub fn received(&self) -> Vec<Received> {
        self.inbox.lock().unwrap().received.clone()
    }

    /// Waits until `count` requests arrived (at most `within`).
    pub async fn wait_for(&self, count: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let received = self.received();
            if received.len() >= count || tokio::time::Instant::now() > deadline {
                return received;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn stop(self) {
        self.handle.stop(false).await;
    }
}

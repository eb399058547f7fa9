//! A tiny webhook receiver for the tests: an axum server on a free port that verifies
//! `x-nylas-signature` itself (HMAC-SHA256 with `hmac`/`sha2`, constant-time comparison),
//! records every POST, and answers as told.

use std::io::Read as _;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use hmac::{Hmac, KeyInit as _, Mac as _};
use serde_json::Value;
use sha2::Sha256;
use tokio::task::JoinHandle;

/// The secret the tests configure (the one of the Nylas SDK test vector).
pub const SECRET: &str = "UfZWFrkjsbg5bxLbax-y";

/// Decodes lowercase hex; `None` for anything else (uppercase included: Nylas sends
/// lowercase, and the tests check the simulator does).
fn lower_hex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok())
        .collect()
}

/// Lowercase hex HMAC-SHA256, computed by the test itself.
pub fn hmac_hex(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Whether `signature` is the lowercase hex HMAC-SHA256 of `body` under `secret`.
pub fn verify(secret: &str, body: &[u8], signature: &str) -> bool {
    let Some(sig) = lower_hex(signature) else {
        return false;
    };
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    mac.verify_slice(&sig).is_ok()
}

/// One POST as it arrived.
#[derive(Debug, Clone)]
pub struct Arrival {
    pub at: Instant,
    pub signature: Option<String>,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// The bytes on the wire (gzip when compressed).
    pub raw: Vec<u8>,
    /// The notification (decompressed), `Null` if it is not JSON.
    pub json: Value,
    /// The signature verified over `raw`.
    pub valid: bool,
    /// What the receiver answered.
    pub answered: u16,
}

impl Arrival {
    pub fn id(&self) -> &str {
        self.json["id"].as_str().unwrap_or_default()
    }

    pub fn attempt(&self) -> u64 {
        self.json["webhook_delivery_attempt"].as_u64().unwrap_or(0)
    }

    pub fn time(&self) -> i64 {
        self.json["time"].as_i64().unwrap_or(0)
    }
}

/// How the receiver answers validly signed POSTs (forgeries always get 401).
#[derive(Debug, Clone, Copy)]
pub struct Behavior {
    /// Attempts below this number answer `fail_status`.
    pub fail_below_attempt: u64,
    pub fail_status: u16,
    /// Attempt 1 stalls this long before answering 200 (to provoke timeouts).
    pub stall_first_attempt_ms: u64,
}

impl Default for Behavior {
    fn default() -> Self {
        Behavior {
            fail_below_attempt: 0,
            fail_status: 503,
            stall_first_attempt_ms: 0,
        }
    }
}

struct Shared {
    behavior: Behavior,
    arrivals: Mutex<Vec<Arrival>>,
}

/// A running receiver; stops when dropped.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Arc<Shared>,
    task: JoinHandle<()>,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Receiver {
    pub async fn start(behavior: Behavior) -> Receiver {
        let shared = Arc::new(Shared {
            behavior,
            arrivals: Mutex::new(Vec::new()),
        });
        let app = Router::new().route("/hook", post(hook)).with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared, task }
    }

    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    /// Every POST so far, in arrival order.
    pub fn arrivals(&self) -> Vec<Arrival> {
        self.shared.arrivals.lock().expect("arrivals").clone()
    }

    /// Validly signed POSTs, in arrival order.
    pub fn genuine(&self) -> Vec<Arrival> {
        self.arrivals().into_iter().filter(|a| a.valid).collect()
    }
}

async fn hook(State(shared): State<Arc<Shared>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let at = Instant::now();
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(String::from);
    let signature = header("x-nylas-signature");
    let content_encoding = header("content-encoding");
    let valid = signature.as_deref().is_some_and(|s| verify(SECRET, &body, s));
    let plain = if content_encoding.as_deref() == Some("gzip") {
        let mut out = Vec::new();
        flate2::read::GzDecoder::new(&body[..])
            .read_to_end(&mut out)
            .map(|_| out)
            .unwrap_or_default()
    } else {
        body.to_vec()
    };
    let json: Value = serde_json::from_slice(&plain).unwrap_or(Value::Null);
    let attempt = json["webhook_delivery_attempt"].as_u64().unwrap_or(0);
    let b = shared.behavior;
    let status = if !valid {
        401
    } else if attempt < b.fail_below_attempt {
        b.fail_status
    } else {
        200
    };
    shared.arrivals.lock().expect("arrivals").push(Arrival {
        at,
        signature,
        content_type: header("content-type"),
        content_encoding,
        raw: body.to_vec(),
        json,
        valid,
        answered: status,
    });
    if valid && attempt == 1 && b.stall_first_attempt_ms > 0 {
        tokio::time::sleep(Duration::from_millis(b.stall_first_attempt_ms)).await;
    }
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

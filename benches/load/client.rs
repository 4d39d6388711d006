//! A closed-loop load generator: `concurrency` workers, each on its own
//! keep-alive HTTP/1.1 connection, each sending its next request as soon as the
//! previous answer is read, for a fixed time.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::Request;
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

pub type Conn = SendRequest<Full<Bytes>>;

pub async fn connect(addr: &str) -> Conn {
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.set_nodelay(true).expect("nodelay");
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .expect("handshake");
    tokio::spawn(connection);
    sender
}

/// One answer: its status and body.
pub struct Answer {
    pub status: u16,
    pub body: Bytes,
}

pub async fn send(conn: &mut Conn, request: Request<Full<Bytes>>) -> Option<Answer> {
    conn.ready().await.ok()?;
    let response = conn.send_request(request).await.ok()?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.ok()?.to_bytes();
    Some(Answer { status, body })
}

pub fn get(addr: &str, path: &str, headers: &[(&str, &str)]) -> Request<Full<Bytes>> {
    let mut builder = Request::get(path).header("host", addr);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::new())).expect("request")
}

pub fn post_json(
    addr: &str,
    path: &str,
    body: String,
    headers: &[(&str, &str)],
) -> Request<Full<Bytes>> {
    let mut builder = Request::post(path)
        .header("host", addr)
        .header("content-type", "application/json");
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    builder.body(Full::new(Bytes::from(body))).expect("request")
}

pub struct Outcome {
    pub requests: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub histogram: Histogram<u64>,
}

impl Outcome {
    pub fn rate(&self) -> f64 {
        self.requests as f64 / self.elapsed.as_secs_f64()
    }
    pub fn p50_ms(&self) -> f64 {
        self.histogram.value_at_quantile(0.50) as f64 / 1000.0
    }
    pub fn p99_ms(&self) -> f64 {
        self.histogram.value_at_quantile(0.99) as f64 / 1000.0
    }
}

/// What a worker does per request: returns `None` when it has no more work,
/// `Some(true)` for an expected answer, `Some(false)` for an error.
pub trait Step: Send + 'static {
    fn step(&mut self, conn: &mut Conn) -> impl Future<Output = Option<bool>> + Send;
}

/// Runs one worker per element of `steps` for `duration` (or until they run out of work).
pub async fn run<S: Step>(addr: &str, steps: Vec<S>, duration: Duration) -> Outcome {
    let requests = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + duration;
    let mut handles = Vec::new();
    for mut step in steps {
        let (requests, errors) = (requests.clone(), errors.clone());
        let addr = addr.to_owned();
        handles.push(tokio::spawn(async move {
            let mut histogram =
                Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
            let mut conn = connect(&addr).await;
            while Instant::now() < deadline {
                let sent = Instant::now();
                match step.step(&mut conn).await {
                    None => break,
                    Some(ok) => {
                        let _ = histogram.record(sent.elapsed().as_micros().max(1) as u64);
                        requests.fetch_add(1, Ordering::Relaxed);
                        if !ok {
                            errors.fetch_add(1, Ordering::Relaxed);
                            conn = connect(&addr).await;
                        }
                    }
                }
            }
            histogram
        }));
    }
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3).expect("histogram");
    for handle in handles {
        if let Ok(h) = handle.await {
            let _ = histogram.add(h);
        }
    }
    Outcome {
        requests: requests.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        elapsed: started.elapsed(),
        histogram,
    }
}

//! What mail tests share: an SMTP server that can misbehave on demand, and
//! waiting on the outbox.

use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use gatehouse::store::{MailStatus, OutboxEntry, OutboxQuery};
use mailin_embedded::response::{OK, Response};
use mailin_embedded::{Handler, Server};
use serde_json::json;

use crate::helpers::{ADMIN, SentMail, TestApp};

/// How the server answers one `DATA` command, instead of going ahead.
#[derive(Clone, Copy, Debug)]
pub enum Fault {
    /// Refuses with this reply code (451 is transient, 550 permanent).
    Reply(u16),
    /// Waits this long before answering, as an overloaded server does.
    Delay(Duration),
    /// Waits until [`Inbox::release`], however long: a server stalled in `DATA`.
    Hold,
}

/// An SMTP server on a real port that collects every message it accepts.
#[derive(Clone, Default)]
pub struct Inbox {
    messages: Arc<Mutex<Vec<String>>>,
    /// Applied to the next `DATA` commands, one each, in order.
    faults: Arc<Mutex<VecDeque<Fault>>>,
    /// `DATA` commands received, whatever came of them.
    data_commands: Arc<AtomicUsize>,
    /// Set by [`Inbox::release`]: held `DATA` commands go ahead.
    released: Arc<(Mutex<bool>, Condvar)>,
    current: Vec<u8>,
}

impl Handler for Inbox {
    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        self.current.clear();
        self.data_commands.fetch_add(1, Ordering::SeqCst);
        let fault = self.faults.lock().unwrap().pop_front();
        match fault {
            None => OK,
            Some(Fault::Reply(code)) => Response::custom(code, "test fault".into()),
            Some(Fault::Delay(delay)) => {
                std::thread::sleep(delay);
                OK
            }
            Some(Fault::Hold) => {
                let (released, ring) = &*self.released;
                let mut go = released.lock().unwrap();
                while !*go {
                    go = ring.wait(go).unwrap();
                }
                OK
            }
        }
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.current.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> Response {
        let message = String::from_utf8_lossy(&self.current).into_owned();
        self.messages.lock().unwrap().push(message);
        OK
    }

    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        OK
    }
}

impl Inbox {
    /// Starts an SMTP server on a free port, in its own thread.
    pub fn start() -> (Self, SocketAddr) {
        let addr = reserve_port();
        (Self::start_on(addr), addr)
    }

    /// Starts an SMTP server on `addr` (from [`reserve_port`]).
    pub fn start_on(addr: SocketAddr) -> Self {
        let inbox = Inbox::default();
        let listener = std::net::TcpListener::bind(addr).expect("SMTP port is free again");
        let mut server = Server::new(inbox.clone());
        // Enough threads that a session stuck in a delay never starves the next one.
        server
            .with_name("test.smtp")
            .with_num_threads(16)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        inbox
    }

    /// The next `DATA` command meets `fault`.
    pub fn inject(&self, fault: Fault) {
        self.faults.lock().unwrap().push_back(fault);
    }

    /// Lets every held `DATA` command (and any later one) go ahead.
    pub fn release(&self) {
        let (released, ring) = &*self.released;
        *released.lock().unwrap() = true;
        ring.notify_all();
    }

    /// How many `DATA` commands arrived: attempts that got as far as sending.
    pub fn data_commands(&self) -> usize {
        self.data_commands.load(Ordering::SeqCst)
    }

    /// Waits until `count` `DATA` commands have arrived.
    pub async fn wait_for_data_commands(&self, count: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while self.data_commands() < count {
            assert!(
                Instant::now() < deadline,
                "expected {count} DATA commands, got {}",
                self.data_commands()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    pub fn count(&self) -> usize {
        self.messages.lock().unwrap().len()
    }

    pub async fn wait_for(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let messages = self.messages.lock().unwrap().clone();
            if messages.len() >= count {
                return messages;
            }
            assert!(
                Instant::now() < deadline,
                "expected {count} messages, got {}",
                messages.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

/// A local address nothing listens on (yet): connecting to it is refused until
/// [`Inbox::start_on`] starts a server there.
pub fn reserve_port() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local addr")
}

/// Settings for an app that sends through the SMTP server at `addr`, retrying fast.
pub fn smtp_settings(url: &str) -> Vec<(&'static str, String)> {
    vec![
        ("mail_transport", "smtp"),
        ("smtp_url", url),
        ("mail_from", "Club <club@example.org>"),
        ("mail_retry_base_ms", "50"),
        ("mail_timeout_secs", "5"),
    ]
    .into_iter()
    .map(|(k, v)| (k, v.to_owned()))
    .collect()
}

pub fn as_refs<'a>(settings: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    settings.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

/// Signs the admin in with the link from the next message in `inbox`.
pub async fn admin_token_via(app: &TestApp, inbox: &Inbox) -> String {
    sign_in_via(app, inbox, ADMIN).await
}

/// Signs `email` in with the link from the next message in `inbox`; its access token.
pub async fn sign_in_via(app: &TestApp, inbox: &Inbox, email: &str) -> String {
    let before = inbox.count();
    assert_eq!(app.request_link(email).await.status(), 202);
    let messages = inbox.wait_for(before + 1).await;
    let mail = SentMail::parse(messages[before].clone());
    let response = app
        .post_json("/v1/auth/verify", json!({ "token": mail.token }))
        .await;
    assert_eq!(response.status(), 200);
    let body: serde_json::Value = response.json().await.expect("json");
    body["access_token"].as_str().expect("token").to_owned()
}

/// Retries further off than this are left alone by [`wait_for_outbox`]: a
/// mail that is due this late is leased (being sent), not waiting to retry.
const RETRY_HORIZON_SECS: i64 = 60;

/// The newest outbox row for `recipient`, once `ready` holds for it.
///
/// A mail that waits for its next attempt is brought due by moving the app's
/// clock to that attempt, rather than by waiting for it in real time; the
/// worker notices a moved clock at once.
pub async fn wait_for_outbox(
    app: &TestApp,
    recipient: &str,
    ready: impl Fn(&OutboxEntry) -> bool,
) -> OutboxEntry {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = app
            .state
            .store
            .outbox_page(OutboxQuery {
                status: None,
                before: None,
                limit: 100,
            })
            .await
            .expect("outbox page");
        let newest = page.into_iter().find(|e| e.recipient == recipient);
        match &newest {
            Some(entry) if ready(entry) => return entry.clone(),
            Some(entry) => {
                let wait = entry.next_attempt_at - app.clock().now();
                if waits_to_retry(entry, wait) {
                    app.clock().advance(Duration::from_secs(wait as u64));
                }
            }
            None => {}
        }
        assert!(
            Instant::now() < deadline,
            "outbox row for {recipient} never got ready: {newest:?}"
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

/// Whether `entry` failed an attempt and waits, queued, `wait` seconds for its next one.
fn waits_to_retry(entry: &OutboxEntry, wait: i64) -> bool {
    entry.status == MailStatus::Queued
        && entry.attempts >= 1
        && entry.last_error.is_some()
        && (1..=RETRY_HORIZON_SECS).contains(&wait)
}

/// Waits until the newest mail to `recipient` reaches `status`.
pub async fn wait_for_status(app: &TestApp, recipient: &str, status: MailStatus) -> OutboxEntry {
    wait_for_outbox(app, recipient, |e| e.status == status).await
}

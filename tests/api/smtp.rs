//! A real SMTP conversation over TCP with an SMTP server started by the test.

use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailin_embedded::response::{OK, Response};
use mailin_embedded::{Handler, Server};

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, SentMail, TestApp};

/// Collects every message it receives.
#[derive(Clone, Default)]
pub struct Inbox {
    messages: Arc<Mutex<Vec<String>>>,
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
        OK
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
        let inbox = Inbox::default();
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let mut server = Server::new(inbox.clone());
        server.with_name("test.smtp").with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        (inbox, addr)
    }

    pub async fn wait_for(&self, count: usize) -> Vec<String> {
        let deadline = Instant::now() + Duration::from_secs(10);
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

async fn sign_in_link_arrives_over_smtp_and_signs_the_member_in(backend: Backend) {
    let (inbox, smtp) = Inbox::start();
    let url = format!("smtp://{smtp}");
    let app = TestApp::spawn_with(
        backend,
        &[
            ("mail_transport", "smtp"),
            ("smtp_url", &url),
            ("mail_from", "Club <club@example.org>"),
        ],
    )
    .await;
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    let messages = inbox.wait_for(1).await;
    let raw = &messages[0];
    assert!(raw.contains("To: admin@example.org"), "{raw}");
    assert!(raw.contains("From: Club <club@example.org>"), "{raw}");
    assert!(raw.contains("Content-Type: text/html"), "has an HTML part");
    let mail = SentMail::parse(raw.clone());
    assert!(mail.raw.contains(&mail.code), "the code is in the mail");

    let page = app.client.get(&mail.link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let response = app
        .client
        .post(app.url("/auth/confirm"))
        .form(&[("token", &mail.token)])
        .send()
        .await
        .unwrap();
    let html = response.text().await.unwrap();
    let access = html
        .split("id=\"access-token\" rows=\"5\" readonly>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    assert_eq!(app.claims(access).roles, ["admin", "member"]);
}

backend_tests!(sign_in_link_arrives_over_smtp_and_signs_the_member_in);

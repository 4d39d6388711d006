//! A minimal SMTP server on a real port for tests that run the binary
//! (`tests/cli.rs`): it collects the messages it accepts, or, started
//! [`SmtpServer::stalled`], accepts the connection and the envelope and then
//! never answers `DATA`, as a server hung mid-delivery does.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use mailin_embedded::response::{OK, Response};
use mailin_embedded::{Handler, Server};

#[derive(Clone, Default)]
pub struct SmtpServer {
    stall: bool,
    data_commands: Arc<AtomicUsize>,
    messages: Arc<Mutex<Vec<String>>>,
    current: Vec<u8>,
}

impl Handler for SmtpServer {
    fn helo(&mut self, _ip: IpAddr, _domain: &str) -> Response {
        OK
    }

    fn data_start(
        &mut self,
        _domain: &str,
        _from: &str,
        _is8bit: bool,
        _to: &[String],
    ) -> Response {
        self.current.clear();
        self.data_commands.fetch_add(1, Ordering::SeqCst);
        if self.stall {
            // The client waits for the go-ahead that never comes (the thread
            // ends with the test process).
            loop {
                std::thread::sleep(Duration::from_secs(3600));
            }
        }
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
}

impl SmtpServer {
    /// A server that accepts every message.
    pub fn start() -> (Self, SocketAddr) {
        Self::serve(false)
    }

    /// A server that hangs at every `DATA` command.
    pub fn stalled() -> (Self, SocketAddr) {
        Self::serve(true)
    }

    fn serve(stall: bool) -> (Self, SocketAddr) {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("local addr");
        let handler = SmtpServer {
            stall,
            ..Default::default()
        };
        let mut server = Server::new(handler.clone());
        server
            .with_name("test.smtp")
            .with_num_threads(4)
            .with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        (handler, addr)
    }

    /// `DATA` commands received: attempts that got as far as sending.
    pub fn data_commands(&self) -> usize {
        self.data_commands.load(Ordering::SeqCst)
    }

    pub fn messages(&self) -> Vec<String> {
        self.messages.lock().unwrap().clone()
    }

    /// Waits, up to `within`, until `done` holds; false if it never did.
    pub async fn wait_until(&self, within: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let deadline = Instant::now() + within;
        while !done(self) {
            if Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        true
    }
}

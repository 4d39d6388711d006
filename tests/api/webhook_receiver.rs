//! A real HTTP receiver for webhook tests: `webhook_receiver.py`, which
//! verifies every delivery with the `standardwebhooks` package (pip), an
//! implementation of the specification that gatehouse did not write.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct Receiver {
    dir: tempfile::TempDir,
    child: Option<Child>,
    pub port: u16,
}

fn script() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/api/webhook_receiver.py")
}

fn python() -> String {
    std::env::var("PYTHON").unwrap_or_else(|_| "python3".into())
}

impl Receiver {
    /// Starts a receiver on a free port; fails clearly when the package is missing.
    pub async fn start() -> Self {
        let check = Command::new(python())
            .args(["-c", "import standardwebhooks"])
            .output()
            .expect("python3 runs");
        assert!(
            check.status.success(),
            "the webhook tests verify deliveries with the Python package `standardwebhooks`: \
             pip install standardwebhooks (.ci/run does)"
        );
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("secret"), "").expect("secret file");
        let mut receiver = Self {
            dir,
            child: None,
            port: 0,
        };
        receiver.run().await;
        receiver
    }

    async fn run(&mut self) {
        let _ = std::fs::remove_file(self.dir.path().join("port"));
        let child = Command::new(python())
            .arg(script())
            .arg(self.dir.path())
            .arg(self.port.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("receiver starts");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(port) = std::fs::read_to_string(self.dir.path().join("port")) {
                self.port = port.trim().parse().expect("port");
                return;
            }
            assert!(Instant::now() < deadline, "the receiver did not start");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/hooks/gatehouse", self.port)
    }

    pub fn set_secret(&self, secret: &str) {
        std::fs::write(self.dir.path().join("secret"), secret).expect("secret");
    }

    /// The answers to give next, in order (then 204 to everything).
    pub fn answer(&self, answers: Value) {
        std::fs::write(self.dir.path().join("script.json"), answers.to_string()).expect("script");
    }

    /// Stops listening: connections are refused.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Listens again, on the same port.
    pub async fn restart(&mut self) {
        self.stop();
        self.run().await;
    }

    fn lines(&self, file: &str) -> Vec<Value> {
        std::fs::read_to_string(self.dir.path().join(file))
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("json line"))
            .collect()
    }

    /// Every request so far: `{id, status, verified}`.
    pub fn requests(&self) -> Vec<Value> {
        self.lines("requests.jsonl")
    }

    /// Every verified, accepted delivery so far: `{id, event}`.
    pub fn events(&self) -> Vec<Value> {
        self.lines("events.jsonl")
    }

    /// Waits until at least `count` deliveries were accepted.
    pub async fn wait_for_events(&self, count: usize) -> Vec<Value> {
        self.wait_for(count, "events.jsonl").await
    }

    /// Waits until at least `count` requests arrived.
    pub async fn wait_for_requests(&self, count: usize) -> Vec<Value> {
        self.wait_for(count, "requests.jsonl").await
    }

    async fn wait_for(&self, count: usize, file: &str) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let lines = self.lines(file);
            if lines.len() >= count {
                return lines;
            }
            assert!(
                Instant::now() < deadline,
                "{file}: {} of {count} within 30 s: {lines:?}",
                lines.len()
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// The first accepted event of `kind`.
    pub fn event(&self, kind: &str) -> Value {
        self.events()
            .into_iter()
            .map(|line| line["event"].clone())
            .find(|event| event["type"] == kind)
            .unwrap_or_else(|| panic!("no {kind} event in {:?}", self.events()))
    }

    /// Answers every request with `status` (for a while).
    pub fn answer_all(&self, status: u16, count: usize) {
        self.answer(Value::Array(vec![json!({ "status": status }); count]));
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop();
    }
}

//! The server under test: the release binary as a subprocess on a fresh data dir.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// The server binary: this build's, or `GATEHOUSE_BENCH_BIN` (e.g. a build of
/// main, to measure before and after with the same load generator).
pub fn bin() -> String {
    std::env::var("GATEHOUSE_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_gatehouse").into())
}
pub const ADMIN: &str = "admin@bench.example.org";

pub struct Server {
    child: Child,
    pub addr: String,
    /// Time from spawn to the first successful `/readyz`.
    pub ready_after: Duration,
}

/// Settings for a benchmark run: limits raised so they never throttle the load.
pub fn bench_env(data_dir: &Path, database_url: Option<&str>) -> Vec<(String, String)> {
    let mut env = vec![
        ("GATEHOUSE_BIND", "127.0.0.1:0".to_owned()),
        ("GATEHOUSE_DATA_DIR", data_dir.display().to_string()),
        ("GATEHOUSE_BOOTSTRAP_ADMINS", ADMIN.to_owned()),
        ("GATEHOUSE_RATE_LIMIT_PER_EMAIL", "1000000000".to_owned()),
        ("GATEHOUSE_RATE_LIMIT_PER_IP", "1000000000".to_owned()),
        ("GATEHOUSE_LOG", "warn".to_owned()),
        ("GATEHOUSE_MAX_IMPORT_BYTES", (1u64 << 30).to_string()),
    ];
    if let Some(url) = database_url {
        env.push(("GATEHOUSE_DATABASE_URL", url.to_owned()));
    }
    env.into_iter().map(|(k, v)| (k.to_owned(), v)).collect()
}

/// The server's log filter: its address line, and one line per request as
/// `serve` logs by default (the request line moved from `gatehouse::app` to
/// `gatehouse::telemetry` in session 5; both are named so that builds from
/// before and after log the same). `GATEHOUSE_BENCH_LOG` replaces it.
fn server_log_filter() -> String {
    std::env::var("GATEHOUSE_BENCH_LOG")
        .unwrap_or_else(|_| "warn,gatehouse::app=info,gatehouse::telemetry=info".into())
}

impl Server {
    pub fn start(env: &[(String, String)]) -> Self {
        let started = Instant::now();
        let mut child = Command::new(bin())
            .arg("serve")
            .envs(env.iter().map(|(k, v)| (k, v)))
            .env("GATEHOUSE_LOG", server_log_filter())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start gatehouse");
        let (tx, rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr");
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if line.contains("gatehouse is serving") {
                    let _ = tx.send(line);
                }
            }
        });
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("server announces its address");
        let addr = line
            .split("addr=")
            .nth(1)
            .and_then(|rest| rest.split_whitespace().next())
            .expect("addr in log")
            .to_owned();
        let ready_after = wait_ready(&addr, started);
        Self {
            child,
            addr,
            ready_after,
        }
    }

    /// Resident set size of the server process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_of(self.child.id())
    }

    /// CPU time (user + system) the server has used so far, in seconds.
    pub fn cpu_secs(&self) -> f64 {
        // Fields 14 and 15 of /proc/<pid>/stat, after the parenthesized name,
        // in clock ticks (USER_HZ, 100 on Linux).
        std::fs::read_to_string(format!("/proc/{}/stat", self.child.id()))
            .ok()
            .and_then(|stat| {
                let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
                let ticks =
                    fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
                Some(ticks as f64 / 100.0)
            })
            .unwrap_or(0.0)
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn stop(mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

pub fn rss_of(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:") * 1024
}

/// A `kB` field of `/proc/<pid>/status`.
fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|status| {
            status
                .lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .unwrap_or(0)
}

/// Peak resident set size (VmHWM) of a process, in bytes.
pub fn peak_rss_of(pid: u32) -> u64 {
    status_kib(pid, "VmHWM:") * 1024
}

fn wait_ready(addr: &str, started: Instant) -> Duration {
    loop {
        if let Ok(mut stream) = std::net::TcpStream::connect(addr) {
            use std::io::{Read, Write};
            let _ = stream.write_all(
                format!("GET /readyz HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n")
                    .as_bytes(),
            );
            let mut response = String::new();
            let _ = stream.read_to_string(&mut response);
            if response.starts_with("HTTP/1.1 200") {
                return started.elapsed();
            }
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "server never became ready"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

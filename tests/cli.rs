//! The built binary, as an operator and a newcomer use it: zero-config `serve`,
//! the README's quick start, `migrate`, `openapi`, and a graceful SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

#[path = "api/webhook_receiver.rs"]
#[allow(dead_code)]
mod webhook_receiver;

#[path = "api/pg.rs"]
#[allow(dead_code)]
mod pg;

#[path = "support/smtp_server.rs"]
mod smtp_server;

fn gatehouse(cwd: &Path) -> Command {
    let mut command = Command::new(BIN);
    command.current_dir(cwd);
    for (key, _) in std::env::vars().filter(|(k, _)| k.starts_with("GATEHOUSE_")) {
        command.env_remove(key);
    }
    command
}

/// A running `gatehouse serve` whose log lines arrive on a channel.
struct Served {
    child: Child,
    addr: String,
    log: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Served {
    fn start(cwd: &Path, env: &[(&str, &str)]) -> Self {
        let mut child = gatehouse(cwd)
            .arg("serve")
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("binary starts");
        let (tx, log) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let mut served = Self {
            child,
            addr: String::new(),
            log,
            seen: Vec::new(),
        };
        let line = served.wait_for_log("gatehouse is serving");
        served.addr = match serde_json::from_str::<Value>(&line) {
            Ok(json) => json["fields"]["addr"].as_str().unwrap().to_owned(),
            Err(_) => line
                .split("addr=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap()
                .to_owned(),
        };
        served
    }

    fn wait_for_log(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(line) = self.seen.iter().find(|l| l.contains(needle)) {
                return line.clone();
            }
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) => self.seen.push(line),
                Err(_) => panic!(
                    "no log line with {needle:?}; log so far:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends SIGKILL: the process ends at once, whatever it was doing.
    fn kill(mut self) {
        self.child.kill().expect("SIGKILL");
        self.child.wait().expect("reaped");
    }

    /// Sends SIGTERM and waits for a clean exit.
    fn terminate(mut self) -> Vec<String> {
        let status = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(exit) = self.child.try_wait().unwrap() {
                assert!(exit.success(), "exit status {exit}");
                break;
            }
            assert!(Instant::now() < deadline, "did not stop after SIGTERM");
            std::thread::sleep(Duration::from_millis(50));
        }
        self.seen.extend(self.log.try_iter());
        self.seen
    }
}

/// The first mail written in `dir`: an `.eml` file with something in it (the
/// transport's write probe and a file still being written are skipped).
fn find_eml(dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let written = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .map(|entry| entry.path())
            .filter(|path| path.extension().is_some_and(|ext| ext == "eml"))
            .filter_map(|path| std::fs::read_to_string(path).ok())
            .find(|text| text.contains("\r\n\r\n"));
        if let Some(text) = written {
            return text;
        }
        assert!(
            Instant::now() < deadline,
            "no .eml written in {}",
            dir.display()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[tokio::test]
async fn quick_start_with_no_configuration_signs_in_the_bootstrap_admin() {
    let cwd = tempfile::tempdir().unwrap();
    // Only the port differs from the README's quick start, so tests can run side by side.
    let served = Served::start(
        cwd.path(),
        &[
            ("GATEHOUSE_BIND", "127.0.0.1:0"),
            ("GATEHOUSE_BOOTSTRAP_ADMINS", "Admin@Example.org"),
        ],
    );
    let client = reqwest::Client::new();
    let response = client
        .post(served.url("/v1/auth/magic-link"))
        .json(&json!({ "email": "admin@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);

    let eml = find_eml(&cwd.path().join("data/mail"));
    let link = eml
        .lines()
        .find(|l| l.contains("/auth/confirm?token="))
        .unwrap()
        .trim()
        .to_owned();
    assert!(
        link.starts_with(&format!("http://{}/auth/confirm?token=", served.addr)),
        "{link}"
    );
    let token = link.split("token=").nth(1).unwrap();
    let tokens: Value = client
        .post(served.url("/v1/auth/verify"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let me: Value = client
        .get(served.url("/v1/me"))
        .bearer_auth(tokens["access_token"].as_str().unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(me["email"], "admin@example.org");
    assert_eq!(me["roles"], json!(["admin", "member"]));

    let data = cwd.path().join("data");
    assert!(data.join("gatehouse.db").exists());
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(data.join("jwt_secret"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "the generated secret is private");
    }

    let log = served.terminate();
    let log = log.join("\n");
    assert!(
        log.contains("mail worker stopped"),
        "graceful shutdown drains the worker:\n{log}"
    );
    assert!(!log.contains(token), "logs never carry a sign-in token");
    let code_at = eml.find("code where you asked for it: ").unwrap() + 29;
    assert!(
        !log.contains(&eml[code_at..code_at + 6]),
        "logs never carry a code"
    );
}

#[test]
fn migrate_creates_the_database_and_openapi_prints_the_spec() {
    let cwd = tempfile::tempdir().unwrap();
    let migrate = gatehouse(cwd.path()).arg("migrate").output().unwrap();
    assert!(
        migrate.status.success(),
        "{}",
        String::from_utf8_lossy(&migrate.stderr)
    );
    assert!(cwd.path().join("data/gatehouse.db").exists());

    let openapi = gatehouse(cwd.path()).arg("openapi").output().unwrap();
    assert!(openapi.status.success());
    let spec: Value = serde_json::from_slice(&openapi.stdout).unwrap();
    assert!(spec["paths"]["/v1/auth/magic-link"]["post"].is_object());
}

#[test]
fn bad_configuration_is_refused_with_a_clear_message() {
    let cwd = tempfile::tempdir().unwrap();
    let output = gatehouse(cwd.path())
        .arg("serve")
        .env("GATEHOUSE_JWT_SECRET", "short")
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("jwt_secret"));

    std::fs::write(
        cwd.path().join("gatehouse.toml"),
        "bnid = \"127.0.0.1:1\"\n",
    )
    .unwrap();
    let output = gatehouse(cwd.path())
        .args(["--config", "gatehouse.toml", "serve"])
        .output()
        .unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("bnid"));
}

/// The binary killed with SIGKILL after committing a change whose webhook it
/// could not deliver yet: the next start delivers it, with the same id.
#[tokio::test]
async fn a_webhook_survives_a_sigkill_between_the_change_and_its_delivery() {
    let cwd = tempfile::tempdir().unwrap();
    let env = [
        ("GATEHOUSE_BIND", "127.0.0.1:0"),
        ("GATEHOUSE_BOOTSTRAP_ADMINS", "admin@example.org"),
        ("GATEHOUSE_PUBLIC_URL", "https://id.example.org"),
        ("GATEHOUSE_WEBHOOKS_ALLOW_INSECURE", "true"),
        ("GATEHOUSE_WEBHOOKS_RETRY_BASE_MS", "2000"),
        // A short attempt. The killed process may have held the delivery's
        // lease when it died: it comes due within the lease (20 s).
        ("GATEHOUSE_WEBHOOKS_TIMEOUT_SECS", "1"),
    ];
    let mut served = Served::start(cwd.path(), &env);
    let client = reqwest::Client::new();
    let response = client
        .post(served.url("/v1/auth/magic-link"))
        .json(&json!({ "email": "admin@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let eml = find_eml(&cwd.path().join("data/mail"));
    let token = eml
        .split("token=")
        .nth(1)
        .unwrap()
        .split_whitespace()
        .next()
        .unwrap();
    let tokens: Value = client
        .post(served.url("/v1/auth/verify"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let admin = tokens["access_token"]
        .as_str()
        .expect("signed in")
        .to_owned();

    let mut receiver = webhook_receiver::Receiver::start().await;
    let hook = client
        .post(served.url("/v1/admin/webhooks"))
        .bearer_auth(&admin)
        .json(&json!({ "url": receiver.url(), "events": ["allowlist.imported"] }))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let hook: Value = serde_json::from_str(&hook).unwrap_or_else(|_| panic!("{hook}"));
    receiver.set_secret(hook["secret"].as_str().unwrap_or_else(|| panic!("{hook}")));
    receiver.stop();

    let added = client
        .post(served.url("/v1/admin/eligible-emails"))
        .bearer_auth(&admin)
        .json(&json!({ "email": "ann@example.org" }))
        .send()
        .await
        .unwrap();
    assert!(added.status().is_success());
    // The first attempt found the receiver down; the process dies before or
    // while recording that, so the delivery may still be leased to it.
    served.wait_for_log("webhook delivery will be retried");
    served.kill();

    receiver.restart().await;
    let served = Served::start(cwd.path(), &env);
    let seen = receiver.wait_for_events(1).await;
    assert_eq!(seen[0]["event"]["type"], "allowlist.imported");
    assert_eq!(seen[0]["event"]["data"]["batch"]["source"], "api");
    assert_eq!(receiver.requests().len(), 1, "delivered once");
    let log = served.terminate().join("\n");
    assert!(log.contains("webhook worker stopped"), "{log}");
}

/// The story of issue 15: the binary is killed with SIGKILL while a sign-in
/// mail is leased and in the middle of `DATA` (the mail server hangs); started
/// again against a working server, it sends the mail within 30 s of the
/// restart (the lease of a dead process is 20 s), once, and the link works.
async fn mail_in_flight_at_a_sigkill_is_sent_soon_after_the_restart(database_url: Option<String>) {
    let cwd = tempfile::tempdir().unwrap();
    let env = |smtp: std::net::SocketAddr| {
        let mut env = vec![
            ("GATEHOUSE_BIND", "127.0.0.1:0".to_owned()),
            ("GATEHOUSE_BOOTSTRAP_ADMINS", "admin@example.org".to_owned()),
            ("GATEHOUSE_MAIL_TRANSPORT", "smtp".to_owned()),
            ("GATEHOUSE_SMTP_URL", format!("smtp://{smtp}")),
            ("GATEHOUSE_MAIL_FROM", "Club <club@example.org>".to_owned()),
            // Longer than the test: only the lease can free the held mail.
            ("GATEHOUSE_MAIL_TIMEOUT_SECS", "600".to_owned()),
        ];
        if let Some(url) = &database_url {
            env.push(("GATEHOUSE_DATABASE_URL", url.clone()));
        }
        env
    };
    let (hung, hung_addr) = smtp_server::SmtpServer::stalled();
    let served = Served::start(cwd.path(), &refs(&env(hung_addr)));
    let client = reqwest::Client::new();
    let asked = client
        .post(served.url("/v1/auth/magic-link"))
        .json(&json!({ "email": "admin@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 202);
    assert!(
        hung.wait_until(Duration::from_secs(20), |s| s.data_commands() == 1)
            .await,
        "the mail never reached DATA"
    );
    served.kill();

    let (inbox, inbox_addr) = smtp_server::SmtpServer::start();
    let restarted = Instant::now();
    let served = Served::start(cwd.path(), &refs(&env(inbox_addr)));
    // The story's deadline, with polling: not a measurement.
    assert!(
        inbox
            .wait_until(Duration::from_secs(30), |s| !s.messages().is_empty())
            .await,
        "the mail in flight at the crash was not sent within 30 s of the restart"
    );
    eprintln!("sent {:?} after the restart", restarted.elapsed());

    let message = inbox.messages().remove(0);
    let token: String = message
        .split("/auth/confirm?token=")
        .nth(1)
        .expect("a sign-in link")
        .chars()
        .take_while(|c| c.is_ascii_alphanumeric() || "_-".contains(*c))
        .collect();
    let verified = client
        .post(served.url("/v1/auth/verify"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200, "the link still works");
    served.terminate();
    assert_eq!(inbox.messages().len(), 1, "sent once after the restart");
    assert_eq!(hung.data_commands(), 1, "the hung server saw one attempt");
}

fn refs<'a>(env: &'a [(&'static str, String)]) -> Vec<(&'a str, &'a str)> {
    env.iter().map(|(k, v)| (*k, v.as_str())).collect()
}

#[tokio::test]
async fn mail_in_flight_at_a_sigkill_is_sent_soon_after_the_restart_on_sqlite() {
    mail_in_flight_at_a_sigkill_is_sent_soon_after_the_restart(None).await;
}

#[tokio::test]
async fn mail_in_flight_at_a_sigkill_is_sent_soon_after_the_restart_on_postgres() {
    let url = pg::fresh_database_url().await;
    mail_in_flight_at_a_sigkill_is_sent_soon_after_the_restart(Some(url)).await;
}

/// `gatehouse signing-keys list|rotate|revoke` on the database a server made.
#[tokio::test]
async fn an_operator_lists_rotates_and_revokes_signing_keys() {
    let cwd = tempfile::tempdir().unwrap();
    let served = Served::start(cwd.path(), &[("GATEHOUSE_BIND", "127.0.0.1:0")]);
    let ready = reqwest::get(served.url("/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    served.terminate();
    let run = |args: &[&str]| {
        let output = gatehouse(cwd.path())
            .arg("signing-keys")
            .args(args)
            .output()
            .expect("binary runs");
        (
            output.status.success(),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        )
    };

    let (ok, listed, err) = run(&["list"]);
    assert!(ok, "{err}");
    let first = listed.lines().nth(1).expect("one key");
    assert!(
        first.contains("ES256") && first.contains("current"),
        "{listed}"
    );

    let (ok, rotated, err) = run(&["rotate"]);
    assert!(ok, "{err}");
    let kid = rotated
        .strip_prefix("published ")
        .and_then(|rest| rest.split_whitespace().next())
        .expect("the new kid")
        .to_owned();
    let (_, listed, _) = run(&["list"]);
    assert!(
        listed
            .lines()
            .any(|l| l.starts_with(&kid) && l.contains("next")),
        "{listed}"
    );
    let (ok, _, err) = run(&["rotate"]);
    assert!(
        !ok && err.contains("pending"),
        "one rotation at a time: {err}"
    );

    let (ok, revoked, err) = run(&["revoke", &kid]);
    assert!(ok && revoked.contains("revoked"), "{err}");
    let (ok, _, err) = run(&["revoke", &kid]);
    assert!(!ok && err.contains("no live signing key"), "{err}");
}

#[tokio::test]
async fn json_logs_parse_line_by_line_and_carry_the_request_id() {
    let cwd = tempfile::tempdir().unwrap();
    let served = Served::start(
        cwd.path(),
        &[
            ("GATEHOUSE_BIND", "127.0.0.1:0"),
            ("GATEHOUSE_BOOTSTRAP_ADMINS", "admin@example.org"),
            ("GATEHOUSE_LOG_FORMAT", "json"),
            // Store operations log too, under the request that made them.
            ("GATEHOUSE_LOG", "info,gatehouse::store=debug"),
        ],
    );
    let client = reqwest::Client::new();
    let id_of = |response: &reqwest::Response| {
        response.headers()["x-request-id"]
            .to_str()
            .unwrap()
            .to_owned()
    };
    let asked = client
        .post(served.url("/v1/auth/magic-link"))
        .json(&json!({ "email": "admin@example.org" }))
        .send()
        .await
        .unwrap();
    assert_eq!(asked.status(), 202);
    let link_request = id_of(&asked);
    let eml = find_eml(&cwd.path().join("data/mail"));
    let token = eml.split("token=").nth(1).unwrap()[..43].to_owned();
    let refused = client
        .post(served.url("/v1/auth/verify"))
        .json(&json!({ "token": "x".repeat(43) }))
        .send()
        .await
        .unwrap();
    let refusal = id_of(&refused);
    let problem: Value = refused.json().await.unwrap();
    assert_eq!(problem["request_id"], refusal.as_str());
    let verified = client
        .post(served.url("/v1/auth/verify"))
        .json(&json!({ "token": token }))
        .send()
        .await
        .unwrap();
    assert_eq!(verified.status(), 200);

    let log = served.terminate();
    let lines: Vec<Value> = log
        .iter()
        .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}")))
        .collect();
    let of_request = |id: &str| -> Vec<&Value> {
        lines
            .iter()
            .filter(|line| line["request_id"] == id)
            .collect()
    };
    for id in [&link_request, &refusal] {
        let request_lines = of_request(id);
        let summary = request_lines
            .iter()
            .find(|line| line["fields"]["message"] == "request")
            .unwrap_or_else(|| panic!("no request line for {id}:\n{}", log.join("\n")));
        assert!(summary["fields"]["status"].is_u64());
        assert!(
            summary["fields"]["route"]
                .as_str()
                .unwrap()
                .starts_with("/v1/auth/")
        );
    }
    let store_lines = of_request(&link_request);
    assert!(
        store_lines
            .iter()
            .any(|line| line["fields"]["message"] == "store operation"
                && line["span"]["op"] == "create_magic_link"),
        "the link request's store operation is logged under its id:\n{}",
        log.join("\n")
    );
    let all = log.join("\n");
    assert!(!all.contains(&token), "no token in the logs");
    let code_at = eml.find("code where you asked for it: ").unwrap() + 29;
    assert!(
        !all.contains(&eml[code_at..code_at + 6]),
        "no code in the logs"
    );
}

/// A local port nothing listens on.
fn closed_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.local_addr().unwrap().port()
}

fn check(cwd: &Path, env: &[(&str, &str)]) -> (bool, String, String) {
    let output = gatehouse(cwd)
        .arg("check")
        .envs(env.iter().copied())
        .env("GATEHOUSE_MAIL_TIMEOUT_SECS", "3")
        .output()
        .unwrap();
    (
        output.status.success(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn check_shows_settings_and_names_the_part_that_fails() {
    let cwd = tempfile::tempdir().unwrap();
    std::fs::write(
        cwd.path().join("gatehouse.toml"),
        "org_name = \"Chess Club\"\n",
    )
    .unwrap();
    let secret = "0123456789abcdef0123456789abcdef-top-secret";
    let config = ("GATEHOUSE_CONFIG", "gatehouse.toml");
    let (ok, out, err) = check(cwd.path(), &[config, ("GATEHOUSE_JWT_SECRET", secret)]);
    assert!(ok, "a good setup passes:\n{out}\n{err}");
    assert!(
        out.contains("database: ok") && out.contains("mail: ok"),
        "{out}"
    );
    let line = |key: &str| -> String {
        out.lines()
            .find(|l| l.split_whitespace().next() == Some(key))
            .unwrap_or_else(|| panic!("no {key} in\n{out}"))
            .to_owned()
    };
    assert!(line("org_name").contains("Chess Club") && line("org_name").ends_with("file"));
    assert!(line("jwt_secret").ends_with("environment"));
    assert!(line("link_ttl_secs").ends_with("default"));
    assert!(!out.contains("top-secret"), "secrets are redacted:\n{out}");

    let bad_db = format!(
        "postgres://gatehouse:db-password@127.0.0.1:{}/nope",
        closed_port()
    );
    let (ok, out, err) = check(cwd.path(), &[("GATEHOUSE_DATABASE_URL", &bad_db)]);
    assert!(!ok, "a bad database fails:\n{out}");
    assert!(err.contains("the database failed"), "{err}");
    assert!(!err.contains("the mail transport failed"), "{err}");
    assert!(!out.contains("db-password") && !err.contains("db-password"));

    let smtp = format!("smtp://mailer:smtp-password@127.0.0.1:{}", closed_port());
    let (ok, out, err) = check(
        cwd.path(),
        &[
            ("GATEHOUSE_MAIL_TRANSPORT", "smtp"),
            ("GATEHOUSE_SMTP_URL", &smtp),
        ],
    );
    assert!(!ok, "an unreachable SMTP server fails:\n{out}");
    assert!(err.contains("the mail transport failed"), "{err}");
    assert!(!err.contains("the database failed"), "{err}");
    assert!(!out.contains("smtp-password") && !err.contains("smtp-password"));
}

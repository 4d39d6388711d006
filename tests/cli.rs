//! The built binary, as an operator and a newcomer use it: zero-config `serve`,
//! the README's quick start, `migrate`, `openapi`, and a graceful SIGTERM.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

const BIN: &str = env!("CARGO_BIN_EXE_gatehouse");

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

fn find_eml(dir: &Path) -> String {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(entry) = std::fs::read_dir(dir)
            .into_iter()
            .flatten()
            .flatten()
            .next()
        {
            return std::fs::read_to_string(entry.path()).unwrap();
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

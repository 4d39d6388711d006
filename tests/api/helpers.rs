//! Spawns the real application on port 0 with a fresh database per test, and
//! offers typed helpers for the steps of the user's story.

use std::collections::{BTreeMap, HashSet};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use gatehouse::app::{AppState, Application};
use gatehouse::clock::Clock;
use gatehouse::config::Settings;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const ADMIN: &str = "admin@example.org";
/// A fixed secret, so tests can forge tokens signed with it.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// The database a test runs on. Every store and API test runs on each.
#[derive(Clone, Copy, Debug)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// A fresh database: a file in the test's dir, or a new Postgres database.
    pub async fn database_url(self, dir: &std::path::Path) -> String {
        match self {
            Backend::Sqlite => format!("sqlite://{}?mode=rwc", dir.join("test.db").display()),
            Backend::Postgres => crate::pg::fresh_database_url().await,
        }
    }
}

/// Generates one `#[tokio::test]` per backend for each named `async fn(Backend)`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::helpers::Backend::Postgres).await
                }
            )*
        }
    };
}

pub struct TestApp {
    pub addr: SocketAddr,
    /// The settings it was started with, so that a restart finds the same data.
    settings: BTreeMap<String, String>,
    pub client: reqwest::Client,
    pub state: Arc<AppState>,
    /// The app's clock: tests move it instead of sleeping until something expires.
    clock: Clock,
    pub dir: tempfile::TempDir,
    stop: Option<oneshot::Sender<()>>,
    server: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
    seen_mail: Mutex<HashSet<PathBuf>>,
}

/// A mail as a test reads it: the raw message and what a member would act on.
#[derive(Debug, Clone)]
pub struct SentMail {
    pub raw: String,
    pub link: String,
    pub token: String,
    pub code: String,
}

impl SentMail {
    pub fn parse(raw: String) -> Self {
        let start = raw
            .find("http")
            .and_then(|_| raw.find("/auth/confirm?token="))
            .expect("mail has a sign-in link");
        let link_start = raw[..start].rfind("http").expect("link has a scheme");
        let link: String = raw[link_start..]
            .chars()
            .take_while(|c| c.is_ascii_alphanumeric() || ":/?=._-".contains(*c))
            .collect();
        let token = link.split("token=").nth(1).expect("token").to_owned();
        let marker = "code where you asked for it: ";
        let code_at = raw.find(marker).expect("mail has a code") + marker.len();
        let code = raw[code_at..code_at + 6].to_owned();
        Self {
            raw,
            link,
            token,
            code,
        }
    }
}

impl TestApp {
    pub async fn spawn(backend: Backend) -> Self {
        Self::spawn_with(backend, &[]).await
    }

    /// Spawns with settings overridden by `overrides` (keys as in the TOML file).
    /// A `database_url` among them (several apps on one database) is used instead
    /// of a fresh database.
    pub async fn spawn_with(backend: Backend, overrides: &[(&str, &str)]) -> Self {
        Self::spawn_at(backend, overrides, Clock::system()).await
    }

    /// [`TestApp::spawn_with`] on `clock`, set before the app starts (e.g. in
    /// the past, so that tokens it signs are live for a verifier on real time).
    pub async fn spawn_at(backend: Backend, overrides: &[(&str, &str)], clock: Clock) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let database_url = match overrides.iter().find(|(key, _)| *key == "database_url") {
            Some((_, url)) => (*url).to_owned(),
            None => backend.database_url(dir.path()).await,
        };
        // Many tests run at once on one Postgres cluster: keep each app's pool small.
        let max_connections = match backend {
            Backend::Sqlite => "10",
            Backend::Postgres => "4",
        };
        let mut raw: BTreeMap<String, String> = [
            ("bind", "127.0.0.1:0".to_owned()),
            ("data_dir", dir.path().display().to_string()),
            ("database_url", database_url),
            ("db_max_connections", max_connections.to_owned()),
            ("bootstrap_admins", ADMIN.to_owned()),
            ("jwt_secret", JWT_SECRET.to_owned()),
            ("allowed_redirects", "https://app.example.org".to_owned()),
            ("rate_limit_per_email", "1000".to_owned()),
            ("rate_limit_per_ip", "100000".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        for (key, value) in overrides {
            raw.insert((*key).to_owned(), (*value).to_owned());
        }
        Self::start(raw, dir, clock).await
    }

    async fn start(raw: BTreeMap<String, String>, dir: tempfile::TempDir, clock: Clock) -> Self {
        let settings = Settings::from_map(&raw).expect("test settings");
        let app = Application::build_with_clock(settings, clock.clone())
            .await
            .expect("app builds");
        let addr = app.local_addr();
        let state = app.state();
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(app.run_until_stopped(async {
            let _ = stopped.await;
        }));
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()
            .expect("client");
        Self {
            addr,
            settings: raw,
            client,
            state,
            clock,
            dir,
            stop: Some(stop),
            server: Some(server),
            seen_mail: Mutex::new(HashSet::new()),
        }
    }

    /// Stops the server as SIGTERM would, waiting for requests and the mail worker to drain.
    pub async fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.expect("server task").expect("server ran");
        }
    }

    /// The app's clock; `app.clock().advance(..)` moves time for the app at once.
    pub fn clock(&self) -> &Clock {
        &self.clock
    }

    /// Shuts down and starts again on the same database and data directory,
    /// and the same clock, with some settings changed.
    pub async fn restart_with(mut self, overrides: &[(&str, &str)]) -> Self {
        self.shutdown().await;
        let mut raw = std::mem::take(&mut self.settings);
        for (key, value) in overrides {
            raw.insert((*key).to_owned(), (*value).to_owned());
        }
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
        Self::start(raw, dir, self.clock.clone()).await
    }

    /// A setting the app was started with, e.g. `database_url` to start a twin on it.
    pub fn setting(&self, key: &str) -> &str {
        self.settings
            .get(key)
            .map(String::as_str)
            .unwrap_or_default()
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    pub async fn post_json(&self, path: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn post_json_as(&self, path: &str, token: &str, body: Value) -> reqwest::Response {
        self.client
            .post(self.url(path))
            .bearer_auth(token)
            .json(&body)
            .send()
            .await
            .expect("request")
    }

    pub async fn get_as(&self, path: &str, token: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .bearer_auth(token)
            .send()
            .await
            .expect("request")
    }

    pub async fn request_link(&self, email: &str) -> reqwest::Response {
        self.post_json("/v1/auth/magic-link", json!({ "email": email }))
            .await
    }

    /// Every `.eml` written so far for `recipient`, oldest first.
    pub fn mail_files_to(&self, recipient: &str) -> Vec<(PathBuf, String)> {
        let dir = self.dir.path().join("mail");
        let mut found: Vec<_> = std::fs::read_dir(&dir)
            .into_iter()
            .flatten()
            .flatten()
            .filter_map(|entry| {
                let path = entry.path();
                let raw = std::fs::read_to_string(&path).ok()?;
                let modified = entry.metadata().ok()?.modified().ok()?;
                raw.lines()
                    .any(|line| line.eq_ignore_ascii_case(&format!("To: {recipient}")))
                    .then_some((modified, path, raw))
            })
            .collect();
        found.sort_by_key(|(modified, path, _)| (*modified, path.clone()));
        found
            .into_iter()
            .map(|(_, path, raw)| (path, raw))
            .collect()
    }

    /// Waits for the next mail to `recipient` that this test has not read yet.
    pub async fn next_mail_to(&self, recipient: &str) -> SentMail {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let unseen = {
                let mut seen = self.seen_mail.lock().unwrap();
                self.mail_files_to(recipient)
                    .into_iter()
                    .find(|(path, _)| seen.insert(path.clone()))
            };
            if let Some((_, raw)) = unseen {
                return SentMail::parse(raw);
            }
            assert!(
                Instant::now() < deadline,
                "no mail to {recipient} within 10 s"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Requests a link, reads the mail and verifies its token: a signed-in member's tokens.
    pub async fn sign_in(&self, email: &str) -> Value {
        assert_eq!(self.request_link(email).await.status(), 202);
        let mail = self.next_mail_to(email).await;
        let response = self
            .post_json("/v1/auth/verify", json!({ "token": mail.token }))
            .await;
        assert_eq!(response.status(), 200, "verify for {email}");
        response.json().await.expect("token json")
    }

    pub async fn admin_token(&self) -> String {
        self.sign_in(ADMIN).await["access_token"]
            .as_str()
            .expect("access token")
            .to_owned()
    }

    /// Allowlists `email` with `roles` as the bootstrap admin.
    pub async fn allowlist(&self, admin_token: &str, email: &str, roles: &[&str]) {
        let response = self
            .post_json_as(
                "/v1/admin/eligible-emails",
                admin_token,
                json!({ "email": email, "roles": roles }),
            )
            .await;
        assert!(
            response.status().is_success(),
            "allowlisting {email}: {}",
            response.status()
        );
    }

    /// The verified claims of an access token, checked with the server's own keys.
    pub fn claims(&self, access_token: &str) -> gatehouse::auth::Claims {
        self.state
            .auth
            .jwt()
            .verify(access_token, self.clock.now())
            .expect("valid access token")
    }
}

/// Asserts an RFC 9457 problem response with `status`, and returns its body.
pub async fn assert_problem(response: reqwest::Response, status: u16) -> Value {
    assert_eq!(response.status(), status, "status");
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(
        content_type.starts_with("application/problem+json"),
        "content type {content_type}"
    );
    let body: Value = response.json().await.expect("problem json");
    assert_eq!(body["status"], status);
    assert!(body["title"].is_string());
    assert!(body["type"].is_string());
    body
}

impl TestApp {
    /// Sends `method path` with a bearer token and an optional JSON body.
    pub async fn send_as(
        &self,
        method: reqwest::Method,
        path: &str,
        token: &str,
        body: Option<Value>,
    ) -> reqwest::Response {
        let mut request = self
            .client
            .request(method, self.url(path))
            .bearer_auth(token);
        if let Some(body) = body {
            request = request.json(&body);
        }
        request.send().await.expect("request")
    }

    /// The allowlisted addresses matching `query` (appended to `?limit=500`), in listing order.
    pub async fn allowlisted(&self, token: &str, query: &str) -> Vec<String> {
        let path = format!("/v1/admin/eligible-emails?limit=500{query}");
        let page = Self::json_ok(self.get_as(&path, token).await, 200).await;
        page["items"]
            .as_array()
            .expect("items")
            .iter()
            .map(|item| item["email"].as_str().expect("email").to_owned())
            .collect()
    }

    /// The OpenAPI document the server serves.
    pub async fn spec(&self) -> Value {
        Self::json_ok(
            self.client
                .get(self.url("/openapi.json"))
                .send()
                .await
                .expect("spec"),
            200,
        )
        .await
    }

    /// The JSON of a successful response, asserting its status.
    pub async fn json_ok(response: reqwest::Response, status: u16) -> Value {
        let code = response.status();
        let text = response.text().await.expect("body");
        assert_eq!(code, status, "unexpected status; body: {text}");
        serde_json::from_str(&text).expect("json body")
    }

    /// The bootstrap admin's member id and access token.
    pub async fn admin(&self) -> (String, String) {
        let grant = self.sign_in(ADMIN).await;
        (
            grant["member"]["id"].as_str().expect("id").to_owned(),
            grant["access_token"].as_str().expect("token").to_owned(),
        )
    }

    /// Allowlists and signs in `email`; returns its member id and access token.
    pub async fn member(&self, admin: &str, email: &str, roles: &[&str]) -> (String, String) {
        self.allowlist(admin, email, roles).await;
        let grant = self.sign_in(email).await;
        (
            grant["member"]["id"].as_str().expect("id").to_owned(),
            grant["access_token"].as_str().expect("token").to_owned(),
        )
    }

    /// Posts a roster CSV file body to the import endpoint.
    pub async fn import_csv(&self, token: &str, body: Vec<u8>, query: &str) -> reqwest::Response {
        self.client
            .post(self.url(&format!("/v1/admin/eligible-emails/import{query}")))
            .bearer_auth(token)
            .header("content-type", "text/csv")
            .body(body)
            .send()
            .await
            .expect("request")
    }
}

/// A roster file from `fixtures/`.
pub fn fixture(name: &str) -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fixtures")
            .join(name),
    )
    .expect("fixture")
}

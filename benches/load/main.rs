//! `cargo bench --bench load`: drives the release server with a closed-loop load
//! generator and prints one table per backend. See BENCHMARKS.md.
//!
//! Knobs (environment): `GATEHOUSE_BENCH_SECS` (per scenario, default 5),
//! `GATEHOUSE_BENCH_CONCURRENCY` (default 32), `GATEHOUSE_BENCH_IMPORT_ROWS`
//! (default 1,000,000), `GATEHOUSE_BENCH_POSTGRES_URL` (a superuser URL of a
//! Postgres server to use; otherwise a throwaway cluster with Postgres' default
//! durability is started from the system binaries, as the tests do;
//! `GATEHOUSE_BENCH_BACKENDS=sqlite` skips Postgres; `GATEHOUSE_BENCH_BIN` runs
//! another server binary (for before/after pairs); `GATEHOUSE_BENCH_LOG` sets the
//! server's log filter (by default its address line and one info line per
//! request); the server inherits the environment, so `GATEHOUSE_JWT_ALG=EdDSA`
//! measures another signing algorithm).

mod client;
#[allow(dead_code)]
#[path = "../../tests/api/pg.rs"]
mod pg;
mod server;

use std::collections::VecDeque;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use client::{Conn, Outcome, Step, get, post_json, send};
use server::{ADMIN, Server, bench_env};

struct Settings {
    duration: Duration,
    concurrency: usize,
    import_rows: usize,
}

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn main() {
    let settings = Settings {
        duration: Duration::from_secs(env_or("GATEHOUSE_BENCH_SECS", 5)),
        concurrency: env_or("GATEHOUSE_BENCH_CONCURRENCY", 32),
        import_rows: env_or("GATEHOUSE_BENCH_IMPORT_ROWS", 1_000_000),
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    println!("# gatehouse load benchmark");
    println!(
        "machine: {} cores, {} MiB memory; {} workers, {} s per scenario; rate limits raised to 1e9 via GATEHOUSE_RATE_LIMIT_* for the run\n",
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(0),
        total_memory_mib(),
        settings.concurrency,
        settings.duration.as_secs()
    );
    let backends =
        std::env::var("GATEHOUSE_BENCH_BACKENDS").unwrap_or_else(|_| "sqlite,postgres".into());
    if backends.contains("sqlite") {
        runtime.block_on(run_backend("sqlite", None, [None, None], &settings));
    }
    if backends.contains("postgres") {
        let cluster = std::env::var("GATEHOUSE_BENCH_POSTGRES_URL")
            .is_err()
            .then(pg::Cluster::start_durable);
        let admin_url = std::env::var("GATEHOUSE_BENCH_POSTGRES_URL").unwrap_or_else(|_| {
            cluster
                .as_ref()
                .map(|c| c.url("postgres"))
                .unwrap_or_default()
        });
        runtime.block_on(async {
            let load = create_database(&admin_url, "bench_load").await;
            let import = create_database(&admin_url, "bench_import").await;
            let bulk = create_database(&admin_url, "bench_bulk").await;
            run_backend(
                "postgres",
                Some(&load),
                [Some(&import), Some(&bulk)],
                &settings,
            )
            .await;
        });
    }
}

/// A new, empty database next to `admin_url`'s.
async fn create_database(admin_url: &str, name: &str) -> String {
    use sqlx::Connection;
    let mut conn = sqlx::PgConnection::connect(admin_url)
        .await
        .expect("connect to Postgres");
    let suffixed = format!("{name}_{}", uuid::Uuid::new_v4().simple());
    sqlx::query(&format!("CREATE DATABASE {suffixed}"))
        .execute(&mut conn)
        .await
        .expect("create database");
    let mut url = url::Url::parse(admin_url).expect("postgres URL");
    url.set_path(&format!("/{suffixed}"));
    url.into()
}

fn total_memory_mib() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<u64>().ok())
        })
        .map(|kb| kb / 1024)
        .unwrap_or(0)
}

/// One row of the table.
struct Row {
    scenario: &'static str,
    /// What the clients saw, and the server's CPU time per request: the
    /// latter holds still when other processes take the cores.
    outcome: (Outcome, f64),
    target: &'static str,
    /// The server's resident memory right after the scenario.
    rss_after: u64,
}

async fn run_backend(
    backend: &str,
    database_url: Option<&str>,
    import_urls: [Option<&str>; 2],
    settings: &Settings,
) {
    let import = import_roster(import_urls[0], settings.import_rows, Roster::Csv).await;
    let bulk = import_roster(import_urls[1], settings.import_rows, Roster::Json).await;
    let dir = tempfile::tempdir().expect("tempdir");
    let env = bench_env(dir.path(), database_url);
    let server = Server::start(&env);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = server.rss_bytes();
    let addr = server.addr.clone();
    let mail_dir = dir.path().join("mail");

    // Seed: the admin, an allowlist of members, one signed-in session per worker.
    let admin = sign_in(&addr, ADMIN, &mail_dir).await;
    let members: Vec<String> = (0..1000)
        .map(|i| format!("member{i}@bench.example.org"))
        .collect();
    let mut conn = client::connect(&addr).await;
    let body = serde_json::json!({ "emails": members, "batch_id": "bench" }).to_string();
    let answer = send(
        &mut conn,
        post_json(
            &addr,
            "/v1/admin/eligible-emails/bulk",
            body,
            &[("authorization", &format!("Bearer {}", admin.access))],
        ),
    )
    .await;
    assert_eq!(answer.map(|a| a.status), Some(200), "seeding the allowlist");
    let mut sessions = Vec::new();
    for email in members.iter().take(settings.concurrency) {
        sessions.push(sign_in(&addr, email, &mail_dir).await);
    }

    let mut rows = Vec::new();
    let floor = measured(
        &server,
        &addr,
        repeat(settings.concurrency, |_| {
            Fixed::get(&addr, "/healthz", None)
        }),
        settings.duration,
    )
    .await;
    let floor_rate = floor.0.rate();
    rows.push(Row {
        scenario: "GET /healthz (floor)",
        outcome: floor,
        target: "—",
        rss_after: server.rss_bytes(),
    });

    // Many distinct access tokens, as many clients send: each worker goes
    // round the whole list from its own starting point.
    let tokens = Arc::new(mint_access_tokens(&addr, &mut sessions, ME_TOKENS).await);
    let me = (0..settings.concurrency)
        .map(|w| RoundRobin {
            addr: addr.clone(),
            tokens: tokens.clone(),
            next: w * tokens.len() / settings.concurrency,
        })
        .collect();
    rows.push(Row {
        scenario: "GET /v1/me (JWT, 1,000 tokens round robin)",
        outcome: measured(&server, &addr, me, settings.duration).await,
        target: "≥ 0.5 × floor",
        rss_after: server.rss_bytes(),
    });

    let sent_before = eml_count(&mail_dir);
    let links = (0..settings.concurrency)
        .map(|w| MagicLink {
            addr: addr.clone(),
            members: members.clone(),
            next: w * 31,
        })
        .collect();
    let magic = measured(&server, &addr, links, settings.duration).await;
    let expected_mail = sent_before + (magic.0.requests - magic.0.errors) as usize;
    rows.push(Row {
        scenario: "POST /v1/auth/magic-link",
        outcome: magic,
        target: if database_url.is_some() {
            "≥ 2,000/s"
        } else {
            "≥ 3,000/s"
        },
        rss_after: server.rss_bytes(),
    });

    // Every accepted request above mailed a link: their tokens feed the verify run.
    wait_for_mail(&mail_dir, expected_mail).await;
    let tokens = Arc::new(Mutex::new(harvest_tokens(&mail_dir)));
    let verifiers = (0..settings.concurrency)
        .map(|_| Verify {
            addr: addr.clone(),
            tokens: tokens.clone(),
        })
        .collect();
    rows.push(Row {
        scenario: "POST /v1/auth/verify",
        outcome: measured(&server, &addr, verifiers, settings.duration).await,
        target: "≥ 2,000/s (SQLite)",
        rss_after: server.rss_bytes(),
    });

    let key = issue_api_key(&addr, &admin.access, &sessions[0].member_id).await;
    let keyed = (0..settings.concurrency)
        .map(|_| Fixed::get_with(&addr, "/v1/me", "x-api-key", key.clone()))
        .collect();
    rows.push(Row {
        scenario: "GET /v1/me (API key, warm)",
        outcome: measured(&server, &addr, keyed, settings.duration).await,
        target: "≥ 0.45 × floor",
        rss_after: server.rss_bytes(),
    });

    let refreshers = sessions
        .iter()
        .map(|s| Refresh {
            addr: addr.clone(),
            token: s.refresh.clone(),
        })
        .collect();
    rows.push(Row {
        scenario: "POST /v1/auth/refresh",
        outcome: measured(&server, &addr, refreshers, settings.duration).await,
        target: "≥ 3,000/s (SQLite)",
        rss_after: server.rss_bytes(),
    });

    let loaded_rss = server.rss_bytes();
    server.stop();
    let restarted = Server::start(&env);
    let ready_after = restarted.ready_after;
    restarted.stop();

    println!("## {backend}\n");
    println!(
        "| scenario | requests/s | × floor | p50 ms | p99 ms | errors | server CPU µs/req | RSS after | target |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |");
    for row in &rows {
        let (outcome, cpu_us) = (&row.outcome.0, row.outcome.1);
        println!(
            "| {} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {:.0} | {:.0} MB | {} |",
            row.scenario,
            outcome.rate(),
            outcome.rate() / floor_rate,
            outcome.p50_ms(),
            outcome.p99_ms(),
            outcome.errors,
            cpu_us,
            row.rss_after as f64 / 1e6,
            row.target
        );
    }
    println!(
        "| idle server | RSS {:.1} MB (after load: {:.1} MB) | | | | | | RSS ≤ 30 MB |",
        idle_rss as f64 / 1e6,
        loaded_rss as f64 / 1e6
    );
    println!(
        "| start on an existing database | ready after {} ms | | | | | | ≤ 200 ms |",
        ready_after.as_millis()
    );
    let target = if database_url.is_some() { 8 } else { 10 };
    for (what, import) in [("CSV", &import), ("JSON (bulk)", &bulk)] {
        let outcome = match import.refused {
            Some(status) => format!("refused: {status}"),
            None => format!(
                "{:.1} s ({:.0} rows/s), {} added",
                import.elapsed.as_secs_f64(),
                import.rows as f64 / import.elapsed.as_secs_f64(),
                import.added,
            ),
        };
        println!(
            "| roster import, {} rows of {what} over HTTP | {outcome} | | | | | | ≤ {target} s |",
            import.rows,
        );
        println!(
            "| peak RSS during the {what} import | {:.1} MB | | | | | | ≤ 150 MB |",
            import.peak_rss as f64 / 1e6
        );
    }
    println!();
}

/// How a roster travels: a CSV file to the import route, or a JSON body to the bulk route.
#[derive(Clone, Copy, PartialEq)]
enum Roster {
    Csv,
    Json,
}

struct ImportResult {
    rows: usize,
    /// The status when the server refused the upload (a binary from before
    /// the bulk route took rosters answers 413).
    refused: Option<u16>,
    added: u64,
    elapsed: Duration,
    peak_rss: u64,
}

/// Uploads a generated roster of `rows` addresses to a fresh server, as an admin
/// would from a spreadsheet (or a script, as JSON: the same addresses, but the
/// bulk body carries no roles), and measures the server's peak memory.
async fn import_roster(database_url: Option<&str>, rows: usize, roster: Roster) -> ImportResult {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(&bench_env(dir.path(), database_url));
    let addr = server.addr.clone();
    let admin = sign_in(&addr, ADMIN, &dir.path().join("mail")).await;
    let mut body = String::with_capacity(rows * 40);
    let (path, content_type) = match roster {
        Roster::Csv => {
            body.push_str("email,roles\r\n");
            for i in 0..rows {
                let roles = if i % 10 == 0 { "sustainer" } else { "" };
                body.push_str(&format!("Member.{i}@Import.Example.org,{roles}\r\n"));
            }
            (
                "/v1/admin/eligible-emails/import?batch_id=bench",
                "text/csv",
            )
        }
        Roster::Json => {
            body.push_str(r#"{"batch_id":"bench","emails":["#);
            for i in 0..rows {
                let comma = if i > 0 { "," } else { "" };
                body.push_str(&format!("{comma}\"Member.{i}@Import.Example.org\""));
            }
            body.push_str("]}");
            ("/v1/admin/eligible-emails/bulk", "application/json")
        }
    };
    let request = hyper::Request::post(path)
        .header("host", &addr)
        .header("content-type", content_type)
        .header("authorization", format!("Bearer {}", admin.access))
        .body(http_body_util::Full::new(bytes::Bytes::from(body)))
        .expect("request");
    let mut conn = client::connect(&addr).await;
    let started = Instant::now();
    let answer = send(&mut conn, request).await.expect("import answer");
    let elapsed = started.elapsed();
    let refused = (roster == Roster::Json && answer.status == 413).then_some(answer.status);
    assert!(
        answer.status == 200 || refused.is_some(),
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let report: serde_json::Value = serde_json::from_slice(&answer.body).expect("report");
    let peak_rss = server::peak_rss_of(server.pid());
    server.stop();
    ImportResult {
        rows,
        refused,
        added: report["added"].as_u64().unwrap_or(0),
        elapsed,
        peak_rss,
    }
}

async fn issue_api_key(addr: &str, admin_token: &str, member_id: &str) -> String {
    let mut conn = client::connect(addr).await;
    let path = format!("/v1/admin/members/{member_id}/api-keys");
    let authorization = format!("Bearer {admin_token}");
    let request = post_json(
        addr,
        &path,
        r#"{"name":"bench"}"#.into(),
        &[("authorization", &authorization)],
    );
    let answer = send(&mut conn, request).await.expect("issue key");
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    let issued: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
    issued["key"].as_str().expect("key").to_owned()
}

/// Runs a scenario; what the clients saw, and the server's CPU time per request in µs.
async fn measured<S: Step>(
    server: &Server,
    addr: &str,
    steps: Vec<S>,
    duration: Duration,
) -> (Outcome, f64) {
    let cpu_before = server.cpu_secs();
    let outcome = client::run(addr, steps, duration).await;
    let cpu = server.cpu_secs() - cpu_before;
    let per_request = cpu * 1e6 / outcome.requests.max(1) as f64;
    (outcome, per_request)
}

fn repeat<S>(n: usize, make: impl Fn(usize) -> S) -> Vec<S> {
    (0..n).map(make).collect()
}

/// Distinct access tokens `GET /v1/me` goes round.
const ME_TOKENS: usize = 1000;

/// `total` distinct access tokens, minted by refreshing the sessions in turn
/// (each refresh signs a new token; the earlier ones stay live). The sessions
/// keep their newest refresh token.
async fn mint_access_tokens(addr: &str, sessions: &mut [Session], total: usize) -> Vec<String> {
    let mut conn = client::connect(addr).await;
    let mut tokens = Vec::with_capacity(total);
    for i in 0..total {
        let session = &mut sessions[i % sessions.len()];
        let body = format!(r#"{{"refresh_token":"{}"}}"#, session.refresh);
        let answer = send(&mut conn, post_json(addr, "/v1/auth/refresh", body, &[]))
            .await
            .expect("refresh");
        assert_eq!(
            answer.status,
            200,
            "{}",
            String::from_utf8_lossy(&answer.body)
        );
        let grant: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
        session.refresh = grant["refresh_token"].as_str().expect("refresh").to_owned();
        tokens.push(grant["access_token"].as_str().expect("access").to_owned());
    }
    tokens
}

/// `GET /v1/me` with each token of a shared list in turn.
struct RoundRobin {
    addr: String,
    tokens: Arc<Vec<String>>,
    next: usize,
}

impl Step for RoundRobin {
    async fn step(&mut self, conn: &mut Conn) -> Option<bool> {
        self.next = (self.next + 1) % self.tokens.len();
        let authorization = format!("Bearer {}", self.tokens[self.next]);
        let answer = send(
            conn,
            get(&self.addr, "/v1/me", &[("authorization", &authorization)]),
        )
        .await;
        Some(answer.is_some_and(|a| a.status == 200))
    }
}

struct Session {
    member_id: String,
    access: String,
    refresh: String,
}

/// Signs `email` in the way a member does: request, read the mail, verify.
async fn sign_in(addr: &str, email: &str, mail_dir: &Path) -> Session {
    let before = eml_count(mail_dir);
    let mut conn = client::connect(addr).await;
    let body = serde_json::json!({ "email": email }).to_string();
    let answer = send(&mut conn, post_json(addr, "/v1/auth/magic-link", body, &[])).await;
    assert_eq!(answer.map(|a| a.status), Some(202));
    wait_for_mail(mail_dir, before + 1).await;
    let started = Instant::now();
    let token = loop {
        let mail = harvest_tokens(mail_dir)
            .into_iter()
            .find(|(to, _)| to == email);
        if let Some((_, token)) = mail {
            break token;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "no mail for {email}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    let body = serde_json::json!({ "token": token }).to_string();
    let answer = send(&mut conn, post_json(addr, "/v1/auth/verify", body, &[]))
        .await
        .expect("verify");
    let tokens: serde_json::Value = serde_json::from_slice(&answer.body).expect("json");
    Session {
        member_id: tokens["member"]["id"]
            .as_str()
            .expect("member id")
            .to_owned(),
        access: tokens["access_token"].as_str().expect("access").to_owned(),
        refresh: tokens["refresh_token"]
            .as_str()
            .expect("refresh")
            .to_owned(),
    }
}

fn eml_count(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

async fn wait_for_mail(dir: &Path, count: usize) {
    let started = Instant::now();
    while eml_count(dir) < count {
        assert!(
            started.elapsed() < Duration::from_secs(300),
            "the outbox did not drain"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `(recipient, token)` of every mail written, each file read once and then removed.
fn harvest_tokens(dir: &Path) -> VecDeque<(String, String)> {
    let mut found = VecDeque::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let Ok(raw) = std::fs::read_to_string(entry.path()) else {
            continue;
        };
        // The transport writes a file in more than one step: leave a file that
        // does not end with the MIME closing boundary yet for a later call.
        if !raw.trim_end().ends_with("--") {
            continue;
        }
        let to = raw
            .lines()
            .find_map(|l| l.strip_prefix("To: "))
            .unwrap_or_default()
            .to_owned();
        if let Some(token) = raw
            .split("confirm?token=")
            .nth(1)
            .map(|t| t.chars().take(43).collect::<String>())
        {
            found.push_back((to, token));
        }
        let _ = std::fs::remove_file(entry.path());
    }
    found
}

/// The same GET again and again, with an optional credential header.
struct Fixed {
    addr: String,
    path: &'static str,
    credential: Option<(&'static str, String)>,
}

impl Fixed {
    fn get(addr: &str, path: &'static str, authorization: Option<String>) -> Self {
        let credential = authorization.map(|a| ("authorization", a));
        Self {
            addr: addr.to_owned(),
            path,
            credential,
        }
    }

    fn get_with(addr: &str, path: &'static str, header: &'static str, value: String) -> Self {
        Self {
            addr: addr.to_owned(),
            path,
            credential: Some((header, value)),
        }
    }
}

impl Step for Fixed {
    async fn step(&mut self, conn: &mut Conn) -> Option<bool> {
        let headers: Vec<(&str, &str)> = self
            .credential
            .iter()
            .map(|(h, v)| (*h, v.as_str()))
            .collect();
        let answer = send(conn, get(&self.addr, self.path, &headers)).await;
        Some(answer.is_some_and(|a| a.status == 200))
    }
}

/// Link requests for eligible addresses, round-robin over the allowlist.
struct MagicLink {
    addr: String,
    members: Vec<String>,
    next: usize,
}

impl Step for MagicLink {
    async fn step(&mut self, conn: &mut Conn) -> Option<bool> {
        self.next = (self.next + 1) % self.members.len();
        let body = format!(r#"{{"email":"{}"}}"#, self.members[self.next]);
        let answer = send(
            conn,
            post_json(&self.addr, "/v1/auth/magic-link", body, &[]),
        )
        .await;
        Some(answer.is_some_and(|a| a.status == 202))
    }
}

/// Redeems mailed tokens, each once, until they run out.
struct Verify {
    addr: String,
    tokens: Arc<Mutex<VecDeque<(String, String)>>>,
}

impl Step for Verify {
    async fn step(&mut self, conn: &mut Conn) -> Option<bool> {
        let (_, token) = self.tokens.lock().ok()?.pop_front()?;
        let body = format!(r#"{{"token":"{token}"}}"#);
        let answer = send(conn, post_json(&self.addr, "/v1/auth/verify", body, &[])).await;
        Some(answer.is_some_and(|a| a.status == 200))
    }
}

/// Rotates one session's refresh token again and again.
struct Refresh {
    addr: String,
    token: String,
}

impl Step for Refresh {
    async fn step(&mut self, conn: &mut Conn) -> Option<bool> {
        let body = format!(r#"{{"refresh_token":"{}"}}"#, self.token);
        let answer = send(conn, post_json(&self.addr, "/v1/auth/refresh", body, &[])).await?;
        if answer.status != 200 {
            return Some(false);
        }
        let tokens: serde_json::Value = serde_json::from_slice(&answer.body).ok()?;
        self.token = tokens["refresh_token"].as_str()?.to_owned();
        Some(true)
    }
}

//! What an operator watches: `/metrics` after a sign-in story, read with the
//! Prometheus project's own parser (Python's `prometheus_client`), and the
//! request id every answer carries.

use std::collections::BTreeMap;
use std::process::Command;

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, TestApp, assert_problem};

/// One sample of the exposition, as the parser read it.
#[derive(Debug, serde::Deserialize)]
struct Sample {
    name: String,
    labels: BTreeMap<String, String>,
    value: f64,
}

/// Parses `text` with `tests/support/parse_metrics.py`; fails clearly if
/// Python or its `prometheus_client` is missing (CI installs it: `.ci/run`).
fn parse_exposition(text: &str) -> Vec<Sample> {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/support/parse_metrics.py"
    );
    let output = Command::new("python3")
        .arg(script)
        .arg(&file)
        .output()
        .expect("python3 must be installed to parse /metrics (see .ci/run)");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.code() != Some(3),
        "{stderr}: run `pip install prometheus-client` (as .ci/run does)"
    );
    assert!(
        output.status.success(),
        "the parser refused /metrics: {stderr}\n{text}"
    );
    String::from_utf8(output.stdout)
        .unwrap()
        .lines()
        .map(|line| serde_json::from_str(line).expect("a sample"))
        .collect()
}

/// The sum of the samples named `name` whose labels include `labels`.
fn total(samples: &[Sample], name: &str, labels: &[(&str, &str)]) -> f64 {
    samples
        .iter()
        .filter(|s| s.name == name)
        .filter(|s| {
            labels
                .iter()
                .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|s| s.value)
        .sum()
}

async fn scrape(app: &TestApp) -> (String, Vec<Sample>) {
    let response = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(response.status(), 200);
    let text = response.text().await.unwrap();
    let samples = parse_exposition(&text);
    (text, samples)
}

async fn metrics_count_the_sign_in_story_without_naming_anyone(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("rate_limit_per_email", "3")]).await;
    let (admin_id, admin) = app.admin().await;
    let member = "member@example.org";
    app.allowlist(&admin, member, &["member"]).await;

    // The member asks for a link, mistypes the code, then types it right.
    assert_eq!(app.request_link(member).await.status(), 202);
    let mail = app.next_mail_to(member).await;
    let wrong: String = mail
        .code
        .chars()
        .map(|c| if c == '9' { '0' } else { '9' })
        .collect();
    let refused = app
        .post_json("/v1/auth/verify", json!({ "email": member, "code": wrong }))
        .await;
    assert_problem(refused, 401).await;
    let grant: Value = app
        .post_json(
            "/v1/auth/verify",
            json!({ "email": member, "code": mail.code }),
        )
        .await
        .json()
        .await
        .unwrap();
    let refresh = grant["refresh_token"].as_str().unwrap().to_owned();

    // A garbled link, and a stranger who keeps asking until the limit says no.
    let garbled = app
        .post_json("/v1/auth/verify", json!({ "token": "not-a-token" }))
        .await;
    assert_problem(garbled, 401).await;
    let stranger = "stranger@example.org";
    for _ in 0..3 {
        assert_eq!(app.request_link(stranger).await.status(), 202);
    }
    assert_eq!(app.request_link(stranger).await.status(), 429);

    // A refresh token rotated, then replayed.
    for expected in [200, 401] {
        let response = app
            .post_json("/v1/auth/refresh", json!({ "refresh_token": refresh }))
            .await;
        assert_eq!(response.status(), expected);
    }

    // An API key: hashed on first use, remembered after.
    let issued: Value = TestApp::json_ok(
        app.post_json_as(
            &format!("/v1/admin/members/{admin_id}/api-keys"),
            &admin,
            json!({ "name": "ops" }),
        )
        .await,
        201,
    )
    .await;
    let key = issued["key"].as_str().unwrap();
    for _ in 0..2 {
        let response = app
            .client
            .get(app.url("/v1/admin/members"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
    }

    // A path that names an address, and one that matches no route.
    let one_member = app
        .get_as(&format!("/v1/admin/members/{admin_id}"), &admin)
        .await;
    assert_eq!(one_member.status(), 200);
    let unknown = app
        .get_as(&format!("/nothing/here/{stranger}"), &admin)
        .await;
    assert_eq!(unknown.status(), 404);

    let (text, samples) = scrape(&app).await;
    let links = "gatehouse_sign_in_links_requested_total";
    assert_eq!(
        total(&samples, links, &[("eligible", "true")]),
        2.0,
        "{text}"
    );
    assert_eq!(
        total(&samples, links, &[("eligible", "false")]),
        3.0,
        "{text}"
    );
    let sign_ins = "gatehouse_sign_ins_total";
    assert_eq!(
        total(&samples, sign_ins, &[("method", "link")]),
        1.0,
        "{text}"
    );
    assert_eq!(
        total(&samples, sign_ins, &[("method", "code")]),
        1.0,
        "{text}"
    );
    let failures = "gatehouse_sign_in_failures_total";
    let wrong_code = [("method", "code"), ("reason", "wrong_code")];
    assert_eq!(total(&samples, failures, &wrong_code), 1.0, "{text}");
    let malformed = [("method", "link"), ("reason", "malformed")];
    assert_eq!(total(&samples, failures, &malformed), 1.0, "{text}");
    let reuse = "gatehouse_refresh_token_reuse_total";
    assert_eq!(total(&samples, reuse, &[]), 1.0, "{text}");
    let limited = "gatehouse_rate_limited_total";
    assert_eq!(
        total(&samples, limited, &[("limit", "email")]),
        1.0,
        "{text}"
    );
    let keys = "gatehouse_api_key_verifications_total";
    let hashed = [("check", "hashed"), ("valid", "true")];
    assert_eq!(total(&samples, keys, &hashed), 1.0, "{text}");
    assert_eq!(
        total(&samples, keys, &[("check", "remembered")]),
        1.0,
        "{text}"
    );
    let argon2 = "gatehouse_api_key_argon2_seconds_count";
    assert_eq!(total(&samples, argon2, &[]), 1.0, "{text}");

    let requests = "gatehouse_http_requests_total";
    let link_route = [
        ("route", "/v1/auth/magic-link"),
        ("method", "POST"),
        ("status", "202"),
    ];
    assert_eq!(total(&samples, requests, &link_route), 5.0, "{text}");
    let too_many = [("route", "/v1/auth/magic-link"), ("status", "429")];
    assert_eq!(total(&samples, requests, &too_many), 1.0, "{text}");
    let unmatched = [("route", "unmatched"), ("status", "404")];
    assert_eq!(total(&samples, requests, &unmatched), 1.0, "{text}");
    let member_route = samples
        .iter()
        .filter(|s| s.name == requests)
        .filter_map(|s| s.labels.get("route"))
        .find(|route| route.starts_with("/v1/admin/members/") && !route.contains("api-keys"))
        .expect("the member route is counted");
    assert!(
        !member_route.contains(&admin_id),
        "a template, not a path: {member_route}"
    );
    let latency = "gatehouse_http_request_duration_seconds_count";
    assert!(total(&samples, latency, &[("route", "/v1/auth/verify")]) >= 4.0);

    let pools: Vec<&str> = samples
        .iter()
        .filter(|s| s.name == "gatehouse_db_pool_max_connections")
        .map(|s| s.labels["pool"].as_str())
        .collect();
    let expected = match backend {
        Backend::Sqlite => ["reader", "writer"],
        Backend::Postgres => ["counters", "main"],
    };
    for pool in expected {
        assert!(pools.contains(&pool), "pool {pool} in {pools:?}");
    }
    let queued = [("queue", "outbox"), ("state", "queued")];
    assert_eq!(
        samples
            .iter()
            .filter(|s| s.name == "gatehouse_queue_items")
            .filter(|s| queued.iter().all(|(k, v)| s.labels[*k] == *v))
            .count(),
        1,
        "{text}"
    );
    assert_eq!(total(&samples, "gatehouse_build_info", &[]), 1.0, "{text}");

    // No series names a person, a token, a code or a raw path.
    for sample in &samples {
        for value in sample.labels.values() {
            assert!(!value.contains('@'), "an address in {sample:?}");
            assert!(!value.contains(&refresh), "a token in {sample:?}");
            assert!(!value.contains(&mail.code), "a code in {sample:?}");
            assert!(!value.contains("/nothing"), "a raw path in {sample:?}");
        }
    }
    assert!(!text.contains(ADMIN) && !text.contains(member) && !text.contains(stranger));
}

backend_tests!(metrics_count_the_sign_in_story_without_naming_anyone);

fn request_id(response: &reqwest::Response) -> String {
    response
        .headers()
        .get("x-request-id")
        .expect("an X-Request-Id header")
        .to_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn every_answer_and_problem_carries_the_request_id() {
    let app = TestApp::spawn(Backend::Sqlite).await;
    let get_me = |id: &'static str| {
        app.client
            .get(app.url("/v1/me"))
            .header("x-request-id", id)
            .send()
    };
    // Not from a trusted proxy: the client's id is replaced by a fresh one.
    let response = get_me("chosen-by-client").await.unwrap();
    let id = request_id(&response);
    assert_ne!(id, "chosen-by-client");
    assert_eq!(
        assert_problem(response, 401).await["request_id"],
        id.as_str()
    );
    let healthy = app.client.get(app.url("/healthz")).send().await.unwrap();
    let other = request_id(&healthy);
    assert_ne!(other, id, "each request gets its own id");
    let unknown = app
        .client
        .get(app.url("/no/such/page"))
        .send()
        .await
        .unwrap();
    let unknown_id = request_id(&unknown);
    assert_eq!(
        assert_problem(unknown, 404).await["request_id"],
        unknown_id.as_str()
    );

    // Behind a trusted proxy its id is kept, if it is a plain one.
    let proxied = TestApp::spawn_with(Backend::Sqlite, &[("trusted_proxies", "127.0.0.1")]).await;
    let response = proxied
        .client
        .get(proxied.url("/v1/me"))
        .header("x-request-id", "edge-7f3a:42")
        .send()
        .await
        .unwrap();
    assert_eq!(request_id(&response), "edge-7f3a:42");
    assert_eq!(
        assert_problem(response, 401).await["request_id"],
        "edge-7f3a:42"
    );
    let response = proxied
        .client
        .get(proxied.url("/healthz"))
        .header("x-request-id", "two words")
        .send()
        .await
        .unwrap();
    assert_ne!(request_id(&response), "two words");
}

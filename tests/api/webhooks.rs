//! Webhooks: other systems hear of every membership change, signed as the
//! Standard Webhooks specification says (checked by the `standardwebhooks`
//! Python package in `webhook_receiver.py`), at least once, through faults.

use std::collections::HashMap;
use std::time::Duration;

use gatehouse::domain::{MemberId, MemberStatus};
use gatehouse::store::AuditEntry;
use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp};
use crate::webhook_receiver::Receiver;

/// Receivers on 127.0.0.1 over http need the insecure setting; retries wait a
/// minute or more, so only a moved clock brings them due.
const LOCAL: [(&str, &str); 2] = [
    ("webhooks_allow_insecure", "true"),
    ("webhooks_retry_base_ms", "60000"),
];

const ALL_EVENTS: [&str; 7] = [
    "member.created",
    "member.updated",
    "member.deleted",
    "allowlist.imported",
    "allowlist.batch_withdrawn",
    "apikey.created",
    "apikey.revoked",
];

async fn app_with(backend: Backend, extra: &[(&str, &str)]) -> TestApp {
    let mut settings = LOCAL.to_vec();
    settings.extend_from_slice(extra);
    TestApp::spawn_with(backend, &settings).await
}

/// Registers `receiver` for `events`; returns the endpoint's JSON (with its secret).
async fn subscribe(app: &TestApp, admin: &str, receiver: &Receiver, events: &[&str]) -> Value {
    let created = TestApp::json_ok(
        app.post_json_as(
            "/v1/admin/webhooks",
            admin,
            json!({ "url": receiver.url(), "events": events, "description": "the forum" }),
        )
        .await,
        201,
    )
    .await;
    receiver.set_secret(created["secret"].as_str().expect("secret"));
    created
}

async fn deliveries(app: &TestApp, admin: &str, hook: &str) -> Vec<Value> {
    let page = TestApp::json_ok(
        app.get_as(&format!("/v1/admin/webhooks/{hook}/deliveries"), admin)
            .await,
        200,
    )
    .await;
    page["items"].as_array().expect("items").clone()
}

/// Waits until the endpoint's newest delivery satisfies `done`.
async fn wait_for_delivery(
    app: &TestApp,
    admin: &str,
    hook: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(first) = deliveries(app, admin, hook).await.first()
            && done(first)
        {
            return first.clone();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "delivery not as expected: {:?}",
            deliveries(app, admin, hook).await
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn every_change_reaches_the_receiver_signed_with_its_data(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let (_, admin) = app.admin().await;
    let receiver = Receiver::start().await;
    let hook = subscribe(&app, &admin, &receiver, &ALL_EVENTS).await;
    assert!(hook["secret"].as_str().unwrap().starts_with("whsec_"));

    // allowlist.imported (a single add is an import of one), then member.created on first sign-in.
    let (ann, _) = app.member(&admin, "ann@example.org", &["active"]).await;
    // member.created and apikey.created by onboarding.
    let onboarded = TestApp::json_ok(
        app.post_json_as(
            "/v1/admin/members",
            &admin,
            json!({ "email": "bob@example.org", "roles": ["sustainer"],
                    "api_key": { "name": "billing", "roles": ["member"] } }),
        )
        .await,
        201,
    )
    .await;
    let bob = onboarded["member"]["id"].as_str().unwrap().to_owned();
    // member.updated: status, then roles.
    let path = format!("/v1/admin/members/{ann}");
    let suspend = json!({ "status": "suspended" });
    let response = app
        .send_as(Method::PATCH, &path, &admin, Some(suspend))
        .await;
    TestApp::json_ok(response, 200).await;
    let roles = json!({ "roles": ["member", "sustainer"] });
    let response = app
        .send_as(Method::PUT, &format!("{path}/roles"), &admin, Some(roles))
        .await;
    TestApp::json_ok(response, 200).await;
    // apikey.revoked.
    let key = onboarded["api_key"]["id"].as_str().unwrap().to_owned();
    let response = app
        .send_as(
            Method::DELETE,
            &format!("/v1/admin/api-keys/{key}"),
            &admin,
            None,
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    // allowlist.imported (CSV) and allowlist.batch_withdrawn.
    let csv = b"email\ncarl@example.org\ndora@example.org\n".to_vec();
    let report = app.import_csv(&admin, csv, "?batch_id=spring").await;
    TestApp::json_ok(report, 200).await;
    let response = app
        .send_as(Method::DELETE, "/v1/admin/batches/spring", &admin, None)
        .await;
    assert!(response.status().is_success(), "{}", response.status());
    // member.deleted.
    let response = app
        .send_as(
            Method::DELETE,
            &format!("/v1/admin/members/{bob}"),
            &admin,
            None,
        )
        .await;
    assert!(response.status().is_success(), "{}", response.status());

    let mut seen = receiver.wait_for_events(10).await;
    // Ids are time-ordered; deliveries of one batch may arrive in any order.
    seen.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    let requests = receiver.requests();
    assert!(
        requests.iter().all(|r| r["verified"] == true),
        "{requests:?}"
    );
    let types: Vec<&str> = seen
        .iter()
        .map(|e| e["event"]["type"].as_str().unwrap())
        .collect();
    for kind in ALL_EVENTS {
        assert!(types.contains(&kind), "{kind} missing from {types:?}");
    }
    let ids: std::collections::HashSet<&str> =
        seen.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), seen.len(), "one webhook-id per event");

    let created: Vec<Value> = seen
        .iter()
        .map(|e| e["event"].clone())
        .filter(|e| e["type"] == "member.created")
        .collect();
    let by_sign_in = created
        .iter()
        .find(|e| e["data"]["via"] == "sign_in")
        .unwrap();
    assert_eq!(by_sign_in["data"]["member"]["id"], ann.as_str());
    assert_eq!(by_sign_in["data"]["member"]["email"], "ann@example.org");
    assert_eq!(by_sign_in["data"]["member"]["status"], "active");
    assert_eq!(
        by_sign_in["data"]["member"]["roles"],
        json!(["active", "member"])
    );
    assert!(by_sign_in["timestamp"].as_str().unwrap().ends_with('Z'));
    let by_onboarding = created
        .iter()
        .find(|e| e["data"]["via"] == "onboarding")
        .unwrap();
    assert_eq!(by_onboarding["data"]["member"]["id"], bob.as_str());
    assert_eq!(
        by_onboarding["data"]["member"]["roles"],
        json!(["member", "sustainer"])
    );

    let updates: Vec<Value> = seen
        .iter()
        .map(|e| e["event"].clone())
        .filter(|e| e["type"] == "member.updated")
        .collect();
    assert_eq!(updates.len(), 2, "{updates:?}");
    assert_eq!(
        updates[0]["data"]["changes"],
        json!({ "status": { "from": "active", "to": "suspended" } })
    );
    assert_eq!(updates[0]["data"]["member"]["status"], "suspended");
    assert_eq!(
        updates[1]["data"]["changes"],
        json!({ "roles": { "added": ["sustainer"], "removed": ["active"] } })
    );

    let key_created = receiver.event("apikey.created");
    assert_eq!(key_created["data"]["api_key"]["id"], key.as_str());
    assert_eq!(key_created["data"]["api_key"]["name"], "billing");
    assert_eq!(key_created["data"]["api_key"]["member_id"], bob.as_str());
    assert!(
        !key_created.to_string().contains("gh_"),
        "never the key itself"
    );
    let revoked: Vec<Value> = seen
        .iter()
        .map(|e| e["event"].clone())
        .filter(|e| e["type"] == "apikey.revoked")
        .collect();
    assert_eq!(
        revoked.len(),
        1,
        "a revoked key is revoked once: {revoked:?}"
    );
    assert_eq!(revoked[0]["data"]["reason"], "revoked");

    let imported: Vec<Value> = seen
        .iter()
        .map(|e| e["event"].clone())
        .filter(|e| e["type"] == "allowlist.imported")
        .collect();
    let spring = imported
        .iter()
        .find(|e| e["data"]["batch"]["id"] == "spring")
        .unwrap();
    assert_eq!(spring["data"]["batch"]["source"], "csv");
    assert_eq!(spring["data"]["batch"]["rows"], 2);
    assert_eq!(spring["data"]["batch"]["added"], 2);
    let withdrawn = receiver.event("allowlist.batch_withdrawn");
    assert_eq!(
        withdrawn["data"]["batch"],
        json!({ "id": "spring", "removed": 2 })
    );
    let deleted = receiver.event("member.deleted");
    assert_eq!(deleted["data"]["member"]["id"], bob.as_str());
    assert_eq!(deleted["data"]["member"]["status"], "deleted");
}

async fn an_endpoint_receives_only_the_events_it_chose_and_nothing_while_disabled(
    backend: Backend,
) {
    let app = app_with(backend, &[]).await;
    let (_, admin) = app.admin().await;
    let receiver = Receiver::start().await;
    let hook = subscribe(&app, &admin, &receiver, &["member.deleted"]).await;
    let id = hook["id"].as_str().unwrap();

    let (ann, _) = app.member(&admin, "ann@example.org", &[]).await;
    let path = format!("/v1/admin/webhooks/{id}");
    let disable = app
        .send_as(
            Method::PATCH,
            &path,
            &admin,
            Some(json!({ "enabled": false })),
        )
        .await;
    let disabled = TestApp::json_ok(disable, 200).await;
    assert_eq!(disabled["enabled"], false);
    assert_eq!(disabled["disabled_reason"], "disabled by an admin");
    let response = app
        .send_as(
            Method::DELETE,
            &format!("/v1/admin/members/{ann}"),
            &admin,
            None,
        )
        .await;
    assert!(response.status().is_success());

    let enable = json!({ "enabled": true, "events": ["member.deleted", "member.updated"] });
    let enabled = TestApp::json_ok(
        app.send_as(Method::PATCH, &path, &admin, Some(enable))
            .await,
        200,
    )
    .await;
    assert_eq!(
        enabled["events"],
        json!(["member.updated", "member.deleted"])
    );
    let (carl, _) = app.member(&admin, "carl@example.org", &[]).await;
    let response = app
        .send_as(
            Method::DELETE,
            &format!("/v1/admin/members/{carl}"),
            &admin,
            None,
        )
        .await;
    assert!(response.status().is_success());

    let seen = receiver.wait_for_events(1).await;
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let seen_later = receiver.events();
    assert_eq!(seen_later.len(), 1, "{seen_later:?}");
    assert_eq!(seen[0]["event"]["data"]["member"]["id"], carl.as_str());
}

async fn admins_manage_endpoints_and_every_change_is_audited(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let (_, admin) = app.admin().await;
    let receiver = Receiver::start().await;
    let hook = subscribe(&app, &admin, &receiver, &["member.created"]).await;
    let id = hook["id"].as_str().unwrap().to_owned();
    let path = format!("/v1/admin/webhooks/{id}");

    let listed = TestApp::json_ok(app.get_as("/v1/admin/webhooks", &admin).await, 200).await;
    assert_eq!(listed["items"][0]["id"], id.as_str());
    assert!(listed["items"][0].get("secret").is_none(), "shown once");
    let one = TestApp::json_ok(app.get_as(&path, &admin).await, 200).await;
    assert_eq!(one["description"], "the forum");
    assert!(one.get("secret").is_none());

    let unknown = app
        .send_as(
            Method::PATCH,
            &path,
            &admin,
            Some(json!({ "events": ["member.added"] })),
        )
        .await;
    // Event types are an enum in the spec: an unknown one is refused before
    // the handler, as the spec says.
    let problem = crate::helpers::assert_problem(unknown, 400).await;
    assert_eq!(problem["code"], "invalid_body", "{problem}");

    // After a rotation, deliveries verify with the new secret only.
    let rotated = TestApp::json_ok(
        app.post_json_as(&format!("{path}/rotate-secret"), &admin, json!({}))
            .await,
        200,
    )
    .await;
    let secret = rotated["secret"].as_str().unwrap();
    assert_ne!(secret, hook["secret"].as_str().unwrap());
    receiver.set_secret(secret);
    app.member(&admin, "ann@example.org", &[]).await;
    let seen = receiver.wait_for_events(1).await;
    assert_eq!(seen[0]["event"]["type"], "member.created");

    let deleted = app.send_as(Method::DELETE, &path, &admin, None).await;
    assert_eq!(deleted.status(), 204);
    assert_eq!(app.get_as(&path, &admin).await.status(), 404);

    let audit = TestApp::json_ok(
        app.get_as(&format!("/v1/admin/audit?target={id}&limit=50"), &admin)
            .await,
        200,
    )
    .await;
    let actions: Vec<&str> = audit["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| row["action"].as_str().unwrap())
        .collect();
    for action in [
        "webhook.created",
        "webhook.secret_rotated",
        "webhook.deleted",
    ] {
        assert!(actions.contains(&action), "{action} not in {actions:?}");
    }
}

async fn a_receiver_that_is_down_gets_the_event_once_it_is_up(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let (_, admin) = app.admin().await;
    let mut receiver = Receiver::start().await;
    let hook = subscribe(&app, &admin, &receiver, &["member.created"]).await;
    let id = hook["id"].as_str().unwrap();
    receiver.stop();

    app.member(&admin, "ann@example.org", &[]).await;
    let pending = wait_for_delivery(&app, &admin, id, |d| d["attempts"].as_i64() >= Some(1)).await;
    assert_eq!(pending["status"], "pending");
    assert!(pending["next_attempt_at"].is_string());
    assert!(
        pending["last_error"].as_str().unwrap().contains("connect"),
        "{pending}"
    );

    receiver.restart().await;
    app.clock().advance(Duration::from_secs(600));
    let seen = receiver.wait_for_events(1).await;
    assert_eq!(seen[0]["event"]["type"], "member.created");
    let delivered = wait_for_delivery(&app, &admin, id, |d| d["status"] == "delivered").await;
    assert_eq!(delivered["attempts"], 2);
    assert_eq!(delivered["last_response_code"], 204);
}

async fn a_500_is_retried_with_the_same_webhook_id(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let (_, admin) = app.admin().await;
    let receiver = Receiver::start().await;
    let hook = subscribe(&app, &admin, &receiver, &["member.created"]).await;
    let id = hook["id"].as_str().unwrap();
    receiver.answer(json!([{ "status": 500 }]));

    app.member(&admin, "ann@example.org", &[]).await;
    let failed_once = wait_for_delivery(&app, &admin, id, |d| d["attempts"] == 1).await;
    assert_eq!(failed_once["last_response_code"], 500);
    assert_eq!(failed_once["status"], "pending");

    app.clock().advance(Duration::from_secs(600));
    receiver.wait_for_events(1).await;
    let requests = receiver.requests();
    assert_eq!(requests.len(), 2, "{requests:?}");
    assert_eq!(requests[0]["status"], 500);
    assert_eq!(requests[0]["id"], requests[1]["id"], "the same webhook-id");
    assert_eq!(requests[0]["id"], failed_once["id"]);

    wait_for_delivery(&app, &admin, id, |d| d["status"] == "delivered").await;
    let metrics = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    for line in [
        "gatehouse_queue_items{queue=\"webhooks\",state=\"delivered\"} 1",
        "gatehouse_queue_items{queue=\"webhooks\",state=\"pending\"} 0",
        "gatehouse_webhook_retried_total 1",
        "gatehouse_webhook_delivered_total 1",
    ] {
        assert!(metrics.contains(line), "{line} missing:\n{metrics}");
    }
}

async fn retry_after_is_honoured(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let (_, admin) = app.admin().await;
    let receiver = Receiver::start().await;
    let hook = subscribe(&app, &admin, &receiver, &["member.created"]).await;
    let id = hook["id"].as_str().unwrap();
    receiver.answer(json!([{ "status": 429, "retry_after": 3000 }]));

    app.member(&admin, "ann@example.org", &[]).await;
    wait_for_delivery(&app, &admin, id, |d| d["attempts"] == 1).await;
    // The backoff alone would be due by now; the receiver asked for 50 minutes.
    app.clock().advance(Duration::from_secs(600));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(receiver.requests().len(), 1);
    app.clock().advance(Duration::from_secs(2500));
    receiver.wait_for_events(1).await;
}

async fn a_slow_receiver_times_out_and_the_delivery_is_retried(backend: Backend) {
    let app = app_with(backend, &[("webhooks_timeout_secs", "1")]).await;
    let (_, admin) = app.admin().await;
    let receiver = Receiver::start().await;
    let hook = subscribe(&app, &admin, &receiver, &["member.created"]).await;
    let id = hook["id"].as_str().unwrap();
    receiver.answer(json!([{ "status": 204, "delay": 3 }]));

    app.member(&admin, "ann@example.org", &[]).await;
    let timed_out = wait_for_delivery(&app, &admin, id, |d| d["attempts"] == 1).await;
    assert!(
        timed_out["last_error"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{timed_out}"
    );
    assert_eq!(timed_out["status"], "pending");

    app.clock().advance(Duration::from_secs(600));
    let delivered = wait_for_delivery(&app, &admin, id, |d| d["status"] == "delivered").await;
    assert_eq!(delivered["attempts"], 2);
    // The slow answer was accepted too, late: receivers drop the duplicate by webhook-id.
    let seen = receiver.wait_for_events(2).await;
    assert_eq!(seen[0]["id"], seen[1]["id"]);
}

async fn a_delivery_out_of_attempts_is_failed_and_an_admin_can_send_it_again(backend: Backend) {
    let app = app_with(backend, &[("webhooks_max_attempts", "2")]).await;
    let (_, admin) = app.admin().await;
    let receiver = Receiver::start().await;
    let hook = subscribe(&app, &admin, &receiver, &["member.created"]).await;
    let id = hook["id"].as_str().unwrap();
    receiver.answer_all(503, 2);

    app.member(&admin, "ann@example.org", &[]).await;
    wait_for_delivery(&app, &admin, id, |d| d["attempts"] == 1).await;
    app.clock().advance(Duration::from_secs(600));
    let failed = wait_for_delivery(&app, &admin, id, |d| d["status"] == "failed").await;
    assert_eq!(failed["attempts"], 2);
    assert_eq!(failed["last_response_code"], 503);
    assert!(failed["next_attempt_at"].is_null());

    let delivery = failed["id"].as_str().unwrap();
    let retry = format!("/v1/admin/webhooks/{id}/deliveries/{delivery}/retry");
    let requeued = TestApp::json_ok(app.post_json_as(&retry, &admin, json!({})).await, 200).await;
    assert_eq!(requeued["status"], "pending");
    let seen = receiver.wait_for_events(1).await;
    assert_eq!(seen[0]["id"], delivery, "the same webhook-id");
    // A delivered one can be sent again too; a pending one is on its way already.
    wait_for_delivery(&app, &admin, id, |d| d["status"] == "delivered").await;
    TestApp::json_ok(app.post_json_as(&retry, &admin, json!({})).await, 200).await;
    let seen = receiver.wait_for_events(2).await;
    assert_eq!(seen[1]["id"], delivery);
}

async fn an_endpoint_failing_for_days_is_disabled_and_says_why(backend: Backend) {
    let app = app_with(backend, &[("webhooks_disable_after_hours", "48")]).await;
    let (_, admin) = app.admin().await;
    let receiver = Receiver::start().await;
    let hook = subscribe(&app, &admin, &receiver, &["member.created"]).await;
    let id = hook["id"].as_str().unwrap();
    receiver.answer_all(500, 100);

    app.member(&admin, "ann@example.org", &[]).await;
    wait_for_delivery(&app, &admin, id, |d| d["attempts"] == 1).await;
    for day in 1..=2 {
        app.clock().advance(Duration::from_secs(86_400));
        receiver.wait_for_requests(day + 1).await;
    }
    // Two days on, the admin's access token has expired.
    let (_, admin) = app.admin().await;
    let path = format!("/v1/admin/webhooks/{id}");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let endpoint = loop {
        let endpoint = TestApp::json_ok(app.get_as(&path, &admin).await, 200).await;
        if endpoint["enabled"] == false || std::time::Instant::now() > deadline {
            break endpoint;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(endpoint["enabled"], false, "{endpoint}");
    let reason = endpoint["disabled_reason"].as_str().unwrap();
    assert!(reason.contains("HTTP 500"), "{reason}");

    let audit = TestApp::json_ok(
        app.get_as("/v1/admin/audit?action=webhook.disabled", &admin)
            .await,
        200,
    )
    .await;
    assert_eq!(audit["items"][0]["target"], id);
}

/// What a process killed after committing a change leaves behind: an event
/// no worker has touched. The next start delivers it.
async fn an_event_committed_before_a_crash_is_delivered_after_restart(backend: Backend) {
    let mut app = app_with(backend, &[]).await;
    let (_, admin) = app.admin().await;
    let receiver = Receiver::start().await;
    subscribe(&app, &admin, &receiver, &["member.updated"]).await;
    let (ann, _) = app.member(&admin, "ann@example.org", &[]).await;

    app.shutdown().await;
    let now = app.clock().now();
    app.state
        .store
        .set_member_status(
            &MemberId::parse(&ann).expect("member id"),
            MemberStatus::Suspended,
            AuditEntry::new("member.suspended"),
            now,
        )
        .await
        .expect("changed while stopped");
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert!(receiver.requests().is_empty());

    let app = app.restart_with(&[]).await;
    let seen = receiver.wait_for_events(1).await;
    assert_eq!(seen[0]["event"]["data"]["member"]["status"], "suspended");
    drop(app);
}

async fn urls_that_are_not_https_or_point_inside_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let refused = [
        ("http://hooks.example.org/in", "url_not_https"),
        ("https://127.0.0.1/in", "url_internal_address"),
        ("https://10.0.0.8/in", "url_internal_address"),
        ("https://169.254.169.254/latest", "url_internal_address"),
        ("https://[::1]/in", "url_internal_address"),
        ("https://localhost/in", "url_internal_address"),
        ("https://user:pw@hooks.example.org/in", "invalid_url"),
    ];
    for (url, code) in refused {
        let response = app
            .post_json_as(
                "/v1/admin/webhooks",
                &admin,
                json!({ "url": url, "events": ["member.created"] }),
            )
            .await;
        let problem = crate::helpers::assert_problem(response, 403).await;
        assert_eq!(problem["code"], code, "{url}: {problem}");
    }
    let listed = TestApp::json_ok(app.get_as("/v1/admin/webhooks", &admin).await, 200).await;
    assert_eq!(listed["items"], json!([]));
}

/// An endpoint saved while the setting was on is checked again at delivery:
/// without the setting, nothing goes to http or an internal address.
async fn an_internal_address_is_refused_at_delivery_time_too(backend: Backend) {
    // A fixed issuer, so that the admin's token outlives the restart.
    let app = app_with(backend, &[("public_url", "https://id.example.org")]).await;
    let (_, admin) = app.admin().await;
    let receiver = Receiver::start().await;
    let hook = subscribe(&app, &admin, &receiver, &["member.created"]).await;
    let id = hook["id"].as_str().unwrap().to_owned();

    let app = app
        .restart_with(&[("webhooks_allow_insecure", "false")])
        .await;
    app.member(&admin, "ann@example.org", &[]).await;
    let refused = wait_for_delivery(&app, &admin, &id, |d| d["attempts"] == 1).await;
    assert!(
        refused["last_error"].as_str().unwrap().contains("https"),
        "{refused}"
    );
    assert!(receiver.requests().is_empty());
}

async fn a_redirect_is_not_followed(backend: Backend) {
    let app = app_with(backend, &[]).await;
    let (_, admin) = app.admin().await;
    let receiver = Receiver::start().await;
    let hook = subscribe(&app, &admin, &receiver, &["member.created"]).await;
    let id = hook["id"].as_str().unwrap();
    let elsewhere = format!("http://127.0.0.1:{}/elsewhere", receiver.port);
    receiver.answer(json!([{ "status": 307, "location": elsewhere }]));

    app.member(&admin, "ann@example.org", &[]).await;
    let redirected = wait_for_delivery(&app, &admin, id, |d| d["attempts"] == 1).await;
    assert_eq!(redirected["last_response_code"], 307);
    assert_eq!(redirected["status"], "pending");
    assert!(
        redirected["last_error"]
            .as_str()
            .unwrap()
            .contains("redirects are not followed"),
        "{redirected}"
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        receiver.requests().len(),
        1,
        "the redirect was not followed"
    );
}

/// Three instances on one Postgres: each event reaches the endpoint once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_deliver_each_event_once() {
    let mut apps = crate::scale_out::three_instances(&LOCAL).await;
    let (_, admin) = apps[0].admin().await;
    let receiver = Receiver::start().await;
    subscribe(
        &apps[0],
        &admin,
        &receiver,
        &["member.created", "allowlist.imported"],
    )
    .await;

    let emails: Vec<String> = (0..9).map(|i| format!("m{i}@example.org")).collect();
    for (i, email) in emails.iter().enumerate() {
        apps[i % 3].allowlist(&admin, email, &[]).await;
    }
    for (i, email) in emails.iter().enumerate() {
        let mail_app = &apps[0];
        assert_eq!(apps[i % 3].request_link(email).await.status(), 202);
        let mail = mail_app.next_mail_to(email).await;
        let verified = apps[(i + 1) % 3]
            .post_json("/v1/auth/verify", json!({ "token": mail.token }))
            .await;
        assert_eq!(verified.status(), 200);
    }
    receiver.wait_for_events(18).await;
    for app in &mut apps {
        app.shutdown().await;
    }
    let mut per_id: HashMap<String, usize> = HashMap::new();
    for request in receiver.requests() {
        *per_id
            .entry(request["id"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    assert_eq!(per_id.len(), 18);
    assert!(per_id.values().all(|&n| n == 1), "{per_id:?}");
}

backend_tests!(
    every_change_reaches_the_receiver_signed_with_its_data,
    an_endpoint_receives_only_the_events_it_chose_and_nothing_while_disabled,
    admins_manage_endpoints_and_every_change_is_audited,
    a_receiver_that_is_down_gets_the_event_once_it_is_up,
    a_500_is_retried_with_the_same_webhook_id,
    retry_after_is_honoured,
    a_slow_receiver_times_out_and_the_delivery_is_retried,
    a_delivery_out_of_attempts_is_failed_and_an_admin_can_send_it_again,
    an_endpoint_failing_for_days_is_disabled_and_says_why,
    an_event_committed_before_a_crash_is_delivered_after_restart,
    urls_that_are_not_https_or_point_inside_are_refused,
    an_internal_address_is_refused_at_delivery_time_too,
    a_redirect_is_not_followed,
);

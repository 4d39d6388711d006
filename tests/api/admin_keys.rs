use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_problem};

async fn get_with_key(app: &TestApp, path: &str, key: &str, header: bool) -> reqwest::Response {
    let request = app.client.get(app.url(path));
    let request = if header {
        request.header("x-api-key", key)
    } else {
        request.header("authorization", format!("ApiKey {key}"))
    };
    request.send().await.unwrap()
}

async fn issue(app: &TestApp, admin: &str, member: &str, body: Value) -> Value {
    TestApp::json_ok(
        app.post_json_as(&format!("/v1/admin/members/{member}/api-keys"), admin, body)
            .await,
        201,
    )
    .await
}

async fn api_key_lifecycle_and_revocation_take_effect_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (me, admin) = app.admin().await;
    let issued = issue(
        &app,
        &admin,
        &me,
        json!({ "name": "ops", "expires_in_days": 30 }),
    )
    .await;
    let key = issued["key"].as_str().unwrap().to_owned();
    assert_eq!(issued["roles"], json!(["admin", "member"]));
    for header in [true, false, true] {
        assert_eq!(
            get_with_key(&app, "/v1/admin/members", &key, header)
                .await
                .status(),
            200
        );
    }
    // An integrator can ask whom its key acts for.
    let whoami: Value = get_with_key(&app, "/v1/me", &key, true)
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(whoami["id"], json!(me));
    assert_eq!(whoami["roles"], json!(["admin", "member"]));
    let listed = app
        .get_as("/v1/admin/api-keys", &admin)
        .await
        .text()
        .await
        .unwrap();
    let secret = key.rsplit_once('_').map(|(_, s)| s).unwrap_or_default();
    assert!(!listed.contains(secret), "the secret is never listed");
    let listed: Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed["items"][0]["prefix"], issued["prefix"]);
    assert!(listed["items"][0]["last_used_at"].is_string());

    let token = TestApp::json_ok(
        app.client
            .post(app.url("/v1/auth/token"))
            .header("authorization", format!("ApiKey {key}"))
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let jwt = token["access_token"].as_str().unwrap().to_owned();
    assert_eq!(app.get_as("/v1/admin/roles", &jwt).await.status(), 200);
    let leave = app
        .client
        .delete(app.url("/v1/me"))
        .bearer_auth(&jwt)
        .send()
        .await
        .unwrap();
    assert_problem(leave, 403).await;

    let revoke = format!("/v1/admin/api-keys/{}", issued["id"].as_str().unwrap());
    assert_eq!(
        app.send_as(Method::DELETE, &revoke, &admin, None)
            .await
            .status(),
        204
    );
    assert_problem(
        get_with_key(&app, "/v1/admin/members", &key, true).await,
        401,
    )
    .await;
    assert_problem(app.get_as("/v1/admin/roles", &jwt).await, 401).await;
    assert_problem(get_with_key(&app, "/v1/me", &key, false).await, 401).await;
    assert_problem(
        app.send_as(Method::DELETE, &revoke, &admin, None).await,
        404,
    )
    .await;

    let wrong = format!("{}AAAA", &key[..key.len() - 4]);
    assert_problem(
        get_with_key(&app, "/v1/admin/members", &wrong, true).await,
        401,
    )
    .await;
    assert_problem(
        get_with_key(&app, "/v1/admin/members", "gh_nonsense", false).await,
        401,
    )
    .await;
}

async fn a_key_is_limited_to_its_roles_and_dies_with_its_member(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (me, admin) = app.admin().await;
    let limited = issue(
        &app,
        &admin,
        &me,
        json!({ "name": "read-only", "roles": ["member"] }),
    )
    .await;
    let limited_key = limited["key"].as_str().unwrap();
    assert_problem(
        get_with_key(&app, "/v1/admin/members", limited_key, true).await,
        403,
    )
    .await;
    let token = TestApp::json_ok(
        app.client
            .post(app.url("/v1/auth/token"))
            .header("x-api-key", limited_key)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    assert_eq!(
        app.claims(token["access_token"].as_str().unwrap()).roles,
        ["member"]
    );
    let (other, _) = app.member(&admin, "plain@example.org", &[]).await;
    let refused = app
        .post_json_as(
            &format!("/v1/admin/members/{other}/api-keys"),
            &admin,
            json!({ "name": "x", "roles": ["admin"] }),
        )
        .await;
    assert_eq!(assert_problem(refused, 409).await["code"], "role_not_held");

    let bot = TestApp::json_ok(
        app.post_json_as(
            "/v1/admin/members",
            &admin,
            json!({ "email": "bot@example.org", "roles": ["admin"], "api_key": { "name": "bot" } }),
        )
        .await,
        201,
    )
    .await;
    let bot_key = bot["api_key"]["key"].as_str().unwrap();
    assert_eq!(
        get_with_key(&app, "/v1/admin/members", bot_key, false)
            .await
            .status(),
        200
    );
    let bot_path = format!(
        "/v1/admin/members/{}",
        bot["member"]["id"].as_str().unwrap()
    );
    app.send_as(
        Method::PATCH,
        &bot_path,
        &admin,
        Some(json!({ "status": "suspended" })),
    )
    .await;
    assert_problem(
        get_with_key(&app, "/v1/admin/members", bot_key, false).await,
        401,
    )
    .await;
    app.send_as(
        Method::PATCH,
        &bot_path,
        &admin,
        Some(json!({ "status": "active" })),
    )
    .await;
    assert_eq!(
        get_with_key(&app, "/v1/admin/members", bot_key, false)
            .await
            .status(),
        200
    );
    assert_eq!(
        app.send_as(Method::DELETE, &bot_path, &admin, None)
            .await
            .status(),
        204
    );
    assert_problem(
        get_with_key(&app, "/v1/admin/members", bot_key, false).await,
        401,
    )
    .await;
}

async fn failed_key_attempts_are_rate_limited_per_ip(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("rate_limit_per_ip", "3")]).await;
    let (me, admin) = app.admin().await;
    let good = issue(&app, &admin, &me, json!({ "name": "good" })).await;
    let mut statuses = Vec::new();
    for _ in 0..5 {
        let bogus = format!("gh_{}_{}", "0".repeat(16), "A".repeat(43));
        statuses.push(
            get_with_key(&app, "/v1/admin/members", &bogus, true)
                .await
                .status()
                .as_u16(),
        );
    }
    assert_eq!(statuses, [401, 401, 401, 429, 429]);
    let limited = get_with_key(
        &app,
        "/v1/admin/members",
        good["key"].as_str().unwrap(),
        true,
    )
    .await;
    assert_problem(limited, 429).await;
}

backend_tests!(
    api_key_lifecycle_and_revocation_take_effect_at_once,
    a_key_is_limited_to_its_roles_and_dies_with_its_member,
    failed_key_attempts_are_rate_limited_per_ip,
);

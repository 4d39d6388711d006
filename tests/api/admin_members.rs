use reqwest::Method;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_problem};

async fn admins_manage_status_and_roles_and_suspension_bites_at_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let (id, member) = app.member(&admin, "m@example.org", &[]).await;
    let path = format!("/v1/admin/members/{id}");

    let view = TestApp::json_ok(app.get_as(&path, &admin).await, 200).await;
    assert_eq!(view["email"], "m@example.org");
    let set = TestApp::json_ok(
        app.send_as(
            Method::PUT,
            &format!("{path}/roles"),
            &admin,
            Some(json!({ "roles": ["member", "active"] })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(set["roles"], json!(["active", "member"]));
    let again = TestApp::json_ok(
        app.send_as(
            Method::PUT,
            &format!("{path}/roles"),
            &admin,
            Some(json!({ "roles": ["member", "active"] })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(again["roles"], set["roles"], "idempotent");
    let without_member = TestApp::json_ok(
        app.send_as(
            Method::PUT,
            &format!("{path}/roles"),
            &admin,
            Some(json!({ "roles": ["active"] })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        without_member["roles"], set["roles"],
        "`member` is always kept"
    );
    let seen: serde_json::Value = app.get_as("/v1/me", &member).await.json().await.unwrap();
    assert_eq!(
        seen["roles"],
        json!(["active", "member"]),
        "the member sees the new role at once"
    );
    assert_problem(
        app.send_as(
            Method::POST,
            &format!("{path}/roles"),
            &admin,
            Some(json!({ "role": "wizard" })),
        )
        .await,
        409,
    )
    .await;
    let revoked = TestApp::json_ok(
        app.send_as(
            Method::DELETE,
            &format!("{path}/roles/active"),
            &admin,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(revoked["roles"], json!(["member"]));
    let seen: serde_json::Value = app.get_as("/v1/me", &member).await.json().await.unwrap();
    assert_eq!(seen["roles"], json!(["member"]), "and loses it at once");

    let listed = TestApp::json_ok(
        app.get_as("/v1/admin/members?q=M%40EXAMPLE&status=active", &admin)
            .await,
        200,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 1);
    let admins = TestApp::json_ok(
        app.get_as("/v1/admin/members?role=admin", &admin).await,
        200,
    )
    .await;
    assert!(
        admins["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|m| m["email"] != "m@example.org")
    );

    assert_eq!(app.get_as("/v1/me", &member).await.status(), 200);
    let suspended = TestApp::json_ok(
        app.send_as(
            Method::PATCH,
            &path,
            &admin,
            Some(json!({ "status": "suspended" })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(suspended["status"], "suspended");
    assert_problem(app.get_as("/v1/me", &member).await, 401).await;
    assert_eq!(app.request_link("m@example.org").await.status(), 202);
    assert_problem(
        app.send_as(
            Method::PATCH,
            &path,
            &admin,
            Some(json!({ "status": "gone" })),
        )
        .await,
        400,
    )
    .await;
    let active = TestApp::json_ok(
        app.send_as(
            Method::PATCH,
            &path,
            &admin,
            Some(json!({ "status": "active" })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(active["status"], "active");

    let (_, fresh) = (
        id.clone(),
        app.sign_in("m@example.org").await["access_token"]
            .as_str()
            .unwrap()
            .to_owned(),
    );
    let sessions = TestApp::json_ok(
        app.send_as(
            Method::POST,
            &format!("{path}/sessions/revoke"),
            &admin,
            None,
        )
        .await,
        200,
    )
    .await;
    assert!(sessions["revoked"].as_u64().unwrap() >= 1);
    assert_problem(app.get_as("/v1/me", &fresh).await, 401).await;

    assert_eq!(
        app.send_as(Method::DELETE, &path, &admin, None)
            .await
            .status(),
        204
    );
    let gone = TestApp::json_ok(app.get_as(&path, &admin).await, 200).await;
    assert_eq!(gone["status"], "deleted");
    assert_problem(
        app.get_as("/v1/admin/members/not-a-uuid", &admin).await,
        404,
    )
    .await;
    assert_problem(
        app.get_as(&format!("/v1/admin/members/{}", uuid::Uuid::nil()), &admin)
            .await,
        404,
    )
    .await;
}

async fn admins_cannot_lock_themselves_or_everyone_out(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (me, admin) = app.admin().await;
    let path = format!("/v1/admin/members/{me}");
    for (method, suffix, body) in [
        (Method::PATCH, "", Some(json!({ "status": "suspended" }))),
        (Method::DELETE, "", None),
        (Method::PUT, "/roles", Some(json!({ "roles": ["member"] }))),
        (Method::DELETE, "/roles/admin", None),
    ] {
        let problem = assert_problem(
            app.send_as(method, &format!("{path}{suffix}"), &admin, body)
                .await,
            409,
        )
        .await;
        assert_eq!(problem["code"], "self_action");
        assert!(problem["detail"].as_str().unwrap().contains("themself"));
    }
    let last = assert_problem(
        app.send_as(Method::DELETE, "/v1/me", &admin, None).await,
        409,
    )
    .await;
    assert_eq!(last["code"], "last_admin");
    assert!(last["detail"].as_str().unwrap().contains("no active admin"));
    assert_eq!(
        app.get_as("/v1/me", &admin).await.status(),
        200,
        "nothing changed"
    );
}

async fn onboarding_creates_member_roles_and_a_key_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let created = TestApp::json_ok(
        app.post_json_as(
            "/v1/admin/members",
            &admin,
            json!({ "email": "Svc@Example.org", "roles": ["active"], "api_key": { "name": "ci" } }),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(created["member"]["email"], "svc@example.org");
    assert_eq!(created["member"]["roles"], json!(["active", "member"]));
    let key = created["api_key"]["key"].as_str().unwrap();
    assert!(key.starts_with("gh_"));
    let me = app
        .client
        .get(app.url("/v1/me"))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200, "/v1/me takes an API key too");
    let me: serde_json::Value = me.json().await.unwrap();
    assert_eq!(me["email"], "svc@example.org");
    let token = TestApp::json_ok(
        app.client
            .post(app.url("/v1/auth/token"))
            .header("x-api-key", key)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    let me = TestApp::json_ok(
        app.get_as("/v1/me", token["access_token"].as_str().unwrap())
            .await,
        200,
    )
    .await;
    assert_eq!(me["email"], "svc@example.org");
    let twice = app
        .post_json_as(
            "/v1/admin/members",
            &admin,
            json!({ "email": "svc@example.org" }),
        )
        .await;
    assert_eq!(assert_problem(twice, 409).await["code"], "conflict");
    let listed = TestApp::json_ok(
        app.get_as("/v1/admin/eligible-emails?q=svc", &admin).await,
        200,
    )
    .await;
    assert_eq!(listed["items"][0]["claimed_by"], created["member"]["id"]);
}

async fn custom_roles_are_created_used_and_deleted(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let created = TestApp::json_ok(
        app.post_json_as(
            "/v1/admin/roles",
            &admin,
            json!({ "name": "Board", "description": "The board" }),
        )
        .await,
        201,
    )
    .await;
    assert_eq!(created["name"], "board");
    assert_problem(
        app.post_json_as("/v1/admin/roles", &admin, json!({ "name": "board" }))
            .await,
        409,
    )
    .await;
    assert_problem(
        app.post_json_as("/v1/admin/roles", &admin, json!({ "name": "no way" }))
            .await,
        422,
    )
    .await;
    let (id, _) = app.member(&admin, "b@example.org", &["board"]).await;
    let roles = TestApp::json_ok(app.get_as("/v1/admin/roles", &admin).await, 200).await;
    let board = roles
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "board")
        .unwrap()
        .clone();
    assert_eq!(
        (board["builtin"].as_bool(), board["members"].as_i64()),
        (Some(false), Some(1))
    );
    let in_use = assert_problem(
        app.send_as(Method::DELETE, "/v1/admin/roles/board", &admin, None)
            .await,
        409,
    )
    .await;
    assert_eq!(in_use["code"], "role_in_use");
    let builtin = assert_problem(
        app.send_as(Method::DELETE, "/v1/admin/roles/sustainer", &admin, None)
            .await,
        409,
    )
    .await;
    assert_eq!(builtin["code"], "builtin_role");
    assert_eq!(
        app.send_as(
            Method::DELETE,
            "/v1/admin/roles/board?force=true",
            &admin,
            None
        )
        .await
        .status(),
        204
    );
    let member = TestApp::json_ok(
        app.get_as(&format!("/v1/admin/members/{id}"), &admin).await,
        200,
    )
    .await;
    assert_eq!(member["roles"], json!(["member"]));
    assert_problem(
        app.send_as(Method::DELETE, "/v1/admin/roles/board", &admin, None)
            .await,
        404,
    )
    .await;
}

async fn expired_roles_leave_tokens(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let (id, _) = app.member(&admin, "s@example.org", &[]).await;
    let path = format!("/v1/admin/members/{id}/roles");
    let past = (chrono::Utc::now() - chrono::Duration::hours(1)).to_rfc3339();
    let future = (chrono::Utc::now() + chrono::Duration::days(365)).to_rfc3339();
    let expired = TestApp::json_ok(
        app.send_as(
            Method::POST,
            &path,
            &admin,
            Some(json!({ "role": "sustainer", "expires_at": past })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(expired["roles"], json!(["member"]));
    let grant = app.sign_in("s@example.org").await;
    assert_eq!(
        app.claims(grant["access_token"].as_str().unwrap()).roles,
        ["member"]
    );
    let renewed = TestApp::json_ok(
        app.send_as(
            Method::POST,
            &path,
            &admin,
            Some(json!({ "role": "sustainer", "expires_at": future })),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(renewed["roles"], json!(["member", "sustainer"]));
    let refreshed = TestApp::json_ok(
        app.post_json(
            "/v1/auth/refresh",
            json!({ "refresh_token": grant["refresh_token"] }),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(
        app.claims(refreshed["access_token"].as_str().unwrap())
            .roles,
        ["member", "sustainer"]
    );
}

backend_tests!(
    admins_manage_status_and_roles_and_suspension_bites_at_once,
    admins_cannot_lock_themselves_or_everyone_out,
    onboarding_creates_member_roles_and_a_key_once,
    custom_roles_are_created_used_and_deleted,
    expired_roles_leave_tokens,
);

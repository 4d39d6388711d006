//! Signing in across devices: the handle a link request answers with, the
//! number the other device must pick, and a member's own sessions.

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, TestApp};

const PHONE: &str = "Mozilla/5.0 (Android 14; Mobile; rv:125.0) Gecko/125.0 Firefox/125.0";
const LAPTOP: &str = "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/120.0 Safari/537.36";

/// Asks for a link from the "laptop"; the handle.
async fn ask(app: &TestApp, email: &str) -> Value {
    let response = app
        .client
        .post(app.url("/v1/auth/magic-link"))
        .header("user-agent", LAPTOP)
        .json(&json!({ "email": email }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 202);
    let body: Value = response.json().await.unwrap();
    body["request"].clone()
}

/// The laptop checks on its request.
async fn status(app: &TestApp, handle: &Value) -> Value {
    let response = app
        .client
        .post(app.url("/v1/auth/magic-link/status"))
        .header("user-agent", LAPTOP)
        .json(&json!({ "id": handle["id"], "secret": handle["secret"] }))
        .send()
        .await
        .unwrap();
    TestApp::json_ok(response, 200).await
}

/// The phone opens the link (GET): the page's HTML.
async fn open_on_phone(app: &TestApp, link: &str) -> String {
    let response = app
        .client
        .get(link)
        .header("user-agent", PHONE)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.text().await.unwrap()
}

/// The phone presses a button on the confirm page.
async fn press_on_phone(app: &TestApp, form: &[(&str, &str)]) -> (u16, String) {
    let response = app
        .client
        .post(app.url("/auth/confirm"))
        .header("user-agent", PHONE)
        .form(form)
        .send()
        .await
        .unwrap();
    (response.status().as_u16(), response.text().await.unwrap())
}

fn number(handle: &Value) -> u64 {
    handle["number"].as_u64().unwrap()
}

async fn a_request_answers_a_handle_alike_for_anyone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let known = ask(&app, ADMIN).await;
    let unknown = ask(&app, "stranger@example.org").await;
    for handle in [&known, &unknown] {
        let keys: Vec<_> = handle.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys, ["expires_at", "id", "number", "secret"], "{handle}");
        assert!((10..=99).contains(&number(handle)));
        assert_eq!(status(&app, handle).await, json!({ "status": "pending" }));
    }
    assert_eq!(
        known["id"].as_str().unwrap().len(),
        unknown["id"].as_str().unwrap().len()
    );
    // Another handle's secret opens nothing.
    let mixed = app
        .post_json(
            "/v1/auth/magic-link/status",
            json!({ "id": known["id"], "secret": unknown["secret"] }),
        )
        .await;
    assert_eq!(mixed.status(), 401);
    app.clock().advance(std::time::Duration::from_secs(601));
    assert_eq!(status(&app, &known).await["status"], "expired");
    assert_eq!(status(&app, &unknown).await["status"], "expired");
}

async fn the_right_pick_on_another_device_signs_in_the_waiting_one(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let handle = ask(&app, ADMIN).await;
    let mail = app.next_mail_to(ADMIN).await;
    assert_eq!(status(&app, &handle).await["status"], "pending");

    let page = open_on_phone(&app, &mail.link).await;
    assert!(
        page.contains("Chrome on Linux"),
        "the asking device is named: {page}"
    );
    assert!(page.contains("127.0.0.x"), "and its network");
    let picks: Vec<u64> = page
        .match_indices("name=\"pick\" value=\"")
        .map(|(at, m)| {
            page[at + m.len()..]
                .split('"')
                .next()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert_eq!(picks.len(), 3);
    assert!(picks.contains(&number(&handle)));
    // Opening the page again (a scanner, a reload) changes nothing.
    let head = app.client.head(&mail.link).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert_eq!(status(&app, &handle).await["status"], "pending");

    let pick = number(&handle).to_string();
    let (code, done) = press_on_phone(&app, &[("token", &mail.token), ("pick", &pick)]).await;
    assert_eq!(code, 200);
    assert!(done.contains("go back to the other device"), "{done}");
    assert!(!done.contains("access_token"), "the phone gets no tokens");

    let signed_in = status(&app, &handle).await;
    assert_eq!(signed_in["status"], "signed_in", "{signed_in}");
    let token = signed_in["tokens"]["access_token"].as_str().unwrap();
    assert_eq!(app.claims(token).roles, ["admin", "member"]);
    assert_eq!(
        status(&app, &handle).await["status"],
        "completed_elsewhere",
        "tokens once"
    );

    // One session, on the laptop.
    let sessions = TestApp::json_ok(app.get_as("/v1/me/sessions", token).await, 200).await;
    let items = sessions["items"].as_array().unwrap();
    assert_eq!(items.len(), 1, "{sessions}");
    assert_eq!(items[0]["device"], "Chrome on Linux");
    assert_eq!(items[0]["current"], true);
}

async fn a_wrong_pick_ends_the_request(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let handle = ask(&app, ADMIN).await;
    let mail = app.next_mail_to(ADMIN).await;
    status(&app, &handle).await;
    let page = open_on_phone(&app, &mail.link).await;
    let wrong = page
        .match_indices("name=\"pick\" value=\"")
        .map(|(at, m)| page[at + m.len()..].split('"').next().unwrap().to_owned())
        .find(|n| n != &number(&handle).to_string())
        .unwrap();
    let (_, answer) = press_on_phone(&app, &[("token", &mail.token), ("pick", &wrong)]).await;
    assert!(answer.contains("That was not the number"), "{answer}");
    assert_eq!(status(&app, &handle).await["status"], "refused");
    // Neither the link nor the code works any more.
    let (code, _) = press_on_phone(&app, &[("token", &mail.token)]).await;
    assert_eq!(code, 400);
    let by_code = app
        .post_json(
            "/v1/auth/verify",
            json!({ "email": ADMIN, "code": mail.code }),
        )
        .await;
    assert_eq!(by_code.status(), 401);
}

async fn without_a_waiting_device_the_link_works_as_before(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    ask(&app, ADMIN).await;
    let mail = app.next_mail_to(ADMIN).await;
    let page = open_on_phone(&app, &mail.link).await;
    assert!(
        page.contains("id=\"confirm\""),
        "the one-click page: {page}"
    );
    assert!(!page.contains("name=\"pick\""));
    let (code, signed_in) = press_on_phone(&app, &[("token", &mail.token)]).await;
    assert_eq!(code, 200);
    assert!(signed_in.contains("You are signed in"));
}

async fn the_phone_may_sign_in_itself_instead(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let handle = ask(&app, ADMIN).await;
    let mail = app.next_mail_to(ADMIN).await;
    status(&app, &handle).await;
    assert!(
        open_on_phone(&app, &mail.link)
            .await
            .contains("sign-in-here")
    );
    let (code, page) = press_on_phone(&app, &[("token", &mail.token)]).await;
    assert_eq!(code, 200);
    assert!(page.contains("You are signed in"));
    assert_eq!(status(&app, &handle).await["status"], "completed_elsewhere");
}

async fn members_see_and_end_their_own_sessions(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.sign_in(ADMIN).await;
    let second = app.sign_in(ADMIN).await;
    let (first, second) = (
        first["access_token"].as_str().unwrap(),
        second["access_token"].as_str().unwrap(),
    );
    let listed = TestApp::json_ok(app.get_as("/v1/me/sessions", first).await, 200).await;
    let items = listed["items"].as_array().unwrap();
    assert_eq!(items.len(), 2);
    let other = items.iter().find(|s| s["current"] == false).unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // Someone else's session, or one already ended: 404.
    let (_, stranger) = app
        .member(&app.admin_token().await, "pat@example.org", &[])
        .await;
    let theirs = app
        .send_as(
            Method::DELETE,
            &format!("/v1/me/sessions/{other}"),
            &stranger,
            None,
        )
        .await;
    assert_eq!(theirs.status(), 404);
    assert_eq!(app.get_as("/v1/me", second).await.status(), 200);

    let ended = app
        .send_as(
            Method::DELETE,
            &format!("/v1/me/sessions/{other}"),
            first,
            None,
        )
        .await;
    assert_eq!(ended.status(), 204);
    assert_eq!(
        app.get_as("/v1/me", second).await.status(),
        401,
        "refused at once"
    );
    let again = app
        .send_as(
            Method::DELETE,
            &format!("/v1/me/sessions/{other}"),
            first,
            None,
        )
        .await;
    assert_eq!(again.status(), 404);

    // End all others: the ones from admin_token() above; this one stays.
    let others = TestApp::json_ok(
        app.post_json_as("/v1/me/sessions/revoke-others", first, json!({}))
            .await,
        200,
    )
    .await;
    assert!(others["ended"].as_u64().unwrap() >= 1, "{others}");
    assert_eq!(app.get_as("/v1/me", first).await.status(), 200);
    let left = TestApp::json_ok(app.get_as("/v1/me/sessions", first).await, 200).await;
    assert_eq!(left["items"].as_array().unwrap().len(), 1);
    let log = TestApp::json_ok(
        app.get_as("/v1/admin/audit?action=auth.session_ended", first)
            .await,
        200,
    )
    .await;
    assert_eq!(log["items"].as_array().unwrap().len(), 1);
}

backend_tests!(
    a_request_answers_a_handle_alike_for_anyone,
    the_right_pick_on_another_device_signs_in_the_waiting_one,
    a_wrong_pick_ends_the_request,
    without_a_waiting_device_the_link_works_as_before,
    the_phone_may_sign_in_itself_instead,
    members_see_and_end_their_own_sessions,
);

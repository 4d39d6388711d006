//! The admin console's doors, over real HTTP: who gets a session, what the
//! cookie says, and the requests that must change nothing.

use reqwest::StatusCode;
use reqwest::redirect::Policy;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, TestApp};

/// A browser-like client for the console: keeps cookies, follows nothing.
pub struct ConsoleClient {
    pub http: reqwest::Client,
}

impl ConsoleClient {
    fn new() -> Self {
        let http = reqwest::Client::builder()
            .cookie_store(true)
            .redirect(Policy::none())
            .build()
            .expect("client");
        Self { http }
    }

    /// Asks for a console link for `email` and presses its confirm button;
    /// the confirm response.
    pub async fn sign_in(app: &TestApp, email: &str) -> (Self, reqwest::Response) {
        let client = Self::new();
        let asked = client
            .http
            .post(app.url("/admin/sign-in"))
            .form(&[("email", email)])
            .send()
            .await
            .expect("sign-in form");
        assert_eq!(asked.status(), 200);
        assert!(asked.text().await.unwrap().contains("Check your mail"));
        let mail = app.next_mail_to(email).await;
        let confirmed = client
            .http
            .post(app.url("/auth/confirm"))
            .form(&[("token", mail.token.as_str())])
            .send()
            .await
            .expect("confirm");
        (client, confirmed)
    }

    pub async fn admin(app: &TestApp) -> Self {
        let (client, confirmed) = Self::sign_in(app, ADMIN).await;
        assert_eq!(confirmed.status(), 303);
        client
    }

    pub async fn get(&self, app: &TestApp, path: &str) -> reqwest::Response {
        self.http.get(app.url(path)).send().await.expect("get")
    }

    /// The CSRF token in the page at `path`.
    pub async fn csrf(&self, app: &TestApp, path: &str) -> String {
        let page = self.get(app, path).await;
        assert_eq!(page.status(), 200, "{path}");
        let html = page.text().await.unwrap();
        let marker = "name=\"csrf\" value=\"";
        let start = html.find(marker).expect("a form with a CSRF token") + marker.len();
        html[start..].split('"').next().unwrap().to_owned()
    }

    pub async fn post(
        &self,
        app: &TestApp,
        path: &str,
        form: &[(&str, &str)],
    ) -> reqwest::Response {
        self.http
            .post(app.url(path))
            .form(form)
            .send()
            .await
            .expect("post")
    }
}

fn location(response: &reqwest::Response) -> &str {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn set_cookies(response: &reqwest::Response) -> Vec<String> {
    response
        .headers()
        .get_all("set-cookie")
        .iter()
        .map(|v| v.to_str().unwrap().to_owned())
        .collect()
}

async fn member_status(app: &TestApp, token: &str, id: &str) -> String {
    let member = TestApp::json_ok(
        app.get_as(&format!("/v1/admin/members/{id}"), token).await,
        200,
    )
    .await;
    member["status"].as_str().unwrap().to_owned()
}

async fn without_a_session_every_page_leads_to_sign_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for path in [
        "/admin",
        "/admin/",
        "/admin/members",
        "/admin/roster",
        "/admin/audit",
    ] {
        let response = app.client.get(app.url(path)).send().await.unwrap();
        assert_eq!(response.status(), 303, "{path}");
        assert_eq!(location(&response), "/admin/sign-in", "{path}");
    }
    let forged = app
        .client
        .get(app.url("/admin"))
        .header("cookie", "gatehouse_console=forged.value.1.abc")
        .send()
        .await
        .unwrap();
    assert_eq!(location(&forged), "/admin/sign-in");
    let sign_in = app
        .client
        .get(app.url("/admin/sign-in"))
        .send()
        .await
        .unwrap();
    assert_eq!(sign_in.status(), 200);
    assert!(
        sign_in
            .text()
            .await
            .unwrap()
            .contains("<label for=\"email\">Email address</label>")
    );
}

async fn an_admin_gets_a_strict_cookie_and_strict_headers(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (client, confirmed) = ConsoleClient::sign_in(&app, ADMIN).await;
    assert_eq!(confirmed.status(), 303);
    // No token in the URL: the console's address, nothing else.
    assert_eq!(location(&confirmed), "/admin");
    let cookies = set_cookies(&confirmed);
    let session = cookies
        .iter()
        .find(|c| c.starts_with("gatehouse_console="))
        .expect("a console cookie");
    for flag in ["HttpOnly", "SameSite=Strict", "Path=/admin"] {
        assert!(session.contains(flag), "{flag} in {session}");
    }
    assert!(
        !session.contains("Secure"),
        "the test server's public URL is http"
    );

    let overview = client.get(&app, "/admin").await;
    assert_eq!(overview.status(), 200);
    let headers = overview.headers().clone();
    let csp = headers["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("default-src 'self'"), "{csp}");
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    assert_eq!(headers["referrer-policy"], "no-referrer");
    assert_eq!(headers["cache-control"], "no-store");
    let html = overview.text().await.unwrap();
    assert!(html.contains("<h1>Overview</h1>"));
    assert!(!html.contains("<script>"), "no inline script");
}

async fn a_member_without_admin_is_refused_and_keeps_no_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    app.allowlist(&admin, "pat@example.org", &[]).await;
    let (_, confirmed) = ConsoleClient::sign_in(&app, "pat@example.org").await;
    assert_eq!(confirmed.status(), 403);
    assert!(
        set_cookies(&confirmed)
            .iter()
            .all(|c| !c.starts_with("gatehouse_console=") || c.starts_with("gatehouse_console=;")),
        "no console cookie for a non-admin"
    );
    assert!(
        confirmed
            .text()
            .await
            .unwrap()
            .contains("This console is for admins")
    );
    // The session the link opened was ended at once.
    let log = TestApp::json_ok(
        app.get_as("/v1/admin/audit?action=auth.logout", &admin)
            .await,
        200,
    )
    .await;
    assert_eq!(log["items"].as_array().unwrap().len(), 1, "{log}");
}

async fn cross_site_and_tokenless_posts_change_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let (id, _) = app.member(&admin, "sam@example.org", &[]).await;
    let console = ConsoleClient::admin(&app).await;
    let page = format!("/admin/members/{id}");
    let csrf = console.csrf(&app, &page).await;
    let action = format!("/admin/members/{id}/status");
    let form = [("csrf", csrf.as_str()), ("status", "suspended")];

    let foreign = console
        .http
        .post(app.url(&action))
        .header("origin", "https://evil.example")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(foreign.status(), 403);
    let cross_site = console
        .http
        .post(app.url(&action))
        .header("sec-fetch-site", "cross-site")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(cross_site.status(), 403);
    let no_token = console
        .post(&app, &action, &[("status", "suspended")])
        .await;
    assert_eq!(no_token.status(), 403);
    let wrong_token = console
        .post(
            &app,
            &action,
            &[("csrf", "not-the-token"), ("status", "suspended")],
        )
        .await;
    assert_eq!(wrong_token.status(), 403);
    assert_eq!(member_status(&app, &admin, &id).await, "active");

    // The same request from the console's own page goes through.
    let own = console
        .http
        .post(app.url(&action))
        .header("origin", app.url("").trim_end_matches('/'))
        .header("sec-fetch-site", "same-origin")
        .form(&form)
        .send()
        .await
        .unwrap();
    assert_eq!(own.status(), 303);
    assert_eq!(location(&own), page);
    assert_eq!(member_status(&app, &admin, &id).await, "suspended");
    // Its audit row names the admin as the actor.
    let log = TestApp::json_ok(
        app.get_as(
            &format!("/v1/admin/audit?action=member.status_changed&target={id}"),
            &admin,
        )
        .await,
        200,
    )
    .await;
    let (admin_id, _) = app.admin().await;
    assert_eq!(log["items"][0]["actor"], json!(admin_id));
}

async fn revoking_the_admins_sessions_ends_the_console_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let console = ConsoleClient::admin(&app).await;
    assert_eq!(console.get(&app, "/admin").await.status(), 200);
    let (admin_id, admin) = app.admin().await;
    let revoked = app
        .post_json_as(
            &format!("/v1/admin/members/{admin_id}/sessions/revoke"),
            &admin,
            json!({}),
        )
        .await;
    assert!(revoked.status().is_success());
    let after = console.get(&app, "/admin").await;
    assert_eq!(after.status(), 303);
    assert_eq!(location(&after), "/admin/sign-in");
}

async fn losing_admin_ends_the_console_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let (second, _) = app.member(&admin, "second@example.org", &["admin"]).await;
    let console = ConsoleClient::sign_in(&app, "second@example.org").await.0;
    assert_eq!(console.get(&app, "/admin").await.status(), 200);
    let revoked = app
        .send_as(
            reqwest::Method::DELETE,
            &format!("/v1/admin/members/{second}/roles/admin"),
            &admin,
            None,
        )
        .await;
    assert!(revoked.status().is_success(), "{}", revoked.status());
    let after = console.get(&app, "/admin").await;
    assert_eq!(after.status(), StatusCode::FORBIDDEN);
    assert!(
        after
            .text()
            .await
            .unwrap()
            .contains("This console is for admins")
    );
    // The cookie was cleared: the next request goes to the sign-in page.
    assert_eq!(
        location(&console.get(&app, "/admin").await),
        "/admin/sign-in"
    );
}

async fn an_idle_console_session_ends(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let console = ConsoleClient::admin(&app).await;
    // Each request within the idle timeout (30 minutes) keeps it alive.
    for _ in 0..3 {
        app.clock().advance(std::time::Duration::from_secs(20 * 60));
        assert_eq!(console.get(&app, "/admin").await.status(), 200);
    }
    app.clock().advance(std::time::Duration::from_secs(31 * 60));
    let idle = console.get(&app, "/admin").await;
    assert_eq!(idle.status(), 303);
    assert_eq!(location(&idle), "/admin/sign-in");
}

/// The console's other actions do what the API would, and refuse what it refuses.
async fn console_actions_change_what_they_say(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let console = ConsoleClient::admin(&app).await;
    let csrf = console.csrf(&app, "/admin/roles").await;

    // A custom role: a bad name is refused next to its field; a good one is made.
    let bad = console
        .post(
            &app,
            "/admin/roles",
            &[("csrf", &csrf), ("name", "Not A Role!")],
        )
        .await;
    assert_eq!(bad.status(), 422);
    assert!(bad.text().await.unwrap().contains("id=\"name-error\""));
    let made = console
        .post(
            &app,
            "/admin/roles",
            &[
                ("csrf", &csrf),
                ("name", "board"),
                ("description", "The board"),
            ],
        )
        .await;
    assert_eq!(made.status(), 303);
    let (member, _) = app.member(&admin, "bo@example.org", &["board"]).await;
    // Held by a member: deleting asks first, and only `force` deletes.
    let asked = console
        .post(&app, "/admin/roles/board/delete", &[("csrf", &csrf)])
        .await;
    assert_eq!(asked.status(), 409);
    assert!(
        asked
            .text()
            .await
            .unwrap()
            .contains("1 member(s) hold board")
    );
    let held = TestApp::json_ok(
        app.get_as(&format!("/v1/admin/members/{member}"), &admin)
            .await,
        200,
    )
    .await;
    assert!(held["roles"].as_array().unwrap().contains(&json!("board")));
    let forced = console
        .post(
            &app,
            "/admin/roles/board/delete",
            &[("csrf", &csrf), ("force", "yes")],
        )
        .await;
    assert_eq!(forced.status(), 303);
    let roles = TestApp::json_ok(app.get_as("/v1/admin/roles", &admin).await, 200).await;
    assert!(!roles.to_string().contains("board"), "{roles}");

    // The allowlist: remove one address; withdraw an upload.
    app.allowlist(&admin, "gone@example.org", &[]).await;
    let removed = console
        .post(
            &app,
            "/admin/roster/remove",
            &[("csrf", &csrf), ("email", "Gone@Example.org")],
        )
        .await;
    assert_eq!(removed.status(), 303);
    let again = console
        .post(
            &app,
            "/admin/roster/remove",
            &[("csrf", &csrf), ("email", "gone@example.org")],
        )
        .await;
    assert_eq!(again.status(), 303, "a flash says why, on the roster page");
    let roster = console
        .get(&app, "/admin/roster")
        .await
        .text()
        .await
        .unwrap();
    assert!(
        roster.contains("No such address on the allowlist."),
        "the reason is shown once"
    );
    let report = TestApp::json_ok(
        app.post_json_as(
            "/v1/admin/eligible-emails/bulk",
            &admin,
            json!({"emails": ["x1@example.org", "x2@example.org"], "batch_id": "spring"}),
        )
        .await,
        200,
    )
    .await;
    assert_eq!(report["added"], 2);
    let withdrawn = console
        .post(
            &app,
            "/admin/roster/batches/spring/withdraw",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(withdrawn.status(), 303);
    let left = TestApp::json_ok(
        app.get_as("/v1/admin/eligible-emails?batch_id=spring", &admin)
            .await,
        200,
    )
    .await;
    assert_eq!(left["items"], json!([]));

    // A key with a blank name is refused next to the field, and none is made.
    let blank = console
        .post(
            &app,
            &format!("/admin/members/{member}/api-keys"),
            &[("csrf", &csrf), ("key_name", "  ")],
        )
        .await;
    assert_eq!(blank.status(), 422);
    assert!(
        blank
            .text()
            .await
            .unwrap()
            .contains("id=\"key_name-error\"")
    );
    let keys = TestApp::json_ok(app.get_as("/v1/admin/api-keys", &admin).await, 200).await;
    assert_eq!(keys["items"], json!([]));

    // Deleting needs the address typed exactly.
    let wrong = console
        .post(
            &app,
            &format!("/admin/members/{member}/delete"),
            &[("csrf", &csrf), ("confirm", "someone@example.org")],
        )
        .await;
    assert_eq!(wrong.status(), 422);
    assert_eq!(member_status(&app, &admin, &member).await, "active");
    let deleted = console
        .post(
            &app,
            &format!("/admin/members/{member}/delete"),
            &[("csrf", &csrf), ("confirm", "bo@example.org")],
        )
        .await;
    assert_eq!(deleted.status(), 303);
    assert_eq!(member_status(&app, &admin, &member).await, "deleted");
}

backend_tests!(
    console_actions_change_what_they_say,
    without_a_session_every_page_leads_to_sign_in,
    an_admin_gets_a_strict_cookie_and_strict_headers,
    a_member_without_admin_is_refused_and_keeps_no_session,
    cross_site_and_tokenless_posts_change_nothing,
    revoking_the_admins_sessions_ends_the_console_session,
    losing_admin_ends_the_console_session,
    an_idle_console_session_ends,
);

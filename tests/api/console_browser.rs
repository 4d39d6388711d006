//! An admin's stories in headless Chromium: sign in by the mailed link, upload a
//! roster with bad rows, onboard and manage a member, issue and revoke a key,
//! read the audit trail, sign out. Writes a screenshot of every page at 1280
//! and 390 px wide into `target/screenshots/` (SQLite run) to look at.

use std::path::PathBuf;
use std::time::Duration;

use fantoccini::{Client, Locator};
use serde_json::json;

use crate::backend_tests;
use crate::browser::{Driver, connect};
use crate::helpers::{ADMIN, Backend, TestApp};

const ROSTER: &str = "email,roles\n\
ana@example.org,sustainer\n\
ben@example.org,\n\
not-an-address,\n\
cleo@example.org,no-such-role\n\
ana@example.org,\n\
dev@example.org,active\n";

struct Admin<'a> {
    app: &'a TestApp,
    browser: Client,
    /// Where screenshots go; `None` on runs that take none.
    shots: Option<PathBuf>,
}

impl Admin<'_> {
    async fn open(&self, path: &str) {
        self.browser.goto(&self.app.url(path)).await.unwrap();
    }

    /// The text of the first `css` element once the page shows one (a click
    /// may still be loading the next page, so stale elements are retried).
    async fn text(&self, css: &str) -> String {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(element) = self.browser.find(Locator::Css(css)).await
                && let Ok(text) = element.text().await
            {
                return text;
            }
            if std::time::Instant::now() > deadline {
                let url = self.browser.current_url().await.unwrap();
                let page = self.browser.source().await.unwrap_or_default();
                panic!("no {css} at {url}:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until the text of `css` is `expected`.
    async fn expect_text(&self, css: &str, expected: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            let text = self.text(css).await;
            if text == expected {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{css}: {text:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn click(&self, css: &str) {
        self.browser
            .wait()
            .at_most(Duration::from_secs(10))
            .for_element(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap_or_else(|e| panic!("click {css}: {e}"));
    }

    async fn fill(&self, css: &str, text: &str) {
        let field = self.browser.find(Locator::Css(css)).await.unwrap();
        field.clear().await.unwrap();
        field.send_keys(text).await.unwrap();
    }

    async fn path(&self) -> String {
        self.browser.current_url().await.unwrap().path().to_owned()
    }

    async fn flash(&self) -> String {
        self.text(".flash").await
    }

    /// The page as it is now, at both widths; at 390 px nothing may stick out
    /// sideways (a table scrolls inside its frame, the page never does).
    async fn shoot(&self, name: &str) {
        let Some(dir) = &self.shots else { return };
        for (width, height) in [(1280, 1000), (390, 1000)] {
            self.browser.set_window_size(width, height).await.unwrap();
            let wide = self
                .browser
                .execute(
                    "const w = document.documentElement.clientWidth; \
                     const out = [...document.querySelectorAll('body *')] \
                       .filter(e => e.getBoundingClientRect().right > w + 1 \
                         && !(e.parentElement && e.parentElement.closest('.table-wrap, nav ul'))) \
                       .map(e => e.tagName + '.' + e.className + '#' + e.id).slice(0, 5); \
                     const sw = document.documentElement.scrollWidth; \
                     return sw > w ? out.concat(['page ' + sw + ' > ' + w]) : out;",
                    vec![],
                )
                .await
                .unwrap();
            assert_eq!(
                wide,
                json!([]),
                "{name} at {width} px: elements wider than the page"
            );
            let png = self.browser.screenshot().await.unwrap();
            std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
        }
        self.browser.set_window_size(1280, 1000).await.unwrap();
    }
}

async fn an_admin_runs_the_organisation_from_the_browser(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let shots = matches!(backend, Backend::Sqlite).then(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let admin = Admin {
        app: &app,
        browser: connect(&driver, profile.path()).await,
        shots,
    };
    admin.browser.set_window_size(1280, 1000).await.unwrap();

    // No session: the console sends the admin to sign in.
    admin.open("/admin/members").await;
    assert_eq!(admin.path().await, "/admin/sign-in");
    admin.shoot("sign-in").await;
    admin.fill("#email", ADMIN).await;
    admin.click("#send-link").await;
    admin.expect_text("#check-mail", "Check your mail").await;
    admin.shoot("sign-in-sent").await;
    let mail = app.next_mail_to(ADMIN).await;
    admin.browser.goto(&mail.link).await.unwrap();
    admin.click("button#confirm").await;
    admin.expect_text("h1", "Overview").await;
    assert_eq!(admin.path().await, "/admin");
    let cookie = admin
        .browser
        .get_named_cookie("gatehouse_console")
        .await
        .unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.path(), Some("/admin"));
    assert_eq!(format!("{:?}", cookie.same_site()), "Some(Strict)");

    // Upload a roster with bad rows: the dry run first, the invalid rows, the import.
    let upload_dir = tempfile::tempdir().unwrap();
    let file = upload_dir.path().join("club-roster.csv");
    std::fs::write(&file, ROSTER).unwrap();
    admin.open("/admin/roster").await;
    admin.shoot("roster-empty").await;
    admin
        .browser
        .find(Locator::Css("#file"))
        .await
        .unwrap()
        .send_keys(&file.display().to_string())
        .await
        .unwrap();
    admin.click("#check-upload").await;
    admin.expect_text("#count-rows", "6").await;
    assert_eq!(admin.text("#count-added").await, "3");
    assert_eq!(admin.text("#count-invalid").await, "2");
    let invalid = admin.text("#invalid-rows").await;
    assert!(invalid.contains("not-an-address"), "{invalid}");
    assert!(invalid.contains("no-such-role"), "{invalid}");
    admin.shoot("roster-dry-run").await;
    // Nothing is written by the dry run.
    let (_, token) = app.admin().await;
    let listed = TestApp::json_ok(
        app.get_as("/v1/admin/eligible-emails?q=example.org", &token)
            .await,
        200,
    )
    .await;
    assert_eq!(
        listed["items"].as_array().unwrap().len(),
        1,
        "only the bootstrap admin: {listed}"
    );
    // The invalid rows download, with the console's cookie.
    let href = admin
        .browser
        .find(Locator::Id("download-invalid"))
        .await
        .unwrap()
        .attr("href")
        .await
        .unwrap()
        .unwrap();
    let downloaded = app
        .client
        .get(app.url(&href))
        .header("cookie", format!("gatehouse_console={}", cookie.value()))
        .send()
        .await
        .unwrap();
    assert_eq!(downloaded.status(), 200);
    let csv = downloaded.text().await.unwrap();
    assert_eq!(csv.lines().next(), Some("email,roles,line,reason"));
    assert!(csv.contains("not-an-address,,4,"), "{csv}");
    assert!(csv.contains("cleo@example.org,no-such-role,5,"), "{csv}");
    admin.click("#import").await;
    assert!(
        admin.flash().await.contains("3 added"),
        "{}",
        admin.flash().await
    );
    let listed = TestApp::json_ok(
        app.get_as("/v1/admin/eligible-emails?q=example.org", &token)
            .await,
        200,
    )
    .await;
    assert_eq!(listed["items"].as_array().unwrap().len(), 4, "{listed}");
    admin.shoot("roster").await;

    // Onboard a member directly, then find them.
    admin.open("/admin/members/new").await;
    admin.shoot("member-new").await;
    admin.fill("#email", "Erin@Example.org").await;
    admin.click("#onboard").await;
    admin.expect_text("#member-email", "erin@example.org").await;
    admin.open("/admin/members?q=erin").await;
    admin.shoot("members").await;
    admin.click("#members a").await;
    admin.expect_text("#member-email", "erin@example.org").await;
    let member_path = admin.path().await;
    let member_id = member_path.rsplit('/').next().unwrap().to_owned();

    // Grant sustainer until a date.
    let select = admin.browser.find(Locator::Id("grant-role")).await.unwrap();
    select.select_by_value("sustainer").await.unwrap();
    admin
        .browser
        .execute(
            "document.getElementById('grant-until').value = arguments[0]",
            vec![json!("2099-01-31")],
        )
        .await
        .unwrap();
    admin.click("#grant").await;
    admin
        .expect_text(".flash", "Granted sustainer until the end of 2099-01-31.")
        .await;
    let grants = admin.text("#grants").await;
    assert!(
        grants.contains("sustainer") && grants.contains("end of 31 Jan 2099"),
        "{grants}"
    );
    // A date in the past is refused next to its field, and nothing changes.
    admin
        .browser
        .execute(
            "document.getElementById('grant-until').value = arguments[0]",
            vec![json!("2001-01-01")],
        )
        .await
        .unwrap();
    admin.click("#grant").await;
    admin
        .expect_text("#until-error", "Choose today or a later date.")
        .await;

    // Issue an API key: shown once, works, then revoked.
    admin.fill("#key-name", "forum").await;
    admin.click("#issue-key").await;
    admin.text("#issued-key").await;
    let key = admin
        .browser
        .find(Locator::Id("issued-key"))
        .await
        .unwrap()
        .prop("value")
        .await
        .unwrap()
        .unwrap();
    assert!(key.starts_with("gh_"), "{key}");
    admin.shoot("key-issued").await;
    let me = app
        .client
        .get(app.url("/v1/me"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 200);
    admin.click("#done").await;
    let source = admin.browser.source().await.unwrap();
    assert!(!source.contains(&key), "the key is shown once");
    admin.click("#member-keys details summary").await;
    admin.click("#member-keys details button").await;
    assert!(admin.flash().await.starts_with("Revoked the key"));
    let me = app
        .client
        .get(app.url("/v1/me"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(me.status(), 401);

    // Suspend and reactivate.
    admin.click("#suspend-open").await;
    admin.click("#suspend").await;
    admin.expect_text("#member-status", "suspended").await;
    admin.click("#reactivate").await;
    admin.expect_text("#member-status", "active").await;
    admin.shoot("member").await;

    // The member's audit trail, and the log's own page.
    let trail = admin.text("#trail").await;
    for action in [
        "member.onboarded",
        "member.role_granted",
        "apikey.created",
        "member.status_changed",
    ] {
        assert!(trail.contains(action), "{action} in {trail}");
    }
    admin
        .open(&format!("/admin/audit?target={member_id}"))
        .await;
    assert!(admin.text("#audit").await.contains("member.status_changed"));
    // A key's revocation names the key, not the member.
    admin.open("/admin/audit?action=apikey.revoked").await;
    assert!(admin.text("#audit").await.contains("apikey.revoked"));
    admin.shoot("audit").await;

    // The other pages render for a person.
    admin.open("/admin/roles").await;
    assert!(admin.text("#roles").await.contains("sustainer"));
    admin.shoot("roles").await;
    admin.open("/admin/api-keys").await;
    assert!(admin.text("#keys").await.contains("forum"));
    admin.shoot("api-keys").await;
    admin.open("/admin/mail").await;
    assert!(admin.text("#mail").await.contains(ADMIN));
    admin.shoot("mail").await;
    admin.open("/admin").await;
    admin.shoot("overview").await;

    // Sign out: the cookie is gone and the console asks to sign in again.
    admin.click(".signout button").await;
    admin.expect_text(".flash", "You are signed out.").await;
    assert_eq!(admin.path().await, "/admin/sign-in");
    admin.open("/admin").await;
    assert_eq!(admin.path().await, "/admin/sign-in");
    admin.browser.close().await.unwrap();
}

backend_tests!(an_admin_runs_the_organisation_from_the_browser);

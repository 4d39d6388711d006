//! Two real browsers as two devices: the laptop asks at `/sign-in` and waits;
//! the phone opens the mailed link and picks the number the laptop shows; the
//! laptop lands on the account page signed in, the phone does not. Also the
//! same-device one click, and ending a session from the account page.
//! Screenshots of each page at 1280 and 390 px go to `target/screenshots/`.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use fantoccini::{Client, Locator};

use crate::backend_tests;
use crate::browser::{Driver, connect};
use crate::helpers::{ADMIN, Backend, TestApp};

/// The text of `css` once it shows `expected` (pages change under a click).
async fn expect_text(browser: &Client, css: &str, expected: &str) {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let text = match browser.find(Locator::Css(css)).await {
            Ok(element) => element.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        };
        if text.contains(expected) {
            return;
        }
        if Instant::now() > deadline {
            let url = browser.current_url().await.unwrap();
            let source = browser.source().await.unwrap_or_default();
            panic!("{css}: {text:?}, expected {expected:?} at {url}\n{source}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn click(browser: &Client, css: &str) {
    browser
        .wait()
        .at_most(Duration::from_secs(10))
        .for_element(Locator::Css(css))
        .await
        .unwrap_or_else(|e| panic!("{css}: {e}"))
        .click()
        .await
        .unwrap();
}

async fn shoot(browser: &Client, shots: &Option<PathBuf>, name: &str) {
    let Some(dir) = shots else { return };
    for width in [1280, 390] {
        browser.set_window_size(width, 1000).await.unwrap();
        // Nothing sticks out sideways: a table scrolls inside its frame.
        let wide = browser
            .execute(
                "const w = document.documentElement.clientWidth; \
                 const out = [...document.querySelectorAll('body *')] \
                   .filter(e => e.getBoundingClientRect().right > w + 1 \
                     && !(e.parentElement && e.parentElement.closest('.table-wrap'))) \
                   .map(e => e.tagName + '.' + e.className + '#' + e.id).slice(0, 5); \
                 const sw = document.documentElement.scrollWidth; \
                 return sw > w ? out.concat(['page ' + sw + ' > ' + w]) : out;",
                vec![],
            )
            .await
            .unwrap();
        assert_eq!(wide, serde_json::json!([]), "{name} at {width} px");
        let png = browser.screenshot().await.unwrap();
        std::fs::write(dir.join(format!("{name}-{width}.png")), png).unwrap();
    }
    browser.set_window_size(1280, 1000).await.unwrap();
}

async fn a_member_signs_in_on_the_laptop_by_the_phone(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let shots = matches!(backend, Backend::Sqlite).then(|| {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/screenshots");
        std::fs::create_dir_all(&dir).unwrap();
        dir
    });
    let (laptop_driver, phone_driver) = (Driver::start(), Driver::start());
    let (laptop_profile, phone_profile) =
        (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let laptop = connect(&laptop_driver, laptop_profile.path()).await;
    let phone = connect(&phone_driver, phone_profile.path()).await;
    laptop.set_window_size(1280, 1000).await.unwrap();

    // The laptop asks, and waits showing a number.
    laptop.goto(&app.url("/sign-in")).await.unwrap();
    shoot(&laptop, &shots, "member-sign-in").await;
    laptop
        .find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys(ADMIN)
        .await
        .unwrap();
    click(&laptop, "#send-link").await;
    expect_text(&laptop, "#check-mail", "Check your mail").await;
    let number = laptop
        .find(Locator::Id("number"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    shoot(&laptop, &shots, "member-wait").await;
    let mail = app.next_mail_to(ADMIN).await;
    // Let the laptop's page check in, so the phone sees someone waiting.
    tokio::time::sleep(Duration::from_millis(1500)).await;

    // The phone opens the link: it names the laptop and asks for the number.
    phone.goto(&mail.link).await.unwrap();
    expect_text(
        &phone,
        "#other-device",
        "Finish signing in on the other device",
    )
    .await;
    shoot(&phone, &shots, "member-confirm-other-device").await;
    click(&phone, &format!("#pick-{number}")).await;
    expect_text(&phone, "h1", "Done: go back to the other device").await;

    // The laptop goes on by itself, signed in; the phone has no session.
    expect_text(&laptop, "#account-email", ADMIN).await;
    assert_eq!(laptop.current_url().await.unwrap().path(), "/account");
    assert!(
        phone.get_named_cookie("gatehouse_account").await.is_err(),
        "the phone is not signed in"
    );
    let cookie = laptop.get_named_cookie("gatehouse_account").await.unwrap();
    assert_eq!(cookie.http_only(), Some(true));
    assert_eq!(cookie.path(), Some("/account"));

    // A second session (the API, say); the account page ends it, and its token
    // is refused at once.
    let other = app.sign_in(ADMIN).await;
    let other_token = other["access_token"].as_str().unwrap();
    laptop.refresh().await.unwrap();
    expect_text(&laptop, "#sessions", "this one").await;
    let rows = laptop
        .find_all(Locator::Css("#sessions tbody tr"))
        .await
        .unwrap();
    assert_eq!(rows.len(), 2);
    shoot(&laptop, &shots, "member-account").await;
    click(&laptop, "#sessions button.quiet").await;
    expect_text(&laptop, ".flash", "That session is ended").await;
    assert_eq!(app.get_as("/v1/me", other_token).await.status(), 401);
    assert_eq!(
        laptop
            .find_all(Locator::Css("#sessions tbody tr"))
            .await
            .unwrap()
            .len(),
        1
    );

    // Same device: a new request on the laptop, its link opened on the laptop,
    // one click, signed in.
    click(&laptop, "#sign-out").await;
    expect_text(&laptop, ".flash", "You are signed out.").await;
    laptop
        .find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys(ADMIN)
        .await
        .unwrap();
    click(&laptop, "#send-link").await;
    expect_text(&laptop, "#check-mail", "Check your mail").await;
    let mail = app.next_mail_to(ADMIN).await;
    laptop.goto(&mail.link).await.unwrap();
    click(&laptop, "button#confirm").await;
    expect_text(&laptop, "#account-email", ADMIN).await;

    // The code typed on the waiting page works too.
    click(&laptop, "#sign-out").await;
    expect_text(&laptop, ".flash", "You are signed out.").await;
    laptop
        .find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys(ADMIN)
        .await
        .unwrap();
    click(&laptop, "#send-link").await;
    expect_text(&laptop, "#check-mail", "Check your mail").await;
    let mail = app.next_mail_to(ADMIN).await;
    laptop
        .find(Locator::Id("code"))
        .await
        .unwrap()
        .send_keys(&mail.code)
        .await
        .unwrap();
    click(&laptop, "#use-code").await;
    expect_text(&laptop, "#account-email", ADMIN).await;
    laptop.close().await.unwrap();
    phone.close().await.unwrap();
}

/// An address that may not sign in looks the same from outside, and never completes.
async fn a_stranger_waits_like_anyone_and_never_gets_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let driver = Driver::start();
    let profile = tempfile::tempdir().unwrap();
    let browser = connect(&driver, profile.path()).await;
    browser.goto(&app.url("/sign-in")).await.unwrap();
    browser
        .find(Locator::Id("email"))
        .await
        .unwrap()
        .send_keys("stranger@example.org")
        .await
        .unwrap();
    click(&browser, "#send-link").await;
    expect_text(&browser, "#check-mail", "Check your mail").await;
    let number = browser
        .find(Locator::Id("number"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(number.len(), 2, "a number like anyone's: {number}");
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(browser.current_url().await.unwrap().path(), "/sign-in/wait");
    assert!(app.mail_files_to("stranger@example.org").is_empty());
    browser.close().await.unwrap();
}

backend_tests!(
    a_member_signs_in_on_the_laptop_by_the_phone,
    a_stranger_waits_like_anyone_and_never_gets_in,
);

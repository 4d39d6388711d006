//! A real SMTP conversation over TCP with an SMTP server started by the test.

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, SentMail, TestApp};
use crate::mail_support::Inbox;

async fn sign_in_link_arrives_over_smtp_and_signs_the_member_in(backend: Backend) {
    let (inbox, smtp) = Inbox::start();
    let url = format!("smtp://{smtp}");
    let app = TestApp::spawn_with(
        backend,
        &[
            ("mail_transport", "smtp"),
            ("smtp_url", &url),
            ("mail_from", "Club <club@example.org>"),
        ],
    )
    .await;
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    let messages = inbox.wait_for(1).await;
    let raw = &messages[0];
    assert!(raw.contains("To: admin@example.org"), "{raw}");
    assert!(raw.contains("From: Club <club@example.org>"), "{raw}");
    assert!(raw.contains("Content-Type: text/html"), "has an HTML part");
    let mail = SentMail::parse(raw.clone());
    assert!(mail.raw.contains(&mail.code), "the code is in the mail");

    let page = app.client.get(&mail.link).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let response = app
        .client
        .post(app.url("/auth/confirm"))
        .form(&[("token", &mail.token)])
        .send()
        .await
        .unwrap();
    let html = response.text().await.unwrap();
    let access = html
        .split("id=\"access-token\" rows=\"5\" readonly>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    assert_eq!(app.claims(access).roles, ["admin", "member"]);
}

backend_tests!(sign_in_link_arrives_over_smtp_and_signs_the_member_in);

use std::time::Duration;

use futures_util::future::join_all;
use serde_json::json;

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, TestApp, assert_problem};
use crate::mail_support::wait_for_outbox;

async fn member_signs_in_by_clicking_the_emailed_link(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    app.allowlist(&admin, "Ada@Example.org", &["sustainer"])
        .await;

    assert_eq!(app.request_link(" ada@EXAMPLE.org ").await.status(), 202);
    let mail = app.next_mail_to("ada@example.org").await;
    assert!(
        mail.link
            .starts_with(&format!("http://{}/auth/confirm?token=", app.addr))
    );

    // Opening the link (and a scanner's HEAD) only shows the confirm page.
    for _ in 0..2 {
        let page = app.client.get(&mail.link).send().await.unwrap();
        assert_eq!(page.status(), 200);
        assert_eq!(page.headers()["referrer-policy"], "no-referrer");
        assert_eq!(page.headers()["cache-control"], "no-store");
        let html = page.text().await.unwrap();
        assert!(html.contains("method=\"post\""), "{html}");
        assert!(html.contains(&mail.token));
    }
    assert_eq!(
        app.client.head(&mail.link).send().await.unwrap().status(),
        200
    );

    let signed_in = app
        .client
        .post(app.url("/auth/confirm"))
        .form(&[("token", &mail.token)])
        .send()
        .await
        .unwrap();
    assert_eq!(signed_in.status(), 200);
    assert_eq!(signed_in.headers()["referrer-policy"], "no-referrer");
    let html = signed_in.text().await.unwrap();
    assert!(html.contains("ada@example.org"));
    let access = html
        .split("id=\"access-token\" rows=\"5\" readonly>")
        .nth(1)
        .unwrap()
        .split('<')
        .next()
        .unwrap();
    let claims = app.claims(access);
    assert_eq!(claims.email, "ada@example.org");
    assert_eq!(claims.roles, ["member", "sustainer"]);

    let me: serde_json::Value = app.get_as("/v1/me", access).await.json().await.unwrap();
    assert_eq!(me["email"], "ada@example.org");
    assert_eq!(me["roles"], json!(["member", "sustainer"]));
}

async fn the_confirm_button_redirects_to_the_app_with_tokens_in_the_fragment(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let response = app
        .post_json(
            "/v1/auth/magic-link",
            json!({ "email": ADMIN, "redirect_to": "https://app.example.org/welcome" }),
        )
        .await;
    assert_eq!(response.status(), 202);
    let mail = app.next_mail_to(ADMIN).await;
    let response = app
        .client
        .post(app.url("/auth/confirm"))
        .form(&[("token", &mail.token)])
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 303);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let (target, fragment) = location.split_once('#').unwrap();
    assert_eq!(target, "https://app.example.org/welcome");
    let pairs: std::collections::HashMap<String, String> =
        url::form_urlencoded::parse(fragment.as_bytes())
            .into_owned()
            .collect();
    assert_eq!(
        app.claims(&pairs["access_token"]).roles,
        ["admin", "member"]
    );
    assert_eq!(pairs["token_type"], "Bearer");
    assert!(!pairs["refresh_token"].is_empty());
}

async fn open_redirect_attempts_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    for target in [
        "//evil.test/",
        "https:evil.test",
        "javascript:alert(1)",
        "https://app.example.org@evil.test/",
        "https://evil.test/?https://app.example.org",
        "http://app.example.org/",
        "https://app.example.org.evil.test/",
    ] {
        let response = app
            .post_json(
                "/v1/auth/magic-link",
                json!({ "email": ADMIN, "redirect_to": target }),
            )
            .await;
        let problem = assert_problem(response, 403).await;
        assert_eq!(problem["code"], "redirect_not_allowed", "{target}");
    }
    assert!(app.mail_files_to(ADMIN).is_empty());
}

async fn ineligible_address_gets_the_same_answer_and_no_mail(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let eligible = app.request_link(ADMIN).await;
    let ineligible = app.request_link("stranger@example.org").await;
    assert_eq!(eligible.status(), ineligible.status());
    assert_eq!(eligible.status(), 202);
    // The same body but for the request handle's random values, which are
    // alike in shape and length (tests/api/devices.rs checks them further).
    let shape = |body: serde_json::Value| {
        let request = &body["request"];
        (
            body["status"].clone(),
            request["id"].as_str().map(str::len),
            request["secret"].as_str().map(str::len),
            request["number"].is_u64(),
        )
    };
    let eligible: serde_json::Value = eligible.json().await.unwrap();
    let ineligible: serde_json::Value = ineligible.json().await.unwrap();
    assert_eq!(eligible.as_object().unwrap().len(), 2, "{eligible}");
    assert_eq!(shape(eligible), shape(ineligible));
    app.next_mail_to(ADMIN).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(app.mail_files_to("stranger@example.org").is_empty());

    // Only the audit log tells the two apart.
    let admin = app.admin_token().await;
    let requests = TestApp::json_ok(
        app.get_as("/v1/admin/audit?action=auth.link_requested", &admin)
            .await,
        200,
    )
    .await;
    let eligible_by_target: Vec<(String, bool)> = requests["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["target"].as_str().unwrap().to_owned(),
                row["details"]["eligible"].as_bool().unwrap(),
            )
        })
        .collect();
    assert!(eligible_by_target.contains(&("stranger@example.org".to_owned(), false)));
    assert!(eligible_by_target.contains(&(ADMIN.to_owned(), true)));
}

async fn a_link_works_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.request_link(ADMIN).await;
    let mail = app.next_mail_to(ADMIN).await;
    let first = app
        .post_json("/v1/auth/verify", json!({ "token": mail.token }))
        .await;
    assert_eq!(first.status(), 200);
    let replay = app
        .post_json("/v1/auth/verify", json!({ "token": mail.token }))
        .await;
    assert_eq!(assert_problem(replay, 401).await["code"], "invalid_link");
    let page = app
        .client
        .post(app.url("/auth/confirm"))
        .form(&[("token", &mail.token)])
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 400);
    assert!(page.text().await.unwrap().contains("does not work"));
}

async fn an_expired_link_is_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("link_ttl_secs", "60")]).await;
    app.request_link(ADMIN).await;
    let mail = app.next_mail_to(ADMIN).await;
    app.clock().advance(Duration::from_secs(61));
    let response = app
        .post_json("/v1/auth/verify", json!({ "token": mail.token }))
        .await;
    assert_eq!(assert_problem(response, 401).await["code"], "invalid_link");
    let by_code = app
        .post_json(
            "/v1/auth/verify",
            json!({ "email": ADMIN, "code": mail.code }),
        )
        .await;
    assert_problem(by_code, 401).await;
}

async fn concurrent_uses_of_one_link_yield_one_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.request_link(ADMIN).await;
    let mail = app.next_mail_to(ADMIN).await;
    let attempts =
        (0..16).map(|_| app.post_json("/v1/auth/verify", json!({ "token": mail.token })));
    let statuses: Vec<u16> = join_all(attempts)
        .await
        .iter()
        .map(|r| r.status().as_u16())
        .collect();
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 401).count(),
        15,
        "{statuses:?}"
    );
}

/// Two links of a new member, clicked at once: both sign the one new member in
/// (on Postgres the two transactions race to create the member row).
async fn two_links_of_a_new_member_redeemed_at_once_make_one_member(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    app.allowlist(&admin, "twice@example.org", &[]).await;
    let mut tokens = Vec::new();
    for _ in 0..4 {
        app.request_link("twice@example.org").await;
        tokens.push(app.next_mail_to("twice@example.org").await.token);
    }
    let verified = join_all(
        tokens
            .iter()
            .map(|token| app.post_json("/v1/auth/verify", json!({ "token": token }))),
    )
    .await;
    let mut members = Vec::new();
    for response in verified {
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        members.push(body["member"]["id"].clone());
    }
    members.dedup();
    assert_eq!(members.len(), 1, "{members:?}");
}

async fn the_mailed_code_signs_in_on_another_device(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.request_link(ADMIN).await;
    let mail = app.next_mail_to(ADMIN).await;
    let spaced = format!("{} {}", &mail.code[..3], &mail.code[3..]);
    let response = app
        .post_json(
            "/v1/auth/verify",
            json!({ "email": "ADMIN@example.org", "code": spaced }),
        )
        .await;
    assert_eq!(response.status(), 200);
    let tokens: serde_json::Value = response.json().await.unwrap();
    assert_eq!(tokens["member"]["email"], ADMIN);
    // The link of that mail is spent too.
    let response = app
        .post_json("/v1/auth/verify", json!({ "token": mail.token }))
        .await;
    assert_problem(response, 401).await;
}

async fn a_code_allows_five_guesses(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    app.request_link(ADMIN).await;
    let mail = app.next_mail_to(ADMIN).await;
    let wrong = if mail.code == "000000" {
        "111111"
    } else {
        "000000"
    };
    for _ in 0..5 {
        let response = app
            .post_json("/v1/auth/verify", json!({ "email": ADMIN, "code": wrong }))
            .await;
        assert_eq!(assert_problem(response, 401).await["code"], "invalid_link");
    }
    let response = app
        .post_json(
            "/v1/auth/verify",
            json!({ "email": ADMIN, "code": mail.code }),
        )
        .await;
    assert_problem(response, 401).await;
    // The link itself still works: guessing burns the code, not the mailed link.
    let response = app
        .post_json("/v1/auth/verify", json!({ "token": mail.token }))
        .await;
    assert_eq!(response.status(), 200);
}

async fn first_sign_in_creates_the_member_with_preassigned_roles(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    app.allowlist(&admin, "bo@example.org", &["active", "sustainer"])
        .await;
    let first = app.sign_in("bo@example.org").await;
    assert_eq!(
        first["member"]["roles"],
        json!(["active", "member", "sustainer"])
    );
    let second = app.sign_in("bo@example.org").await;
    assert_eq!(second["member"]["id"], first["member"]["id"]);
}

async fn rate_limits_answer_429_with_retry_after(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[("rate_limit_per_email", "5"), ("rate_limit_per_ip", "8")],
    )
    .await;
    for _ in 0..5 {
        assert_eq!(app.request_link(ADMIN).await.status(), 202);
    }
    let limited = app.request_link(ADMIN).await;
    let retry_after: u64 = limited.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after > 0 && retry_after <= 900);
    assert_eq!(assert_problem(limited, 429).await["code"], "rate_limited");
    // Other addresses share the per-IP budget: 6 used, 2 left.
    assert_eq!(app.request_link("x@example.org").await.status(), 202);
    assert_eq!(app.request_link("y@example.org").await.status(), 202);
    assert_problem(app.request_link("z@example.org").await, 429).await;
}

async fn the_eligibility_check_is_off_unless_enabled(backend: Backend) {
    let off = TestApp::spawn(backend).await;
    let response = off
        .post_json("/v1/auth/eligibility", json!({ "email": ADMIN }))
        .await;
    assert_problem(response, 404).await;

    let on = TestApp::spawn_with(
        backend,
        &[("public_eligibility", "true"), ("rate_limit_per_ip", "3")],
    )
    .await;
    let yes: serde_json::Value = on
        .post_json("/v1/auth/eligibility", json!({ "email": ADMIN }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(yes["eligible"], true);
    let no: serde_json::Value = on
        .post_json("/v1/auth/eligibility", json!({ "email": "no@example.org" }))
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(no["eligible"], false);
    on.post_json("/v1/auth/eligibility", json!({ "email": ADMIN }))
        .await;
    assert_problem(
        on.post_json("/v1/auth/eligibility", json!({ "email": ADMIN }))
            .await,
        429,
    )
    .await;
}

async fn mail_queued_at_shutdown_is_delivered_after_restart(backend: Backend) {
    let app = TestApp::spawn_with(
        backend,
        &[
            ("mail_transport", "smtp"),
            ("smtp_url", "smtp://127.0.0.1:9"),
        ],
    )
    .await;
    // Nothing listens on port 9: the mail stays queued, with a retry scheduled.
    assert_eq!(app.request_link(ADMIN).await.status(), 202);
    wait_for_outbox(&app, ADMIN, |mail| mail.attempts >= 1).await;
    let mut app = app;
    app.shutdown().await;
    assert!(app.mail_files_to(ADMIN).is_empty());
    // The same data, now with a transport that works: the queued mail goes out
    // once its retry comes due, at most 2.5 s (the first backoff) later.
    app.clock().advance(Duration::from_secs(3));
    let mut restarted = app.restart_with(&[("mail_transport", "file")]).await;
    let mail = restarted.next_mail_to(ADMIN).await;
    let response = restarted
        .post_json("/v1/auth/verify", json!({ "token": mail.token }))
        .await;
    assert_eq!(response.status(), 200);
    restarted.shutdown().await;
}

async fn the_client_ip_comes_from_a_forwarded_header_only_behind_a_trusted_proxy(backend: Backend) {
    let send = |app: &TestApp, forwarded_for: &'static str| {
        app.client
            .post(app.url("/v1/auth/magic-link"))
            .header("x-forwarded-for", forwarded_for)
            .json(&json!({ "email": "someone@example.org" }))
            .send()
    };
    let behind_proxy = TestApp::spawn_with(
        backend,
        &[("trusted_proxies", "127.0.0.1"), ("rate_limit_per_ip", "2")],
    )
    .await;
    for _ in 0..2 {
        assert_eq!(
            send(&behind_proxy, "203.0.113.7").await.unwrap().status(),
            202
        );
    }
    assert_problem(send(&behind_proxy, "203.0.113.7").await.unwrap(), 429).await;
    // Another client behind the same proxy has its own budget; a spoofed left-most entry does not help.
    assert_eq!(
        send(&behind_proxy, "198.51.100.1, 203.0.113.8")
            .await
            .unwrap()
            .status(),
        202
    );

    let direct = TestApp::spawn_with(backend, &[("rate_limit_per_ip", "2")]).await;
    assert_eq!(send(&direct, "203.0.113.1").await.unwrap().status(), 202);
    assert_eq!(send(&direct, "203.0.113.2").await.unwrap().status(), 202);
    // Without a trusted proxy the header is ignored: all three came from 127.0.0.1.
    assert_problem(send(&direct, "203.0.113.3").await.unwrap(), 429).await;
}

backend_tests!(
    the_client_ip_comes_from_a_forwarded_header_only_behind_a_trusted_proxy,
    mail_queued_at_shutdown_is_delivered_after_restart,
    member_signs_in_by_clicking_the_emailed_link,
    the_confirm_button_redirects_to_the_app_with_tokens_in_the_fragment,
    open_redirect_attempts_are_refused,
    ineligible_address_gets_the_same_answer_and_no_mail,
    a_link_works_once,
    an_expired_link_is_refused,
    concurrent_uses_of_one_link_yield_one_session,
    two_links_of_a_new_member_redeemed_at_once_make_one_member,
    the_mailed_code_signs_in_on_another_device,
    a_code_allows_five_guesses,
    first_sign_in_creates_the_member_with_preassigned_roles,
    rate_limits_answer_429_with_retry_after,
    the_eligibility_check_is_off_unless_enabled,
);

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{ADMIN, Backend, JWT_SECRET, TestApp, assert_problem};

fn str_of<'a>(value: &'a Value, key: &str) -> &'a str {
    value[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} in {value}"))
}

async fn refresh_tokens_rotate_and_reuse_revokes_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.sign_in(ADMIN).await;
    let refreshed = app
        .post_json(
            "/v1/auth/refresh",
            json!({ "refresh_token": str_of(&first, "refresh_token") }),
        )
        .await;
    assert_eq!(refreshed.status(), 200);
    let second: Value = refreshed.json().await.unwrap();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    assert_eq!(
        app.get_as("/v1/me", str_of(&second, "access_token"))
            .await
            .status(),
        200
    );

    // The first token again: a replay. The whole family dies, the newest token too.
    let replay = app
        .post_json(
            "/v1/auth/refresh",
            json!({ "refresh_token": str_of(&first, "refresh_token") }),
        )
        .await;
    assert_problem(replay, 401).await;
    let newest = app
        .post_json(
            "/v1/auth/refresh",
            json!({ "refresh_token": str_of(&second, "refresh_token") }),
        )
        .await;
    assert_problem(newest, 401).await;
    assert_problem(
        app.get_as("/v1/me", str_of(&second, "access_token")).await,
        401,
    )
    .await;
}

/// One refresh token presented several times at once (a stolen copy racing the
/// client): exactly one rotation wins, and the losers count as reuse, which
/// revokes the whole session, the winner's new token included.
async fn concurrent_refreshes_of_one_token_rotate_once_and_revoke_the_session(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let first = app.sign_in(ADMIN).await;
    let body = json!({ "refresh_token": str_of(&first, "refresh_token") });
    let responses = futures_util::future::join_all(
        (0..4).map(|_| app.post_json("/v1/auth/refresh", body.clone())),
    )
    .await;
    let mut winners = Vec::new();
    for response in responses {
        match response.status().as_u16() {
            200 => winners.push(response.json::<Value>().await.unwrap()),
            401 => {}
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(winners.len(), 1, "one rotation wins");
    let winner = &winners[0];
    let newest = app
        .post_json(
            "/v1/auth/refresh",
            json!({ "refresh_token": str_of(winner, "refresh_token") }),
        )
        .await;
    assert_problem(newest, 401).await;
    assert_problem(
        app.get_as("/v1/me", str_of(winner, "access_token")).await,
        401,
    )
    .await;
}

async fn logout_ends_the_session_everywhere(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = app.sign_in(ADMIN).await;
    let other = app.sign_in(ADMIN).await;
    let access = str_of(&session, "access_token");
    // Used (and so remembered by any read cache) right before the logout.
    for _ in 0..3 {
        assert_eq!(app.get_as("/v1/me", access).await.status(), 200);
    }
    let response = app.post_json_as("/v1/auth/logout", access, json!({})).await;
    assert_eq!(response.status(), 204);
    assert_problem(app.get_as("/v1/me", access).await, 401).await;
    let refresh = app
        .post_json(
            "/v1/auth/refresh",
            json!({ "refresh_token": str_of(&session, "refresh_token") }),
        )
        .await;
    assert_problem(refresh, 401).await;
    // Another session of the same member is untouched.
    assert_eq!(
        app.get_as("/v1/me", str_of(&other, "access_token"))
            .await
            .status(),
        200
    );
}

async fn deleting_myself_revokes_every_session_and_stops_sign_in(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    app.allowlist(&admin, "leaver@example.org", &[]).await;
    let session = app.sign_in("leaver@example.org").await;
    let access = str_of(&session, "access_token");
    let response = app
        .client
        .delete(app.url("/v1/me"))
        .bearer_auth(access)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 204);
    assert_problem(app.get_as("/v1/me", access).await, 401).await;
    let refresh = app
        .post_json(
            "/v1/auth/refresh",
            json!({ "refresh_token": str_of(&session, "refresh_token") }),
        )
        .await;
    assert_problem(refresh, 401).await;
    assert_eq!(app.request_link("leaver@example.org").await.status(), 202);
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(
        app.mail_files_to("leaver@example.org").len(),
        1,
        "only the first sign-in mail"
    );
}

/// Signs `claims` with the server's secret (or another) under the key id of
/// the server's HS256 key, to probe verification.
fn forge(claims: &Value, alg: Algorithm, secret: &str, kid: &str) -> String {
    let mut header = Header::new(alg);
    header.kid = Some(kid.to_owned());
    header.typ = Some("at+jwt".into());
    jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

/// HS256, where the secret is known to the test: every claim is probed with a
/// correct signature (`signing_keys.rs` probes the headers on every algorithm).
async fn forged_and_stale_access_tokens_are_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("jwt_alg", "HS256")]).await;
    let session = app.sign_in(ADMIN).await;
    let good = str_of(&session, "access_token");
    let kid = jsonwebtoken::decode_header(good).unwrap().kid.unwrap();
    let claims = serde_json::to_value(app.claims(good)).unwrap();
    let now = chrono::Utc::now().timestamp();
    let with = |patch: Value| {
        let mut c = claims.clone();
        for (k, v) in patch.as_object().unwrap() {
            c[k] = v.clone();
        }
        c
    };
    // A correctly signed copy works: the probes below differ in one thing each.
    assert_eq!(
        app.get_as(
            "/v1/me",
            &forge(&claims, Algorithm::HS256, JWT_SECRET, &kid)
        )
        .await
        .status(),
        200
    );

    let parts: Vec<&str> = good.split('.').collect();
    let alg_none = format!(
        "{}.{}.",
        URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#),
        parts[1]
    );
    let tampered_payload = URL_SAFE_NO_PAD
        .encode(serde_json::to_vec(&with(json!({ "email": "eve@example.org" }))).unwrap());
    let tampered = format!("{}.{}.{}", parts[0], tampered_payload, parts[2]);
    let probes = [
        ("alg none", alg_none),
        ("tampered payload", tampered),
        (
            "wrong key",
            forge(
                &claims,
                Algorithm::HS256,
                "another-secret-another-secret-another-secret",
                &kid,
            ),
        ),
        ("HS512", forge(&claims, Algorithm::HS512, JWT_SECRET, &kid)),
        (
            "expired",
            forge(
                &with(json!({ "exp": now - 30, "iat": now - 960, "nbf": now - 960 })),
                Algorithm::HS256,
                JWT_SECRET,
                &kid,
            ),
        ),
        (
            "wrong aud",
            forge(
                &with(json!({ "aud": "someone-else" })),
                Algorithm::HS256,
                JWT_SECRET,
                &kid,
            ),
        ),
        (
            "wrong iss",
            forge(
                &with(json!({ "iss": "https://evil.test" })),
                Algorithm::HS256,
                JWT_SECRET,
                &kid,
            ),
        ),
        (
            "nbf in the future",
            forge(
                &with(json!({ "nbf": now + 120 })),
                Algorithm::HS256,
                JWT_SECRET,
                &kid,
            ),
        ),
        (
            "unknown session",
            forge(
                &with(json!({ "sid": "no-such-session" })),
                Algorithm::HS256,
                JWT_SECRET,
                &kid,
            ),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (name, token) in probes {
        let response = app.get_as("/v1/me", &token).await;
        assert_eq!(response.status(), 401, "{name}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer", "{name}");
        assert_problem(response, 401).await;
    }
    assert_problem(app.client.get(app.url("/v1/me")).send().await.unwrap(), 401).await;
}

async fn roles_in_the_token_follow_the_store(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let session = app.sign_in(ADMIN).await;
    let claims = app.claims(str_of(&session, "access_token"));
    assert_eq!(claims.sub, str_of(&session["member"], "id"));
    assert_eq!(claims.aud, "gatehouse");
    assert_eq!(claims.iss, format!("http://{}", app.addr));
    assert_eq!(claims.exp - claims.iat, 900);
    assert_eq!(session["expires_in"], 900);
    assert_eq!(session["token_type"], "Bearer");
    let header = jsonwebtoken::decode_header(str_of(&session, "access_token")).unwrap();
    assert_eq!(
        header.alg,
        Algorithm::ES256,
        "the default of a new installation"
    );
    assert_eq!(header.typ.as_deref(), Some("at+jwt"));
    assert!(header.kid.is_some());
}

/// Many requests at once, some with live sessions and some with sessions just
/// logged out: each gets its own answer, even when their checks share a query
/// (Postgres folds concurrent session checks into one).
async fn concurrent_session_checks_each_get_their_own_answer(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let mut sessions = Vec::new();
    for i in 0..6 {
        let email = format!("member{i}@example.org");
        app.allowlist(&admin, &email, &["sustainer"]).await;
        sessions.push(app.sign_in(&email).await);
    }
    for session in sessions.iter().step_by(2) {
        let token = str_of(session, "access_token");
        let out = app.post_json_as("/v1/auth/logout", token, json!({})).await;
        assert_eq!(out.status(), 204);
    }
    let checks = (0..10)
        .flat_map(|_| sessions.iter().enumerate())
        .map(|(i, session)| {
            let app = &app;
            async move {
                let response = app.get_as("/v1/me", str_of(session, "access_token")).await;
                (
                    i,
                    response.status().as_u16(),
                    response.json::<Value>().await.ok(),
                )
            }
        });
    for (i, status, body) in futures_util::future::join_all(checks).await {
        if i % 2 == 0 {
            assert_eq!(status, 401, "session {i} was logged out");
        } else {
            assert_eq!(status, 200, "session {i} is live");
            let body = body.unwrap();
            assert_eq!(body["email"], format!("member{i}@example.org"), "{body}");
            assert!(
                body["roles"]
                    .as_array()
                    .unwrap()
                    .contains(&json!("sustainer")),
                "{body}"
            );
        }
    }
}

backend_tests!(
    concurrent_session_checks_each_get_their_own_answer,
    refresh_tokens_rotate_and_reuse_revokes_the_session,
    concurrent_refreshes_of_one_token_rotate_once_and_revoke_the_session,
    logout_ends_the_session_everywhere,
    deleting_myself_revokes_every_session_and_stops_sign_in,
    forged_and_stale_access_tokens_are_refused,
    roles_in_the_token_follow_the_store,
);

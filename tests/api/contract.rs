//! The API's contract: the server refuses what the spec refuses, in the way
//! the README says (two credentials, 405 with `Allow`, strict JSON types,
//! constraints, absent fields left out).

use reqwest::Method;
use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_problem};

/// An admin API key for the bootstrap admin, and their access token.
async fn admin_key(app: &TestApp) -> (String, String) {
    let (id, token) = app.admin().await;
    let issued = TestApp::json_ok(
        app.post_json_as(
            &format!("/v1/admin/members/{id}/api-keys"),
            &token,
            json!({ "name": "contract" }),
        )
        .await,
        201,
    )
    .await;
    (issued["key"].as_str().unwrap().to_owned(), token)
}

async fn two_credentials_in_one_request_are_refused(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (key, token) = admin_key(&app).await;
    let get = |headers: &[(&str, &str)]| {
        let mut request = app.client.get(app.url("/v1/admin/members"));
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        request.send()
    };
    // Each credential alone works.
    assert_eq!(get(&[("x-api-key", &key)]).await.unwrap().status(), 200);
    let bearer = format!("Bearer {token}");
    assert_eq!(
        get(&[("authorization", &bearer)]).await.unwrap().status(),
        200
    );
    // A wrong one beside a right one, or two right ones: refused, whichever is valid.
    for headers in [
        vec![("authorization", "Bearer not-a-token"), ("x-api-key", &key)],
        vec![("authorization", &bearer), ("x-api-key", "gh_wrong_key")],
        vec![("authorization", &bearer), ("x-api-key", &key)],
    ] {
        let response = get(&headers).await.unwrap();
        assert!(response.headers().contains_key("www-authenticate"));
        let problem = assert_problem(response, 401).await;
        assert_eq!(problem["code"], "multiple_credentials", "{headers:?}");
    }
    // Also on the paths that take only an access token, or only a key.
    let response = app
        .client
        .get(app.url("/v1/me/sessions"))
        .header("authorization", &bearer)
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_problem(response, 401).await["code"],
        "multiple_credentials"
    );
    let response = app
        .client
        .post(app.url("/v1/auth/token"))
        .header("authorization", format!("ApiKey {key}"))
        .header("x-api-key", &key)
        .send()
        .await
        .unwrap();
    assert_eq!(
        assert_problem(response, 401).await["code"],
        "multiple_credentials"
    );
}

async fn an_unsupported_method_is_405_with_allow_before_any_body_check(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    // A POST with no content type to a GET-only path: 405, not 415.
    let response = app
        .client
        .post(app.url("/v1/admin/members/export"))
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    assert_eq!(
        assert_problem(response, 405).await["code"],
        "method_not_allowed"
    );
    for (method, path, allow) in [
        (Method::TRACE, "/healthz", "GET, HEAD"),
        (Method::PUT, "/v1/admin/roles", "GET, HEAD, POST"),
        // GET and POST of this path live in two API structs.
        (Method::PUT, "/v1/admin/eligible-emails", "GET, HEAD, POST"),
        (
            Method::POST,
            "/v1/admin/members/some-id",
            "DELETE, GET, HEAD, PATCH",
        ),
        (Method::GET, "/v1/auth/verify", "POST"),
    ] {
        let response = app
            .client
            .request(method.clone(), app.url(path))
            .send()
            .await
            .unwrap();
        assert_eq!(response.headers()["allow"], allow, "{method} {path}");
        assert_problem(response, 405).await;
    }
    // A path that is not there is still 404, and a method that is, is served.
    assert_problem(
        app.client
            .delete(app.url("/v1/nowhere"))
            .send()
            .await
            .unwrap(),
        404,
    )
    .await;
    let head = app.client.head(app.url("/healthz")).send().await.unwrap();
    assert_eq!(head.status(), 200);
}

async fn json_types_are_strict(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    for name in [json!(false), json!(123), json!(null), json!(["board"])] {
        let response = app
            .post_json_as("/v1/admin/roles", &admin, json!({ "name": name }))
            .await;
        assert_eq!(
            assert_problem(response, 400).await["code"],
            "invalid_body",
            "{name}"
        );
    }
    let roles = TestApp::json_ok(app.get_as("/v1/admin/roles", &admin).await, 200).await;
    let names: Vec<&str> = roles
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        !names.contains(&"false") && !names.contains(&"123"),
        "{names:?}"
    );
    // An optional field is absent or a value of its type; null is neither,
    // in every body (a field with a default too: schemathesis found
    // `"description": null` taken as absent).
    let response = app
        .post_json(
            "/v1/auth/magic-link",
            json!({ "email": "a@example.org", "redirect_to": null }),
        )
        .await;
    assert_problem(response, 400).await;
    for (path, body) in [
        (
            "/v1/admin/roles",
            json!({ "name": "s", "description": null }),
        ),
        (
            "/v1/admin/eligible-emails",
            json!({ "email": "n@example.org", "roles": null }),
        ),
        (
            "/v1/admin/members",
            json!({ "email": "n@example.org", "roles": null }),
        ),
    ] {
        let response = app.post_json_as(path, &admin, body.clone()).await;
        assert_problem(response, 400).await;
    }
    // verify takes a token, or an address with a code: not both, not neither.
    for body in [
        json!({}),
        json!({ "token": "t", "email": "a@example.org", "code": "123456" }),
    ] {
        let response = app.post_json("/v1/auth/verify", body.clone()).await;
        assert_eq!(
            assert_problem(response, 400).await["code"],
            "invalid_body",
            "{body}"
        );
    }
}

async fn the_server_refuses_what_the_spec_refuses_and_takes_what_it_allows(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let spec = app.spec().await;
    let limit = spec["paths"]["/v1/admin/members"]["get"]["parameters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "limit")
        .unwrap()["schema"]
        .clone();
    assert_eq!(
        (limit["minimum"].as_f64(), limit["maximum"].as_f64()),
        (Some(1.0), Some(500.0))
    );
    for (query, status) in [("0", 400), ("1", 200), ("500", 200), ("501", 400)] {
        let response = app
            .get_as(&format!("/v1/admin/members?limit={query}"), &admin)
            .await;
        assert_eq!(response.status(), status, "limit={query}");
    }
    let email = &spec["components"]["schemas"]["MagicLinkRequest"]["properties"]["email"];
    assert!(
        email["pattern"].is_string() && email["maxLength"] == 254,
        "{email}"
    );
    for bad in ["", "no-at-sign", "a@b", "a@example.org\u{a0}"] {
        let response = app
            .post_json("/v1/auth/magic-link", json!({ "email": bad }))
            .await;
        assert_eq!(
            assert_problem(response, 422).await["code"],
            "invalid_email",
            "{bad:?}"
        );
    }
    let name = &spec["components"]["schemas"]["NewRole"]["properties"]["name"];
    assert_eq!(name["pattern"], "^[A-Za-z0-9_-]{1,64}$");
    for (name, status) in [
        ("Board", 201),
        ("board", 409),
        (&*"x".repeat(65), 422),
        ("no way", 422),
        (" board", 422),
    ] {
        let response = app
            .post_json_as("/v1/admin/roles", &admin, json!({ "name": name }))
            .await;
        assert_eq!(response.status(), status, "{name}");
    }
    // A cursor of the stated form is taken, whoever made it; another is 400.
    assert_eq!(
        app.get_as("/v1/admin/members?cursor=AAAA", &admin)
            .await
            .status(),
        200
    );
    assert_problem(app.get_as("/v1/admin/members?cursor=A", &admin).await, 400).await;
}

/// In a path `%` escapes: an address is named there escaped (`@` as `%40` or
/// not, `/` as `%2F`), and one with a `%` of its own is refused rather than
/// read two ways (the spec's path pattern leaves `%` out).
async fn an_address_in_a_path_is_read_one_way(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let admin = app.admin_token().await;
    let spec = app.spec().await;
    let parameter = &spec["paths"]["/v1/admin/eligible-emails/{email}"]["delete"]["parameters"][0];
    let pattern = parameter["schema"]["pattern"].as_str().unwrap();
    assert!(pattern.contains('@') && !pattern.contains('%'), "{pattern}");

    for email in ["ada@example.org", "a/b@example.org", "a%41@example.org"] {
        app.allowlist(&admin, email, &[]).await;
    }
    let delete = |path: &'static str| app.send_as(Method::DELETE, path, &admin, None);
    for (path, status) in [
        ("/v1/admin/eligible-emails/ada%40example.org", 204),
        ("/v1/admin/eligible-emails/a%2Fb@example.org", 204),
        // An unescaped `%41` is `A`: this names aA@example.org, not listed.
        ("/v1/admin/eligible-emails/a%41@example.org", 404),
    ] {
        assert_eq!(delete(path).await.status(), status, "{path}");
    }
    let refused = delete("/v1/admin/eligible-emails/a%2541@example.org").await;
    assert_eq!(assert_problem(refused, 422).await["code"], "invalid_email");
    let listed = TestApp::json_ok(app.get_as("/v1/admin/eligible-emails", &admin).await, 200).await;
    let emails: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|item| item["email"].as_str())
        .collect();
    assert!(emails.contains(&"a%41@example.org"), "{emails:?}");
    assert!(!emails.contains(&"a/b@example.org"), "{emails:?}");
}

async fn absent_fields_are_left_out_never_null(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (key, _) = admin_key(&app).await;
    let keys = TestApp::json_ok(
        app.client
            .get(app.url("/v1/admin/api-keys"))
            .header("x-api-key", &key)
            .send()
            .await
            .unwrap(),
        200,
    )
    .await;
    // The last page has no next_cursor; a key without expiry has no expires_at.
    assert!(keys.get("next_cursor").is_none(), "{keys}");
    let listed = &keys["items"][0];
    assert!(listed.get("expires_at").is_none(), "{listed}");
    assert!(listed.get("revoked_at").is_none(), "{listed}");
    fn no_nulls(value: &Value) -> bool {
        match value {
            Value::Null => false,
            Value::Array(items) => items.iter().all(no_nulls),
            Value::Object(fields) => fields
                .iter()
                .all(|(name, v)| name == "details" || no_nulls(v)),
            _ => true,
        }
    }
    for path in [
        "/v1/admin/api-keys",
        "/v1/admin/members",
        "/v1/admin/audit",
        "/v1/admin/batches",
        "/v1/admin/signing-keys",
        "/v1/admin/outbox",
    ] {
        let body = TestApp::json_ok(
            app.client
                .get(app.url(path))
                .header("x-api-key", &key)
                .send()
                .await
                .unwrap(),
            200,
        )
        .await;
        assert!(no_nulls(&body), "{path}: {body}");
    }
    // Problems too: a 405 has no detail:null.
    let response = app.client.put(app.url("/healthz")).send().await.unwrap();
    assert!(no_nulls(&assert_problem(response, 405).await));
}

backend_tests!(
    two_credentials_in_one_request_are_refused,
    an_unsupported_method_is_405_with_allow_before_any_body_check,
    json_types_are_strict,
    the_server_refuses_what_the_spec_refuses_and_takes_what_it_allows,
    an_address_in_a_path_is_read_one_way,
    absent_fields_are_left_out_never_null,
);

//! `POST /v1/admin/eligible-emails/bulk`: a roster as JSON, read as it streams
//! in, with the import's body limit and all-or-nothing semantics.

use serde_json::{Value, json};

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_problem};

const BULK: &str = "/v1/admin/eligible-emails/bulk";

/// `{"emails": [...], ...rest}` for `count` generated addresses, written by
/// hand so the fields keep the order given (`rest` goes after the list).
fn roster(count: usize, rest: &str) -> Vec<u8> {
    let mut body = String::with_capacity(count * 30);
    body.push_str(r#"{"emails": ["#);
    for i in 0..count {
        if i > 0 {
            body.push(',');
        }
        body.push_str(&format!("\"Member.{i}@Bulk.Example.org\""));
    }
    body.push(']');
    body.push_str(rest);
    body.push('}');
    body.into_bytes()
}

/// Posts `parts` as one body sent in pieces (chunked, no `Content-Length`).
async fn post_streamed(app: &TestApp, token: &str, parts: Vec<Vec<u8>>) -> reqwest::Response {
    let stream = futures_util::stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>));
    app.client
        .post(app.url(BULK))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await
        .expect("request")
}

async fn post_body(app: &TestApp, token: &str, body: Vec<u8>) -> reqwest::Response {
    app.client
        .post(app.url(BULK))
        .bearer_auth(token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .expect("request")
}

async fn batches(app: &TestApp, token: &str) -> Vec<Value> {
    let page = TestApp::json_ok(app.get_as("/v1/admin/batches", token).await, 200).await;
    page["items"].as_array().expect("items").clone()
}

/// The seed design's promise: 100,000 addresses in one call with the default
/// settings, `batch_id` after the list (so the first chunks are written before
/// the batch is named), each address then eligible under that batch.
async fn a_hundred_thousand_addresses_go_in_one_call(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let body = roster(100_000, r#", "batch_id": "roster-2026""#);
    assert!(
        body.len() > 40 * 64 * 1024,
        "far over the general body limit"
    );
    let report = TestApp::json_ok(post_body(&app, &admin, body).await, 200).await;
    assert_eq!(report["batch_id"], "roster-2026");
    assert_eq!(report["rows"], 100_000);
    assert_eq!(report["added"], 100_000);
    assert_eq!(report["invalid_total"], 0);
    assert_eq!(report["duplicates"], 0);

    let batch = batches(&app, &admin)
        .await
        .into_iter()
        .find(|b| b["id"] == "roster-2026")
        .expect("the named batch");
    assert_eq!(batch["source"], "json");
    assert_eq!(batch["added"], 100_000);
    assert_eq!(
        batch["remaining"], 100_000,
        "every address under the named batch"
    );
    assert!(
        batches(&app, &admin)
            .await
            .iter()
            .all(|b| !b["id"].as_str().unwrap().starts_with("batch-")),
        "no provisional batch left behind"
    );
    for i in [0, 4_999, 5_000, 99_999] {
        assert_eq!(
            app.allowlisted(&admin, &format!("&q=member.{i}@")).await,
            [format!("member.{i}@bulk.example.org")]
        );
    }
    let member = app.sign_in("member.99999@bulk.example.org").await;
    assert!(member["access_token"].is_string(), "{member}");
}

/// The same import sent in pieces without a length; fields in any order,
/// unknown ones skipped, `batch_id` first or empty; `null` is refused and
/// changes nothing, as in every other body.
async fn a_streamed_body_reads_like_one_in_a_piece(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let body = roster(12_000, r#", "note": {"from": ["hr", 1, null]}"#);
    let parts = body.chunks(7_001).map(<[u8]>::to_vec).collect();
    let report = TestApp::json_ok(post_streamed(&app, &admin, parts).await, 200).await;
    assert_eq!(report["rows"], 12_000);
    assert_eq!(report["added"], 12_000);
    assert!(report["batch_id"].as_str().unwrap().starts_with("batch-"));

    let first = br#"{"batch_id": "first", "emails": ["a@example.org", "A@EXAMPLE.ORG", "nope", 	"b@example.org"]}"#;
    let report = TestApp::json_ok(post_body(&app, &admin, first.to_vec()).await, 200).await;
    assert_eq!(report["batch_id"], "first");
    assert_eq!(
        (&report["rows"], &report["added"], &report["duplicates"]),
        (&4.into(), &2.into(), &1.into())
    );
    assert_eq!(report["invalid"][0]["line"], 3);
    assert_eq!(report["invalid"][0]["value"], "nope");
    assert_eq!(
        app.allowlisted(&admin, "&batch_id=first").await,
        ["a@example.org", "b@example.org"]
    );

    let empty = br#"{"emails": ["c@example.org"], "batch_id": ""}"#;
    let report = TestApp::json_ok(post_body(&app, &admin, empty.to_vec()).await, 200).await;
    assert!(report["batch_id"].as_str().unwrap().starts_with("batch-"));
    assert_eq!(report["added"], 1);

    let nulled = br#"{"emails": ["d@example.org"], "batch_id": null}"#;
    let problem = assert_problem(post_body(&app, &admin, nulled.to_vec()).await, 400).await;
    assert_eq!(problem["code"], "invalid_json");
    let spaced = br#"{"emails": ["d@example.org"], "batch_id": " first "}"#;
    let problem = assert_problem(post_body(&app, &admin, spaced.to_vec()).await, 422).await;
    assert_eq!(problem["code"], "invalid_batch_id");
    assert!(app.allowlisted(&admin, "&q=d%40example").await.is_empty());
}

/// A body that breaks part-way, after thousands of addresses were already
/// handed to the store, writes nothing and says where it broke.
async fn a_body_malformed_part_way_changes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    app.allowlist(&admin, "kept@example.org", &[]).await;
    let before = (
        app.allowlisted(&admin, "").await,
        batches(&app, &admin).await,
    );

    let good = roster(12_000, "");
    let open_list = good[..good.len() - 2].to_vec(); // without `]}`
    let number = [open_list.clone(), b", 42]}".to_vec()].concat();
    let problem = assert_problem(post_body(&app, &admin, number).await, 400).await;
    assert_eq!(problem["code"], "invalid_json");
    let detail = problem["detail"].as_str().unwrap();
    assert!(detail.contains("address 12001"), "{detail}");
    assert!(detail.contains("line 1 column"), "{detail}");
    assert!(detail.contains("nothing was imported"), "{detail}");

    let cut_off = vec![open_list.clone(), b", \"last@exa".to_vec()];
    let problem = assert_problem(post_streamed(&app, &admin, cut_off).await, 400).await;
    assert_eq!(problem["code"], "invalid_json");

    let garbage = vec![
        open_list.clone(),
        b", \"x@example.org\" \"y@example.org\"]}".to_vec(),
    ];
    assert_problem(post_streamed(&app, &admin, garbage).await, 400).await;

    let late_bad_batch = roster(12_000, r#", "batch_id": "no spaces""#);
    let problem = assert_problem(post_body(&app, &admin, late_bad_batch).await, 422).await;
    assert_eq!(problem["code"], "invalid_batch_id");

    let twice = roster(6_000, r#", "emails": []"#);
    let problem = assert_problem(post_body(&app, &admin, twice).await, 400).await;
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("duplicate field `emails`"),
        "{problem}"
    );

    for (body, what) in [
        (&br#"{"emails": null}"#[..], "null list"),
        (br#"{"batch_id": "x"}"#, "no list"),
        (br#"["a@example.org"]"#, "not an object"),
        (
            br#"{"emails": ["a@example.org"], "batch_id": 7}"#,
            "number as batch",
        ),
        (
            br#"{"emails": ["a@example.org"]} trailing"#,
            "trailing text",
        ),
        (b"", "empty"),
    ] {
        let problem = assert_problem(post_body(&app, &admin, body.to_vec()).await, 400).await;
        assert_eq!(problem["code"], "invalid_json", "{what}: {problem}");
    }

    let after = (
        app.allowlisted(&admin, "").await,
        batches(&app, &admin).await,
    );
    assert_eq!(after, before, "nothing written, no batch recorded");
    let audit = TestApp::json_ok(
        app.get_as("/v1/admin/audit?action=allowlist.import", &admin)
            .await,
        200,
    )
    .await;
    assert_eq!(
        audit["items"].as_array().unwrap().len(),
        1,
        "only the one address"
    );
}

/// Over `max_import_bytes`: 413, declared or found out while streaming.
/// A row may carry its roles, as a CSV row does: an item is an address or
/// `{email, roles}`. An unknown role makes that row invalid in the report; a
/// misspelt field or a wrong type refuses the whole body.
async fn a_row_may_carry_its_roles(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let created = app
        .post_json_as("/v1/admin/roles", &admin, json!({ "name": "board" }))
        .await;
    assert_eq!(created.status(), 201);
    let before = app.allowlisted(&admin, "").await;
    for refused in [
        json!({ "emails": [{ "email": "x@example.org", "role": ["board"] }] }),
        json!({ "emails": [{ "email": "x@example.org", "roles": null }] }),
        json!({ "emails": [{ "email": "x@example.org", "roles": "board" }] }),
        json!({ "emails": [{ "roles": ["board"] }] }),
        json!({ "emails": ["ok@example.org", { "email": 7 }] }),
    ] {
        let body = serde_json::to_vec(&refused).unwrap();
        let problem = assert_problem(post_body(&app, &admin, body).await, 400).await;
        assert_eq!(problem["code"], "invalid_json", "{refused}");
    }
    assert_eq!(app.allowlisted(&admin, "").await, before, "nothing written");

    let body = json!({ "emails": [
        "plain@example.org",
        { "email": "Chair@Example.org", "roles": ["Board", "active"] },
        { "email": "none@example.org" },
        { "email": "typo@example.org", "roles": ["bored"] },
        { "email": "cell@example.org", "roles": ["board;active"] },
    ]});
    let report = TestApp::json_ok(
        post_body(&app, &admin, serde_json::to_vec(&body).unwrap()).await,
        200,
    )
    .await;
    assert_eq!(
        (report["rows"].as_u64(), report["added"].as_u64()),
        (Some(5), Some(3))
    );
    let invalid: Vec<(u64, &str)> = report["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|row| {
            (
                row["line"].as_u64().unwrap(),
                row["value"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(invalid, [(4, "typo@example.org"), (5, "cell@example.org")]);
    let page = TestApp::json_ok(app.get_as("/v1/admin/eligible-emails", &admin).await, 200).await;
    let roles_of = |email: &str| {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .find(|item| item["email"] == email)
            .map(|item| item["roles"].clone())
    };
    assert_eq!(
        roles_of("chair@example.org"),
        Some(json!(["active", "board"]))
    );
    assert_eq!(roles_of("plain@example.org"), Some(json!([])));
    assert_eq!(roles_of("none@example.org"), Some(json!([])));
    assert_eq!(roles_of("typo@example.org"), None);
}

async fn a_body_over_the_import_limit_is_refused(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("max_import_bytes", "20000")]).await;
    let (_, admin) = app.admin().await;
    let before = app.allowlisted(&admin, "").await;
    let big = roster(1_000, "");
    assert!(big.len() > 20_000);
    let problem = assert_problem(post_body(&app, &admin, big.clone()).await, 413).await;
    assert_eq!(problem["code"], "body_too_large");
    let parts = big.chunks(4_000).map(<[u8]>::to_vec).collect();
    let problem = assert_problem(post_streamed(&app, &admin, parts).await, 413).await;
    assert_eq!(problem["code"], "body_too_large");
    assert_eq!(app.allowlisted(&admin, "").await, before);

    let small = roster(100, "");
    assert!(small.len() < 20_000);
    let report = TestApp::json_ok(post_body(&app, &admin, small).await, 200).await;
    assert_eq!(report["added"], 100);
}

backend_tests!(
    a_row_may_carry_its_roles,
    a_hundred_thousand_addresses_go_in_one_call,
    a_streamed_body_reads_like_one_in_a_piece,
    a_body_malformed_part_way_changes_nothing,
    a_body_over_the_import_limit_is_refused,
);

use serde_json::Value;

use crate::backend_tests;
use crate::helpers::{Backend, TestApp, assert_problem, fixture};

async fn messy_spreadsheet_export_imports_with_exact_figures(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let report = TestApp::json_ok(
        app.import_csv(&admin, fixture("roster_messy.csv"), "?batch_id=messy-1")
            .await,
        200,
    )
    .await;
    assert_eq!(report["batch_id"], "messy-1");
    assert_eq!(report["rows"], 7, "{report}");
    assert_eq!(report["added"], 4);
    assert_eq!(report["updated"], 0);
    assert_eq!(report["unchanged"], 0);
    assert_eq!(report["duplicates"], 1);
    assert_eq!(report["invalid_total"], 2);
    let invalid: Vec<(u64, String)> = report["invalid"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["line"].as_u64().unwrap(),
                r["value"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(
        invalid,
        [
            (6, "not-an-email".to_owned()),
            (7, "mal@example.org".to_owned())
        ]
    );
    assert!(
        report["invalid"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("wizard")
    );

    let page = TestApp::json_ok(
        app.get_as("/v1/admin/eligible-emails?batch_id=messy-1", &admin)
            .await,
        200,
    )
    .await;
    let roles: Vec<(String, Value)> = page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["email"].as_str().unwrap().to_owned(), i["roles"].clone()))
        .collect();
    assert_eq!(
        roles,
        [
            (
                "ada@example.org".to_owned(),
                serde_json::json!(["active", "sustainer"])
            ),
            ("bob@example.org".to_owned(), serde_json::json!([])),
            (
                "carol@example.org".to_owned(),
                serde_json::json!(["active"])
            ),
            (
                "q@example.org".to_owned(),
                serde_json::json!(["admin", "member"])
            ),
        ]
    );

    let again = TestApp::json_ok(
        app.import_csv(&admin, fixture("roster_messy.csv"), "")
            .await,
        200,
    )
    .await;
    assert_eq!(
        (again["added"].as_u64(), again["unchanged"].as_u64()),
        (Some(0), Some(4))
    );

    let update = TestApp::json_ok(
        app.import_csv(&admin, fixture("roster_update.csv"), "")
            .await,
        200,
    )
    .await;
    assert_eq!(update["rows"], 3);
    assert_eq!(update["added"], 1, "new@example.org");
    assert_eq!(update["updated"], 1, "ada's roles changed");
    assert_eq!(update["unchanged"], 1, "bob without roles keeps his");
}

async fn headerless_comma_file_uses_the_first_column(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let multipart = reqwest::multipart::Form::new().part(
        "file",
        reqwest::multipart::Part::bytes(fixture("roster_plain.csv")).file_name("plain.csv"),
    );
    let response = app
        .client
        .post(app.url("/v1/admin/eligible-emails/import?batch_id=plain"))
        .bearer_auth(&admin)
        .multipart(multipart)
        .send()
        .await
        .unwrap();
    let report = TestApp::json_ok(response, 200).await;
    assert_eq!(
        (report["rows"].as_u64(), report["added"].as_u64()),
        (Some(3), Some(2))
    );
    assert_eq!(report["duplicates"], 1);
    assert_eq!(
        app.allowlisted(&admin, "&batch_id=plain").await,
        ["one@example.org", "two@example.org"]
    );
}

async fn dry_run_reports_but_writes_nothing(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let before = app.allowlisted(&admin, "").await;
    let report = TestApp::json_ok(
        app.import_csv(
            &admin,
            fixture("roster_messy.csv"),
            "?dry_run=true&batch_id=trial",
        )
        .await,
        200,
    )
    .await;
    assert_eq!(report["added"], 4);
    assert_eq!(report["dry_run"], true);
    assert_eq!(app.allowlisted(&admin, "").await, before);
    let batches = TestApp::json_ok(app.get_as("/v1/admin/batches", &admin).await, 200).await;
    assert!(
        batches["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|b| b["id"] != "trial")
    );
    let audit = TestApp::json_ok(
        app.get_as("/v1/admin/audit?target=trial", &admin).await,
        200,
    )
    .await;
    assert_eq!(audit["items"].as_array().unwrap().len(), 0);
}

async fn broken_or_oversized_uploads_change_nothing(backend: Backend) {
    let app = TestApp::spawn_with(backend, &[("max_import_bytes", "2000")]).await;
    let (_, admin) = app.admin().await;
    let before = app.allowlisted(&admin, "").await;
    let big: Vec<u8> = (0..200)
        .flat_map(|i| format!("user{i}@example.org\n").into_bytes())
        .collect();
    assert_problem(app.import_csv(&admin, big, "").await, 413).await;
    let wrong_type = app
        .client
        .post(app.url("/v1/admin/eligible-emails/import"))
        .bearer_auth(&admin)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_problem(wrong_type, 415).await;
    let bad_batch = app
        .import_csv(&admin, b"a@example.org\n".to_vec(), "?batch_id=no%20spaces")
        .await;
    assert_problem(bad_batch, 422).await;
    assert_eq!(app.allowlisted(&admin, "").await, before);
}

async fn batches_list_and_withdraw_unclaimed_entries(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    app.import_csv(&admin, fixture("roster_plain.csv"), "?batch_id=spring")
        .await;
    app.sign_in("one@example.org").await;
    let batches = TestApp::json_ok(app.get_as("/v1/admin/batches", &admin).await, 200).await;
    let spring = batches["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == "spring")
        .unwrap()
        .clone();
    assert_eq!(
        (
            spring["rows"].as_i64(),
            spring["added"].as_i64(),
            spring["duplicates"].as_i64()
        ),
        (Some(3), Some(2), Some(1))
    );
    assert_eq!(spring["source"], "csv");
    let withdrawn = TestApp::json_ok(
        app.send_as(
            reqwest::Method::DELETE,
            "/v1/admin/batches/spring",
            &admin,
            None,
        )
        .await,
        200,
    )
    .await;
    assert_eq!(withdrawn["removed"], 1, "the claimed address stays");
    assert_eq!(
        app.allowlisted(&admin, "&batch_id=spring").await,
        ["one@example.org"]
    );
    assert_eq!(
        app.allowlisted(&admin, "&claimed=true&batch_id=spring")
            .await,
        ["one@example.org"]
    );
    assert_problem(
        app.send_as(
            reqwest::Method::DELETE,
            "/v1/admin/batches/nope",
            &admin,
            None,
        )
        .await,
        404,
    )
    .await;
    let removed = app
        .send_as(
            reqwest::Method::DELETE,
            "/v1/admin/eligible-emails/ONE@example.org",
            &admin,
            None,
        )
        .await;
    assert_eq!(removed.status(), 204);
    assert_problem(
        app.send_as(
            reqwest::Method::DELETE,
            "/v1/admin/eligible-emails/one@example.org",
            &admin,
            None,
        )
        .await,
        404,
    )
    .await;
}

async fn allowlist_pages_with_a_cursor_and_filters(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let body: Vec<u8> = (0..25)
        .flat_map(|i| format!("p{i:02}@example.org\n").into_bytes())
        .collect();
    app.import_csv(&admin, body, "?batch_id=pages").await;
    let mut seen = Vec::new();
    let mut cursor = String::new();
    loop {
        let page = TestApp::json_ok(
            app.get_as(
                &format!("/v1/admin/eligible-emails?batch_id=pages&limit=10&cursor={cursor}"),
                &admin,
            )
            .await,
            200,
        )
        .await;
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|i| i["email"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(next) => cursor = next.to_owned(),
            None => break,
        }
    }
    let expected: Vec<String> = (0..25).map(|i| format!("p{i:02}@example.org")).collect();
    assert_eq!(seen, expected);
    assert_eq!(app.allowlisted(&admin, "&q=P1").await.len(), 10);
    assert_problem(
        app.get_as("/v1/admin/eligible-emails?cursor=%21%21", &admin)
            .await,
        400,
    )
    .await;
    assert_problem(
        app.get_as("/v1/admin/eligible-emails?limit=0", &admin)
            .await,
        400,
    )
    .await;
}

async fn a_million_row_file_imports(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let mut body = Vec::with_capacity(26_000_000);
    body.extend_from_slice(b"email\r\n");
    for i in 0..1_000_000u32 {
        if i > 0 && i % 250_000 == 0 {
            body.extend_from_slice(format!("USER{}@EXAMPLE.ORG\r\n", i - 1).as_bytes());
        } else {
            body.extend_from_slice(format!("user{i}@example.org\r\n").as_bytes());
        }
    }
    let report =
        TestApp::json_ok(app.import_csv(&admin, body, "?batch_id=million").await, 200).await;
    assert_eq!(report["rows"], 1_000_000);
    assert_eq!(report["duplicates"], 3);
    assert_eq!(report["invalid_total"], 0);
    assert_eq!(report["added"], 999_997);
    let batches = TestApp::json_ok(app.get_as("/v1/admin/batches", &admin).await, 200).await;
    let million = batches["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["id"] == "million")
        .unwrap()
        .clone();
    assert_eq!(million["remaining"], 999_997);
    assert_eq!(
        app.allowlisted(&admin, "&q=user999999@").await,
        ["user999999@example.org"]
    );
}

/// Two uploads at once that overlap: each address is added exactly once, by
/// one of them, and their figures add up.
async fn overlapping_uploads_at_once_count_each_address_once(backend: Backend) {
    let app = TestApp::spawn(backend).await;
    let (_, admin) = app.admin().await;
    let roster = |range: std::ops::Range<u32>| -> Vec<u8> {
        let mut csv = String::from("email\n");
        for i in range {
            csv.push_str(&format!("m{i}@example.org\n"));
        }
        csv.into_bytes()
    };
    let (first, second) = tokio::join!(
        app.import_csv(&admin, roster(0..6_000), "?batch_id=first"),
        app.import_csv(&admin, roster(4_000..10_000), "?batch_id=second"),
    );
    let first = TestApp::json_ok(first, 200).await;
    let second = TestApp::json_ok(second, 200).await;
    let added = |report: &Value| report["added"].as_u64().unwrap();
    let unchanged = |report: &Value| report["unchanged"].as_u64().unwrap();
    assert_eq!(added(&first) + added(&second), 10_000, "{first} {second}");
    assert_eq!(
        unchanged(&first) + unchanged(&second),
        2_000,
        "{first} {second}"
    );

    let batches = TestApp::json_ok(app.get_as("/v1/admin/batches", &admin).await, 200).await;
    let remaining: u64 = batches["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|batch| batch["id"] == "first" || batch["id"] == "second")
        .map(|batch| batch["remaining"].as_u64().unwrap())
        .sum();
    assert_eq!(remaining, 10_000);
}

backend_tests!(
    overlapping_uploads_at_once_count_each_address_once,
    messy_spreadsheet_export_imports_with_exact_figures,
    headerless_comma_file_uses_the_first_column,
    dry_run_reports_but_writes_nothing,
    broken_or_oversized_uploads_change_nothing,
    batches_list_and_withdraw_unclaimed_entries,
    allowlist_pages_with_a_cursor_and_filters,
    a_million_row_file_imports,
);

//! The allowlist: streaming imports (`import_roster`), the list of eligible
//! addresses, removing one, and batches (list, withdraw).

use gatehouse::store::{EligibleFilter, EligibleRow, UpsertCounts};

use super::*;

fn counts(added: u64, updated: u64, unchanged: u64) -> UpsertCounts {
    UpsertCounts {
        added,
        updated,
        unchanged,
    }
}

fn upload(batch_id: &str, dry_run: bool, now: i64) -> RosterImport {
    RosterImport {
        batch_id: batch_id.to_owned(),
        source: "csv",
        added_by: Some("admin-under-test".into()),
        dry_run,
        now,
    }
}

fn finish(rows: u64, duplicates: u64, invalid: u64) -> ImportChunk {
    ImportChunk::Finish(ImportTotals {
        rows,
        duplicates,
        invalid,
        audit: audit("allowlist.import").details(serde_json::json!({ "file": "roster.csv" })),
    })
}

/// Sends `chunks` (and drops the sender) while the store imports them.
async fn stream(
    store: &DynStore,
    import: RosterImport,
    chunks: Vec<ImportChunk>,
) -> Option<UpsertCounts> {
    let (sender, receiver) = tokio::sync::mpsc::channel(1);
    let feeder = tokio::spawn(async move {
        for chunk in chunks {
            if sender.send(chunk).await.is_err() {
                break;
            }
        }
    });
    let result = store.import_roster(import, receiver).await.expect("import");
    feeder.await.expect("feeder");
    result
}

async fn eligible(store: &DynStore, filter: EligibleFilter) -> Vec<EligibleRow> {
    store.list_eligible(&filter).await.expect("list eligible")
}

fn everything() -> EligibleFilter {
    EligibleFilter {
        limit: 100,
        ..Default::default()
    }
}

fn addresses(rows: &[EligibleRow]) -> Vec<&str> {
    rows.iter().map(|r| r.email.as_str()).collect()
}

async fn an_import_counts_added_updated_and_unchanged_addresses(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let first = import(
        &store,
        "b1",
        vec![
            entry("a@example.org", &[]),
            entry("b@example.org", &["sustainer"]),
            entry("c@example.org", &["active"]),
            entry("e@example.org", &["sustainer"]),
        ],
        false,
        NOW,
    )
    .await;
    assert_eq!(first, Some(counts(4, 0, 0)));

    let second = import(
        &store,
        "b2",
        vec![
            entry("a@example.org", &[]),
            entry("b@example.org", &["active"]),
            // No roles given: the entry keeps the ones it has.
            entry("c@example.org", &[]),
            entry("d@example.org", &["admin"]),
            entry("e@example.org", &["sustainer"]),
        ],
        false,
        NOW + 1,
    )
    .await;
    assert_eq!(second, Some(counts(1, 1, 3)));

    let rows = eligible(&store, everything()).await;
    assert_eq!(
        addresses(&rows),
        [
            "a@example.org",
            "b@example.org",
            "c@example.org",
            "d@example.org",
            "e@example.org"
        ]
    );
    let roles_of = |address: &str| {
        let row = rows.iter().find(|r| r.email == address).expect("listed");
        (row.roles.as_str(), row.batch_id.as_deref(), row.created_at)
    };
    assert_eq!(roles_of("b@example.org"), ("active", Some("b1"), NOW));
    assert_eq!(roles_of("c@example.org"), ("active", Some("b1"), NOW));
    assert_eq!(roles_of("d@example.org"), ("admin", Some("b2"), NOW + 1));
    assert_eq!(rows[0].added_by.as_deref(), Some("admin-under-test"));
    assert_eq!(rows[0].claimed_by, None);
    for address in ["a@example.org", "d@example.org"] {
        assert!(store.is_eligible(&email(address)).await.unwrap());
    }

    let audits = audit_rows(&store, "allowlist.import").await;
    assert_eq!(audits.len(), 2);
    let latest = details(&audits[0]);
    assert_eq!(latest["added"], 1);
    assert_eq!(latest["updated"], 1);
    assert_eq!(latest["unchanged"], 3);
}

async fn an_import_records_its_batch_and_the_parsers_figures(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let result = stream(
        &store,
        upload("b1", false, NOW),
        vec![
            ImportChunk::Rows(vec![entry("a@example.org", &[])]),
            ImportChunk::Rows(vec![]),
            ImportChunk::Rows(vec![
                entry("b@example.org", &[]),
                entry("c@example.org", &[]),
            ]),
            finish(6, 2, 1),
        ],
    )
    .await;
    assert_eq!(result, Some(counts(3, 0, 0)));

    let batches = store.list_batches(None, 10).await.unwrap();
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    assert_eq!(batch.id, "b1");
    assert_eq!(batch.source, "csv");
    assert_eq!(batch.created_by.as_deref(), Some("admin-under-test"));
    assert_eq!(batch.created_at, NOW);
    assert_eq!(
        (
            batch.rows,
            batch.added,
            batch.updated,
            batch.duplicates,
            batch.invalid
        ),
        (6, 3, 0, 2, 1)
    );
    assert_eq!(
        (batch.withdrawn, batch.withdrawn_at, batch.remaining),
        (0, None, 3)
    );
    let audits = audit_rows(&store, "allowlist.import").await;
    assert_eq!(audits.len(), 1);
    assert_eq!(
        details(&audits[0])["file"],
        "roster.csv",
        "the caller's details kept"
    );
    assert_eq!(audits[0].at, NOW);
}

async fn a_second_upload_into_a_batch_adds_to_its_figures(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    for (n, address) in ["a@example.org", "b@example.org"].into_iter().enumerate() {
        let result = stream(
            &store,
            upload("b1", false, NOW + n as i64),
            vec![
                ImportChunk::Rows(vec![entry(address, &[])]),
                finish(2, 1, 0),
            ],
        )
        .await;
        assert_eq!(result, Some(counts(1, 0, 0)));
    }
    let batches = store.list_batches(None, 10).await.unwrap();
    assert_eq!(batches.len(), 1);
    let batch = &batches[0];
    assert_eq!((batch.rows, batch.added, batch.duplicates), (4, 2, 2));
    assert_eq!(batch.remaining, 2);
}

async fn a_large_upload_is_counted_exactly_across_statements(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    // More rows than either backend writes in one statement.
    let n = gatehouse::store::IMPORT_CHUNK + 1;
    let address = |i: usize| format!("m{i:05}@example.org");
    let earlier: Vec<EligibleEntry> = (0..n).step_by(7).map(|i| entry(&address(i), &[])).collect();
    let earlier_count = earlier.len() as u64;
    let first = stream(
        &store,
        upload("b1", false, NOW),
        vec![ImportChunk::Rows(earlier), finish(earlier_count, 0, 0)],
    )
    .await;
    assert_eq!(first, Some(counts(earlier_count, 0, 0)));

    let all: Vec<EligibleEntry> = (0..n)
        .map(|i| {
            let relist: &[&str] = if i % 14 == 0 { &["active"] } else { &[] };
            entry(&address(i), relist)
        })
        .collect();
    let relisted = (0..n).step_by(14).count() as u64;
    let result = stream(
        &store,
        upload("b2", false, NOW + 1),
        vec![ImportChunk::Rows(all), finish(n as u64, 0, 0)],
    )
    .await;
    assert_eq!(
        result,
        Some(counts(
            n as u64 - earlier_count,
            relisted,
            earlier_count - relisted
        ))
    );
    let batches = store.list_batches(None, 10).await.unwrap();
    assert_eq!(batches[0].remaining as u64, n as u64 - earlier_count);
    assert_eq!(batches[1].remaining as u64, earlier_count);
}

async fn concurrent_uploads_add_each_address_once(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let upload_of = |batch: &str, range: std::ops::Range<usize>| {
        let store = store.clone();
        let batch = batch.to_owned();
        tokio::spawn(async move {
            let entries: Vec<EligibleEntry> = range
                .map(|i| entry(&format!("m{i:03}@example.org"), &[]))
                .collect();
            import(&store, &batch, entries, false, NOW).await
        })
    };
    let (a, b) = tokio::join!(upload_of("b1", 0..60), upload_of("b2", 40..100));
    let (a, b) = (
        a.expect("task").expect("finished"),
        b.expect("task").expect("finished"),
    );

    assert_eq!(a.added + b.added, 100, "{a:?} {b:?}");
    assert_eq!(a.unchanged + b.unchanged, 20, "the overlap, once");
    assert_eq!(
        eligible(
            &store,
            EligibleFilter {
                limit: 1_000,
                ..Default::default()
            }
        )
        .await
        .len(),
        100
    );
}

async fn a_dry_run_reports_exact_counts_and_keeps_nothing(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    import(&store, "b1", vec![entry("a@example.org", &[])], false, NOW).await;

    let dry = import(
        &store,
        "b2",
        vec![
            entry("a@example.org", &["sustainer"]),
            entry("b@example.org", &[]),
            entry("c@example.org", &[]),
        ],
        true,
        NOW + 1,
    )
    .await;
    assert_eq!(dry, Some(counts(2, 1, 0)));

    let rows = eligible(&store, everything()).await;
    assert_eq!(addresses(&rows), ["a@example.org"]);
    assert_eq!(rows[0].roles, "");
    assert!(!store.is_eligible(&email("b@example.org")).await.unwrap());
    let batches = store.list_batches(None, 10).await.unwrap();
    assert_eq!(batches.len(), 1, "no batch row for the dry run");
    assert_eq!(audit_rows(&store, "allowlist.import").await.len(), 1);
}

async fn an_import_that_ends_without_finish_writes_nothing(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let abandoned = stream(
        &store,
        upload("b1", false, NOW),
        vec![
            ImportChunk::Rows(vec![
                entry("a@example.org", &[]),
                entry("b@example.org", &[]),
            ]),
            ImportChunk::Rows(vec![entry("c@example.org", &[])]),
        ],
    )
    .await;
    assert_eq!(abandoned, None);

    assert!(eligible(&store, everything()).await.is_empty());
    assert!(store.list_batches(None, 10).await.unwrap().is_empty());
    assert!(audit_rows(&store, "allowlist.import").await.is_empty());
    // The store is usable afterwards (nothing left half-open).
    let next = import(&store, "b2", vec![entry("a@example.org", &[])], false, NOW).await;
    assert_eq!(next, Some(counts(1, 0, 0)));
}

async fn the_allowlist_is_listed_by_batch_claim_and_address_in_pages(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    import(
        &store,
        "b1",
        vec![
            entry("ann_a@example.org", &[]),
            entry("annxa@example.org", &[]),
            entry("bea@example.org", &[]),
        ],
        false,
        NOW,
    )
    .await;
    import(
        &store,
        "b2",
        vec![entry("cid@example.org", &[]), entry("dot@example.org", &[])],
        false,
        NOW,
    )
    .await;
    let bea = sign_in(&store, "bea@example.org", NOW).await;

    let of_batch = eligible(
        &store,
        EligibleFilter {
            batch_id: Some("b2".into()),
            ..everything()
        },
    )
    .await;
    assert_eq!(addresses(&of_batch), ["cid@example.org", "dot@example.org"]);

    let claimed = eligible(
        &store,
        EligibleFilter {
            claimed: Some(true),
            ..everything()
        },
    )
    .await;
    assert_eq!(addresses(&claimed), ["bea@example.org"]);
    assert_eq!(
        claimed[0].claimed_by.as_deref(),
        Some(bea.member.id.as_str())
    );
    let unclaimed = eligible(
        &store,
        EligibleFilter {
            claimed: Some(false),
            ..everything()
        },
    )
    .await;
    assert_eq!(unclaimed.len(), 4);

    let underscore = eligible(
        &store,
        EligibleFilter {
            q: Some("n_a".into()),
            ..everything()
        },
    )
    .await;
    assert_eq!(
        addresses(&underscore),
        ["ann_a@example.org"],
        "`_` is literal"
    );

    let mut pages = Vec::new();
    let mut after = None;
    loop {
        let page = eligible(
            &store,
            EligibleFilter {
                after: after.clone(),
                limit: 2,
                ..Default::default()
            },
        )
        .await;
        let Some(last) = page.last() else { break };
        after = Some(last.email.clone());
        pages.push(addresses(&page).join(" "));
    }
    assert_eq!(
        pages,
        [
            "ann_a@example.org annxa@example.org",
            "bea@example.org cid@example.org",
            "dot@example.org"
        ]
    );
}

async fn an_address_is_removed_from_the_allowlist_once(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "a@example.org", &[]).await;
    allowlist(&store, "b@example.org", &[]).await;

    assert!(
        store
            .remove_eligible(&email("a@example.org"), audit("allowlist.remove"), NOW)
            .await
            .unwrap()
    );
    assert!(!store.is_eligible(&email("a@example.org")).await.unwrap());
    assert!(store.is_eligible(&email("b@example.org")).await.unwrap());
    assert!(
        !store
            .remove_eligible(&email("a@example.org"), audit("allowlist.remove"), NOW)
            .await
            .unwrap()
    );
    assert_eq!(audit_rows(&store, "allowlist.remove").await.len(), 1);
}

async fn batches_are_listed_newest_first_in_pages(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    for (n, id) in ["b1", "b2", "b3"].into_iter().enumerate() {
        let address = format!("{id}@example.org");
        import(
            &store,
            id,
            vec![entry(&address, &[])],
            false,
            NOW + n as i64,
        )
        .await;
    }
    let ids = |batches: Vec<gatehouse::store::BatchRow>| -> Vec<String> {
        batches.into_iter().map(|b| b.id).collect()
    };
    assert_eq!(
        ids(store.list_batches(None, 2).await.unwrap()),
        ["b3", "b2"]
    );
    assert_eq!(
        ids(store.list_batches(Some("b2"), 2).await.unwrap()),
        ["b1"]
    );
    assert!(store.list_batches(Some("b1"), 2).await.unwrap().is_empty());
}

async fn withdrawing_a_batch_removes_only_its_unclaimed_addresses(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    import(
        &store,
        "b1",
        vec![
            entry("claimed@example.org", &[]),
            entry("waiting@example.org", &[]),
        ],
        false,
        NOW,
    )
    .await;
    import(
        &store,
        "b2",
        vec![entry("other@example.org", &[])],
        false,
        NOW,
    )
    .await;
    let member = sign_in(&store, "claimed@example.org", NOW).await;

    let removed = store
        .withdraw_batch("b1", audit("batch.withdraw"), NOW + 1)
        .await
        .unwrap();
    assert_eq!(removed, Some(1));

    assert!(
        !store
            .is_eligible(&email("waiting@example.org"))
            .await
            .unwrap()
    );
    assert!(
        store
            .is_eligible(&email("other@example.org"))
            .await
            .unwrap()
    );
    assert!(
        store
            .is_eligible(&email("claimed@example.org"))
            .await
            .unwrap()
    );
    assert!(session_live(&store, &member.member.id, &member.id, NOW + 1).await);
    let left = eligible(&store, everything()).await;
    assert_eq!(
        addresses(&left),
        ["claimed@example.org", "other@example.org"]
    );

    let batches = store.list_batches(None, 10).await.unwrap();
    let b1 = batches.iter().find(|b| b.id == "b1").expect("b1 listed");
    assert_eq!(
        (b1.withdrawn, b1.withdrawn_at, b1.remaining),
        (1, Some(NOW + 1), 1)
    );
    let rows = audit_rows(&store, "batch.withdraw").await;
    assert_eq!(details(&rows[0])["removed"], 1);

    let unknown = store
        .withdraw_batch("nope", audit("batch.withdraw"), NOW)
        .await
        .unwrap();
    assert_eq!(unknown, None);
}

/// A batch named after rows were sent (a JSON body may list `batch_id` after
/// its addresses): what this import added moves to the name, what was listed
/// before keeps its batch, and the batch is recorded under the name.
async fn a_batch_named_late_takes_the_entries_added_so_far(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    import(&store, "b0", vec![entry("a@example.org", &[])], false, NOW).await;
    let result = stream(
        &store,
        upload("batch-provisional", false, NOW + 1),
        vec![
            ImportChunk::Rows(vec![
                entry("a@example.org", &[]),
                entry("b@example.org", &[]),
            ]),
            ImportChunk::Rename("named".into()),
            ImportChunk::Rows(vec![entry("c@example.org", &[])]),
            finish(3, 0, 0),
        ],
    )
    .await;
    assert_eq!(result, Some(counts(2, 0, 1)));

    let batch_of = |batch: &str| EligibleFilter {
        batch_id: Some(batch.into()),
        ..everything()
    };
    let named = eligible(&store, batch_of("named")).await;
    assert_eq!(addresses(&named), ["b@example.org", "c@example.org"]);
    let earlier = eligible(&store, batch_of("b0")).await;
    assert_eq!(addresses(&earlier), ["a@example.org"]);
    assert!(
        eligible(&store, batch_of("batch-provisional"))
            .await
            .is_empty()
    );
    let batches = store.list_batches(None, 10).await.unwrap();
    let ids: Vec<&str> = batches.iter().map(|b| b.id.as_str()).collect();
    assert_eq!(ids, ["named", "b0"]);
    assert_eq!((batches[0].added, batches[0].remaining), (2, 2));
}

store_tests!(
    an_import_counts_added_updated_and_unchanged_addresses,
    an_import_records_its_batch_and_the_parsers_figures,
    a_second_upload_into_a_batch_adds_to_its_figures,
    a_large_upload_is_counted_exactly_across_statements,
    concurrent_uploads_add_each_address_once,
    a_dry_run_reports_exact_counts_and_keeps_nothing,
    an_import_that_ends_without_finish_writes_nothing,
    the_allowlist_is_listed_by_batch_claim_and_address_in_pages,
    an_address_is_removed_from_the_allowlist_once,
    batches_are_listed_newest_first_in_pages,
    withdrawing_a_batch_removes_only_its_unclaimed_addresses,
    a_batch_named_late_takes_the_entries_added_so_far,
);

//! The audit log: `record_audit`, and `list_audit` with its filters and keyset.

use gatehouse::store::AuditFilter;

use super::*;

/// Records three rows: (a1, x.one, t1) at NOW, (a2, x.two, t2) at NOW+10,
/// (a1, x.two, t1) at NOW+20.
async fn three_rows(store: &DynStore) {
    for (actor, action, target, at) in [
        ("a1", "x.one", "t1", NOW),
        ("a2", "x.two", "t2", NOW + 10),
        ("a1", "x.two", "t1", NOW + 20),
    ] {
        store
            .record_audit(
                AuditEntry::new(action)
                    .actor(actor)
                    .target(target)
                    .ip(Some("198.51.100.4".into()))
                    .details(serde_json::json!({ "at": at })),
                at,
            )
            .await
            .expect("record audit");
    }
}

async fn list(store: &DynStore, filter: AuditFilter) -> Vec<i64> {
    store
        .list_audit(&AuditFilter {
            limit: if filter.limit == 0 { 100 } else { filter.limit },
            ..filter
        })
        .await
        .expect("list audit")
        .into_iter()
        .map(|row| row.at)
        .collect()
}

async fn an_audit_row_is_recorded_with_everything_it_was_given(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    store
        .record_audit(AuditEntry::new("x.anonymous"), NOW)
        .await
        .unwrap();
    three_rows(&store).await;

    let rows = store
        .list_audit(&AuditFilter {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(rows.len(), 4);
    let newest = &rows[0];
    assert_eq!(newest.at, NOW + 20);
    assert_eq!(newest.actor.as_deref(), Some("a1"));
    assert_eq!(newest.action, "x.two");
    assert_eq!(newest.target.as_deref(), Some("t1"));
    assert_eq!(newest.ip.as_deref(), Some("198.51.100.4"));
    assert_eq!(details(newest), serde_json::json!({ "at": NOW + 20 }));
    let anonymous = &rows[3];
    assert_eq!(anonymous.action, "x.anonymous");
    assert_eq!(
        (anonymous.actor.as_deref(), anonymous.target.as_deref()),
        (None, None)
    );
    assert_eq!(details(anonymous), serde_json::json!({}));
}

async fn the_audit_log_is_filtered_and_listed_newest_first(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    three_rows(&store).await;
    let none = AuditFilter::default;

    assert_eq!(list(&store, none()).await, [NOW + 20, NOW + 10, NOW]);
    let by_actor = AuditFilter {
        actor: Some("a1".into()),
        ..none()
    };
    assert_eq!(list(&store, by_actor).await, [NOW + 20, NOW]);
    let by_action = AuditFilter {
        action: Some("x.two".into()),
        ..none()
    };
    assert_eq!(list(&store, by_action).await, [NOW + 20, NOW + 10]);
    let by_target = AuditFilter {
        target: Some("t2".into()),
        ..none()
    };
    assert_eq!(list(&store, by_target).await, [NOW + 10]);
    let both = AuditFilter {
        actor: Some("a1".into()),
        action: Some("x.two".into()),
        ..none()
    };
    assert_eq!(list(&store, both).await, [NOW + 20]);
    let since = AuditFilter {
        since: Some(NOW + 10),
        ..none()
    };
    assert_eq!(
        list(&store, since).await,
        [NOW + 20, NOW + 10],
        "since is inclusive"
    );
    let until = AuditFilter {
        until: Some(NOW + 20),
        ..none()
    };
    assert_eq!(
        list(&store, until).await,
        [NOW + 10, NOW],
        "until is exclusive"
    );
    let nobody = AuditFilter {
        actor: Some("a3".into()),
        ..none()
    };
    assert!(list(&store, nobody).await.is_empty());
}

async fn the_audit_log_pages_backwards_by_id(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    three_rows(&store).await;

    let first = store
        .list_audit(&AuditFilter {
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        first.iter().map(|r| r.at).collect::<Vec<_>>(),
        [NOW + 20, NOW + 10]
    );
    let second = store
        .list_audit(&AuditFilter {
            before: Some(first[1].id.clone()),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(second.iter().map(|r| r.at).collect::<Vec<_>>(), [NOW]);
    let filtered = store
        .list_audit(&AuditFilter {
            action: Some("x.two".into()),
            before: Some(first[0].id.clone()),
            limit: 2,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(
        filtered.iter().map(|r| r.at).collect::<Vec<_>>(),
        [NOW + 10]
    );
}

store_tests!(
    an_audit_row_is_recorded_with_everything_it_was_given,
    the_audit_log_is_filtered_and_listed_newest_first,
    the_audit_log_pages_backwards_by_id,
);

//! Signing keys at rest: `add_signing_key`, `revoke_signing_key` (with its
//! replacement, in one transaction), `signing_keys`, and the change ticks the
//! cached store gives the key readers.

use gatehouse::store::NewSigningKey;

use super::*;

fn key(kid: &str, activates_at: i64) -> NewSigningKey {
    NewSigningKey {
        kid: kid.into(),
        alg: "ES256".into(),
        public_jwk: Some(format!(r#"{{"kid":"{kid}"}}"#)),
        private_sealed: Some("sealed".into()),
        created_by: Some("system".into()),
        activates_at,
    }
}

async fn audited(store: &DynStore, action: &str) -> usize {
    store
        .list_audit(&AuditFilter {
            action: Some(action.into()),
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap()
        .len()
}

async fn keys_are_added_once_listed_by_activation_and_audited(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let mut changes = store.signing_key_changes();
    assert_eq!(
        changes.is_some(),
        matches!(
            kind,
            StoreUnderTest::CachedSqlite | StoreUnderTest::CachedPostgres
        )
    );
    if let Some(changes) = changes.as_mut() {
        changes.borrow_and_update();
    }
    assert!(
        store
            .add_signing_key(key("b", NOW + 600), audit("k.add"), NOW)
            .await
            .unwrap()
    );
    assert!(
        store
            .add_signing_key(key("a", NOW), audit("k.add"), NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .add_signing_key(key("a", NOW), audit("k.add"), NOW)
            .await
            .unwrap(),
        "a kid is stored once"
    );
    if let Some(changes) = changes.as_mut() {
        assert!(
            changes.has_changed().unwrap(),
            "key readers hear of the change"
        );
    }
    let rows = store.signing_keys().await.unwrap();
    let kids: Vec<&str> = rows.iter().map(|r| r.kid.as_str()).collect();
    assert_eq!(kids, ["a", "b"]);
    assert_eq!(rows[0].alg, "ES256");
    assert_eq!(rows[0].public_jwk.as_deref(), Some(r#"{"kid":"a"}"#));
    assert_eq!(rows[0].private_sealed.as_deref(), Some("sealed"));
    assert_eq!(rows[0].created_by.as_deref(), Some("system"));
    assert_eq!(
        (rows[0].created_at, rows[0].activates_at, rows[0].revoked_at),
        (NOW, NOW, None)
    );
    assert_eq!(
        audited(&store, "k.add").await,
        2,
        "the refused add wrote nothing"
    );
}

async fn a_revocation_and_its_replacement_are_one_change(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    store
        .add_signing_key(key("a", NOW), audit("k.add"), NOW)
        .await
        .unwrap();
    let revoked = store
        .revoke_signing_key("a", Some(key("c", NOW + 10)), audit("k.revoke"), NOW + 10)
        .await
        .unwrap();
    assert!(revoked);
    let rows = store.signing_keys().await.unwrap();
    assert_eq!(rows.len(), 2);
    assert_eq!(rows[0].revoked_at, Some(NOW + 10));
    assert_eq!((rows[1].kid.as_str(), rows[1].revoked_at), ("c", None));

    // Again, or an unknown kid: nothing changes, no replacement, no audit row.
    for kid in ["a", "nope"] {
        let again = store
            .revoke_signing_key(kid, Some(key("d", NOW + 20)), audit("k.revoke"), NOW + 20)
            .await
            .unwrap();
        assert!(!again, "{kid}");
    }
    assert_eq!(store.signing_keys().await.unwrap().len(), 2);
    assert_eq!(audited(&store, "k.revoke").await, 1);
}

store_tests!(
    keys_are_added_once_listed_by_activation_and_audited,
    a_revocation_and_its_replacement_are_one_change,
);

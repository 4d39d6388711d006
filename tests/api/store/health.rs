//! The store's own upkeep: `ping` for readiness, and `migrate`, which every
//! instance runs at start-up (so again, and at the same time as others).

use super::*;

async fn a_store_answers_pings_and_migrates_again_safely(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    store.ping().await.unwrap();
    onboard(&store, "ada@example.org", &[]).await;

    store.migrate().await.unwrap();
    let (a, b) = tokio::join!(store.migrate(), store.migrate());
    a.unwrap();
    b.unwrap();

    store.ping().await.unwrap();
    assert!(
        store.is_eligible(&email("ada@example.org")).await.unwrap(),
        "data kept"
    );
    assert_eq!(
        store.role_names().await.unwrap().len(),
        4,
        "roles seeded once"
    );
}

async fn an_unknown_member_is_none(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let nobody = MemberId::new();
    assert!(store.member_by_id(&nobody, NOW).await.unwrap().is_none());
    assert!(!session_live(&store, &nobody, &new_id(), NOW).await);
}

store_tests!(
    a_store_answers_pings_and_migrates_again_safely,
    an_unknown_member_is_none,
);

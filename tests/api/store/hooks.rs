//! The backends' one-round-trip paths, called directly. Through the store they
//! are invisible: if a backend's fast path stopped taking the common case, the
//! general path would still answer correctly and only the speed would go. So
//! these tests pin which case each hook takes, and that it leaves every other
//! case untouched for the general path.

use gatehouse::store::{Backend, SqlStore};

use super::*;

async fn a_returning_members_link_is_redeemed_in_one_round_trip<B: Backend>(
    store: Arc<SqlStore<B>>,
) {
    let shared: DynStore = store.clone();
    allowlist(&shared, "back@example.org", &[]).await;
    allowlist(&shared, "new@example.org", &[]).await;
    let returning = sign_in(&shared, "back@example.org", NOW).await;

    // A first sign-in is the general path's: the hook changes nothing.
    let first = link_for(&shared, "new@example.org", NOW).await;
    let declined = store
        .backend()
        .redeem_for_returning_member(&first, &new_session(NOW), NOW)
        .await
        .unwrap();
    assert!(declined.is_none());
    let created = shared
        .redeem_magic_link(&first, new_session(NOW), NOW)
        .await
        .unwrap()
        .expect("the link was left unused for the general path");
    assert!(created.created);

    let link = link_for(&shared, "back@example.org", NOW).await;
    let session = new_session(NOW);
    let redeemed = store
        .backend()
        .redeem_for_returning_member(&link, &session, NOW + 1)
        .await
        .unwrap()
        .expect("a returning member's live link takes the fast path");
    assert_eq!(redeemed.member_id, returning.member.id.as_str());
    assert!(!redeemed.created);
    assert!(session_live(&shared, &returning.member.id, &session.id, NOW + 1).await);
    let member = member_by_id(&shared, &returning.member.id, NOW + 1).await;
    assert_eq!(member.last_login_at, Some(NOW + 1));
    let rows = audit_rows(&shared, "auth.signed_in").await;
    assert_eq!(
        rows.len(),
        3,
        "two sign-ins by the general path, one by the hook"
    );
    assert_eq!(
        details(&rows[0]),
        serde_json::json!({ "session": session.id, "new_member": false })
    );

    let again = store
        .backend()
        .redeem_for_returning_member(&link, &new_session(NOW), NOW + 2)
        .await
        .unwrap();
    assert!(again.is_none(), "a link works once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_redeems_a_returning_members_link_in_one_round_trip() {
    let (_guard, store) = open_sqlite().await;
    a_returning_members_link_is_redeemed_in_one_round_trip(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_redeems_a_returning_members_link_in_one_round_trip() {
    let (_guard, store) = open_postgres().await;
    a_returning_members_link_is_redeemed_in_one_round_trip(store).await;
}

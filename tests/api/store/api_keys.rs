//! API keys at rest: created for active members, looked up with their member,
//! listed, revoked (at once, through the cache too) and touched.

use gatehouse::domain::MemberStatus;
use gatehouse::store::{ApiKeyInfo, ApiKeyRecord, NewApiKey};

use super::*;

fn new_key(id: &str, role_list: &[&str]) -> NewApiKey {
    NewApiKey {
        id: id.to_owned(),
        name: format!("key {id}"),
        secret_hash: format!("$argon2id$v=19$m=19456,t=2,p=1$salt${id}"),
        roles: roles(role_list),
        created_by: Some("admin-under-test".into()),
        expires_at: Some(NOW + 30 * DAY),
    }
}

async fn create(store: &DynStore, member: &MemberId, id: &str, now: i64) -> bool {
    store
        .create_api_key(member, new_key(id, &[]), audit("api_key.create"), now)
        .await
        .expect("create api key")
}

async fn record(store: &DynStore, id: &str, now: i64) -> Option<ApiKeyRecord> {
    store.api_key(id, now).await.expect("api key")
}

async fn list(
    store: &DynStore,
    member: Option<&MemberId>,
    before: Option<&str>,
    limit: i64,
) -> Vec<ApiKeyInfo> {
    store
        .list_api_keys(member, before, limit)
        .await
        .expect("list api keys")
}

async fn a_key_is_stored_only_for_an_active_member(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &[]).await;
    let bob = onboard(&store, "bob@example.org", &[]).await;
    let gone = onboard(&store, "gone@example.org", &[]).await;
    store
        .set_member_status(
            &bob.id,
            MemberStatus::Suspended,
            audit("member.suspend"),
            NOW,
        )
        .await
        .unwrap();
    store
        .delete_member(&gone.id, audit("member.delete"), NOW)
        .await
        .unwrap();

    assert!(create(&store, &ada.id, "adakey", NOW).await);
    assert!(!create(&store, &bob.id, "bobkey", NOW).await, "suspended");
    assert!(!create(&store, &gone.id, "gonekey", NOW).await, "deleted");
    assert!(
        !create(&store, &MemberId::new(), "nokey", NOW).await,
        "unknown"
    );

    for refused in ["bobkey", "gonekey", "nokey"] {
        assert!(record(&store, refused, NOW).await.is_none(), "{refused}");
    }
    assert_eq!(list(&store, None, None, 10).await.len(), 1);
    assert_eq!(audit_rows(&store, "api_key.create").await.len(), 1);
}

async fn a_key_record_carries_its_member_with_live_roles_and_its_own_roles(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &["admin"]).await;
    store
        .grant_member_role(
            &ada.id,
            &RoleGrant {
                role: role("sustainer"),
                expires_at: Some(NOW + 10),
            },
            audit("role.grant"),
            NOW,
        )
        .await
        .unwrap();
    assert!(
        store
            .create_api_key(
                &ada.id,
                new_key("adakey", &["sustainer", "member"]),
                audit("api_key.create"),
                NOW,
            )
            .await
            .unwrap()
    );

    let key = record(&store, "adakey", NOW + 9).await.expect("stored");
    assert_eq!(key.id, "adakey");
    assert_eq!(key.member.id, ada.id);
    assert_eq!(key.member.email.as_str(), "ada@example.org");
    assert_eq!(key.member.status, MemberStatus::Active);
    assert_eq!(role_names(&key.member), ["admin", "member", "sustainer"]);
    let mut key_roles: Vec<&str> = key.roles.iter().map(|r| r.as_str()).collect();
    key_roles.sort_unstable();
    assert_eq!(key_roles, ["member", "sustainer"]);
    assert_eq!(
        key.secret_hash,
        "$argon2id$v=19$m=19456,t=2,p=1$salt$adakey"
    );
    assert_eq!(key.expires_at, Some(NOW + 30 * DAY));
    assert_eq!((key.last_used_at, key.revoked_at), (None, None));

    let later = record(&store, "adakey", NOW + 10).await.expect("stored");
    assert_eq!(
        role_names(&later.member),
        ["admin", "member"],
        "the member's roles as of now"
    );
    assert!(record(&store, "nokey", NOW).await.is_none());
}

async fn keys_are_listed_newest_first_by_member_in_pages(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &[]).await;
    let bob = onboard(&store, "bob@example.org", &[]).await;
    assert!(create(&store, &ada.id, "k1", NOW).await);
    assert!(create(&store, &bob.id, "k2", NOW + 1).await);
    assert!(create(&store, &ada.id, "k3", NOW + 2).await);
    // k3 and k4 were made in the same second: the id breaks the tie.
    assert!(create(&store, &ada.id, "k4", NOW + 2).await);

    let ids = |keys: Vec<ApiKeyInfo>| keys.into_iter().map(|k| k.id).collect::<Vec<_>>();
    assert_eq!(
        ids(list(&store, None, None, 10).await),
        ["k4", "k3", "k2", "k1"]
    );
    assert_eq!(
        ids(list(&store, Some(&ada.id), None, 10).await),
        ["k4", "k3", "k1"]
    );
    assert_eq!(
        ids(list(&store, Some(&ada.id), None, 2).await),
        ["k4", "k3"]
    );
    assert_eq!(
        ids(list(&store, Some(&ada.id), Some("k3"), 2).await),
        ["k1"]
    );
    assert_eq!(ids(list(&store, None, Some("k2"), 10).await), ["k1"]);
    assert_eq!(
        ids(list(&store, Some(&ada.id), Some("k4"), 10).await),
        ["k3", "k1"]
    );
    assert!(list(&store, Some(&ada.id), Some("k1"), 2).await.is_empty());

    let info = list(&store, Some(&bob.id), None, 1).await.remove(0);
    assert_eq!(info.member_id, bob.id.as_str());
    assert_eq!(info.email, "bob@example.org");
    assert_eq!(info.name, "key k2");
    assert_eq!(info.created_by.as_deref(), Some("admin-under-test"));
    assert_eq!(info.created_at, NOW + 1);
    assert_eq!(info.expires_at, Some(NOW + 30 * DAY));
    assert_eq!((info.last_used_at, info.revoked_at), (None, None));
}

async fn a_revoked_key_shows_its_revocation_at_once(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &[]).await;
    assert!(create(&store, &ada.id, "adakey", NOW).await);
    assert!(create(&store, &ada.id, "spare", NOW).await);
    // Read once, so that the cached stores hold the answer.
    assert_eq!(
        record(&store, "adakey", NOW).await.unwrap().revoked_at,
        None
    );

    assert!(
        store
            .revoke_api_key("adakey", audit("api_key.revoke"), NOW)
            .await
            .unwrap()
    );

    assert_eq!(
        record(&store, "adakey", NOW).await.unwrap().revoked_at,
        Some(NOW)
    );
    assert_eq!(record(&store, "spare", NOW).await.unwrap().revoked_at, None);
    assert!(
        !store
            .revoke_api_key("adakey", audit("api_key.revoke"), NOW + 1)
            .await
            .unwrap(),
        "already revoked"
    );
    assert!(
        !store
            .revoke_api_key("nokey", audit("api_key.revoke"), NOW)
            .await
            .unwrap(),
        "unknown"
    );
    let listed = list(&store, Some(&ada.id), None, 10).await;
    let revoked = listed.iter().find(|k| k.id == "adakey").unwrap();
    assert_eq!(revoked.revoked_at, Some(NOW), "the first revocation's time");
    assert_eq!(audit_rows(&store, "api_key.revoke").await.len(), 1);
}

async fn a_deleted_members_keys_die_with_them_at_once(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &[]).await;
    assert!(create(&store, &ada.id, "adakey", NOW).await);
    assert_eq!(
        record(&store, "adakey", NOW).await.unwrap().revoked_at,
        None
    );

    assert!(
        store
            .delete_member(&ada.id, audit("member.delete"), NOW)
            .await
            .unwrap()
    );

    let key = record(&store, "adakey", NOW).await.expect("still stored");
    assert_eq!(key.revoked_at, Some(NOW));
    assert_eq!(key.member.status, MemberStatus::Deleted);
}

async fn a_key_record_follows_its_members_role_changes_at_once(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &["admin"]).await;
    onboard(&store, "other-admin@example.org", &["admin"]).await;
    assert!(create(&store, &ada.id, "adakey", NOW).await);
    assert!(
        record(&store, "adakey", NOW)
            .await
            .unwrap()
            .member
            .has_role("admin")
    );

    store
        .revoke_member_role(&ada.id, &role("admin"), audit("role.revoke"), NOW)
        .await
        .unwrap();
    assert!(
        !record(&store, "adakey", NOW)
            .await
            .unwrap()
            .member
            .has_role("admin")
    );

    store
        .set_member_status(
            &ada.id,
            MemberStatus::Suspended,
            audit("member.suspend"),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(
        record(&store, "adakey", NOW).await.unwrap().member.status,
        MemberStatus::Suspended
    );
}

async fn touching_a_key_records_its_last_use(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &[]).await;
    assert!(create(&store, &ada.id, "adakey", NOW).await);

    store.touch_api_key("adakey", NOW + 5).await.unwrap();
    store.touch_api_key("nokey", NOW + 5).await.unwrap();

    let listed = list(&store, None, None, 10).await;
    assert_eq!(listed[0].last_used_at, Some(NOW + 5));
    // Read at a later second: the cached stores keep an answer within the
    // second it was read in only, and a touch is deliberately not an
    // invalidating change (authentication does not read `last_used_at`).
    assert_eq!(
        record(&store, "adakey", NOW + 6)
            .await
            .unwrap()
            .last_used_at,
        Some(NOW + 5)
    );
}

async fn many_concurrent_key_lookups_each_get_their_own_answer(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &[]).await;
    let bob = onboard(&store, "bob@example.org", &[]).await;
    assert!(create(&store, &ada.id, "adakey", NOW).await);
    assert!(create(&store, &bob.id, "bobkey", NOW).await);
    store
        .revoke_api_key("bobkey", audit("api_key.revoke"), NOW)
        .await
        .unwrap();
    // (key, its member's address and revocation, if the key exists)
    let cases = [
        ("adakey", Some(("ada@example.org", None))),
        ("bobkey", Some(("bob@example.org", Some(NOW)))),
        ("nokey", None),
    ];

    let lookups: Vec<_> = (0..60)
        .map(|i| {
            let (id, expected) = cases[i % cases.len()];
            let store = store.clone();
            let now = NOW + (i % 4) as i64;
            (
                tokio::spawn(async move { store.api_key(id, now).await }),
                expected,
            )
        })
        .collect();
    for (i, (lookup, expected)) in lookups.into_iter().enumerate() {
        let record = lookup.await.expect("task").expect("api key");
        let seen = record
            .as_ref()
            .map(|r| (r.member.email.as_str(), r.revoked_at));
        assert_eq!(seen, expected, "lookup {i}");
    }
}

store_tests!(
    a_key_is_stored_only_for_an_active_member,
    a_key_record_carries_its_member_with_live_roles_and_its_own_roles,
    keys_are_listed_newest_first_by_member_in_pages,
    a_revoked_key_shows_its_revocation_at_once,
    a_deleted_members_keys_die_with_them_at_once,
    a_key_record_follows_its_members_role_changes_at_once,
    touching_a_key_records_its_last_use,
    many_concurrent_key_lookups_each_get_their_own_answer,
);

//! `bootstrap_admins`: the configured admins are allowlisted with `admin`, and
//! those who are members already get it; running it again changes nothing.

use gatehouse::store::EligibleFilter;

use super::*;

async fn entry_roles(store: &DynStore, address: &str) -> String {
    store
        .list_eligible(&EligibleFilter {
            q: Some(address.to_owned()),
            limit: 10,
            ..Default::default()
        })
        .await
        .expect("list eligible")
        .into_iter()
        .find(|row| row.email == address)
        .expect("allowlisted")
        .roles
}

async fn bootstrap_audits(store: &DynStore) -> usize {
    audit_rows(store, "allowlist.bootstrap_admin").await.len()
        + audit_rows(store, "role.bootstrap_admin").await.len()
}

async fn bootstrapping_allowlists_new_admins_once(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let admins = [email("root@example.org"), email("ops@example.org")];

    store.bootstrap_admins(&admins, NOW).await.unwrap();
    for admin in &admins {
        assert!(store.is_eligible(admin).await.unwrap());
        assert_eq!(entry_roles(&store, admin.as_str()).await, "admin");
    }
    let audits = bootstrap_audits(&store).await;
    assert_eq!(audits, 2);

    store.bootstrap_admins(&admins, NOW + 1).await.unwrap();
    assert_eq!(
        bootstrap_audits(&store).await,
        audits,
        "nothing to do the second time"
    );
    assert_eq!(entry_roles(&store, "root@example.org").await, "admin");

    let root = sign_in(&store, "root@example.org", NOW + 2).await;
    assert_eq!(role_names(&root.member), ["admin", "member"]);
}

async fn bootstrapping_makes_existing_members_admins_at_once(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "member@example.org", &["sustainer"]).await;
    allowlist(&store, "listed@example.org", &["active"]).await;
    let member = sign_in(&store, "member@example.org", NOW).await;
    // Read once, so that the cached stores hold the answer.
    let before = store
        .session_member(&member.member.id, &member.id, NOW)
        .await
        .unwrap()
        .expect("live");
    assert!(!before.has_role("admin"));

    let admins = [email("member@example.org"), email("listed@example.org")];
    store.bootstrap_admins(&admins, NOW).await.unwrap();

    let after = store
        .session_member(&member.member.id, &member.id, NOW)
        .await
        .unwrap()
        .expect("live");
    assert_eq!(role_names(&after), ["admin", "member", "sustainer"]);
    assert_eq!(
        entry_roles(&store, "member@example.org").await,
        "admin,sustainer"
    );
    assert_eq!(
        entry_roles(&store, "listed@example.org").await,
        "active,admin"
    );
    let audits = bootstrap_audits(&store).await;

    store.bootstrap_admins(&admins, NOW + 1).await.unwrap();
    assert_eq!(bootstrap_audits(&store).await, audits, "idempotent");
    assert_eq!(
        role_names(&member_by_id(&store, &member.member.id, NOW + 1).await),
        ["admin", "member", "sustainer"]
    );
    let listed = sign_in(&store, "listed@example.org", NOW + 2).await;
    assert_eq!(role_names(&listed.member), ["active", "admin", "member"]);
}

store_tests!(
    bootstrapping_allowlists_new_admins_once,
    bootstrapping_makes_existing_members_admins_at_once,
);

//! Members as admins manage them: the list, status, role grants, sessions,
//! onboarding, and the guard that keeps one active admin.

use gatehouse::domain::MemberStatus;
use gatehouse::store::{EligibleFilter, MemberFilter, NewApiKey};

use super::*;

/// The addresses of the members `filter` lists at `now`, in order.
async fn listed(store: &DynStore, filter: MemberFilter, now: i64) -> Vec<String> {
    store
        .list_members(&filter, now)
        .await
        .expect("list members")
        .into_iter()
        .map(|m| m.email.as_str().to_owned())
        .collect()
}

fn filter() -> MemberFilter {
    MemberFilter {
        limit: 100,
        ..Default::default()
    }
}

async fn members_are_listed_by_role_status_and_address(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    onboard(&store, "ada_x@example.org", &["sustainer"]).await;
    onboard(&store, "adaxx@example.org", &[]).await;
    onboard(&store, "100%sure@example.org", &[]).await;
    let bob = onboard(&store, "bob@example.org", &["sustainer"]).await;
    let carl = onboard(&store, "carl@example.org", &[]).await;
    store
        .set_member_status(
            &bob.id,
            MemberStatus::Suspended,
            audit("member.suspend"),
            NOW,
        )
        .await
        .unwrap();
    // Carl's grant ends exactly now: he no longer holds it.
    grant(&store, &carl.id, "sustainer", Some(NOW), NOW - 1).await;

    let all = listed(&store, filter(), NOW).await;
    assert_eq!(
        all,
        [
            "ada_x@example.org",
            "adaxx@example.org",
            "100%sure@example.org",
            "bob@example.org",
            "carl@example.org"
        ],
        "in id (creation) order"
    );
    let by_role = MemberFilter {
        role: Some(role("sustainer")),
        ..filter()
    };
    assert_eq!(
        listed(&store, by_role.clone(), NOW).await,
        ["ada_x@example.org", "bob@example.org"]
    );
    assert_eq!(
        listed(&store, by_role, NOW - 1).await,
        ["ada_x@example.org", "bob@example.org", "carl@example.org"],
        "before it ended, Carl's grant counts"
    );
    let suspended_sustainers = MemberFilter {
        role: Some(role("sustainer")),
        status: Some(MemberStatus::Suspended),
        ..filter()
    };
    assert_eq!(
        listed(&store, suspended_sustainers, NOW).await,
        ["bob@example.org"]
    );
    let active = MemberFilter {
        status: Some(MemberStatus::Active),
        ..filter()
    };
    assert_eq!(listed(&store, active, NOW).await.len(), 4);

    // `%` and `_` in the query match themselves, not any character.
    let query = |q: &str| MemberFilter {
        q: Some(q.to_owned()),
        ..filter()
    };
    assert_eq!(
        listed(&store, query("a_x"), NOW).await,
        ["ada_x@example.org"]
    );
    assert_eq!(
        listed(&store, query("%"), NOW).await,
        ["100%sure@example.org"]
    );
    assert_eq!(listed(&store, query("ob@"), NOW).await, ["bob@example.org"]);
    assert!(listed(&store, query("nobody"), NOW).await.is_empty());
    // The query is documented as lowercase (callers lowercase it). Given
    // uppercase anyway, the backends differ: SQLite's LIKE ignores ASCII case,
    // Postgres' LIKE does not.
    let shouted = listed(&store, query("BOB"), NOW).await;
    if kind.is_postgres() {
        assert!(shouted.is_empty(), "{shouted:?}");
    } else {
        assert_eq!(shouted, ["bob@example.org"]);
    }
}

async fn the_member_list_pages_by_id(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    // Several roles each: a page is whole members, however many roles they hold.
    for n in 0..5 {
        onboard(
            &store,
            &format!("m{n}@example.org"),
            &["active", "sustainer"],
        )
        .await;
    }
    let mut pages = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_members(
                &MemberFilter {
                    after: after.clone(),
                    limit: 2,
                    ..Default::default()
                },
                NOW,
            )
            .await
            .unwrap();
        assert!(page.len() <= 2);
        for member in &page {
            assert_eq!(role_names(member), ["active", "member", "sustainer"]);
        }
        let Some(last) = page.last() else { break };
        after = Some(last.id.as_str().to_owned());
        pages.push(
            page.iter()
                .map(|m| m.email.as_str().to_owned())
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(
        pages,
        [
            vec!["m0@example.org", "m1@example.org"],
            vec!["m2@example.org", "m3@example.org"],
            vec!["m4@example.org"],
        ]
    );
}

async fn a_members_status_is_set_and_suspension_ends_their_sessions(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "ada@example.org", &[]).await;
    let session = sign_in(&store, "ada@example.org", NOW).await;
    let ada = session.member.id.clone();

    let suspended = store
        .set_member_status(
            &ada,
            MemberStatus::Suspended,
            audit("member.suspend"),
            NOW + 1,
        )
        .await
        .unwrap()
        .expect("known member");
    assert_eq!(suspended.status, MemberStatus::Suspended);
    assert!(!session_live(&store, &ada, &session.id, NOW + 1).await);
    assert_eq!(audit_rows(&store, "member.suspend").await.len(), 1);

    let active = store
        .set_member_status(
            &ada,
            MemberStatus::Active,
            audit("member.activate"),
            NOW + 2,
        )
        .await
        .unwrap()
        .expect("known member");
    assert_eq!(active.status, MemberStatus::Active);
    assert!(
        !session_live(&store, &ada, &session.id, NOW + 2).await,
        "a revoked session stays revoked"
    );
    let again = sign_in(&store, "ada@example.org", NOW + 3).await;
    assert_eq!(again.member.id, ada, "an active member signs in again");

    let unknown = store
        .set_member_status(
            &MemberId::new(),
            MemberStatus::Suspended,
            audit("member.suspend"),
            NOW,
        )
        .await
        .unwrap();
    assert!(unknown.is_none());
}

async fn a_deleted_member_cannot_be_changed(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &[]).await;
    assert!(
        store
            .delete_member(&ada.id, audit("member.delete"), NOW)
            .await
            .unwrap()
    );
    assert!(
        !store
            .delete_member(&ada.id, audit("member.delete"), NOW)
            .await
            .unwrap(),
        "deleted once"
    );
    assert!(
        !store
            .delete_member(&MemberId::new(), audit("member.delete"), NOW)
            .await
            .unwrap(),
        "unknown"
    );

    let reactivate = store
        .set_member_status(&ada.id, MemberStatus::Active, audit("member.activate"), NOW)
        .await;
    assert!(is_conflict(&refused(reactivate)));
    let regrant = store
        .grant_member_role(
            &ada.id,
            &RoleGrant {
                role: role("sustainer"),
                expires_at: None,
            },
            audit("role.grant"),
            NOW,
        )
        .await;
    assert!(is_conflict(&refused(regrant)));
    let member = member_by_id(&store, &ada.id, NOW).await;
    assert_eq!(member.status, MemberStatus::Deleted);
    assert_eq!(audit_rows(&store, "member.delete").await.len(), 1);
}

async fn revoking_a_members_sessions_ends_all_of_theirs_and_no_one_elses(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "ada@example.org", &[]).await;
    allowlist(&store, "bob@example.org", &[]).await;
    let first = sign_in(&store, "ada@example.org", NOW).await;
    let second = sign_in(&store, "ada@example.org", NOW).await;
    let bob = sign_in(&store, "bob@example.org", NOW).await;
    for session in [&first, &second, &bob] {
        assert!(session_live(&store, &session.member.id, &session.id, NOW).await);
    }

    let revoked = store
        .revoke_member_sessions(&first.member.id, audit("member.revoke_sessions"), NOW)
        .await
        .unwrap();
    assert_eq!(revoked, Some(2));
    for session in [&first, &second] {
        assert!(!session_live(&store, &session.member.id, &session.id, NOW).await);
    }
    assert!(session_live(&store, &bob.member.id, &bob.id, NOW).await);
    let rows = audit_rows(&store, "member.revoke_sessions").await;
    assert_eq!(details(&rows[0])["sessions"], 2);

    let again = store
        .revoke_member_sessions(&first.member.id, audit("member.revoke_sessions"), NOW)
        .await
        .unwrap();
    assert_eq!(again, Some(0));
    let unknown = store
        .revoke_member_sessions(&MemberId::new(), audit("member.revoke_sessions"), NOW)
        .await
        .unwrap();
    assert_eq!(unknown, None);
}

async fn onboarding_makes_an_active_member_its_allowlist_entry_and_key(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let key = NewApiKey {
        id: "onboardkey".into(),
        name: "sync".into(),
        secret_hash: "$argon2id$placeholder".into(),
        roles: roles(&["sustainer"]),
        created_by: Some("admin-under-test".into()),
        expires_at: None,
    };
    let member = store
        .onboard_member(
            &email("ada@example.org"),
            &roles(&["sustainer"]),
            Some(key),
            audit("member.onboard"),
            NOW,
        )
        .await
        .unwrap();

    assert_eq!(member.email.as_str(), "ada@example.org");
    assert_eq!(member.status, MemberStatus::Active);
    assert_eq!(role_names(&member), ["member", "sustainer"]);
    assert_eq!(member.created_at, NOW);
    assert!(store.is_eligible(&email("ada@example.org")).await.unwrap());
    let entries = store
        .list_eligible(&EligibleFilter {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].claimed_by.as_deref(), Some(member.id.as_str()));
    let record = store
        .api_key("onboardkey", NOW)
        .await
        .unwrap()
        .expect("the key was stored");
    assert_eq!(record.member.id, member.id);
    assert_eq!(record.roles, roles(&["sustainer"]));
    let rows = audit_rows(&store, "member.onboard").await;
    assert_eq!(rows[0].target.as_deref(), Some(member.id.as_str()));
    // The onboarded member signs in as a returning member.
    let session = sign_in(&store, "ada@example.org", NOW + 1).await;
    assert_eq!(session.member.id, member.id);
}

async fn onboarding_refuses_a_member_and_an_unknown_role_and_writes_nothing(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &[]).await;
    allowlist(&store, "bob@example.org", &["active"]).await;

    let twice = store
        .onboard_member(
            &email("ada@example.org"),
            &[],
            None,
            audit("member.onboard"),
            NOW,
        )
        .await;
    assert!(is_conflict(&refused(twice)));
    assert_eq!(member_by_id(&store, &ada.id, NOW).await.email, ada.email);

    let ghost = store
        .onboard_member(
            &email("carl@example.org"),
            &roles(&["ghost"]),
            None,
            audit("member.onboard"),
            NOW,
        )
        .await;
    assert!(is_unknown_role(&refused(ghost)));
    assert!(!store.is_eligible(&email("carl@example.org")).await.unwrap());
    assert_eq!(audit_rows(&store, "member.onboard").await.len(), 1);

    // An allowlisted address that never signed in is onboarded, and its entry claimed.
    let bob = store
        .onboard_member(
            &email("bob@example.org"),
            &[],
            None,
            audit("member.onboard"),
            NOW,
        )
        .await
        .unwrap();
    let unclaimed = store
        .list_eligible(&EligibleFilter {
            claimed: Some(false),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(unclaimed.is_empty(), "{unclaimed:?}");
    assert_eq!(role_names(&bob), ["member"]);
}

store_tests!(
    members_are_listed_by_role_status_and_address,
    the_member_list_pages_by_id,
    a_members_status_is_set_and_suspension_ends_their_sessions,
    a_deleted_member_cannot_be_changed,
    revoking_a_members_sessions_ends_all_of_theirs_and_no_one_elses,
    onboarding_makes_an_active_member_its_allowlist_entry_and_key,
    onboarding_refuses_a_member_and_an_unknown_role_and_writes_nothing,
);

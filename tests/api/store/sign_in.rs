//! Requesting a link (`create_magic_link`, `is_eligible`), redeeming it
//! (`redeem_magic_link`) and typing its code (`spend_code_attempt`).

use std::collections::HashSet;

use gatehouse::domain::MemberStatus;
use gatehouse::store::{EligibleFilter, MemberFilter, OutboxCounts, OutboxQuery, SignedIn};

use super::*;

async fn an_allowlisted_address_gets_a_link_its_mail_and_an_audit_row(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "new@example.org", &[]).await;
    assert!(store.is_eligible(&email("new@example.org")).await.unwrap());

    let request = LinkRequest::new("new@example.org", NOW);
    assert!(request.send(&store).await);

    let counts = store.outbox_counts().await.unwrap();
    assert_eq!(
        counts,
        OutboxCounts {
            queued: 1,
            ..Default::default()
        }
    );
    let page = store
        .outbox_page(OutboxQuery {
            status: None,
            before: None,
            limit: 10,
        })
        .await
        .unwrap();
    assert_eq!(page.len(), 1);
    assert_eq!(page[0].id, request.mail.id);
    assert_eq!(page[0].recipient, "new@example.org");
    let rows = audit_rows(&store, "auth.link_requested").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(
        details(&rows[0]),
        serde_json::json!({ "redirect": true, "eligible": true }),
        "the caller's details, and whether the address is eligible"
    );
    assert_eq!(rows[0].at, NOW);
    assert_eq!(rows[0].ip.as_deref(), Some("192.0.2.7"));
    // The link was stored: it signs in.
    let signed_in = store
        .redeem_magic_link(&request.link.token_hash, new_session(NOW), NOW + 1)
        .await
        .unwrap();
    assert!(signed_in.is_some());
}

async fn an_unknown_address_gets_no_link_and_no_mail_but_an_audit_row(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    assert!(
        !store
            .is_eligible(&email("stranger@example.org"))
            .await
            .unwrap()
    );

    let request = LinkRequest::new("stranger@example.org", NOW);
    assert!(!request.send(&store).await);

    assert_eq!(
        store.outbox_counts().await.unwrap(),
        OutboxCounts::default()
    );
    let rows = audit_rows(&store, "auth.link_requested").await;
    assert_eq!(rows.len(), 1, "the refusal is audited");
    assert_eq!(
        details(&rows[0]),
        serde_json::json!({ "redirect": true, "eligible": false })
    );
    let signed_in = store
        .redeem_magic_link(&request.link.token_hash, new_session(NOW), NOW + 1)
        .await
        .unwrap();
    assert!(signed_in.is_none(), "no link was stored");
    assert!(
        store
            .spend_code_attempt(&email("stranger@example.org"), NOW + 1, 5)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn suspended_and_deleted_members_are_not_eligible_though_allowlisted(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let suspended = onboard(&store, "suspended@example.org", &[]).await;
    let deleted = onboard(&store, "deleted@example.org", &[]).await;
    onboard(&store, "active@example.org", &[]).await;
    store
        .set_member_status(
            &suspended.id,
            MemberStatus::Suspended,
            audit("member.suspend"),
            NOW,
        )
        .await
        .unwrap()
        .expect("known member");
    assert!(
        store
            .delete_member(&deleted.id, audit("member.delete"), NOW)
            .await
            .unwrap()
    );

    for address in ["suspended@example.org", "deleted@example.org"] {
        assert!(
            !store.is_eligible(&email(address)).await.unwrap(),
            "{address}"
        );
        assert!(
            !LinkRequest::new(address, NOW).send(&store).await,
            "{address}"
        );
    }
    assert!(
        store
            .is_eligible(&email("active@example.org"))
            .await
            .unwrap()
    );
    assert!(
        LinkRequest::new("active@example.org", NOW)
            .send(&store)
            .await
    );

    assert_eq!(store.outbox_counts().await.unwrap().queued, 1);
    let eligible: Vec<bool> = audit_rows(&store, "auth.link_requested")
        .await
        .iter()
        .map(|row| details(row)["eligible"].as_bool().expect("eligible flag"))
        .collect();
    // Newest first.
    assert_eq!(eligible, [true, false, false]);
}

async fn a_first_sign_in_creates_the_member_with_member_and_the_preassigned_roles(
    kind: StoreUnderTest,
) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "new@example.org", &["sustainer"]).await;
    let link = link_for(&store, "new@example.org", NOW).await;

    let session = new_session(NOW);
    let session_id = session.id.clone();
    let signed_in = store
        .redeem_magic_link(&link, session, NOW + 5)
        .await
        .unwrap()
        .expect("signed in");

    assert!(signed_in.created);
    assert_eq!(signed_in.session_id, session_id);
    assert_eq!(
        signed_in.redirect_to.as_deref(),
        Some("https://app.example.org/welcome")
    );
    let member = &signed_in.member;
    assert_eq!(member.email.as_str(), "new@example.org");
    assert_eq!(member.status, MemberStatus::Active);
    assert_eq!(role_names(member), ["member", "sustainer"]);
    assert_eq!(member.last_login_at, Some(NOW + 5));
    assert_eq!(&member_by_id(&store, &member.id, NOW + 5).await, member);
    assert!(session_live(&store, &member.id, &session_id, NOW + 5).await);

    let claimed = store
        .list_eligible(&EligibleFilter {
            claimed: Some(true),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].email, "new@example.org");
    assert_eq!(claimed[0].claimed_by.as_deref(), Some(member.id.as_str()));

    let again = sign_in(&store, "new@example.org", NOW + 60).await;
    assert_eq!(again.member.id, member.id, "a returning member");
    assert_eq!(again.member.last_login_at, Some(NOW + 60));
    let audits = audit_rows(&store, "auth.signed_in").await;
    assert_eq!(audits.len(), 2);
    assert_eq!(details(&audits[0])["new_member"], false);
    assert_eq!(details(&audits[1])["new_member"], true);
}

async fn a_link_signs_in_once(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "new@example.org", &[]).await;
    let first = link_for(&store, "new@example.org", NOW).await;
    let second = link_for(&store, "new@example.org", NOW).await;

    for link in [&first, &second] {
        let signed_in = store
            .redeem_magic_link(link, new_session(NOW), NOW + 1)
            .await
            .unwrap();
        assert!(signed_in.is_some(), "each link of a new member works once");
        let replay = new_session(NOW);
        let replayed = store
            .redeem_magic_link(link, replay, NOW + 2)
            .await
            .unwrap();
        assert!(replayed.is_none(), "a used link signs in no one");
    }
    assert_eq!(audit_rows(&store, "auth.signed_in").await.len(), 2);
}

async fn an_expired_link_is_refused(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    onboard(&store, "old@example.org", &[]).await;
    allowlist(&store, "new@example.org", &[]).await;

    for address in ["old@example.org", "new@example.org"] {
        let last_second = link_for(&store, address, NOW).await;
        let expired = link_for(&store, address, NOW).await;
        let refused = store
            .redeem_magic_link(&expired, new_session(NOW), NOW + LINK_TTL)
            .await
            .unwrap();
        assert!(refused.is_none(), "{address}: a link is dead at its expiry");
        let accepted = store
            .redeem_magic_link(&last_second, new_session(NOW), NOW + LINK_TTL - 1)
            .await
            .unwrap();
        assert!(accepted.is_some(), "{address}: alive until then");
    }
}

async fn a_suspended_or_deleted_member_cannot_redeem_a_link_sent_before(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let suspended = onboard(&store, "suspended@example.org", &[]).await;
    let deleted = onboard(&store, "deleted@example.org", &[]).await;
    let suspended_link = link_for(&store, "suspended@example.org", NOW).await;
    let deleted_link = link_for(&store, "deleted@example.org", NOW).await;
    store
        .set_member_status(
            &suspended.id,
            MemberStatus::Suspended,
            audit("member.suspend"),
            NOW + 1,
        )
        .await
        .unwrap();
    store
        .delete_member(&deleted.id, audit("member.delete"), NOW + 1)
        .await
        .unwrap();

    for link in [&suspended_link, &deleted_link] {
        let signed_in = store
            .redeem_magic_link(link, new_session(NOW), NOW + 2)
            .await
            .unwrap();
        assert!(signed_in.is_none());
    }
    assert!(audit_rows(&store, "auth.signed_in").await.is_empty());
    let suspended_now = member_by_id(&store, &suspended.id, NOW + 2).await;
    assert_eq!(suspended_now.status, MemberStatus::Suspended);
    assert_eq!(suspended_now.last_login_at, None, "not stamped");
}

async fn a_link_of_an_address_removed_from_the_allowlist_signs_no_one_in(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "new@example.org", &[]).await;
    let link = link_for(&store, "new@example.org", NOW).await;
    assert!(
        store
            .remove_eligible(&email("new@example.org"), audit("allowlist.remove"), NOW)
            .await
            .unwrap()
    );

    let signed_in = store
        .redeem_magic_link(&link, new_session(NOW), NOW + 1)
        .await
        .unwrap();
    assert!(signed_in.is_none());
    let members = store
        .list_members(
            &MemberFilter {
                limit: 10,
                ..Default::default()
            },
            NOW + 1,
        )
        .await
        .unwrap();
    assert!(members.is_empty(), "no member was created");
}

/// Redeems `link` twice at once, each with its own session; how many signed in.
async fn redeem_twice_at_once(store: &DynStore, link: &TokenHash, now: i64) -> usize {
    let attempts = [new_session(now), new_session(now)].map(|session| {
        let (store, link) = (store.clone(), link.clone());
        tokio::spawn(async move { store.redeem_magic_link(&link, session, now).await })
    });
    let [a, b] = attempts;
    let (a, b) = tokio::join!(a, b);
    [a, b]
        .into_iter()
        .map(|joined| joined.expect("task").expect("redeem"))
        .filter(Option::is_some)
        .count()
}

async fn two_concurrent_redemptions_of_one_link_give_one_session(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    onboard(&store, "old@example.org", &[]).await;
    for round in 0..5 {
        // A returning member's link and, each round, a new member's.
        let old = link_for(&store, "old@example.org", NOW).await;
        assert_eq!(
            redeem_twice_at_once(&store, &old, NOW + 1).await,
            1,
            "returning member, round {round}"
        );
        let address = format!("new{round}@example.org");
        allowlist(&store, &address, &[]).await;
        let new = link_for(&store, &address, NOW).await;
        assert_eq!(
            redeem_twice_at_once(&store, &new, NOW + 1).await,
            1,
            "first sign-in, round {round}"
        );
    }
    assert_eq!(audit_rows(&store, "auth.signed_in").await.len(), 10);
    let members = store
        .list_members(
            &MemberFilter {
                limit: 100,
                ..Default::default()
            },
            NOW + 1,
        )
        .await
        .unwrap();
    assert_eq!(members.len(), 6, "one member per address");
}

/// Redeems two links of `address` at once; both sign-ins.
async fn redeem_two_links_at_once(store: &DynStore, address: &str) -> [SignedIn; 2] {
    let links = [
        link_for(store, address, NOW).await,
        link_for(store, address, NOW).await,
    ];
    let [a, b] = links.map(|link| {
        let store = store.clone();
        tokio::spawn(async move {
            store
                .redeem_magic_link(&link, new_session(NOW), NOW + 1)
                .await
        })
    });
    let (a, b) = tokio::join!(a, b);
    [a, b].map(|joined| {
        joined
            .expect("task")
            .expect("redeem")
            .expect("each link signs in")
    })
}

async fn two_links_of_a_returning_member_redeemed_at_once_both_sign_in(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &[]).await;
    for round in 0..5 {
        let [a, b] = redeem_two_links_at_once(&store, "ada@example.org").await;
        assert_eq!(
            (&a.member.id, &b.member.id),
            (&ada.id, &ada.id),
            "round {round}"
        );
        assert_ne!(a.session_id, b.session_id);
        assert!(!a.created && !b.created);
        assert!(session_live(&store, &ada.id, &a.session_id, NOW + 1).await);
        assert!(session_live(&store, &ada.id, &b.session_id, NOW + 1).await);
    }
}

async fn two_links_of_a_new_address_redeemed_at_once_make_one_member(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    for round in 0..5 {
        let address = format!("new{round}@example.org");
        allowlist(&store, &address, &["sustainer"]).await;
        let [a, b] = redeem_two_links_at_once(&store, &address).await;
        assert_eq!(a.member.id, b.member.id, "round {round}: one member");
        assert_ne!(a.session_id, b.session_id);
        assert!(
            a.created != b.created,
            "round {round}: exactly one created the member"
        );
        assert_eq!(role_names(&a.member), ["member", "sustainer"]);
        assert_eq!(role_names(&b.member), ["member", "sustainer"]);
    }
}

async fn a_code_attempt_is_spent_on_every_live_link_until_the_limit(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "new@example.org", &[]).await;
    let first = LinkRequest::new("new@example.org", NOW);
    let second = LinkRequest::new("new@example.org", NOW);
    let expired = LinkRequest::new("new@example.org", NOW - LINK_TTL);
    for request in [&first, &second, &expired] {
        assert!(request.send(&store).await);
    }
    let live: HashSet<(String, String)> = [&first, &second]
        .iter()
        .map(|r| {
            (
                r.link.token_hash.as_str().to_owned(),
                r.link.code_hash.as_str().to_owned(),
            )
        })
        .collect();
    let spend = |now| {
        let store = store.clone();
        async move {
            store
                .spend_code_attempt(&email("new@example.org"), now, 3)
                .await
                .unwrap()
                .into_iter()
                .map(|(t, c)| (t.as_str().to_owned(), c.as_str().to_owned()))
                .collect::<HashSet<_>>()
        }
    };

    for attempt in 1..=3 {
        assert_eq!(spend(NOW + 1).await, live, "attempt {attempt}");
    }
    assert!(spend(NOW + 1).await.is_empty(), "the limit is reached");

    // A consumed link takes no attempts either.
    let third = LinkRequest::new("new@example.org", NOW);
    assert!(third.send(&store).await);
    let fourth = LinkRequest::new("new@example.org", NOW);
    assert!(fourth.send(&store).await);
    store
        .redeem_magic_link(&third.link.token_hash, new_session(NOW), NOW + 2)
        .await
        .unwrap()
        .expect("signed in");
    let left = spend(NOW + 2).await;
    assert_eq!(left.len(), 1);
    assert!(left.contains(&(
        fourth.link.token_hash.as_str().to_owned(),
        fourth.link.code_hash.as_str().to_owned()
    )));
}

store_tests!(
    an_allowlisted_address_gets_a_link_its_mail_and_an_audit_row,
    an_unknown_address_gets_no_link_and_no_mail_but_an_audit_row,
    suspended_and_deleted_members_are_not_eligible_though_allowlisted,
    a_first_sign_in_creates_the_member_with_member_and_the_preassigned_roles,
    a_link_signs_in_once,
    an_expired_link_is_refused,
    a_suspended_or_deleted_member_cannot_redeem_a_link_sent_before,
    a_link_of_an_address_removed_from_the_allowlist_signs_no_one_in,
    two_concurrent_redemptions_of_one_link_give_one_session,
    two_links_of_a_new_address_redeemed_at_once_make_one_member,
    two_links_of_a_returning_member_redeemed_at_once_both_sign_in,
    a_code_attempt_is_spent_on_every_live_link_until_the_limit,
);

//! Sessions and their refresh tokens: `rotate_refresh_token`, `revoke_session`,
//! `session_member`, and the end of sessions by suspension and deletion —
//! on the cached stores too, where an answer read before a revocation must not
//! outlive it on the instance that revoked.

use gatehouse::domain::MemberStatus;
use gatehouse::store::RefreshOutcome;

use super::*;

/// Rotates `presented` at `now` into a fresh token; the outcome and that token.
async fn rotate(store: &DynStore, presented: &TokenHash, now: i64) -> (RefreshOutcome, TokenHash) {
    let next = new_refresh(now);
    let hash = next.token_hash.clone();
    let outcome = store
        .rotate_refresh_token(presented, next, now)
        .await
        .expect("rotate");
    (outcome, hash)
}

fn is_invalid(outcome: &RefreshOutcome) -> bool {
    matches!(outcome, RefreshOutcome::Invalid)
}

async fn a_refresh_token_rotates_into_the_next_one(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "ada@example.org", &["sustainer"]).await;
    let session = sign_in(&store, "ada@example.org", NOW).await;

    let mut presented = session.refresh.clone();
    for step in 1..=3 {
        let (outcome, next) = rotate(&store, &presented, NOW + step).await;
        match outcome {
            RefreshOutcome::Rotated { member, session_id } => {
                assert_eq!(member.id, session.member.id);
                assert_eq!(role_names(&member), ["member", "sustainer"]);
                assert_eq!(session_id, session.id);
            }
            other => panic!("step {step}: {other:?}"),
        }
        presented = next;
    }
    assert!(session_live(&store, &session.member.id, &session.id, NOW + 4).await);
}

async fn a_rotated_refresh_token_presented_again_revokes_its_session(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "ada@example.org", &[]).await;
    let session = sign_in(&store, "ada@example.org", NOW).await;
    let (outcome, current) = rotate(&store, &session.refresh, NOW + 1).await;
    assert!(matches!(outcome, RefreshOutcome::Rotated { .. }));
    // Read once, so that the cached stores hold the answer.
    assert!(session_live(&store, &session.member.id, &session.id, NOW + 2).await);

    let (replayed, _) = rotate(&store, &session.refresh, NOW + 2).await;
    match replayed {
        RefreshOutcome::Reused {
            member_id,
            session_id,
        } => {
            assert_eq!(member_id, session.member.id.as_str());
            assert_eq!(session_id, session.id);
        }
        other => panic!("expected reuse, got {other:?}"),
    }

    assert!(
        !session_live(&store, &session.member.id, &session.id, NOW + 2).await,
        "the whole family is revoked at once"
    );
    let (after, _) = rotate(&store, &current, NOW + 3).await;
    assert!(is_invalid(&after), "the newest token died with its family");
    let reuse = audit_rows(&store, "auth.refresh_reuse").await;
    assert_eq!(reuse.len(), 1);
    assert_eq!(reuse[0].target.as_deref(), Some(session.member.id.as_str()));
    assert_eq!(details(&reuse[0])["session"], session.id.as_str());
}

async fn two_concurrent_rotations_of_one_token_rotate_once(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "ada@example.org", &[]).await;
    let session = sign_in(&store, "ada@example.org", NOW).await;

    let spawn = || {
        let (store, presented) = (store.clone(), session.refresh.clone());
        tokio::spawn(async move {
            store
                .rotate_refresh_token(&presented, new_refresh(NOW + 1), NOW + 1)
                .await
        })
    };
    let (a, b) = tokio::join!(spawn(), spawn());
    let outcomes = [a, b].map(|joined| joined.expect("task").expect("rotate"));
    let rotated = outcomes
        .iter()
        .filter(|o| matches!(o, RefreshOutcome::Rotated { .. }))
        .count();
    let reused = outcomes
        .iter()
        .filter(|o| matches!(o, RefreshOutcome::Reused { .. }))
        .count();
    // The loser presented a token that had just been rotated: that is reuse.
    assert_eq!((rotated, reused), (1, 1), "{outcomes:?}");
}

async fn unknown_expired_and_revoked_refresh_tokens_are_invalid(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "ada@example.org", &[]).await;

    let (unknown, _) = rotate(&store, &token(), NOW).await;
    assert!(is_invalid(&unknown), "unknown");

    let expiring = sign_in(&store, "ada@example.org", NOW).await;
    let (expired, _) = rotate(&store, &expiring.refresh, NOW + REFRESH_TTL).await;
    assert!(is_invalid(&expired), "expired at its expiry");

    let revoked = sign_in(&store, "ada@example.org", NOW).await;
    assert!(
        store
            .revoke_session(&revoked.id, audit("auth.logout"), NOW + 1)
            .await
            .unwrap()
    );
    let (after_logout, _) = rotate(&store, &revoked.refresh, NOW + 2).await;
    assert!(is_invalid(&after_logout), "its session was revoked");
}

async fn a_suspended_or_deleted_members_refresh_token_is_invalid(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "sus@example.org", &[]).await;
    allowlist(&store, "del@example.org", &[]).await;
    let suspended = sign_in(&store, "sus@example.org", NOW).await;
    let deleted = sign_in(&store, "del@example.org", NOW).await;
    store
        .set_member_status(
            &suspended.member.id,
            MemberStatus::Suspended,
            audit("member.suspend"),
            NOW + 1,
        )
        .await
        .unwrap();
    store
        .delete_member(&deleted.member.id, audit("member.delete"), NOW + 1)
        .await
        .unwrap();

    for session in [&suspended, &deleted] {
        let (outcome, _) = rotate(&store, &session.refresh, NOW + 2).await;
        assert!(is_invalid(&outcome), "{}", session.member.email);
    }

    // Reactivation does not bring the suspended member's session back.
    store
        .set_member_status(
            &suspended.member.id,
            MemberStatus::Active,
            audit("member.activate"),
            NOW + 3,
        )
        .await
        .unwrap();
    let (outcome, _) = rotate(&store, &suspended.refresh, NOW + 4).await;
    assert!(is_invalid(&outcome));
    assert!(!session_live(&store, &suspended.member.id, &suspended.id, NOW + 4).await);
}

async fn a_revoked_session_stops_authenticating_at_once(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "ada@example.org", &[]).await;
    let session = sign_in(&store, "ada@example.org", NOW).await;
    let other = sign_in(&store, "ada@example.org", NOW).await;
    // Read once, so that the cached stores hold the answer.
    assert!(session_live(&store, &session.member.id, &session.id, NOW).await);

    assert!(
        store
            .revoke_session(&session.id, audit("auth.logout"), NOW)
            .await
            .unwrap()
    );

    assert!(!session_live(&store, &session.member.id, &session.id, NOW).await);
    assert!(
        session_live(&store, &other.member.id, &other.id, NOW).await,
        "only that session"
    );
    assert!(
        !store
            .revoke_session(&session.id, audit("auth.logout"), NOW)
            .await
            .unwrap(),
        "already revoked"
    );
    assert!(
        !store
            .revoke_session(&new_id(), audit("auth.logout"), NOW)
            .await
            .unwrap(),
        "unknown"
    );
    assert_eq!(
        audit_rows(&store, "auth.logout").await.len(),
        1,
        "only the revocation that did something is audited"
    );
}

async fn suspension_and_deletion_end_sessions_at_once(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "sus@example.org", &[]).await;
    allowlist(&store, "del@example.org", &[]).await;
    let suspended = sign_in(&store, "sus@example.org", NOW).await;
    let deleted = sign_in(&store, "del@example.org", NOW).await;
    for session in [&suspended, &deleted] {
        assert!(session_live(&store, &session.member.id, &session.id, NOW).await);
    }

    store
        .set_member_status(
            &suspended.member.id,
            MemberStatus::Suspended,
            audit("member.suspend"),
            NOW,
        )
        .await
        .unwrap()
        .expect("known member");
    assert!(!session_live(&store, &suspended.member.id, &suspended.id, NOW).await);
    assert!(session_live(&store, &deleted.member.id, &deleted.id, NOW).await);

    assert!(
        store
            .delete_member(&deleted.member.id, audit("member.delete"), NOW)
            .await
            .unwrap()
    );
    assert!(!session_live(&store, &deleted.member.id, &deleted.id, NOW).await);
}

async fn a_session_authenticates_only_its_own_member(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "ada@example.org", &[]).await;
    allowlist(&store, "bob@example.org", &[]).await;
    let ada = sign_in(&store, "ada@example.org", NOW).await;
    let bob = sign_in(&store, "bob@example.org", NOW).await;

    assert!(!session_live(&store, &bob.member.id, &ada.id, NOW).await);
    assert!(!session_live(&store, &ada.member.id, &new_id(), NOW).await);
    let member = store
        .session_member(&ada.member.id, &ada.id, NOW)
        .await
        .unwrap()
        .expect("live");
    assert_eq!(member.email.as_str(), "ada@example.org");
}

async fn a_session_carries_the_roles_in_force_at_now(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "ada@example.org", &[]).await;
    let session = sign_in(&store, "ada@example.org", NOW).await;
    store
        .grant_member_role(
            &session.member.id,
            &RoleGrant {
                role: role("sustainer"),
                expires_at: Some(NOW + 10),
            },
            audit("role.grant"),
            NOW,
        )
        .await
        .unwrap()
        .expect("known member");

    let at = |now| {
        let store = store.clone();
        let (member, id) = (session.member.id.clone(), session.id.clone());
        async move {
            let member = store
                .session_member(&member, &id, now)
                .await
                .unwrap()
                .expect("live");
            role_names(&member)
                .into_iter()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(at(NOW + 9).await, ["member", "sustainer"]);
    assert_eq!(at(NOW + 10).await, ["member"], "expired at its expiry");
}

async fn a_sessions_roles_change_at_once_with_a_grant_or_revocation(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "ada@example.org", &[]).await;
    let session = sign_in(&store, "ada@example.org", NOW).await;
    let roles_now = || {
        let store = store.clone();
        let (member, id) = (session.member.id.clone(), session.id.clone());
        async move {
            let member = store
                .session_member(&member, &id, NOW)
                .await
                .unwrap()
                .expect("live");
            role_names(&member).join(",")
        }
    };
    // Read once, so that the cached stores hold the answer.
    assert_eq!(roles_now().await, "member");

    store
        .grant_member_role(
            &session.member.id,
            &RoleGrant {
                role: role("sustainer"),
                expires_at: None,
            },
            audit("role.grant"),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(roles_now().await, "member,sustainer");

    store
        .revoke_member_role(
            &session.member.id,
            &role("sustainer"),
            audit("role.revoke"),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(roles_now().await, "member");

    store
        .set_member_roles(
            &session.member.id,
            &roles(&["member", "active"]),
            audit("role.set"),
            NOW,
        )
        .await
        .unwrap();
    assert_eq!(roles_now().await, "active,member");
}

async fn many_concurrent_session_checks_each_get_their_own_answer(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "ada@example.org", &[]).await;
    allowlist(&store, "bob@example.org", &[]).await;
    let ada = sign_in(&store, "ada@example.org", NOW).await;
    let bob = sign_in(&store, "bob@example.org", NOW).await;
    let revoked = sign_in(&store, "ada@example.org", NOW).await;
    store
        .revoke_session(&revoked.id, audit("auth.logout"), NOW)
        .await
        .unwrap();
    // (member, session, the address that must answer, if any)
    let cases = [
        (&ada.member.id, ada.id.clone(), Some("ada@example.org")),
        (&bob.member.id, bob.id.clone(), Some("bob@example.org")),
        (&ada.member.id, revoked.id.clone(), None),
        (&bob.member.id, ada.id.clone(), None),
        (&ada.member.id, new_id(), None),
    ];

    let checks: Vec<_> = (0..60)
        .map(|i| {
            let (member, session, expected) = cases[i % cases.len()].clone();
            let (store, member) = (store.clone(), member.clone());
            let now = NOW + (i % 3) as i64;
            let check =
                tokio::spawn(async move { store.session_member(&member, &session, now).await });
            (check, expected)
        })
        .collect();
    for (i, (check, expected)) in checks.into_iter().enumerate() {
        let answer = check.await.expect("task").expect("session check");
        let address = answer.as_ref().map(|m| m.email.as_str());
        assert_eq!(address, expected, "check {i}");
    }
}

store_tests!(
    a_refresh_token_rotates_into_the_next_one,
    a_rotated_refresh_token_presented_again_revokes_its_session,
    two_concurrent_rotations_of_one_token_rotate_once,
    unknown_expired_and_revoked_refresh_tokens_are_invalid,
    a_suspended_or_deleted_members_refresh_token_is_invalid,
    a_revoked_session_stops_authenticating_at_once,
    suspension_and_deletion_end_sessions_at_once,
    a_session_authenticates_only_its_own_member,
    a_session_carries_the_roles_in_force_at_now,
    a_sessions_roles_change_at_once_with_a_grant_or_revocation,
    many_concurrent_session_checks_each_get_their_own_answer,
);

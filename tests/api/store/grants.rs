//! Role grants as admins make them (replace, grant with expiry, revoke), and
//! the guard that keeps one active admin: a change that would leave none is
//! refused and changes nothing.

use gatehouse::domain::MemberStatus;

use super::*;

async fn setting_roles_replaces_them_and_keeps_the_expiry_of_grants_that_stay(
    kind: StoreUnderTest,
) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &[]).await;
    grant(&store, &ada.id, "sustainer", Some(NOW + 100), NOW).await;

    let member = store
        .set_member_roles(
            &ada.id,
            &roles(&["member", "sustainer", "active"]),
            audit("role.set"),
            NOW + 1,
        )
        .await
        .unwrap()
        .expect("known member");
    assert_eq!(role_names(&member), ["active", "member", "sustainer"]);
    assert_eq!(
        role_names(&member_by_id(&store, &ada.id, NOW + 100).await),
        ["active", "member"],
        "the sustainer grant kept its expiry"
    );

    let unknown_role = store
        .set_member_roles(&ada.id, &roles(&["ghost"]), audit("role.set"), NOW + 2)
        .await;
    assert!(is_unknown_role(&refused(unknown_role)));
    assert_eq!(
        role_names(&member_by_id(&store, &ada.id, NOW + 2).await),
        ["active", "member", "sustainer"],
        "a refused change changes nothing"
    );

    let member = store
        .set_member_roles(&ada.id, &roles(&["member"]), audit("role.set"), NOW + 3)
        .await
        .unwrap()
        .expect("known member");
    assert_eq!(role_names(&member), ["member"]);
    assert_eq!(audit_rows(&store, "role.set").await.len(), 2);

    let unknown_member = store
        .set_member_roles(
            &MemberId::new(),
            &roles(&["member"]),
            audit("role.set"),
            NOW,
        )
        .await
        .unwrap();
    assert!(unknown_member.is_none());
}

async fn a_grant_counts_until_its_expiry_and_can_be_changed_or_revoked(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &[]).await;

    let member = store
        .grant_member_role(
            &ada.id,
            &RoleGrant {
                role: role("sustainer"),
                expires_at: Some(NOW),
            },
            audit("role.grant"),
            NOW,
        )
        .await
        .unwrap()
        .expect("known member");
    assert_eq!(
        role_names(&member),
        ["member"],
        "a grant that ends now is not in force now"
    );
    assert_eq!(
        role_names(&member_by_id(&store, &ada.id, NOW - 1).await),
        ["member", "sustainer"]
    );

    grant(&store, &ada.id, "sustainer", None, NOW + 1).await;
    assert_eq!(
        role_names(&member_by_id(&store, &ada.id, NOW + DAY * 365).await),
        ["member", "sustainer"],
        "re-granting replaced the expiry"
    );

    let member = store
        .revoke_member_role(&ada.id, &role("sustainer"), audit("role.revoke"), NOW + 2)
        .await
        .unwrap()
        .expect("known member");
    assert_eq!(role_names(&member), ["member"]);
    assert_eq!(audit_rows(&store, "role.revoke").await.len(), 1);

    let ghost = store
        .grant_member_role(
            &ada.id,
            &RoleGrant {
                role: role("ghost"),
                expires_at: None,
            },
            audit("role.grant"),
            NOW,
        )
        .await;
    assert!(is_unknown_role(&refused(ghost)));
    let nobody = store
        .grant_member_role(
            &MemberId::new(),
            &RoleGrant {
                role: role("sustainer"),
                expires_at: None,
            },
            audit("role.grant"),
            NOW,
        )
        .await
        .unwrap();
    assert!(nobody.is_none());
    let nobody = store
        .revoke_member_role(
            &MemberId::new(),
            &role("sustainer"),
            audit("role.revoke"),
            NOW,
        )
        .await
        .unwrap();
    assert!(nobody.is_none());
}

/// The admin's state after a refused change: still active, still admin, session live.
async fn assert_still_the_admin(store: &DynStore, admin: &Session, now: i64, what: &str) {
    let member = member_by_id(store, &admin.member.id, now).await;
    assert_eq!(member.status, MemberStatus::Active, "{what}");
    assert!(member.has_role("admin"), "{what}");
    assert!(
        session_live(store, &admin.member.id, &admin.id, now).await,
        "{what}: the session survived"
    );
}

async fn the_last_active_admin_cannot_be_demoted_suspended_or_deleted(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "root@example.org", &["admin"]).await;
    let admin = sign_in(&store, "root@example.org", NOW).await;
    let id = admin.member.id.clone();
    assert!(admin.member.has_role("admin"));

    let demoted = store
        .revoke_member_role(&id, &role("admin"), audit("role.revoke"), NOW)
        .await;
    assert!(is_last_admin(&refused(demoted)));
    assert_still_the_admin(&store, &admin, NOW, "revoke admin").await;

    let replaced = store
        .set_member_roles(&id, &roles(&["member"]), audit("role.set"), NOW)
        .await;
    assert!(is_last_admin(&refused(replaced)));
    assert_still_the_admin(&store, &admin, NOW, "set roles").await;

    let expiring = store
        .grant_member_role(
            &id,
            &RoleGrant {
                role: role("admin"),
                expires_at: Some(NOW),
            },
            audit("role.grant"),
            NOW,
        )
        .await;
    assert!(is_last_admin(&refused(expiring)));
    assert_still_the_admin(&store, &admin, NOW, "let admin expire").await;

    let suspended = store
        .set_member_status(&id, MemberStatus::Suspended, audit("member.suspend"), NOW)
        .await;
    assert!(is_last_admin(&refused(suspended)));
    assert_still_the_admin(&store, &admin, NOW, "suspend").await;

    let deleted = store.delete_member(&id, audit("member.delete"), NOW).await;
    assert!(is_last_admin(&refused(deleted)));
    assert_still_the_admin(&store, &admin, NOW, "delete").await;

    for action in [
        "role.revoke",
        "role.set",
        "role.grant",
        "member.suspend",
        "member.delete",
    ] {
        assert!(
            audit_rows(&store, action).await.is_empty(),
            "{action}: a refused change is not audited"
        );
    }
    // The store still works after the refusals.
    let other = sign_in(&store, "root@example.org", NOW + 1).await;
    assert_eq!(other.member.id, id);
}

async fn an_admin_may_be_demoted_while_another_active_admin_remains(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let first = onboard(&store, "first@example.org", &["admin"]).await;
    let second = onboard(&store, "second@example.org", &["admin"]).await;
    let expiring = onboard(&store, "expiring@example.org", &[]).await;
    grant(&store, &expiring.id, "admin", Some(NOW + 5), NOW).await;

    // A suspended admin does not count as one.
    store
        .set_member_status(
            &second.id,
            MemberStatus::Suspended,
            audit("member.suspend"),
            NOW,
        )
        .await
        .unwrap();
    // Nor does one whose grant has ended.
    let refused_later = store
        .revoke_member_role(&first.id, &role("admin"), audit("role.revoke"), NOW + 5)
        .await;
    assert!(is_last_admin(&refused(refused_later)));

    let member = store
        .revoke_member_role(&first.id, &role("admin"), audit("role.revoke"), NOW + 4)
        .await
        .unwrap()
        .expect("known member");
    assert!(
        !member.has_role("admin"),
        "the expiring admin still counted"
    );
    let last = store
        .delete_member(&expiring.id, audit("member.delete"), NOW + 4)
        .await;
    assert!(is_last_admin(&refused(last)));
}

store_tests!(
    setting_roles_replaces_them_and_keeps_the_expiry_of_grants_that_stay,
    a_grant_counts_until_its_expiry_and_can_be_changed_or_revoked,
    the_last_active_admin_cannot_be_demoted_suspended_or_deleted,
    an_admin_may_be_demoted_while_another_active_admin_remains,
);

//! Roles: the built-in four, custom roles created and deleted by admins, and
//! how many members hold each.

use gatehouse::domain::MemberStatus;
use gatehouse::store::RoleInfo;

use super::*;

async fn role_info(store: &DynStore, name: &str, now: i64) -> Option<RoleInfo> {
    store
        .list_roles(now)
        .await
        .expect("list roles")
        .into_iter()
        .find(|r| r.name == name)
}

async fn the_builtin_roles_exist_in_a_new_database(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    assert_eq!(
        store.role_names().await.unwrap(),
        ["active", "admin", "member", "sustainer"]
    );
    let listed = store.list_roles(NOW).await.unwrap();
    assert_eq!(listed.len(), 4);
    for info in listed {
        assert!(info.builtin, "{}", info.name);
        assert_eq!(info.members, 0, "{}", info.name);
    }
}

async fn a_custom_role_is_created_once_and_counts_its_current_holders(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    store
        .create_role(&role("board"), "The board", audit("role.create"), NOW)
        .await
        .unwrap();
    let twice = store
        .create_role(&role("board"), "Again", audit("role.create"), NOW)
        .await;
    assert!(is_conflict(&refused(twice)));

    let info = role_info(&store, "board", NOW).await.expect("listed");
    assert_eq!(info.description, "The board");
    assert!(!info.builtin);
    assert_eq!(info.members, 0);
    assert!(
        store
            .role_names()
            .await
            .unwrap()
            .iter()
            .any(|n| n == "board")
    );
    assert_eq!(audit_rows(&store, "role.create").await.len(), 1);

    let holder = onboard(&store, "holder@example.org", &["board"]).await;
    let expired = onboard(&store, "expired@example.org", &[]).await;
    let gone = onboard(&store, "gone@example.org", &["board"]).await;
    let suspended = onboard(&store, "suspended@example.org", &["board"]).await;
    grant(&store, &expired.id, "board", Some(NOW + 10), NOW).await;
    store
        .delete_member(&gone.id, audit("member.delete"), NOW)
        .await
        .unwrap();
    store
        .set_member_status(
            &suspended.id,
            MemberStatus::Suspended,
            audit("member.suspend"),
            NOW,
        )
        .await
        .unwrap();
    assert!(holder.has_role("board"));

    // Deleted members and ended grants are left out; a suspended member still holds it.
    assert_eq!(
        role_info(&store, "board", NOW + 9).await.unwrap().members,
        3
    );
    assert_eq!(
        role_info(&store, "board", NOW + 10).await.unwrap().members,
        2
    );
    assert_eq!(
        role_info(&store, "member", NOW + 10).await.unwrap().members,
        3
    );
}

async fn a_builtin_or_unknown_role_cannot_be_deleted(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    for name in ["admin", "member", "active", "sustainer"] {
        let deleted = store
            .delete_role(&role(name), true, audit("role.delete"), NOW)
            .await;
        assert!(is_builtin_role(&refused(deleted)), "{name}");
    }
    let unknown = store
        .delete_role(&role("ghost"), false, audit("role.delete"), NOW)
        .await;
    assert!(is_not_found(&refused(unknown)));
    assert_eq!(store.role_names().await.unwrap().len(), 4);
    assert!(audit_rows(&store, "role.delete").await.is_empty());
}

async fn a_role_still_granted_is_deleted_only_with_force(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    store
        .create_role(&role("board"), "", audit("role.create"), NOW)
        .await
        .unwrap();
    let holder = onboard(&store, "holder@example.org", &["board"]).await;

    let in_use = store
        .delete_role(&role("board"), false, audit("role.delete"), NOW)
        .await;
    assert!(is_role_in_use(&refused(in_use)));
    assert!(role_info(&store, "board", NOW).await.is_some());
    assert!(
        member_by_id(&store, &holder.id, NOW)
            .await
            .has_role("board")
    );

    store
        .delete_role(&role("board"), true, audit("role.delete"), NOW)
        .await
        .unwrap();
    assert!(role_info(&store, "board", NOW).await.is_none());
    assert_eq!(
        role_names(&member_by_id(&store, &holder.id, NOW).await),
        ["member"]
    );
    let rows = audit_rows(&store, "role.delete").await;
    assert_eq!(rows.len(), 1);
    assert_eq!(details(&rows[0])["revoked_grants"], 1);

    let regrant = store
        .grant_member_role(
            &holder.id,
            &RoleGrant {
                role: role("board"),
                expires_at: None,
            },
            audit("role.grant"),
            NOW,
        )
        .await;
    assert!(is_unknown_role(&refused(regrant)));
}

async fn an_unused_custom_role_is_deleted_without_force(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    store
        .create_role(&role("board"), "", audit("role.create"), NOW)
        .await
        .unwrap();
    store
        .delete_role(&role("board"), false, audit("role.delete"), NOW)
        .await
        .unwrap();
    assert!(role_info(&store, "board", NOW).await.is_none());
}

async fn a_preassigned_role_deleted_before_the_first_sign_in_is_skipped(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    store
        .create_role(&role("board"), "", audit("role.create"), NOW)
        .await
        .unwrap();
    allowlist(&store, "new@example.org", &["board", "sustainer"]).await;
    store
        .delete_role(&role("board"), false, audit("role.delete"), NOW)
        .await
        .unwrap();

    let session = sign_in(&store, "new@example.org", NOW + 1).await;
    assert_eq!(role_names(&session.member), ["member", "sustainer"]);
}

store_tests!(
    the_builtin_roles_exist_in_a_new_database,
    a_custom_role_is_created_once_and_counts_its_current_holders,
    a_builtin_or_unknown_role_cannot_be_deleted,
    a_role_still_granted_is_deleted_only_with_force,
    an_unused_custom_role_is_deleted_without_force,
    a_preassigned_role_deleted_before_the_first_sign_in_is_skipped,
);

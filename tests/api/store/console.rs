//! What the admin console reads and keeps: the overview's counts, a member's
//! grants with their expiry, and roster uploads staged between their dry run
//! and their import (gone after a day).

use gatehouse::domain::MemberStatus;
use gatehouse::store::{Overview, Retention, STAGED_UPLOAD_TTL_SECS, StagedUpload};

use super::*;

async fn the_overview_counts_members_entries_and_live_keys(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    assert_eq!(store.overview(NOW).await.unwrap(), Overview::default());

    let ada = onboard(&store, "ada@example.org", &[]).await;
    let ben = onboard(&store, "ben@example.org", &[]).await;
    allowlist(&store, "cleo@example.org", &[]).await;
    store
        .set_member_status(
            &ben.id,
            MemberStatus::Suspended,
            audit("member.status"),
            NOW,
        )
        .await
        .unwrap();
    for (name, expires_at) in [("live", None), ("expired", Some(NOW - 1))] {
        let key = gatehouse::store::NewApiKey {
            id: new_id(),
            name: name.into(),
            secret_hash: "hash".into(),
            roles: roles(&["member"]),
            created_by: None,
            expires_at,
        };
        store
            .create_api_key(&ada.id, key, audit("apikey.created"), NOW - 10)
            .await
            .unwrap();
    }

    let overview = store.overview(NOW).await.unwrap();
    assert_eq!(
        overview,
        Overview {
            active_members: 1,
            suspended_members: 1,
            deleted_members: 0,
            claimed_entries: 2,
            unclaimed_entries: 1,
            live_api_keys: 1,
        }
    );
}

async fn a_members_grants_carry_their_expiry_and_leave_when_it_passes(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ada = onboard(&store, "ada@example.org", &[]).await;
    grant(&store, &ada.id, "sustainer", Some(NOW + DAY), NOW).await;
    let grants = store.member_grants(&ada.id, NOW).await.unwrap();
    let listed: Vec<(&str, Option<i64>)> = grants
        .iter()
        .map(|g| (g.role.as_str(), g.expires_at))
        .collect();
    assert_eq!(listed, [("member", None), ("sustainer", Some(NOW + DAY))]);
    let later = store.member_grants(&ada.id, NOW + DAY).await.unwrap();
    assert_eq!(later.len(), 1, "the sustainer grant ended");
    assert!(
        store
            .member_grants(&MemberId::new(), NOW)
            .await
            .unwrap()
            .is_empty()
    );
}

async fn a_staged_upload_is_kept_whole_until_discarded_or_a_day_old(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    // Not UTF-8 on purpose: the file is kept as bytes, exactly as sent.
    let body = b"email\nada@example.org\n\xff\xfe\n".to_vec();
    let upload = |id: &str, created_at: i64| StagedUpload {
        id: id.into(),
        created_by: "admin-id".into(),
        filename: "roster.csv".into(),
        body: body.clone(),
        created_at,
    };
    store.stage_upload(&upload("fresh", NOW)).await.unwrap();
    store
        .stage_upload(&upload("stale", NOW - STAGED_UPLOAD_TTL_SECS - 1))
        .await
        .unwrap();
    let kept = store.staged_upload("fresh").await.unwrap().expect("kept");
    assert_eq!(kept.body, body);
    assert_eq!(
        (kept.created_by.as_str(), kept.filename.as_str()),
        ("admin-id", "roster.csv")
    );

    store.prune(NOW, &Retention::default(), 100).await.unwrap();
    assert!(
        store.staged_upload("stale").await.unwrap().is_none(),
        "a day old: purged"
    );
    assert!(store.staged_upload("fresh").await.unwrap().is_some());
    assert!(store.discard_upload("fresh").await.unwrap());
    assert!(
        !store.discard_upload("fresh").await.unwrap(),
        "already gone"
    );
    assert!(store.staged_upload("fresh").await.unwrap().is_none());
}

store_tests!(
    the_overview_counts_members_entries_and_live_keys,
    a_members_grants_carry_their_expiry_and_leave_when_it_passes,
    a_staged_upload_is_kept_whole_until_discarded_or_a_day_old,
);

//! `purge_expired`: expired links (kept a day past expiry), old rate-limit
//! windows and expired refresh tokens go; nothing live does.

use gatehouse::store::RefreshOutcome;

use super::*;

async fn purging_removes_only_what_has_expired(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    assert_eq!(store.purge_expired(NOW).await.unwrap(), 0, "nothing yet");
    allowlist(&store, "ada@example.org", &[]).await;

    // Links: one dead for two days (purged), one dead for an hour (kept a
    // day), one live.
    let long_dead = LinkRequest::new("ada@example.org", NOW - 2 * DAY - LINK_TTL);
    let just_dead = LinkRequest::new("ada@example.org", NOW - HOUR - LINK_TTL);
    for request in [&long_dead, &just_dead] {
        assert!(request.send(&store).await);
    }
    // A session signed in long ago, whose refresh token has expired (its
    // link, consumed, is long dead too), and one signed in now.
    let old = sign_in(&store, "ada@example.org", NOW - REFRESH_TTL - 10).await;
    let fresh = sign_in(&store, "ada@example.org", NOW).await;
    let live_link = link_for(&store, "ada@example.org", NOW).await;
    // Rate-limit windows: one two days old (purged), one an hour old.
    store
        .hit_rate_limit("ip:old", MINUTE, NOW - 2 * DAY)
        .await
        .unwrap();
    store
        .hit_rate_limit("ip:recent", 2 * HOUR, NOW - HOUR)
        .await
        .unwrap();

    // Two links, one window, one refresh token.
    assert_eq!(store.purge_expired(NOW).await.unwrap(), 4);
    assert_eq!(store.purge_expired(NOW).await.unwrap(), 0, "once");

    assert_eq!(
        store
            .rate_limit_hits("ip:recent", 2 * HOUR, NOW)
            .await
            .unwrap(),
        1
    );
    let outcome = store
        .rotate_refresh_token(&fresh.refresh, new_refresh(NOW), NOW)
        .await
        .unwrap();
    assert!(
        matches!(outcome, RefreshOutcome::Rotated { .. }),
        "{outcome:?}"
    );
    let old_token = store
        .rotate_refresh_token(&old.refresh, new_refresh(NOW), NOW)
        .await
        .unwrap();
    assert!(matches!(old_token, RefreshOutcome::Invalid));
    assert!(
        store
            .redeem_magic_link(&live_link, new_session(NOW), NOW + 1)
            .await
            .unwrap()
            .is_some(),
        "the live link survived"
    );
    assert_eq!(
        store
            .spend_code_attempt(&email("ada@example.org"), NOW, 5)
            .await
            .unwrap()
            .len(),
        0,
        "no other live link"
    );
}

store_tests!(purging_removes_only_what_has_expired);

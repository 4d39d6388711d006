//! Webhooks in the store: events written with the change only when an enabled
//! endpoint listens, leases that hand each delivery to one claimer, outcomes
//! that never overwrite a final state, failure streaks that disable an
//! endpoint, and redelivery.

use gatehouse::domain::EventType;
use gatehouse::store::{
    DeliveryStatus, LeaseToken, NewWebhook, RedeliverOutcome, WebhookPatch, WebhookResult,
};

use super::*;

const LEASE: i64 = 60;

async fn endpoint(store: &DynStore, events: &[EventType], now: i64) -> String {
    let id = new_id();
    store
        .create_webhook(
            NewWebhook {
                id: id.clone(),
                url: "https://hooks.example.org/in".into(),
                events: events.to_vec(),
                description: None,
                secret_sealed: "sealed".into(),
                created_by: None,
            },
            audit("webhook.created"),
            now,
        )
        .await
        .expect("create webhook");
    id
}

/// Claims under a lease of its own.
async fn claim(store: &DynStore, now: i64) -> Vec<(String, String)> {
    claim_as(store, &LeaseToken::generate(), now).await
}

async fn claim_as(store: &DynStore, lease: &LeaseToken, now: i64) -> Vec<(String, String)> {
    store
        .claim_due_webhooks(lease, now, LEASE, 10)
        .await
        .expect("claim")
        .into_iter()
        .map(|due| (due.endpoint_id, due.event_id))
        .collect()
}

async fn statuses(store: &DynStore, hook: &str) -> Vec<(DeliveryStatus, i64)> {
    store
        .webhook_deliveries(hook, None, 50)
        .await
        .expect("deliveries")
        .into_iter()
        .map(|d| (d.status, d.attempts))
        .collect()
}

async fn changes_write_events_only_for_listening_endpoints(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    // No endpoint: the change writes no event.
    onboard(&store, "ann@example.org", &[]).await;
    assert_eq!(store.webhook_counts().await.unwrap().pending, 0);

    let created = endpoint(&store, &[EventType::MemberCreated], 1000).await;
    let deleted = endpoint(&store, &[EventType::MemberDeleted], 1000).await;
    onboard(&store, "bob@example.org", &[]).await;
    assert_eq!(statuses(&store, &created).await.len(), 1);
    assert!(statuses(&store, &deleted).await.is_empty());

    let patch = WebhookPatch {
        enabled: Some(false),
        ..Default::default()
    };
    let off = store
        .update_webhook(&created, patch, audit("webhook.updated"), 1001)
        .await
        .unwrap()
        .expect("known");
    assert!(!off.enabled);
    assert_eq!(off.disabled_reason.as_deref(), Some("disabled by an admin"));
    onboard(&store, "carl@example.org", &[]).await;
    assert_eq!(
        statuses(&store, &created).await.len(),
        1,
        "none while disabled"
    );
}

async fn a_lease_hands_each_delivery_to_one_claimer_until_it_runs_out(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let hook = endpoint(&store, &[EventType::MemberCreated], 1000).await;
    onboard(&store, "ann@example.org", &[]).await;
    let now = NOW + 10;
    let first = claim(&store, now).await;
    assert_eq!(first.len(), 1);
    assert!(claim(&store, now).await.is_empty(), "leased");
    let lease = LeaseToken::generate();
    assert_eq!(
        claim_as(&store, &lease, now + LEASE).await,
        first,
        "the lease ran out"
    );

    let outcome = WebhookResult::Retry {
        next_attempt_at: now + 500,
        status: Some(500),
        error: "HTTP 500".into(),
    };
    store
        .finish_webhooks(&lease, &[(first[0].clone(), outcome)], 86_400, now + LEASE)
        .await
        .unwrap();
    assert_eq!(
        statuses(&store, &hook).await,
        [(DeliveryStatus::Pending, 1)]
    );
    let failing = store.webhook(&hook).await.unwrap().unwrap();
    assert_eq!(failing.failing_since, Some(now + LEASE));
    assert!(claim(&store, now + 499).await.is_empty());

    let stale = lease;
    let lease = LeaseToken::generate();
    assert_eq!(claim_as(&store, &lease, now + 500).await, first);
    let delivered = WebhookResult::Delivered { status: 204 };
    store
        .finish_webhooks(
            &lease,
            &[(first[0].clone(), delivered.clone())],
            86_400,
            now + 500,
        )
        .await
        .unwrap();
    // A late outcome, of this lease or an earlier one, does not undo the final state.
    let late = WebhookResult::Failed {
        status: None,
        error: "late".into(),
    };
    for lease in [&lease, &stale] {
        store
            .finish_webhooks(
                lease,
                &[(first[0].clone(), late.clone())],
                86_400,
                now + 501,
            )
            .await
            .unwrap();
    }
    assert_eq!(
        statuses(&store, &hook).await,
        [(DeliveryStatus::Delivered, 2)]
    );
    assert_eq!(
        store.webhook(&hook).await.unwrap().unwrap().failing_since,
        None
    );

    let event = &first[0].1;
    let again = store
        .redeliver_webhook(&hook, event, audit("webhook.redelivered"), now + 600)
        .await
        .unwrap();
    assert!(matches!(again, RedeliverOutcome::Queued(ref d) if d.attempts == 0));
    assert!(matches!(
        store
            .redeliver_webhook(&hook, event, audit("webhook.redelivered"), now + 600)
            .await
            .unwrap(),
        RedeliverOutcome::Pending
    ));
    assert_eq!(claim(&store, now + 600).await, first, "the same event id");
}

async fn an_endpoint_failing_past_the_limit_is_disabled_with_a_reason(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let hook = endpoint(&store, &[EventType::MemberCreated], 1000).await;
    onboard(&store, "ann@example.org", &[]).await;
    let now = NOW + 10;
    let lease = LeaseToken::generate();
    let key = claim_as(&store, &lease, now).await.remove(0);
    let retry = |at: i64| WebhookResult::Retry {
        next_attempt_at: at,
        status: None,
        error: "cannot connect".into(),
    };
    store
        .finish_webhooks(&lease, &[(key.clone(), retry(now + 100))], 3600, now)
        .await
        .unwrap();
    assert!(store.webhook(&hook).await.unwrap().unwrap().enabled);
    let lease = LeaseToken::generate();
    claim_as(&store, &lease, now + 3600).await;
    store
        .finish_webhooks(&lease, &[(key, retry(now + 7200))], 3600, now + 3600)
        .await
        .unwrap();
    let disabled = store.webhook(&hook).await.unwrap().unwrap();
    assert!(!disabled.enabled);
    assert!(disabled.disabled_reason.unwrap().contains("cannot connect"));
    assert_eq!(audit_rows(&store, "webhook.disabled").await.len(), 1);
    assert!(
        claim(&store, now + 7200).await.is_empty(),
        "a disabled endpoint gets nothing"
    );

    assert!(
        store
            .delete_webhook(&hook, audit("webhook.deleted"), now)
            .await
            .unwrap()
    );
    assert!(store.webhook(&hook).await.unwrap().is_none());
    assert_eq!(store.webhook_counts().await.unwrap().pending, 0);
}

/// No event without its change: a refused change, and an import's dry run
/// (rolled back), leave no event behind.
async fn a_change_that_does_not_commit_leaves_no_event(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let admin = onboard(&store, "admin@example.org", &["admin"]).await;
    let hook = endpoint(
        &store,
        &[EventType::MemberUpdated, EventType::AllowlistImported],
        NOW,
    )
    .await;

    let refused = store
        .set_member_status(
            &admin.id,
            gatehouse::domain::MemberStatus::Suspended,
            audit("member.suspended"),
            NOW,
        )
        .await;
    assert!(is_last_admin(&refused.unwrap_err()));
    assert!(
        import(
            &store,
            "dry",
            vec![entry("ann@example.org", &[])],
            true,
            NOW
        )
        .await
        .is_some()
    );
    assert!(
        statuses(&store, &hook).await.is_empty(),
        "nothing committed, nothing sent"
    );

    import(
        &store,
        "real",
        vec![entry("ann@example.org", &[])],
        false,
        NOW,
    )
    .await;
    assert_eq!(statuses(&store, &hook).await.len(), 1);
}

/// A claim writes its token: only that token renews the lease, a renewed
/// delivery is not due at the end of its first lease, an expired one is
/// claimed by another token, and from then on the stale claimer's outcome
/// changes nothing.
async fn a_delivery_lease_is_kept_by_its_token_alone(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let hook = endpoint(&store, &[EventType::MemberCreated], 1000).await;
    onboard(&store, "ann@example.org", &[]).await;
    let now = NOW + 10;
    let lease = LeaseToken::generate();
    let keys = claim_as(&store, &lease, now).await;
    assert_eq!(keys.len(), 1);

    let other = LeaseToken::generate();
    assert!(
        store
            .renew_webhook_lease(&other, now + 500)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        store
            .renew_webhook_lease(&lease, now + 2 * LEASE)
            .await
            .unwrap(),
        keys
    );
    assert!(
        claim(&store, now + LEASE).await.is_empty(),
        "renewed past the first lease's end"
    );

    let fresh = LeaseToken::generate();
    assert_eq!(
        claim_as(&store, &fresh, now + 2 * LEASE).await,
        keys,
        "the expired lease is claimable by another token"
    );
    assert!(
        store
            .renew_webhook_lease(&lease, now + 10_000)
            .await
            .unwrap()
            .is_empty(),
        "the stale claimer holds nothing"
    );
    let delivered = WebhookResult::Delivered { status: 200 };
    store
        .finish_webhooks(
            &lease,
            &[(keys[0].clone(), delivered)],
            86_400,
            now + 2 * LEASE,
        )
        .await
        .unwrap();
    assert_eq!(
        statuses(&store, &hook).await,
        [(DeliveryStatus::Pending, 0)],
        "the stale claimer's outcome changed nothing"
    );

    let retry = WebhookResult::Retry {
        next_attempt_at: now + 2 * LEASE + 30,
        status: Some(503),
        error: "HTTP 503".into(),
    };
    store
        .finish_webhooks(&fresh, &[(keys[0].clone(), retry)], 86_400, now + 2 * LEASE)
        .await
        .unwrap();
    assert_eq!(
        statuses(&store, &hook).await,
        [(DeliveryStatus::Pending, 1)]
    );
    assert!(
        store
            .renew_webhook_lease(&fresh, now + 10_000)
            .await
            .unwrap()
            .is_empty(),
        "a recorded delivery leaves the lease"
    );
    assert!(claim(&store, now + 2 * LEASE + 29).await.is_empty());
    assert_eq!(claim(&store, now + 2 * LEASE + 30).await, keys);
}

store_tests!(
    a_delivery_lease_is_kept_by_its_token_alone,
    changes_write_events_only_for_listening_endpoints,
    a_lease_hands_each_delivery_to_one_claimer_until_it_runs_out,
    an_endpoint_failing_past_the_limit_is_disabled_with_a_reason,
    a_change_that_does_not_commit_leaves_no_event,
);

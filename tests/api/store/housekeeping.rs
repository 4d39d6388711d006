//! Housekeeping (`prune`): each kind of row goes once it has served its
//! purpose and its retention has passed, and nothing live goes with it; a
//! backlog larger than a batch goes in one round; the audit log stays unless a
//! retention is set; on Postgres a round runs on one instance at a time.

use gatehouse::store::{
    Backend as _, HousekeepingStore as _, LeaseToken, MailResult, Prunable, PruneOutcome,
    PruneReport, RefreshOutcome, Retention,
};

use super::*;

const BATCH: u32 = 100;

/// Runs a round at `now`; it must not be skipped.
async fn prune(store: &DynStore, now: i64, retention: &Retention, batch: u32) -> PruneReport {
    match store.prune(now, retention, batch).await.expect("prune") {
        PruneOutcome::Pruned(report) => report,
        PruneOutcome::Skipped => panic!("nobody else runs housekeeping here"),
    }
}

/// Signs in at `signed_in`, rotates the refresh token at `rotated`, and
/// returns the session with the token that was rotated away.
async fn sign_in_and_rotate(
    store: &DynStore,
    signed_in: i64,
    rotated: i64,
) -> (Session, TokenHash) {
    let session = sign_in(store, "ada@example.org", signed_in).await;
    let next = new_refresh(rotated);
    let outcome = store
        .rotate_refresh_token(&session.refresh, next, rotated)
        .await
        .unwrap();
    assert!(
        matches!(outcome, RefreshOutcome::Rotated { .. }),
        "{outcome:?}"
    );
    let old = session.refresh.clone();
    (session, old)
}

async fn revoke(store: &DynStore, session: &Session, at: i64) {
    assert!(
        store
            .revoke_session(&session.id, audit("auth.logout"), at)
            .await
            .unwrap()
    );
}

/// What presenting a refresh token again does at `now`.
async fn replay(store: &DynStore, token: &TokenHash, now: i64) -> RefreshOutcome {
    store
        .rotate_refresh_token(token, new_refresh(now), now)
        .await
        .unwrap()
}

async fn links_sessions_tokens_and_windows_go_once_their_retention_has_passed(
    kind: StoreUnderTest,
) {
    let (_guard, store) = open(kind).await;
    let retention = Retention::default();
    assert_eq!(prune(&store, NOW, &retention, BATCH).await.total(), 0);
    allowlist(&store, "ada@example.org", &[]).await;

    // Links: expired two days ago (goes), an hour ago (kept a day), live.
    let long_expired = LinkRequest::new("ada@example.org", NOW - 2 * DAY - LINK_TTL);
    let just_expired = LinkRequest::new("ada@example.org", NOW - HOUR - LINK_TTL);
    for request in [&long_expired, &just_expired] {
        assert!(request.send(&store).await);
    }
    let live_link = link_for(&store, "ada@example.org", NOW).await;

    // Sessions, each opened by a link used up days ago (those links go too).
    // Revoked eight days ago (goes, with its tokens) and a day ago (kept).
    let (revoked_long_ago, revoked_long_ago_token) =
        sign_in_and_rotate(&store, NOW - 9 * DAY, NOW - 9 * DAY + 60).await;
    revoke(&store, &revoked_long_ago, NOW - 8 * DAY).await;
    let (revoked_lately, revoked_lately_token) =
        sign_in_and_rotate(&store, NOW - 2 * DAY, NOW - 2 * DAY + 60).await;
    revoke(&store, &revoked_lately, NOW - DAY).await;
    // Never revoked, but the last refresh token expired eight days ago (goes)
    // and a day ago (kept).
    let lapsed_long_ago = sign_in(&store, "ada@example.org", NOW - REFRESH_TTL - 8 * DAY).await;
    let lapsed_lately = sign_in(&store, "ada@example.org", NOW - REFRESH_TTL - DAY).await;
    // Live, signed in more than a refresh-token lifetime ago and refreshed
    // since: the token it rotated away expired eight days ago (goes).
    let (live, live_rotated_away) =
        sign_in_and_rotate(&store, NOW - REFRESH_TTL - 8 * DAY, NOW - 9 * DAY).await;

    // Rate-limit windows: two days old (goes), an hour old.
    store
        .hit_rate_limit("ip:old", MINUTE, NOW - 2 * DAY)
        .await
        .unwrap();
    store
        .hit_rate_limit("ip:recent", 2 * HOUR, NOW - HOUR)
        .await
        .unwrap();

    let report = prune(&store, NOW, &retention, BATCH).await;
    // The long-expired link and the five used up by the sign-ins.
    assert_eq!(report.get(Prunable::Links), 6, "{report:?}");
    assert_eq!(report.get(Prunable::Sessions), 2, "{report:?}");
    // The two of the session revoked long ago, the last one of the session
    // lapsed long ago, the one the live session rotated away.
    assert_eq!(report.get(Prunable::RefreshTokens), 4, "{report:?}");
    assert_eq!(report.get(Prunable::RateLimits), 1, "{report:?}");
    assert_eq!(report.total(), 13, "nothing else: {report:?}");
    assert_eq!(
        prune(&store, NOW, &retention, BATCH).await.total(),
        0,
        "once"
    );

    // Links.
    assert!(
        store
            .link_request(&long_expired.link.token_hash)
            .await
            .unwrap()
            .is_none()
    );
    assert!(
        store
            .link_request(&just_expired.link.token_hash)
            .await
            .unwrap()
            .is_some()
    );
    // Sessions: a replayed token of a revoked session is still recognised
    // while the session is kept, unknown once it is gone.
    assert!(matches!(
        replay(&store, &revoked_lately_token, NOW).await,
        RefreshOutcome::Reused { .. }
    ));
    assert!(matches!(
        replay(&store, &revoked_long_ago_token, NOW).await,
        RefreshOutcome::Invalid
    ));
    let ada = &live.member.id;
    assert!(
        session_live(&store, ada, &lapsed_lately.id, NOW).await,
        "kept"
    );
    assert!(
        !session_live(&store, ada, &lapsed_long_ago.id, NOW).await,
        "gone"
    );
    assert!(session_live(&store, ada, &live.id, NOW).await);
    assert!(
        matches!(
            replay(&store, &live_rotated_away, NOW).await,
            RefreshOutcome::Invalid
        ),
        "the expired token is gone, so its replay no longer ends the live session"
    );
    assert!(session_live(&store, ada, &live.id, NOW).await);
    let sessions = store.member_sessions(ada, NOW).await.unwrap();
    assert_eq!(
        sessions.iter().map(|s| s.id.as_str()).collect::<Vec<_>>(),
        [live.id.as_str()]
    );
    // Windows.
    assert_eq!(
        store
            .rate_limit_hits("ip:recent", 2 * HOUR, NOW)
            .await
            .unwrap(),
        1
    );
    // The live link still signs in.
    assert!(
        store
            .redeem_magic_link(&live_link, new_session(NOW), NOW + 1)
            .await
            .unwrap()
            .is_some()
    );
}

/// Mail written at `at` and finished with `result` then (`None`: left queued).
async fn mail(store: &DynStore, at: i64, result: Option<MailResult>) {
    let request = LinkRequest::new("ada@example.org", at);
    assert!(request.send(store).await);
    if let Some(result) = result {
        // Outcomes are recorded only under the lease that claimed the mail.
        let lease = LeaseToken::generate();
        let claimed = store.claim_due_mail(&lease, at, 60, 100).await.unwrap();
        assert!(claimed.iter().any(|mail| mail.id == request.mail.id));
        store
            .finish_mail(&lease, &request.mail.id, result, at)
            .await
            .unwrap();
    }
}

async fn sent_mail_goes_after_a_week_and_dead_letters_after_a_month(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "ada@example.org", &[]).await;
    let failed = || {
        Some(MailResult::Failed {
            error: "550 no such user".into(),
        })
    };
    mail(&store, NOW - 8 * DAY, Some(MailResult::Sent)).await; // goes
    mail(&store, NOW - 2 * DAY, Some(MailResult::Sent)).await;
    mail(&store, NOW - 8 * DAY, Some(MailResult::Expired)).await; // goes
    mail(&store, NOW - 31 * DAY, failed()).await; // goes
    mail(&store, NOW - 8 * DAY, failed()).await;
    mail(&store, NOW - 40 * DAY, None).await; // queued: never pruned

    let report = prune(&store, NOW, &Retention::default(), BATCH).await;
    assert_eq!(report.get(Prunable::SentMail), 2, "{report:?}");
    assert_eq!(report.get(Prunable::DeadLetters), 1, "{report:?}");
    let counts = store.outbox_counts().await.unwrap();
    assert_eq!(
        (counts.queued, counts.sent, counts.failed, counts.expired),
        (1, 1, 1, 0),
        "{counts:?}"
    );
}

async fn finished_webhook_history_goes_after_a_month(kind: StoreUnderTest) {
    use gatehouse::domain::EventType;
    use gatehouse::store::{NewWebhook, WebhookResult};

    let (_guard, store) = open(kind).await;
    let hook = new_id();
    store
        .create_webhook(
            NewWebhook {
                id: hook.clone(),
                url: "https://hooks.example.org/in".into(),
                events: vec![EventType::MemberCreated],
                description: None,
                secret_sealed: "sealed".into(),
                created_by: None,
            },
            audit("webhook.created"),
            NOW - 2 * DAY,
        )
        .await
        .unwrap();
    // Two events (written as of `NOW - DAY`): one delivered, one still pending.
    onboard(&store, "ann@example.org", &[]).await;
    let lease = LeaseToken::generate();
    let delivered = store.claim_due_webhooks(&lease, NOW, 60, 10).await.unwrap();
    assert_eq!(delivered.len(), 1);
    let key = (
        delivered[0].endpoint_id.clone(),
        delivered[0].event_id.clone(),
    );
    store
        .finish_webhooks(
            &lease,
            &[(key, WebhookResult::Delivered { status: 204 })],
            DAY,
            NOW,
        )
        .await
        .unwrap();
    onboard(&store, "bob@example.org", &[]).await;

    let report = prune(&store, NOW + 28 * DAY, &Retention::default(), BATCH).await;
    assert_eq!(report.get(Prunable::WebhookHistory), 0, "a month is kept");
    let report = prune(&store, NOW + 30 * DAY, &Retention::default(), BATCH).await;
    assert_eq!(report.get(Prunable::WebhookHistory), 1, "{report:?}");
    let left = store.webhook_deliveries(&hook, None, 10).await.unwrap();
    assert_eq!(left.len(), 1, "{left:?}");
    assert_ne!(
        left[0].event_id, delivered[0].event_id,
        "the pending one stays"
    );
}

async fn the_audit_log_is_kept_forever_unless_a_retention_is_set(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ann = onboard(&store, "ann@example.org", &[]).await;
    grant(&store, &ann.id, "sustainer", None, NOW - 100 * DAY).await;
    grant(&store, &ann.id, "active", None, NOW - 10 * DAY).await;

    let forever = prune(&store, NOW + 10_000 * DAY, &Retention::default(), BATCH).await;
    assert_eq!(forever.get(Prunable::AuditLog), 0);
    assert_eq!(audit_rows(&store, "role.grant").await.len(), 2);

    let report = prune(&store, NOW, &Retention::with_audit_days(Some(30)), BATCH).await;
    assert_eq!(report.get(Prunable::AuditLog), 1, "{report:?}");
    let kept: Vec<i64> = audit_rows(&store, "role.grant")
        .await
        .iter()
        .map(|row| row.at)
        .collect();
    assert_eq!(kept, [NOW - 10 * DAY]);
    assert_eq!(audit_rows(&store, "member.onboard").await.len(), 1);
}

async fn a_backlog_larger_than_a_batch_goes_in_one_round(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    for i in 0..7 {
        store
            .hit_rate_limit(&format!("ip:{i}"), MINUTE, NOW - 2 * DAY)
            .await
            .unwrap();
    }
    store
        .hit_rate_limit("ip:recent", MINUTE, NOW - 10)
        .await
        .unwrap();

    let report = prune(&store, NOW, &Retention::default(), 2).await;
    assert_eq!(report.get(Prunable::RateLimits), 7, "{report:?}");
    assert_eq!(
        prune(&store, NOW, &Retention::default(), 2).await.total(),
        0
    );
    assert_eq!(
        store
            .rate_limit_hits("ip:recent", MINUTE, NOW)
            .await
            .unwrap(),
        1
    );
}

store_tests!(
    links_sessions_tokens_and_windows_go_once_their_retention_has_passed,
    sent_mail_goes_after_a_week_and_dead_letters_after_a_month,
    finished_webhook_history_goes_after_a_month,
    the_audit_log_is_kept_forever_unless_a_retention_is_set,
    a_backlog_larger_than_a_batch_goes_in_one_round,
);

/// Two instances on one Postgres database: while one holds the housekeeping
/// lock, the other's round is skipped (not queued behind it) and prunes
/// nothing; once it is released, the next round runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_postgres_a_second_instance_skips_the_round_another_is_running() {
    let (_guard, url) = fresh_database(true).await;
    let first = PostgresStore::connect(&url, POOL).await.expect("first");
    first.migrate().await.expect("migrate");
    let second: DynStore = Arc::new(PostgresStore::connect(&url, POOL).await.expect("second"));
    second
        .hit_rate_limit("ip:old", MINUTE, NOW - 2 * DAY)
        .await
        .unwrap();

    let lock = first
        .backend()
        .try_lock_housekeeping()
        .await
        .unwrap()
        .expect("the first instance takes the lock");
    assert!(
        first
            .backend()
            .try_lock_housekeeping()
            .await
            .unwrap()
            .is_none(),
        "held, even against another connection of the same instance"
    );
    let skipped = second
        .prune(NOW, &Retention::default(), BATCH)
        .await
        .unwrap();
    assert_eq!(skipped, PruneOutcome::Skipped);
    assert_eq!(
        second
            .rate_limit_hits("ip:old", MINUTE, NOW - 2 * DAY)
            .await
            .unwrap(),
        1,
        "nothing pruned"
    );

    gatehouse::store::Postgres::unlock_housekeeping(lock)
        .await
        .unwrap();
    let report = prune(&second, NOW, &Retention::default(), BATCH).await;
    assert_eq!(report.get(Prunable::RateLimits), 1);
    // The round gave the lock back: the first instance can run the next.
    let next = first
        .prune(NOW, &Retention::default(), BATCH)
        .await
        .unwrap();
    assert!(matches!(next, PruneOutcome::Pruned(_)), "{next:?}");
}

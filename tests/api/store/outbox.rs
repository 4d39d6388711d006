//! The mail outbox: leases (`claim_due_mail`, `renew_mail_lease`), outcomes
//! under a lease (`finish_mail(s)`), what operators see (`outbox_page`, `outbox_counts`) and do
//! (`requeue_failed_mail`). Mail enters the outbox with its sign-in link.

use std::collections::HashSet;

use gatehouse::store::{
    LeaseToken, MailResult, MailStatus, OutboxCounts, OutboxEntry, OutboxQuery, RequeueOutcome,
};

use super::*;

const LEASE: i64 = 60;

/// Queues one sign-in mail to `address` (allowlisted beforehand) at `now`; its id.
async fn queue_mail(store: &DynStore, address: &str, now: i64) -> String {
    let request = LinkRequest::new(address, now);
    assert!(request.send(store).await, "{address} is eligible");
    request.mail.id
}

/// Queues `n` mails at `now`, oldest first.
async fn queue_mails(store: &DynStore, n: usize, now: i64) -> Vec<String> {
    allowlist(store, "reader@example.org", &[]).await;
    let mut ids = Vec::new();
    for _ in 0..n {
        ids.push(queue_mail(store, "reader@example.org", now).await);
    }
    ids
}

/// Claims under a lease of its own; the ids, sorted.
async fn claim(store: &DynStore, now: i64, limit: i64) -> Vec<String> {
    claim_as(store, &LeaseToken::generate(), now, limit).await
}

async fn claim_as(store: &DynStore, lease: &LeaseToken, now: i64, limit: i64) -> Vec<String> {
    let mut ids: Vec<String> = store
        .claim_due_mail(lease, now, LEASE, limit)
        .await
        .expect("claim")
        .into_iter()
        .map(|mail| mail.id)
        .collect();
    ids.sort();
    ids
}

async fn page(
    store: &DynStore,
    status: Option<MailStatus>,
    before: Option<&str>,
    limit: i64,
) -> Vec<OutboxEntry> {
    store
        .outbox_page(OutboxQuery {
            status,
            before,
            limit,
        })
        .await
        .expect("outbox page")
}

async fn entry_of(store: &DynStore, id: &str) -> OutboxEntry {
    page(store, None, None, 1_000)
        .await
        .into_iter()
        .find(|e| e.id == id)
        .expect("mail listed")
}

async fn a_claimed_mail_is_not_claimed_again_until_its_lease_ends(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    allowlist(&store, "reader@example.org", &[]).await;
    let request = LinkRequest::new("reader@example.org", NOW);
    assert!(request.send(&store).await);

    let claimed = store
        .claim_due_mail(&LeaseToken::generate(), NOW, LEASE, 10)
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    let mail = &claimed[0];
    assert_eq!(mail.id, request.mail.id);
    assert_eq!(mail.kind, "sign_in");
    assert_eq!(mail.recipient, "reader@example.org");
    assert_eq!(mail.subject, "Your sign-in link");
    assert_eq!(mail.sealed_body, "sealed:body");
    assert_eq!(mail.attempts, 0);
    assert_eq!(mail.created_at, NOW);
    assert_eq!(mail.expires_at, Some(NOW + LINK_TTL));

    assert!(claim(&store, NOW, 10).await.is_empty(), "leased");
    assert!(
        claim(&store, NOW + LEASE - 1, 10).await.is_empty(),
        "still leased"
    );
    assert_eq!(
        claim(&store, NOW + LEASE, 10).await,
        [request.mail.id.as_str()],
        "the lease ended: due again"
    );
}

async fn only_due_mail_is_claimed_and_at_most_the_limit(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let due = queue_mails(&store, 3, NOW).await;
    let later = queue_mail(&store, "reader@example.org", NOW + 100).await;

    let first = claim(&store, NOW, 2).await;
    assert_eq!(first.len(), 2);
    let second = claim(&store, NOW, 2).await;
    assert_eq!(second.len(), 1);
    let all: HashSet<String> = first.into_iter().chain(second).collect();
    assert_eq!(all, due.iter().cloned().collect::<HashSet<_>>());
    assert!(
        claim(&store, NOW + LEASE - 1, 10).await.is_empty(),
        "leased, or not due yet"
    );
    let mut everything = due.clone();
    everything.push(later);
    everything.sort();
    assert_eq!(claim(&store, NOW + 100, 10).await, everything);
}

async fn concurrent_claims_take_disjoint_mails(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let queued: HashSet<String> = queue_mails(&store, 20, NOW).await.into_iter().collect();

    let spawn = || {
        let store = store.clone();
        tokio::spawn(async move { claim(&store, NOW, 15).await })
    };
    let (a, b) = tokio::join!(spawn(), spawn());
    let (a, b) = (a.expect("task"), b.expect("task"));
    let a_set: HashSet<String> = a.iter().cloned().collect();
    let b_set: HashSet<String> = b.iter().cloned().collect();
    assert!(a_set.is_disjoint(&b_set), "a mail was claimed twice");
    let claimed: HashSet<String> = a_set.union(&b_set).cloned().collect();
    assert!(claimed.is_subset(&queued));
    // 20 due, 15 each: together they may take them all, never more than each limit.
    assert!(a.len() <= 15 && b.len() <= 15);
    let rest = claim(&store, NOW, 100).await;
    assert_eq!(
        claimed.len() + rest.len(),
        20,
        "every mail claimed exactly once"
    );
}

async fn each_outcome_of_a_delivery_is_recorded(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ids = queue_mails(&store, 4, NOW).await;
    let lease = LeaseToken::generate();
    assert_eq!(claim_as(&store, &lease, NOW, 10).await.len(), 4);

    store
        .finish_mails(
            &lease,
            &[
                (ids[0].clone(), MailResult::Sent),
                (
                    ids[1].clone(),
                    MailResult::Retry {
                        next_attempt_at: NOW + 300,
                        error: "421 busy".into(),
                    },
                ),
                (
                    ids[2].clone(),
                    MailResult::Failed {
                        error: "550 no such user".into(),
                    },
                ),
                (ids[3].clone(), MailResult::Expired),
            ],
            NOW + 1,
        )
        .await
        .unwrap();

    let sent = entry_of(&store, &ids[0]).await;
    assert_eq!(sent.status, MailStatus::Sent);
    assert_eq!(
        (sent.sent_at, sent.attempts, sent.last_error),
        (Some(NOW + 1), 1, None)
    );
    let retry = entry_of(&store, &ids[1]).await;
    assert_eq!(retry.status, MailStatus::Queued);
    assert_eq!(retry.attempts, 1);
    assert_eq!(retry.next_attempt_at, NOW + 300);
    assert_eq!(retry.last_error.as_deref(), Some("421 busy"));
    let failed = entry_of(&store, &ids[2]).await;
    assert_eq!(failed.status, MailStatus::Failed);
    assert_eq!(failed.attempts, 1);
    assert_eq!(failed.last_error.as_deref(), Some("550 no such user"));
    assert_eq!(entry_of(&store, &ids[3]).await.status, MailStatus::Expired);
    assert_eq!(
        store.outbox_counts().await.unwrap(),
        OutboxCounts {
            queued: 1,
            sent: 1,
            failed: 1,
            expired: 1
        }
    );

    assert!(
        claim(&store, NOW + 299, 10).await.is_empty(),
        "only the retry is queued"
    );
    let again = store
        .claim_due_mail(&LeaseToken::generate(), NOW + 300, LEASE, 10)
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(
        (again[0].id.as_str(), again[0].attempts),
        (ids[1].as_str(), 1)
    );
}

async fn one_outcome_at_a_time_is_recorded_too(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ids = queue_mails(&store, 4, NOW).await;
    let lease = LeaseToken::generate();
    assert_eq!(claim_as(&store, &lease, NOW, 10).await.len(), 4);
    let outcomes = [
        MailResult::Sent,
        MailResult::Retry {
            next_attempt_at: NOW + 300,
            error: "busy".into(),
        },
        MailResult::Failed {
            error: "refused".into(),
        },
        MailResult::Expired,
    ];
    for (id, outcome) in ids.iter().zip(outcomes) {
        store
            .finish_mail(&lease, id, outcome, NOW + 1)
            .await
            .unwrap();
    }
    let statuses: Vec<MailStatus> = {
        let mut statuses = Vec::new();
        for id in &ids {
            statuses.push(entry_of(&store, id).await.status);
        }
        statuses
    };
    assert_eq!(
        statuses,
        [
            MailStatus::Sent,
            MailStatus::Queued,
            MailStatus::Failed,
            MailStatus::Expired
        ]
    );
    store.finish_mails(&lease, &[], NOW + 2).await.unwrap();
}

async fn a_final_state_is_never_overwritten(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ids = queue_mails(&store, 3, NOW).await;
    let lease = LeaseToken::generate();
    assert_eq!(claim_as(&store, &lease, NOW, 10).await.len(), 3);
    store
        .finish_mail(&lease, &ids[0], MailResult::Sent, NOW + 1)
        .await
        .unwrap();
    store
        .finish_mail(
            &lease,
            &ids[1],
            MailResult::Failed {
                error: "refused".into(),
            },
            NOW + 1,
        )
        .await
        .unwrap();
    store
        .finish_mail(&lease, &ids[2], MailResult::Expired, NOW + 1)
        .await
        .unwrap();
    let before: Vec<OutboxEntry> = page(&store, None, None, 10).await;

    // Neither the lease that recorded them nor any other changes them.
    for (id, late_lease) in ids
        .iter()
        .flat_map(|id| [(id, lease.clone()), (id, LeaseToken::generate())])
    {
        store
            .finish_mails(
                &late_lease,
                &[
                    (id.clone(), MailResult::Sent),
                    (
                        id.clone(),
                        MailResult::Retry {
                            next_attempt_at: NOW + 100,
                            error: "late".into(),
                        },
                    ),
                ],
                NOW + 2,
            )
            .await
            .unwrap();
        for late in [
            MailResult::Failed {
                error: "late".into(),
            },
            MailResult::Expired,
            MailResult::Sent,
        ] {
            store
                .finish_mail(&late_lease, id, late, NOW + 3)
                .await
                .unwrap();
        }
    }

    let after = page(&store, None, None, 10).await;
    let summary = |entries: &[OutboxEntry]| {
        entries
            .iter()
            .map(|e| {
                (
                    e.id.clone(),
                    e.status,
                    e.attempts,
                    e.last_error.clone(),
                    e.sent_at,
                )
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(summary(&after), summary(&before));
    assert!(claim(&store, NOW + 1_000, 10).await.is_empty());
}

async fn the_outbox_is_listed_newest_first_by_status_in_pages(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ids = queue_mails(&store, 5, NOW).await;
    let entry = entry_of(&store, &ids[0]).await;
    assert_eq!(entry.recipient, "reader@example.org");
    assert_eq!(entry.kind, "sign_in");
    assert_eq!((entry.created_at, entry.next_attempt_at), (NOW, NOW));
    assert_eq!(entry.expires_at, Some(NOW + LINK_TTL));
    let lease = LeaseToken::generate();
    assert_eq!(claim_as(&store, &lease, NOW, 10).await.len(), 5);
    store
        .finish_mail(&lease, &ids[1], MailResult::Sent, NOW + 1)
        .await
        .unwrap();
    store
        .finish_mail(&lease, &ids[3], MailResult::Sent, NOW + 1)
        .await
        .unwrap();
    let listed = |entries: Vec<OutboxEntry>| entries.into_iter().map(|e| e.id).collect::<Vec<_>>();

    assert_eq!(
        listed(page(&store, None, None, 2).await),
        [ids[4].clone(), ids[3].clone()]
    );
    assert_eq!(
        listed(page(&store, None, Some(ids[3].as_str()), 2).await),
        [ids[2].clone(), ids[1].clone()]
    );
    assert_eq!(
        listed(page(&store, None, Some(ids[1].as_str()), 2).await),
        [ids[0].clone()]
    );
    assert_eq!(
        listed(page(&store, Some(MailStatus::Sent), None, 10).await),
        [ids[3].clone(), ids[1].clone()]
    );
    assert_eq!(
        listed(page(&store, Some(MailStatus::Queued), Some(ids[4].as_str()), 1).await),
        [ids[2].clone()]
    );
    assert!(
        page(&store, Some(MailStatus::Failed), None, 10)
            .await
            .is_empty()
    );
    assert_eq!(
        store.outbox_counts().await.unwrap(),
        OutboxCounts {
            queued: 3,
            sent: 2,
            ..Default::default()
        }
    );
}

async fn only_a_failed_mail_is_requeued(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ids = queue_mails(&store, 3, NOW).await;
    let lease = LeaseToken::generate();
    assert_eq!(claim_as(&store, &lease, NOW, 10).await.len(), 3);
    store
        .finish_mail(&lease, &ids[0], MailResult::Sent, NOW + 1)
        .await
        .unwrap();
    let busy = |at: i64| MailResult::Retry {
        next_attempt_at: at,
        error: "busy".into(),
    };
    store
        .finish_mail(&lease, &ids[1], busy(NOW + 2), NOW + 1)
        .await
        .unwrap();
    // Due again while ids[2] is still leased.
    let lease = LeaseToken::generate();
    assert_eq!(
        claim_as(&store, &lease, NOW + 2, 10).await,
        [ids[1].clone()]
    );
    store
        .finish_mail(&lease, &ids[1], busy(NOW + 3), NOW + 2)
        .await
        .unwrap();
    let lease = LeaseToken::generate();
    assert_eq!(
        claim_as(&store, &lease, NOW + 3, 10).await,
        [ids[1].clone()]
    );
    store
        .finish_mail(
            &lease,
            &ids[1],
            MailResult::Failed {
                error: "gave up".into(),
            },
            NOW + 3,
        )
        .await
        .unwrap();

    let requeue = |id: String| {
        let store = store.clone();
        async move {
            store
                .requeue_failed_mail(&id, audit("outbox.requeue"), NOW + 10)
                .await
                .expect("requeue")
        }
    };
    assert!(matches!(requeue(new_id()).await, RequeueOutcome::NotFound));
    assert!(matches!(
        requeue(ids[0].clone()).await,
        RequeueOutcome::NotFailed(MailStatus::Sent)
    ));
    assert!(matches!(
        requeue(ids[2].clone()).await,
        RequeueOutcome::NotFailed(MailStatus::Queued)
    ));
    assert!(audit_rows(&store, "outbox.requeue").await.is_empty());

    match requeue(ids[1].clone()).await {
        RequeueOutcome::Requeued(entry) => {
            assert_eq!(entry.id, ids[1]);
            assert_eq!(entry.status, MailStatus::Queued);
            assert_eq!(entry.attempts, 0, "a fresh budget of attempts");
            assert_eq!(entry.next_attempt_at, NOW + 10, "due at once");
        }
        other => panic!("expected a requeue, got {other:?}"),
    }
    assert_eq!(audit_rows(&store, "outbox.requeue").await.len(), 1);
    assert!(matches!(
        requeue(ids[1].clone()).await,
        RequeueOutcome::NotFailed(MailStatus::Queued)
    ));
    let due = store
        .claim_due_mail(&LeaseToken::generate(), NOW + 10, LEASE, 10)
        .await
        .unwrap();
    assert!(
        due.iter()
            .any(|mail| mail.id == ids[1] && mail.attempts == 0)
    );
}

/// A claim writes its token: renewing under it extends the lease (and only
/// under it), so a renewed mail is not due at the end of its first lease.
async fn a_lease_is_renewed_only_under_the_token_that_claimed_it(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let mut ids = queue_mails(&store, 2, NOW).await;
    ids.sort();
    let lease = LeaseToken::generate();
    assert_eq!(claim_as(&store, &lease, NOW, 10).await, ids);

    let other = LeaseToken::generate();
    assert!(
        store
            .renew_mail_lease(&other, NOW + 500)
            .await
            .unwrap()
            .is_empty(),
        "another token holds nothing"
    );
    assert_eq!(
        claim(&store, NOW + LEASE, 10).await,
        ids,
        "a renewal under another token extended nothing"
    );
    // That claim took them: the first lease holds nothing now.
    assert!(
        store
            .renew_mail_lease(&lease, NOW + 500)
            .await
            .unwrap()
            .is_empty()
    );

    let lease = LeaseToken::generate();
    assert_eq!(claim_as(&store, &lease, NOW + 2 * LEASE, 10).await, ids);
    let mut held = store
        .renew_mail_lease(&lease, NOW + 3 * LEASE + 30)
        .await
        .unwrap();
    held.sort();
    assert_eq!(held, ids, "the claim's own token holds both");
    assert!(
        claim(&store, NOW + 3 * LEASE, 10).await.is_empty(),
        "past the first lease's end, the renewed lease holds"
    );
    assert_eq!(
        entry_of(&store, &ids[0]).await.next_attempt_at,
        NOW + 3 * LEASE + 30
    );

    // A recorded mail leaves the lease: renewing does not push its retry back.
    store
        .finish_mail(
            &lease,
            &ids[0],
            MailResult::Retry {
                next_attempt_at: NOW + 3 * LEASE + 10,
                error: "busy".into(),
            },
            NOW + 3 * LEASE,
        )
        .await
        .unwrap();
    assert_eq!(
        store.renew_mail_lease(&lease, NOW + 10_000).await.unwrap(),
        [ids[1].clone()]
    );
    assert_eq!(
        entry_of(&store, &ids[0]).await.next_attempt_at,
        NOW + 3 * LEASE + 10
    );
}

/// A lease that ran out is claimed by another; from then on only the new
/// holder's outcome is written, and the stale claimer's changes nothing.
async fn a_stale_claimer_cannot_record_an_outcome(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let ids = queue_mails(&store, 1, NOW).await;
    let stale = LeaseToken::generate();
    assert_eq!(claim_as(&store, &stale, NOW, 10).await, ids);
    let fresh = LeaseToken::generate();
    assert_eq!(
        claim_as(&store, &fresh, NOW + LEASE, 10).await,
        ids,
        "the expired lease is claimable by another token"
    );

    for late in [
        MailResult::Sent,
        MailResult::Failed {
            error: "late".into(),
        },
        MailResult::Expired,
        MailResult::Retry {
            next_attempt_at: NOW + 5,
            error: "late".into(),
        },
    ] {
        store
            .finish_mail(&stale, &ids[0], late, NOW + LEASE + 1)
            .await
            .unwrap();
    }
    let entry = entry_of(&store, &ids[0]).await;
    assert_eq!(
        (
            entry.status,
            entry.attempts,
            entry.last_error,
            entry.next_attempt_at
        ),
        (MailStatus::Queued, 0, None, NOW + 2 * LEASE),
        "the stale claimer's outcomes changed nothing"
    );
    assert_eq!(
        store
            .renew_mail_lease(&fresh, NOW + 2 * LEASE + 5)
            .await
            .unwrap(),
        ids,
        "the new holder still holds it"
    );

    store
        .finish_mail(&fresh, &ids[0], MailResult::Sent, NOW + LEASE + 2)
        .await
        .unwrap();
    let entry = entry_of(&store, &ids[0]).await;
    assert_eq!(
        (entry.status, entry.attempts, entry.sent_at),
        (MailStatus::Sent, 1, Some(NOW + LEASE + 2))
    );
}

store_tests!(
    a_lease_is_renewed_only_under_the_token_that_claimed_it,
    a_stale_claimer_cannot_record_an_outcome,
    a_claimed_mail_is_not_claimed_again_until_its_lease_ends,
    only_due_mail_is_claimed_and_at_most_the_limit,
    concurrent_claims_take_disjoint_mails,
    each_outcome_of_a_delivery_is_recorded,
    one_outcome_at_a_time_is_recorded_too,
    a_final_state_is_never_overwritten,
    the_outbox_is_listed_newest_first_by_status_in_pages,
    only_a_failed_mail_is_requeued,
);

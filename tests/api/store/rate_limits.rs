//! Fixed-window rate limits: `hit_rate_limits`, `hit_rate_limit` and
//! `rate_limit_hits` (which reads without counting).

use std::collections::HashSet;

use gatehouse::store::RateWindow;

use super::*;

fn window(count: i64, resets_at: i64) -> RateWindow {
    RateWindow { count, resets_at }
}

async fn hits(store: &DynStore, buckets: &[&str], now: i64) -> Vec<RateWindow> {
    store
        .hit_rate_limits(buckets, MINUTE, now)
        .await
        .expect("hit rate limits")
}

async fn read(store: &DynStore, bucket: &str, now: i64) -> i64 {
    store
        .rate_limit_hits(bucket, MINUTE, now)
        .await
        .expect("rate limit hits")
}

async fn hits_are_counted_per_bucket_in_fixed_windows(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    assert_eq!(
        hits(&store, &["ip:1"], NOW).await,
        [window(1, NOW + MINUTE)]
    );
    assert_eq!(
        hits(&store, &["ip:1"], NOW + 30).await,
        [window(2, NOW + MINUTE)]
    );
    assert_eq!(
        hits(&store, &["ip:2"], NOW + 30).await,
        [window(1, NOW + 30 + MINUTE)],
        "each bucket has its own window"
    );
    assert_eq!(
        hits(&store, &["ip:1"], NOW + MINUTE - 1).await,
        [window(3, NOW + MINUTE)]
    );
    assert_eq!(read(&store, "ip:1", NOW + MINUTE - 1).await, 3);

    // At the window's end a new one starts.
    assert_eq!(read(&store, "ip:1", NOW + MINUTE).await, 0);
    assert_eq!(
        hits(&store, &["ip:1"], NOW + MINUTE).await,
        [window(1, NOW + 2 * MINUTE)]
    );
    assert_eq!(
        read(&store, "ip:1", NOW + MINUTE).await,
        1,
        "reading counts nothing"
    );
    assert_eq!(read(&store, "ip:1", NOW + MINUTE).await, 1);
    assert_eq!(read(&store, "ip:2", NOW + MINUTE).await, 1);
    assert_eq!(read(&store, "never-hit", NOW).await, 0);
}

async fn several_buckets_are_counted_in_one_call_and_answered_in_order(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    assert_eq!(
        hits(&store, &["email:a", "ip:1"], NOW).await,
        [window(1, NOW + MINUTE), window(1, NOW + MINUTE)]
    );
    assert_eq!(
        hits(&store, &["ip:1", "ip:9", "email:a"], NOW + 1).await,
        [
            window(2, NOW + MINUTE),
            window(1, NOW + 1 + MINUTE),
            window(2, NOW + MINUTE)
        ]
    );
    assert!(hits(&store, &[], NOW).await.is_empty());
    assert_eq!(
        store.hit_rate_limit("ip:9", MINUTE, NOW + 2).await.unwrap(),
        window(2, NOW + 1 + MINUTE)
    );
}

async fn a_bucket_named_twice_in_one_call_is_counted_once(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    // Both backends count a request's hit on a bucket once, however often it
    // is named (Postgres cannot update one row twice in a statement), and
    // answer each mention with that window.
    assert_eq!(
        hits(&store, &["ip:1", "email:a", "ip:1"], NOW).await,
        [
            window(1, NOW + MINUTE),
            window(1, NOW + MINUTE),
            window(1, NOW + MINUTE)
        ]
    );
    assert_eq!(read(&store, "ip:1", NOW).await, 1);
}

async fn concurrent_hits_on_one_bucket_are_each_counted(kind: StoreUnderTest) {
    let (_guard, store) = open(kind).await;
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move { store.hit_rate_limit("ip:1", MINUTE, NOW).await })
        })
        .collect();
    let mut counts = HashSet::new();
    for task in tasks {
        counts.insert(task.await.expect("task").expect("hit").count);
    }
    assert_eq!(
        counts,
        (1..=20).collect::<HashSet<i64>>(),
        "each hit saw its own count"
    );
    assert_eq!(read(&store, "ip:1", NOW).await, 20);
}

store_tests!(
    hits_are_counted_per_bucket_in_fixed_windows,
    several_buckets_are_counted_in_one_call_and_answered_in_order,
    a_bucket_named_twice_in_one_call_is_counted_once,
    concurrent_hits_on_one_bucket_are_each_counted,
);

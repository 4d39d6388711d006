//! A read cache for the two lookups every authenticated request makes (the
//! session behind an access token, the record behind an API key).
//!
//! Why: those point reads are cheap in the database but each costs a round
//! trip (on SQLite two thread hops, on Postgres a wake-up of a server process),
//! which profiles as most of a `GET /v1/me`. Why it is safe: an answer counts
//! only while no change has been seen since it was read, and only within the
//! second it was read in (role grants expire by the second), as [`Freshness`]
//! tracks. Changes are seen two ways:
//!
//! - every write through this wrapper that can change those answers (sessions,
//!   members, roles, keys) marks a change *after* it returns, so the instance
//!   that revokes refuses the old credential from the moment the revoking call
//!   returns;
//! - on Postgres, where other instances and operators write too, the tables'
//!   triggers notify every instance of each committed change
//!   (`change_notices.rs`), which reaches the others within the notification's
//!   delivery, normally well under a millisecond. While that channel is down,
//!   nothing is served from the cache; if it silently stalls, the one-second
//!   lifetime still bounds how long an answer can outlive its revocation.
//!
//! Every method of the store traits is listed here on purpose: a new one does
//! not compile until someone decides whether it invalidates.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use async_trait::async_trait;

use super::spans::traced;
use super::*;
use crate::domain::{Email, Member, MemberId, MemberStatus, Role, TokenHash};
use crate::store::members::{MemberFilter, RoleGrant};
use crate::store::roles::RoleInfo;

/// Entries kept per cache before it is emptied (cheap, and rare).
const CAPACITY: usize = 50_000;

/// Which cached answers still count: those read since the last change seen,
/// and only while changes can be seen at all.
pub struct Freshness {
    /// Changes seen so far; an answer read under an older count is stale.
    epoch: AtomicU64,
    /// False while a change made elsewhere could go unseen (the Postgres
    /// listener is connecting, or lost its connection): reads then bypass the
    /// cache.
    watching: AtomicBool,
    /// Ticks on every change to the signing keys seen (and whenever changes
    /// may have gone unseen), so that the keys decoded in memory are reloaded.
    signing_keys: tokio::sync::watch::Sender<u64>,
}

impl Freshness {
    /// For a store only this process writes to: every change passes through
    /// [`CachedStore`], so changes are always seen.
    pub fn local() -> Arc<Self> {
        Arc::new(Self {
            epoch: AtomicU64::new(0),
            watching: AtomicBool::new(true),
            signing_keys: tokio::sync::watch::Sender::new(0),
        })
    }

    /// For a shared store: nothing is cached until a watcher reports, through
    /// [`Freshness::watching`], that it sees other writers' changes.
    pub fn shared() -> Arc<Self> {
        Arc::new(Self {
            epoch: AtomicU64::new(0),
            watching: AtomicBool::new(false),
            signing_keys: tokio::sync::watch::Sender::new(0),
        })
    }

    /// Something changed: every answer cached so far is stale.
    pub fn changed(&self) {
        self.epoch.fetch_add(1, Ordering::AcqRel);
    }

    /// Starts or stops serving cached answers. Either way, what is cached now
    /// is dropped: changes made while nobody watched are unknown.
    pub fn watching(&self, watching: bool) {
        self.watching.store(watching, Ordering::Release);
        self.changed();
        self.signing_keys_changed();
    }

    /// The signing keys changed (or may have, unseen): their readers reload.
    pub fn signing_keys_changed(&self) {
        self.signing_keys.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Ticks on every [`Freshness::signing_keys_changed`].
    pub fn signing_key_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.signing_keys.subscribe()
    }

    /// The current change count, or `None` when nothing may be cached.
    fn current(&self) -> Option<u64> {
        let epoch = self.epoch.load(Ordering::Acquire);
        self.watching.load(Ordering::Acquire).then_some(epoch)
    }
}

pub struct CachedStore {
    inner: DynStore,
    freshness: Arc<Freshness>,
    sessions: Lookups<(String, String), Option<Member>>,
    keys: Lookups<String, Option<ApiKeyRecord>>,
}

impl CachedStore {
    pub fn new(inner: DynStore, freshness: Arc<Freshness>) -> Self {
        Self {
            inner,
            freshness,
            sessions: Lookups::default(),
            keys: Lookups::default(),
        }
    }

    /// Runs a write that may change cached answers, then invalidates them all.
    async fn invalidating<T>(&self, write: impl Future<Output = T>) -> T {
        let result = write.await;
        self.freshness.changed();
        result
    }
}

struct Entry<V> {
    epoch: u64,
    now: i64,
    value: V,
}

struct Lookups<K, V>(Mutex<HashMap<K, Entry<V>>>);

impl<K, V> Default for Lookups<K, V> {
    fn default() -> Self {
        Self(Mutex::new(HashMap::new()))
    }
}

impl<K: Eq + Hash, V: Clone> Lookups<K, V> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<K, Entry<V>>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The cached answer for `key`, or `read`'s, remembered under the epoch
    /// current *before* reading: if a change is seen meanwhile, the entry is
    /// stale on arrival and never served.
    async fn get_or_read(
        &self,
        freshness: &Freshness,
        key: K,
        now: i64,
        read: impl Future<Output = StoreResult<V>>,
    ) -> StoreResult<V> {
        let Some(current) = freshness.current() else {
            return read.await;
        };
        if let Some(entry) = self.lock().get(&key)
            && entry.epoch == current
            && entry.now == now
        {
            return Ok(entry.value.clone());
        }
        let value = read.await?;
        let mut entries = self.lock();
        if entries.len() >= CAPACITY {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                epoch: current,
                now,
                value: value.clone(),
            },
        );
        Ok(value)
    }
}

#[async_trait]
impl Store for CachedStore {
    async fn migrate(&self) -> StoreResult<()> {
        self.invalidating(traced("migrate", self.inner.migrate()))
            .await
    }

    async fn ping(&self) -> StoreResult<()> {
        traced("ping", self.inner.ping()).await
    }

    fn pool_stats(&self) -> Vec<crate::metrics::PoolStats> {
        self.inner.pool_stats()
    }
}

#[async_trait]
impl SignInStore for CachedStore {
    async fn hit_rate_limits(
        &self,
        buckets: &[&str],
        window_secs: i64,
        now: i64,
    ) -> StoreResult<Vec<RateWindow>> {
        traced(
            "hit_rate_limits",
            self.inner.hit_rate_limits(buckets, window_secs, now),
        )
        .await
    }

    async fn is_eligible(&self, email: &Email) -> StoreResult<bool> {
        traced("is_eligible", self.inner.is_eligible(email)).await
    }

    async fn create_magic_link(
        &self,
        link: NewMagicLink,
        mail: NewMail,
        audit: AuditEntry,
    ) -> StoreResult<bool> {
        traced(
            "create_magic_link",
            self.inner.create_magic_link(link, mail, audit),
        )
        .await
    }

    async fn spend_code_attempt(
        &self,
        email: &Email,
        now: i64,
        max_attempts: i64,
    ) -> StoreResult<Vec<(TokenHash, TokenHash)>> {
        traced(
            "spend_code_attempt",
            traced(
                "spend_code_attempt",
                self.inner.spend_code_attempt(email, now, max_attempts),
            ),
        )
        .await
    }

    /// Changes `last_login_at` (and may create a member): invalidates.
    async fn redeem_magic_link(
        &self,
        token_hash: &TokenHash,
        session: NewSession,
        now: i64,
    ) -> StoreResult<Option<SignedIn>> {
        self.invalidating(traced(
            "redeem_magic_link",
            self.inner.redeem_magic_link(token_hash, session, now),
        ))
        .await
    }
}

#[async_trait]
impl SessionStore for CachedStore {
    /// A plain rotation changes nothing cached; a detected reuse revokes a session.
    async fn rotate_refresh_token(
        &self,
        presented: &TokenHash,
        next: NewRefreshToken,
        now: i64,
    ) -> StoreResult<RefreshOutcome> {
        let outcome = traced(
            "rotate_refresh_token",
            self.inner.rotate_refresh_token(presented, next, now),
        )
        .await;
        if !matches!(
            outcome,
            Ok(RefreshOutcome::Rotated { .. } | RefreshOutcome::Invalid)
        ) {
            self.freshness.changed();
        }
        outcome
    }

    async fn revoke_session(
        &self,
        session_id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        self.invalidating(traced(
            "revoke_session",
            self.inner.revoke_session(session_id, audit, now),
        ))
        .await
    }

    async fn session_member(
        &self,
        member_id: &MemberId,
        session_id: &str,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        let key = (member_id.to_string(), session_id.to_owned());
        let read = traced(
            "session_member",
            self.inner.session_member(member_id, session_id, now),
        );
        self.sessions
            .get_or_read(&self.freshness, key, now, read)
            .await
    }
}

#[async_trait]
impl MemberStore for CachedStore {
    async fn member_by_id(&self, id: &MemberId, now: i64) -> StoreResult<Option<Member>> {
        traced("member_by_id", self.inner.member_by_id(id, now)).await
    }

    async fn list_members(&self, filter: &MemberFilter, now: i64) -> StoreResult<Vec<Member>> {
        traced("list_members", self.inner.list_members(filter, now)).await
    }

    async fn member_grants(&self, id: &MemberId, now: i64) -> StoreResult<Vec<RoleGrant>> {
        self.inner.member_grants(id, now).await
    }

    async fn set_member_status(
        &self,
        id: &MemberId,
        status: MemberStatus,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        self.invalidating(traced(
            "set_member_status",
            self.inner.set_member_status(id, status, audit, now),
        ))
        .await
    }

    async fn set_member_roles(
        &self,
        id: &MemberId,
        roles: &[Role],
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        self.invalidating(traced(
            "set_member_roles",
            self.inner.set_member_roles(id, roles, audit, now),
        ))
        .await
    }

    async fn grant_member_role(
        &self,
        id: &MemberId,
        grant: &RoleGrant,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        self.invalidating(traced(
            "grant_member_role",
            self.inner.grant_member_role(id, grant, audit, now),
        ))
        .await
    }

    async fn revoke_member_role(
        &self,
        id: &MemberId,
        role: &Role,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<Member>> {
        self.invalidating(traced(
            "revoke_member_role",
            self.inner.revoke_member_role(id, role, audit, now),
        ))
        .await
    }

    async fn revoke_member_sessions(
        &self,
        id: &MemberId,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<u64>> {
        self.invalidating(traced(
            "revoke_member_sessions",
            self.inner.revoke_member_sessions(id, audit, now),
        ))
        .await
    }

    async fn onboard_member(
        &self,
        email: &Email,
        roles: &[Role],
        key: Option<NewApiKey>,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Member> {
        self.invalidating(traced(
            "onboard_member",
            self.inner.onboard_member(email, roles, key, audit, now),
        ))
        .await
    }

    async fn delete_member(&self, id: &MemberId, audit: AuditEntry, now: i64) -> StoreResult<bool> {
        self.invalidating(traced(
            "delete_member",
            self.inner.delete_member(id, audit, now),
        ))
        .await
    }

    async fn bootstrap_admins(&self, emails: &[Email], now: i64) -> StoreResult<()> {
        self.invalidating(traced(
            "bootstrap_admins",
            self.inner.bootstrap_admins(emails, now),
        ))
        .await
    }
}

#[async_trait]
impl RoleStore for CachedStore {
    async fn role_names(&self) -> StoreResult<Vec<String>> {
        traced("role_names", self.inner.role_names()).await
    }

    async fn list_roles(&self, now: i64) -> StoreResult<Vec<RoleInfo>> {
        traced("list_roles", self.inner.list_roles(now)).await
    }

    async fn create_role(
        &self,
        role: &Role,
        description: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<()> {
        self.invalidating(traced(
            "create_role",
            self.inner.create_role(role, description, audit, now),
        ))
        .await
    }

    async fn delete_role(
        &self,
        role: &Role,
        force: bool,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<()> {
        self.invalidating(traced(
            "delete_role",
            self.inner.delete_role(role, force, audit, now),
        ))
        .await
    }
}

#[async_trait]
impl RosterStore for CachedStore {
    async fn import_roster(
        &self,
        import: RosterImport,
        chunks: tokio::sync::mpsc::Receiver<ImportChunk>,
    ) -> StoreResult<Option<UpsertCounts>> {
        self.invalidating(traced(
            "import_roster",
            self.inner.import_roster(import, chunks),
        ))
        .await
    }

    async fn list_eligible(&self, filter: &EligibleFilter) -> StoreResult<Vec<EligibleRow>> {
        traced("list_eligible", self.inner.list_eligible(filter)).await
    }

    async fn remove_eligible(
        &self,
        email: &Email,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        self.invalidating(traced(
            "remove_eligible",
            self.inner.remove_eligible(email, audit, now),
        ))
        .await
    }

    async fn list_batches(&self, before: Option<&str>, limit: i64) -> StoreResult<Vec<BatchRow>> {
        traced("list_batches", self.inner.list_batches(before, limit)).await
    }

    async fn withdraw_batch(
        &self,
        id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<u64>> {
        self.invalidating(traced(
            "withdraw_batch",
            self.inner.withdraw_batch(id, audit, now),
        ))
        .await
    }
}

#[async_trait]
impl ApiKeyStore for CachedStore {
    async fn create_api_key(
        &self,
        member: &MemberId,
        key: NewApiKey,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        self.invalidating(traced(
            "create_api_key",
            self.inner.create_api_key(member, key, audit, now),
        ))
        .await
    }

    async fn api_key(&self, id: &str, now: i64) -> StoreResult<Option<ApiKeyRecord>> {
        self.keys
            .get_or_read(
                &self.freshness,
                id.to_owned(),
                now,
                traced("api_key", self.inner.api_key(id, now)),
            )
            .await
    }

    async fn list_api_keys(
        &self,
        member: Option<&MemberId>,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<ApiKeyInfo>> {
        traced(
            "list_api_keys",
            self.inner.list_api_keys(member, before, limit),
        )
        .await
    }

    async fn revoke_api_key(&self, id: &str, audit: AuditEntry, now: i64) -> StoreResult<bool> {
        self.invalidating(traced(
            "revoke_api_key",
            self.inner.revoke_api_key(id, audit, now),
        ))
        .await
    }

    /// Only `last_used_at`, which authentication does not read.
    async fn touch_api_key(&self, id: &str, now: i64) -> StoreResult<()> {
        traced("touch_api_key", self.inner.touch_api_key(id, now)).await
    }

    async fn rate_limit_hits(&self, bucket: &str, window_secs: i64, now: i64) -> StoreResult<i64> {
        traced(
            "rate_limit_hits",
            self.inner.rate_limit_hits(bucket, window_secs, now),
        )
        .await
    }
}

#[async_trait]
impl AuditStore for CachedStore {
    async fn record_audit(&self, entry: AuditEntry, now: i64) -> StoreResult<()> {
        traced("record_audit", self.inner.record_audit(entry, now)).await
    }

    async fn list_audit(&self, filter: &AuditFilter) -> StoreResult<Vec<AuditRow>> {
        traced("list_audit", self.inner.list_audit(filter)).await
    }
}

#[async_trait]
impl OutboxStore for CachedStore {
    async fn claim_due_mail(
        &self,
        lease: &LeaseToken,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> StoreResult<Vec<OutboxMail>> {
        traced(
            "claim_due_mail",
            self.inner.claim_due_mail(lease, now, lease_secs, limit),
        )
        .await
    }

    async fn renew_mail_lease(&self, lease: &LeaseToken, until: i64) -> StoreResult<Vec<String>> {
        traced(
            "renew_mail_lease",
            self.inner.renew_mail_lease(lease, until),
        )
        .await
    }

    async fn finish_mails(
        &self,
        lease: &LeaseToken,
        outcomes: &[(String, MailResult)],
        now: i64,
    ) -> StoreResult<()> {
        traced(
            "finish_mails",
            self.inner.finish_mails(lease, outcomes, now),
        )
        .await
    }

    async fn outbox_page(&self, query: OutboxQuery<'_>) -> StoreResult<Vec<OutboxEntry>> {
        traced("outbox_page", self.inner.outbox_page(query)).await
    }

    async fn outbox_counts(&self) -> StoreResult<OutboxCounts> {
        traced("outbox_counts", self.inner.outbox_counts()).await
    }

    async fn requeue_failed_mail(
        &self,
        id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<RequeueOutcome> {
        traced(
            "requeue_failed_mail",
            self.inner.requeue_failed_mail(id, audit, now),
        )
        .await
    }
}

#[async_trait]
impl SigningKeyStore for CachedStore {
    async fn signing_keys(&self) -> StoreResult<Vec<SigningKeyRow>> {
        self.inner.signing_keys().await
    }

    /// Caches nothing, but tells this process's key readers at once.
    async fn add_signing_key(
        &self,
        key: NewSigningKey,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        let added = self.inner.add_signing_key(key, audit, now).await;
        self.freshness.signing_keys_changed();
        added
    }

    async fn revoke_signing_key(
        &self,
        kid: &str,
        replacement: Option<NewSigningKey>,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        let revoked = self
            .inner
            .revoke_signing_key(kid, replacement, audit, now)
            .await;
        self.freshness.signing_keys_changed();
        revoked
    }

    fn signing_key_changes(&self) -> Option<tokio::sync::watch::Receiver<u64>> {
        Some(self.freshness.signing_key_changes())
    }
}

#[async_trait]
impl ConsoleStore for CachedStore {
    async fn overview(&self, now: i64) -> StoreResult<Overview> {
        self.inner.overview(now).await
    }

    async fn stage_upload(&self, upload: &StagedUpload) -> StoreResult<()> {
        self.inner.stage_upload(upload).await
    }

    async fn staged_upload(&self, id: &str) -> StoreResult<Option<StagedUpload>> {
        self.inner.staged_upload(id).await
    }

    async fn discard_upload(&self, id: &str) -> StoreResult<bool> {
        self.inner.discard_upload(id).await
    }
}

/// Webhooks touch nothing cached: every call goes straight through.
#[async_trait]
impl WebhookStore for CachedStore {
    async fn create_webhook(
        &self,
        new: NewWebhook,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<WebhookEndpoint> {
        self.inner.create_webhook(new, audit, now).await
    }

    async fn list_webhooks(&self) -> StoreResult<Vec<WebhookEndpoint>> {
        self.inner.list_webhooks().await
    }

    async fn webhook(&self, id: &str) -> StoreResult<Option<WebhookEndpoint>> {
        self.inner.webhook(id).await
    }

    async fn update_webhook(
        &self,
        id: &str,
        patch: WebhookPatch,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<Option<WebhookEndpoint>> {
        self.inner.update_webhook(id, patch, audit, now).await
    }

    async fn delete_webhook(&self, id: &str, audit: AuditEntry, now: i64) -> StoreResult<bool> {
        self.inner.delete_webhook(id, audit, now).await
    }

    async fn set_webhook_secret(
        &self,
        id: &str,
        secret_sealed: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        self.inner
            .set_webhook_secret(id, secret_sealed, audit, now)
            .await
    }

    async fn webhook_deliveries(
        &self,
        endpoint_id: &str,
        before: Option<&str>,
        limit: i64,
    ) -> StoreResult<Vec<WebhookDelivery>> {
        self.inner
            .webhook_deliveries(endpoint_id, before, limit)
            .await
    }

    async fn redeliver_webhook(
        &self,
        endpoint_id: &str,
        event_id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<RedeliverOutcome> {
        self.inner
            .redeliver_webhook(endpoint_id, event_id, audit, now)
            .await
    }

    async fn claim_due_webhooks(
        &self,
        lease: &LeaseToken,
        now: i64,
        lease_secs: i64,
        limit: i64,
    ) -> StoreResult<Vec<DueWebhook>> {
        self.inner
            .claim_due_webhooks(lease, now, lease_secs, limit)
            .await
    }

    async fn renew_webhook_lease(
        &self,
        lease: &LeaseToken,
        until: i64,
    ) -> StoreResult<Vec<(String, String)>> {
        self.inner.renew_webhook_lease(lease, until).await
    }

    async fn finish_webhooks(
        &self,
        lease: &LeaseToken,
        outcomes: &[((String, String), WebhookResult)],
        disable_after: i64,
        now: i64,
    ) -> StoreResult<()> {
        self.inner
            .finish_webhooks(lease, outcomes, disable_after, now)
            .await
    }

    async fn webhook_counts(&self) -> StoreResult<WebhookCounts> {
        self.inner.webhook_counts().await
    }
}

#[async_trait]
impl DeviceStore for CachedStore {
    async fn link_request(&self, link: &TokenHash) -> StoreResult<Option<LinkRequestState>> {
        self.inner.link_request(link).await
    }

    async fn mark_waiting(
        &self,
        link: &TokenHash,
        now: i64,
    ) -> StoreResult<Option<LinkRequestState>> {
        self.inner.mark_waiting(link, now).await
    }

    async fn approve_handoff(
        &self,
        link: &TokenHash,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        self.inner.approve_handoff(link, audit, now).await
    }

    async fn refuse_handoff(
        &self,
        link: &TokenHash,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        self.inner.refuse_handoff(link, audit, now).await
    }

    async fn member_sessions(&self, member: &MemberId, now: i64) -> StoreResult<Vec<SessionInfo>> {
        self.inner.member_sessions(member, now).await
    }

    async fn end_own_session(
        &self,
        member: &MemberId,
        session_id: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<bool> {
        self.invalidating(self.inner.end_own_session(member, session_id, audit, now))
            .await
    }

    async fn end_other_sessions(
        &self,
        member: &MemberId,
        keep: &str,
        audit: AuditEntry,
        now: i64,
    ) -> StoreResult<u64> {
        self.invalidating(self.inner.end_other_sessions(member, keep, audit, now))
            .await
    }
}

#[async_trait]
impl HousekeepingStore for CachedStore {
    /// Deletes ended sessions: invalidates.
    async fn prune(
        &self,
        now: i64,
        retention: &Retention,
        batch: u32,
    ) -> StoreResult<PruneOutcome> {
        self.invalidating(traced("prune", self.inner.prune(now, retention, batch)))
            .await
    }
}

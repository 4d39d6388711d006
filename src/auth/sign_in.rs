//! Signing in: requesting a link (and code) by mail, and redeeming either for
//! a session.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::json;

use super::{AuthError, AuthSettings, RateLimiter, RedirectTarget, Sessions, TokenGrant};
use crate::clock::Clock;
use crate::domain::{Email, OpaqueToken, SignInCode, TokenHash};
use crate::mail::Mailer;
use crate::metrics::{Metrics, VerifyFailure};
use crate::store::{AuditEntry, DynStore, NewMagicLink};

/// Guesses allowed per mailed code before it stops working.
pub const MAX_CODE_ATTEMPTS: i64 = 5;

#[derive(Debug, Clone)]
pub struct LinkRequest<'a> {
    pub email: Email,
    pub redirect_to: Option<&'a str>,
    pub ip: Option<IpAddr>,
}

pub struct SignIn {
    store: DynStore,
    clock: Clock,
    mailer: Arc<Mailer>,
    /// Mixed into each code's hash, so a leaked table of code hashes cannot be
    /// reversed by trying the million codes.
    code_pepper: [u8; 32],
    sessions: Sessions,
    limiter: RateLimiter,
    settings: AuthSettings,
    metrics: Arc<Metrics>,
}

impl SignIn {
    pub fn new(
        store: DynStore,
        clock: Clock,
        mailer: Arc<Mailer>,
        code_pepper: [u8; 32],
        sessions: Sessions,
        limiter: RateLimiter,
        settings: AuthSettings,
    ) -> Self {
        Self {
            store,
            clock,
            mailer,
            code_pepper,
            sessions,
            limiter,
            settings,
            metrics: Arc::default(),
        }
    }

    pub(super) fn set_metrics(&mut self, metrics: Arc<Metrics>) {
        self.sessions.set_metrics(metrics.clone());
        self.limiter.set_metrics(metrics.clone());
        self.metrics = metrics;
    }

    /// Mails a sign-in link and code if `email` may sign in. Succeeds the same way
    /// whether or not it may, so the answer reveals nothing about the allowlist.
    pub async fn request_link(&self, request: LinkRequest<'_>) -> Result<(), AuthError> {
        let redirect = request
            .redirect_to
            .map(|raw| {
                RedirectTarget::parse(raw, &self.settings.allowed_redirects)
                    .ok_or(AuthError::RedirectNotAllowed)
            })
            .transpose()?;
        self.limiter.check(request.ip, Some(&request.email)).await?;

        let now = self.clock.now();
        let ip = request.ip.map(|ip| ip.to_string());
        let audit = AuditEntry::new("auth.link_requested")
            .target(request.email.as_str())
            .ip(ip.clone());

        // The mail is made whether or not the address may sign in: the store
        // decides in the same round trip that stores it, and the answer takes
        // the same work either way.
        let token = OpaqueToken::generate();
        let code = SignInCode::generate();
        let token_hash = token.hash();
        let expires_at = now + self.settings.link_ttl.as_secs() as i64;
        let link = format!(
            "{}/auth/confirm?token={}",
            self.settings.public_url,
            token.expose()
        );
        let mail = self
            .mailer
            .sign_in_mail(
                &request.email,
                &link,
                code.expose(),
                self.settings.link_ttl,
                expires_at,
                now,
            )
            .map_err(|e| AuthError::Mail(e.to_string()))?;
        let record = NewMagicLink {
            code_hash: code.hash(&self.code_pepper, &token_hash),
            token_hash,
            email: request.email,
            redirect_to: redirect.map(|r| r.as_str().to_owned()),
            created_at: now,
            expires_at,
            ip,
        };
        let eligible = self.store.create_magic_link(record, mail, audit).await?;
        self.metrics.auth().link_requested(eligible);
        if eligible {
            self.mailer.wake_worker();
        }
        Ok(())
    }

    /// Redeems the token from a link.
    pub async fn redeem_token(
        &self,
        token: &str,
        ip: Option<IpAddr>,
    ) -> Result<TokenGrant, AuthError> {
        match OpaqueToken::parse(token) {
            Some(token) => self.redeem(&token.hash(), ip, "link").await,
            None => {
                self.fail_verify(ip, "link", None, VerifyFailure::Malformed)
                    .await
            }
        }
    }

    /// Redeems the six-digit code mailed to `email`. Each guess spends one of the
    /// code's attempts, so a code can be guessed at most five times.
    pub async fn redeem_code(
        &self,
        email: &Email,
        code: &str,
        ip: Option<IpAddr>,
    ) -> Result<TokenGrant, AuthError> {
        self.limiter.check(ip, None).await?;
        let Some(code) = SignInCode::parse(code) else {
            return self
                .fail_verify(ip, "code", Some(email), VerifyFailure::Malformed)
                .await;
        };
        let live = self
            .store
            .spend_code_attempt(email, self.clock.now(), MAX_CODE_ATTEMPTS)
            .await?;
        let matching = live
            .iter()
            .find(|(link, stored)| code.hash(&self.code_pepper, link).ct_eq(stored));
        match matching {
            Some((link, _)) => self.redeem(link, ip, "code").await,
            None if live.is_empty() => {
                self.fail_verify(ip, "code", Some(email), VerifyFailure::NotRedeemable)
                    .await
            }
            None => {
                self.fail_verify(ip, "code", Some(email), VerifyFailure::WrongCode)
                    .await
            }
        }
    }

    /// Whether `email` may sign in, for front ends that say so before mailing.
    /// Counted against the client's IP limit, as it reveals the allowlist.
    pub async fn check_eligibility(
        &self,
        email: &Email,
        ip: Option<IpAddr>,
    ) -> Result<bool, AuthError> {
        self.limiter.check(ip, None).await?;
        Ok(self.store.is_eligible(email).await?)
    }

    /// Consumes the link and opens a session in one store call, so two
    /// concurrent clicks give one session.
    async fn redeem(
        &self,
        link: &TokenHash,
        ip: Option<IpAddr>,
        method: &'static str,
    ) -> Result<TokenGrant, AuthError> {
        let now = self.clock.now();
        let (session, refresh) = self.sessions.prepare(ip, now);
        let Some(signed_in) = self.store.redeem_magic_link(link, session, now).await? else {
            return self
                .fail_verify(ip, method, None, VerifyFailure::NotRedeemable)
                .await;
        };
        self.metrics.auth().signed_in(method);
        let mut grant =
            self.sessions
                .grant(signed_in.member, &signed_in.session_id, refresh, now)?;
        // Re-checked at use: an origin removed from the settings since the link was sent no longer counts.
        grant.redirect_to = signed_in
            .redirect_to
            .and_then(|raw| RedirectTarget::parse(&raw, &self.settings.allowed_redirects));
        Ok(grant)
    }

    async fn fail_verify(
        &self,
        ip: Option<IpAddr>,
        method: &'static str,
        email: Option<&Email>,
        reason: VerifyFailure,
    ) -> Result<TokenGrant, AuthError> {
        self.metrics.auth().verify_failed(method, reason);
        let mut audit = AuditEntry::new("auth.verify_failed")
            .ip(ip.map(|ip| ip.to_string()))
            .details(json!({ "method": method }));
        if let Some(email) = email {
            audit = audit.target(email.as_str());
        }
        self.store.record_audit(audit, self.clock.now()).await?;
        Err(AuthError::InvalidLink)
    }
}

//! Signing in: requesting a link (and code) by mail, and redeeming either for
//! a session.

use std::net::IpAddr;
use std::sync::Arc;

use serde_json::json;

use super::{
    AuthError, AuthSettings, Client, HandoffKeys, RateLimiter, RedirectTarget, RequestHandle,
    ServerSecret, Sessions, TokenGrant,
};
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
    pub client: Client,
}

/// Where a link request stands, as its asking device learns it.
#[derive(Debug)]
pub enum RequestStatus {
    /// Nothing yet: the link has not been confirmed anywhere.
    Pending,
    /// Another device picked the right number: the asking device's session,
    /// handed over this once.
    SignedIn(Box<TokenGrant>),
    /// The link was used on another device (or its session already collected).
    CompletedElsewhere,
    /// Another device picked a wrong number; the request is over.
    Refused,
    Expired,
}

/// What the confirm page on another device shows about the request.
#[derive(Debug, Clone)]
pub struct CrossDevice {
    pub device: Option<String>,
    pub ip: Option<String>,
    pub requested_at: i64,
    pub choices: [u8; 3],
}

/// How another device answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Handoff {
    Approved,
    Refused,
}

/// How recently the asking device must have checked on its request for the
/// confirm page to ask for its number (it checks every few seconds).
const WAITING_WITHIN_SECS: i64 = 20;

pub struct SignIn {
    store: DynStore,
    clock: Clock,
    mailer: Arc<Mailer>,
    /// Mixed into each code's hash, so a leaked table of code hashes cannot be
    /// reversed by trying the million codes.
    code_pepper: [u8; 32],
    handoff: HandoffKeys,
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
        secret: &ServerSecret,
        sessions: Sessions,
        limiter: RateLimiter,
        settings: AuthSettings,
    ) -> Self {
        Self {
            store,
            clock,
            mailer,
            code_pepper: secret.derive("sign-in code pepper"),
            handoff: HandoffKeys::new(secret),
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
    /// whether or not it may, so the answer reveals nothing about the allowlist:
    /// the handle is made alike for both.
    pub async fn request_link(&self, request: LinkRequest<'_>) -> Result<RequestHandle, AuthError> {
        let redirect = request
            .redirect_to
            .map(|raw| {
                RedirectTarget::parse(raw, &self.settings.allowed_redirects)
                    .ok_or(AuthError::RedirectNotAllowed)
            })
            .transpose()?;
        self.limiter
            .check(request.client.ip, Some(&request.email))
            .await?;

        let now = self.clock.now();
        let ip = request.client.ip.map(|ip| ip.to_string());
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
        let handle = self.handoff.handle(&token_hash, expires_at);
        let record = NewMagicLink {
            code_hash: code.hash(&self.code_pepper, &token_hash),
            token_hash,
            email: request.email,
            redirect_to: redirect.map(|r| r.as_str().to_owned()),
            created_at: now,
            expires_at,
            ip,
            device: request.client.device,
        };
        let eligible = self.store.create_magic_link(record, mail, audit).await?;
        self.metrics.auth().link_requested(eligible);
        if eligible {
            self.mailer.wake_worker();
        }
        Ok(handle)
    }

    /// Redeems the token from a link.
    pub async fn redeem_token(
        &self,
        token: &str,
        client: &Client,
    ) -> Result<TokenGrant, AuthError> {
        match OpaqueToken::parse(token) {
            Some(token) => self.redeem(&token.hash(), client, "link").await,
            None => {
                self.fail_verify(client.ip, "link", None, VerifyFailure::Malformed)
                    .await
            }
        }
    }

    /// The asking device checks on its request. Once another device picked the
    /// right number, this opens the asking device's session (through the same
    /// redemption as a link) and hands it over, once.
    pub async fn request_status(
        &self,
        id: &str,
        secret: &str,
        client: &Client,
    ) -> Result<RequestStatus, AuthError> {
        let (link, expires_at) = self
            .handoff
            .open(id, secret)
            .ok_or(AuthError::InvalidCredential)?;
        let now = self.clock.now();
        let Some(state) = self.store.mark_waiting(&link, now).await? else {
            // No link was stored: the address may not sign in. The answer is
            // the one a request nobody confirms gets.
            return Ok(if now >= expires_at {
                RequestStatus::Expired
            } else {
                RequestStatus::Pending
            });
        };
        Ok(match (state.handoff.as_deref(), state.consumed_at) {
            (Some("refused"), _) => RequestStatus::Refused,
            (_, Some(_)) => RequestStatus::CompletedElsewhere,
            _ if now >= state.expires_at => RequestStatus::Expired,
            (Some("approved"), None) => match self.redeem(&link, client, "other_device").await {
                Ok(grant) => RequestStatus::SignedIn(Box::new(grant)),
                Err(AuthError::InvalidLink) => RequestStatus::CompletedElsewhere,
                Err(other) => return Err(other),
            },
            _ => RequestStatus::Pending,
        })
    }

    /// What the confirm page shows when the link is opened away from the
    /// device that asked: `None` unless that device is waiting on it now.
    pub async fn cross_device(&self, token: &str) -> Result<Option<CrossDevice>, AuthError> {
        let Some(token) = OpaqueToken::parse(token) else {
            return Ok(None);
        };
        let link = token.hash();
        let now = self.clock.now();
        let Some(state) = self.store.link_request(&link).await? else {
            return Ok(None);
        };
        let waiting = state
            .waiting_at
            .is_some_and(|at| now - at <= WAITING_WITHIN_SECS);
        let open = state.consumed_at.is_none() && state.handoff.is_none() && now < state.expires_at;
        Ok((waiting && open).then(|| CrossDevice {
            device: state.device,
            ip: state.ip,
            requested_at: state.created_at,
            choices: self.handoff.choices(&link),
        }))
    }

    /// The number a handle's device shows, if `secret` is the handle's.
    pub fn handle_number(&self, id: &str, secret: &str) -> Option<u8> {
        let (link, _) = self.handoff.open(id, secret)?;
        Some(self.handoff.number(&link))
    }

    /// Whether the device that opened `token` is the one that asked for it
    /// (it holds the request's handle).
    pub fn asked_here(&self, token: &str, handle_id: &str, handle_secret: &str) -> bool {
        let (Some(token), Some((link, _))) = (
            OpaqueToken::parse(token),
            self.handoff.open(handle_id, handle_secret),
        ) else {
            return false;
        };
        token.hash().ct_eq(&link)
    }

    /// Another device picked `pick` from the choices: the right number lets
    /// the waiting device sign in; a wrong one ends the request.
    pub async fn answer_handoff(
        &self,
        token: &str,
        pick: u8,
        client: &Client,
    ) -> Result<Handoff, AuthError> {
        let token = OpaqueToken::parse(token).ok_or(AuthError::InvalidLink)?;
        let link = token.hash();
        let now = self.clock.now();
        let right = self.handoff.number(&link) == pick;
        let audit = AuditEntry::new(if right {
            "auth.handoff_approved"
        } else {
            "auth.handoff_refused"
        })
        .ip(client.ip.map(|ip| ip.to_string()))
        .details(json!({ "device": client.device }));
        let answered = if right {
            self.store.approve_handoff(&link, audit, now).await?
        } else {
            self.store.refuse_handoff(&link, audit, now).await?
        };
        match (answered, right) {
            (false, _) => Err(AuthError::InvalidLink),
            (true, true) => Ok(Handoff::Approved),
            (true, false) => Ok(Handoff::Refused),
        }
    }

    /// Redeems the six-digit code mailed to `email`. Each guess spends one of the
    /// code's attempts, so a code can be guessed at most five times.
    pub async fn redeem_code(
        &self,
        email: &Email,
        code: &str,
        client: &Client,
    ) -> Result<TokenGrant, AuthError> {
        let ip = client.ip;
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
            Some((link, _)) => self.redeem(link, client, "code").await,
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
        client: &Client,
        method: &'static str,
    ) -> Result<TokenGrant, AuthError> {
        let now = self.clock.now();
        let (session, refresh) = self.sessions.prepare(client, now);
        let Some(signed_in) = self.store.redeem_magic_link(link, session, now).await? else {
            return self
                .fail_verify(client.ip, method, None, VerifyFailure::NotRedeemable)
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

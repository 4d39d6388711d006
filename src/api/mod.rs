//! The HTTP surface: one poem-openapi struct per tag, plus the HTML pages that
//! a sign-in link opens. Handlers parse input into domain types, call one
//! service function and map the result; they hold no SQL.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod body_limit;
pub mod eligible;
pub mod health;
pub mod input;
pub mod me;
pub mod members;
pub mod methods;
pub mod metrics;
pub mod outbox;
pub mod pages;
pub mod paging;
pub mod responses;
pub mod roles;
pub mod roster;
pub mod security;
pub mod signing_keys;
pub mod views;
pub mod webhooks;

use std::collections::HashMap;
use std::marker::PhantomData;
use std::net::IpAddr;
use std::sync::Arc;

use poem::Request;
use poem::endpoint::BoxEndpoint;
use poem::http::Method;
use poem_openapi::registry::{MetaApi, Registry};
use poem_openapi::{OpenApi, OpenApiService};

pub use responses::Documented;
pub use security::{AdminAuth, BearerAuth, KeyAuth};

use crate::admin::AdminService;
use crate::auth::{AuthService, Client, SigningKeys};
use crate::clock::Clock;
use crate::mail::Mailer;
use crate::store::DynStore;
use crate::webhooks::WebhookService;

/// The API's tags, in the order the spec lists them.
#[derive(poem_openapi::Tags)]
pub enum ApiTags {
    /// Signing in with a mailed link or code, refreshing and ending sessions.
    Auth,
    /// The signed-in member's own account.
    Me,
    /// The allowlist of addresses that may become members, and its import batches (admin only).
    EligibleEmails,
    /// Mail delivery: what is queued, sent, failed or expired (admin only).
    Outbox,
    /// Members, their status and roles (admin only).
    Members,
    /// Built-in and custom roles (admin only).
    Roles,
    /// API keys for integrations (admin only).
    ApiKeys,
    /// What happened, and who did it (admin only).
    Audit,
    /// Endpoints that hear of membership changes, signed, and their deliveries (admin only).
    Webhooks,
    /// The keys that sign access tokens: published for verifiers (JWKS, OpenID
    /// discovery), rotated and revoked by admins.
    SigningKeys,
    /// Liveness and readiness.
    Health,
}

/// What the handlers use; [`service`] hands each API struct its share.
#[derive(Clone)]
pub struct ApiServices {
    pub store: DynStore,
    pub clock: Clock,
    pub auth: Arc<AuthService>,
    pub admin: Arc<AdminService>,
    pub signing_keys: Arc<SigningKeys>,
    pub mailer: Arc<Mailer>,
    pub webhooks: Arc<WebhookService>,
    pub proxies: TrustedProxies,
    /// Whether `POST /v1/auth/eligibility` answers (it reveals the allowlist).
    pub public_eligibility: bool,
}

/// Every API struct, in the order the spec lists their operations.
pub type Apis = (
    auth::AuthApi,
    me::MeApi,
    eligible::EligibleApi,
    outbox::OutboxApi,
    roster::RosterApi,
    members::MembersApi,
    roles::RolesApi,
    api_keys::ApiKeysApi,
    audit::AuditApi,
    webhooks::WebhooksApi,
    signing_keys::SigningKeysApi,
    health::HealthApi,
);

/// The OpenAPI service; `server` is the public URL the spec advertises.
///
/// The security schemes run before any handler, so they find the
/// [`AuthService`] and the [`TrustedProxies`] in the request's data: the
/// route that serves this must carry both.
pub fn service(services: &ApiServices, server: &str) -> OpenApiService<Documented<Apis>, ()> {
    let s = services;
    let apis = (
        auth::AuthApi {
            auth: s.auth.clone(),
            proxies: s.proxies.clone(),
            public_eligibility: s.public_eligibility,
        },
        me::MeApi {
            auth: s.auth.clone(),
            proxies: s.proxies.clone(),
        },
        eligible::EligibleApi {
            store: s.store.clone(),
            clock: s.clock.clone(),
            proxies: s.proxies.clone(),
        },
        outbox::OutboxApi {
            admin: s.admin.clone(),
            store: s.store.clone(),
            clock: s.clock.clone(),
            proxies: s.proxies.clone(),
        },
        roster::RosterApi {
            admin: s.admin.clone(),
            store: s.store.clone(),
            clock: s.clock.clone(),
            proxies: s.proxies.clone(),
        },
        members::MembersApi {
            admin: s.admin.clone(),
            store: s.store.clone(),
            clock: s.clock.clone(),
            proxies: s.proxies.clone(),
        },
        roles::RolesApi {
            admin: s.admin.clone(),
            store: s.store.clone(),
            clock: s.clock.clone(),
            proxies: s.proxies.clone(),
        },
        api_keys::ApiKeysApi {
            admin: s.admin.clone(),
            auth: s.auth.clone(),
            store: s.store.clone(),
            proxies: s.proxies.clone(),
        },
        audit::AuditApi {
            store: s.store.clone(),
        },
        webhooks::WebhooksApi {
            webhooks: s.webhooks.clone(),
            proxies: s.proxies.clone(),
        },
        signing_keys::SigningKeysApi {
            keys: s.signing_keys.clone(),
            issuer: s.auth.jwt().issuer().to_owned(),
            jwks_uri: format!("{server}/.well-known/jwks.json"),
            proxies: s.proxies.clone(),
        },
        health::HealthApi {
            store: s.store.clone(),
        },
    );
    describe(Documented(apis), server)
}

/// The OpenAPI document (JSON), without building a single service: the
/// `openapi` command prints it with no database at hand.
pub fn spec(server: &str) -> String {
    describe(SpecOnly::<Documented<Apis>>(PhantomData), server).spec()
}

fn describe<T: OpenApi>(apis: T, server: &str) -> OpenApiService<T, ()> {
    OpenApiService::new(apis, "gatehouse", env!("CARGO_PKG_VERSION"))
        .description("Passwordless, invite-only membership: magic links, roles, JWTs and API keys.")
        .server(server)
}

/// The operations and schemas of `T`, with no handlers behind them.
struct SpecOnly<T>(PhantomData<T>);

impl<T: OpenApi> OpenApi for SpecOnly<T> {
    fn meta() -> Vec<MetaApi> {
        T::meta()
    }

    fn register(registry: &mut Registry) {
        T::register(registry);
    }

    fn add_routes(self, _routes: &mut HashMap<String, HashMap<Method, BoxEndpoint<'static>>>) {}
}

/// The proxies whose `X-Forwarded-For` is believed.
#[derive(Clone, Debug)]
pub struct TrustedProxies(Arc<[IpAddr]>);

impl TrustedProxies {
    pub fn new(proxies: &[IpAddr]) -> Self {
        Self(proxies.into())
    }

    /// Whether `req` came straight from a trusted proxy, whose headers
    /// (`X-Forwarded-For`, `X-Request-Id`) are believed.
    pub fn is_trusted_peer(&self, req: &Request) -> bool {
        req.remote_addr()
            .as_socket_addr()
            .is_some_and(|addr| self.0.contains(&addr.ip().to_canonical()))
    }

    /// The address of the client behind `req`; see [`client_ip`].
    pub fn client_ip(&self, req: &Request) -> Option<IpAddr> {
        client_ip(req, &self.0)
    }

    /// The client behind `req`: its address and the device its `User-Agent` names.
    pub fn client(&self, req: &Request) -> Client {
        let user_agent = req
            .headers()
            .get(poem::http::header::USER_AGENT)
            .and_then(|v| v.to_str().ok());
        Client::new(self.client_ip(req), user_agent)
    }
}

/// The client's address: the socket peer, or, when that peer is a trusted proxy,
/// the right-most address in `X-Forwarded-For` that is not itself a trusted proxy.
pub fn client_ip(req: &Request, trusted_proxies: &[IpAddr]) -> Option<IpAddr> {
    let peer = req
        .remote_addr()
        .as_socket_addr()
        .map(|addr| addr.ip().to_canonical())?;
    if !trusted_proxies.contains(&peer) {
        return Some(peer);
    }
    let forwarded = req
        .headers()
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|item| item.trim().parse::<IpAddr>().ok())
        .map(|ip| ip.to_canonical())
        .collect::<Vec<_>>();
    Some(
        forwarded
            .into_iter()
            .rev()
            .find(|ip| !trusted_proxies.contains(ip))
            .unwrap_or(peer),
    )
}

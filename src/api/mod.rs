//! The HTTP surface: one poem-openapi struct per tag, plus the HTML pages that
//! a sign-in link opens. Handlers parse input into domain types, call one
//! service function and map the result; they hold no SQL.

pub mod api_keys;
pub mod audit;
pub mod auth;
pub mod body_limit;
pub mod eligible;
pub mod health;
pub mod me;
pub mod members;
pub mod metrics;
pub mod outbox;
pub mod pages;
pub mod paging;
pub mod roles;
pub mod roster;
pub mod security;
pub mod views;

use std::net::IpAddr;

use poem::Request;
use poem_openapi::OpenApiService;

pub use security::{AdminAuth, BearerAuth, KeyAuth};

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
    /// Liveness and readiness.
    Health,
}

/// The OpenAPI service; `server` is the public URL the spec advertises.
pub fn service(server: &str) -> OpenApiService<impl poem_openapi::OpenApi, ()> {
    OpenApiService::new(
        (
            auth::AuthApi,
            me::MeApi,
            eligible::EligibleApi,
            outbox::OutboxApi,
            roster::RosterApi,
            members::MembersApi,
            roles::RolesApi,
            api_keys::ApiKeysApi,
            audit::AuditApi,
            health::HealthApi,
        ),
        "gatehouse",
        env!("CARGO_PKG_VERSION"),
    )
    .description("Passwordless, invite-only membership: magic links, roles, JWTs and API keys.")
    .server(server)
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

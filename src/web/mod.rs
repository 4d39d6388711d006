//! Browser pages: the admin console under `/admin`.
//!
//! The console is a second front door to the same services as the JSON API: a
//! handler parses a form, calls one `AdminService` (or `import`, or auth)
//! function, and renders the outcome; the audit rows are the ones those
//! functions write. Pages are server-rendered minijinja templates; the one
//! script (`console.js`) only adds conveniences (copy, drag and drop, upload
//! progress), so every page works without it.
//!
//! [`guard`] stands in front of every page but sign-in: it finds the admin
//! behind the session cookie, checks that a state-changing request comes from
//! this site with the session's CSRF token, and sets the security headers.

mod account;
mod assets;
mod audit;
pub mod hosted;
mod keys;
mod mail;
mod members;
mod overview;
mod page;
mod roles;
mod roster;
pub mod session;
mod sign_in;

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::http::{Method, header};
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, get, post};

pub use page::FormFields;
pub use sign_in::hand_off;

pub use self::session::Door;
use self::session::{SessionCookie, SessionKeys, read_cookie, set_cookie};
use crate::admin::{Actor, AdminService};
use crate::api::TrustedProxies;
use crate::auth::{AuthService, Principal, ServerSecret};
use crate::clock::Clock;
use crate::domain::Role;
use crate::store::DynStore;
use crate::templates::Templates;

/// Where the console lives; its upload path has the import body limit.
pub const CONSOLE_PATH: &str = "/admin";
pub const UPLOAD_PATH: &str = "/admin/roster/uploads";

/// A session's cookie is re-sealed (its idle clock restarted) at most this often.
const REFRESH_EVERY_SECS: i64 = 60;

/// What the console's pages use.
pub struct Console {
    pub admin: Arc<AdminService>,
    pub auth: Arc<AuthService>,
    pub store: DynStore,
    pub clock: Clock,
    pub templates: Arc<Templates>,
    keys: SessionKeys,
    account_keys: SessionKeys,
    pub org_name: String,
    /// The public URL without a trailing slash; links and the origin check use it.
    pub public_url: String,
    /// `scheme://host[:port]` of the public URL, as browsers send it in `Origin`.
    origin: String,
    /// Cookies carry `Secure` when the public URL is https.
    secure_cookies: bool,
    pub idle: Duration,
    pub proxies: TrustedProxies,
    /// The largest form body read into memory.
    pub max_form_bytes: usize,
    /// The largest roster file an upload takes (the import limit).
    pub max_upload_bytes: usize,
}

/// The console's settings, apart from the services.
pub struct ConsoleSettings {
    pub org_name: String,
    pub public_url: String,
    pub idle: Duration,
    pub max_form_bytes: usize,
    pub max_upload_bytes: usize,
}

/// The member (an admin, in the console) behind a request's session cookie,
/// put in the request by [`guard`].
#[derive(Clone)]
pub struct BrowserSession {
    pub door: Door,
    pub principal: Principal,
    pub csrf: String,
    pub ip: Option<IpAddr>,
}

impl BrowserSession {
    /// Who the audit log names: the member, by id.
    pub fn actor(&self) -> Actor {
        Actor::new(&self.principal, self.ip)
    }
}

impl Console {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        admin: Arc<AdminService>,
        auth: Arc<AuthService>,
        store: DynStore,
        clock: Clock,
        templates: Arc<Templates>,
        secret: &ServerSecret,
        proxies: TrustedProxies,
        settings: ConsoleSettings,
    ) -> Self {
        let public_url = settings.public_url.trim_end_matches('/').to_owned();
        let parsed = url::Url::parse(&public_url).ok();
        Self {
            admin,
            auth,
            store,
            clock,
            templates,
            keys: SessionKeys::new(secret, Door::Console),
            account_keys: SessionKeys::new(secret, Door::Account),
            org_name: settings.org_name,
            origin: parsed
                .as_ref()
                .map(|url| url.origin().ascii_serialization())
                .unwrap_or_default(),
            secure_cookies: parsed.is_some_and(|url| url.scheme() == "https"),
            public_url,
            idle: settings.idle,
            proxies,
            max_form_bytes: settings.max_form_bytes,
            max_upload_bytes: settings.max_upload_bytes,
        }
    }

    /// The URL a console sign-in link leads back to.
    pub fn home_url(&self) -> String {
        format!("{}{CONSOLE_PATH}", self.public_url)
    }

    pub fn keys(&self, door: Door) -> &SessionKeys {
        match door {
            Door::Console => &self.keys,
            Door::Account => &self.account_keys,
        }
    }

    /// A strict cookie on every path (the flash message).
    fn cookie(&self, name: &str, value: &str, max_age_secs: u64) -> String {
        set_cookie(name, value, "/", max_age_secs, self.secure_cookies, false)
    }

    /// The `Set-Cookie` that starts (or restarts the idle clock of) a session.
    fn session_cookie(
        &self,
        door: Door,
        member: &crate::domain::MemberId,
        session_id: &str,
    ) -> String {
        let sealed = self.keys(door).seal(&SessionCookie {
            member_id: member.clone(),
            session_id: session_id.to_owned(),
            last_seen: self.clock.now(),
        });
        let max_age = self.idle.as_secs();
        set_cookie(
            door.cookie(),
            &sealed,
            door.path(),
            max_age,
            self.secure_cookies,
            false,
        )
    }

    fn clear_session_cookie(&self, door: Door) -> String {
        set_cookie(
            door.cookie(),
            "",
            door.path(),
            0,
            self.secure_cookies,
            false,
        )
    }

    /// Whether a state-changing request comes from a page of this site. A
    /// browser's `Sec-Fetch-Site` decides when it is sent (every current
    /// browser does): under `Referrer-Policy: no-referrer` such a browser sends
    /// `Origin: null` even for its own forms. Without it, `Origin` must be ours
    /// or absent. A request with neither header (not a browser) still needs
    /// the CSRF token.
    fn came_from_console(&self, req: &Request) -> bool {
        let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
        match header("sec-fetch-site") {
            Some(site) => site == "same-origin" || site == "none",
            None => header("origin").is_none_or(|origin| origin == self.origin),
        }
    }
}

/// Every console route, to be nested at [`CONSOLE_PATH`].
pub fn routes(console: Arc<Console>) -> impl Endpoint {
    let signed_in = Route::new()
        .at("/", get(overview::show))
        .at("/sign-out", post(sign_in::sign_out))
        .at("/roster", get(roster::show))
        .at("/roster/remove", post(roster::remove))
        .at("/roster/uploads", post(roster::receive))
        .at("/roster/uploads/:id", get(roster::check_upload))
        .at("/roster/uploads/:id/import", post(roster::import_upload))
        .at("/roster/uploads/:id/invalid.csv", get(roster::invalid_rows))
        .at("/roster/batches/:id/withdraw", post(roster::withdraw))
        .at("/members", get(members::list))
        .at(
            "/members/new",
            get(members::new_page).post(members::onboard),
        )
        .at("/members/:id", get(members::show))
        .at("/members/:id/roles", post(members::grant_role))
        .at(
            "/members/:id/roles/:role/revoke",
            post(members::revoke_role),
        )
        .at("/members/:id/status", post(members::set_status))
        .at("/members/:id/delete", post(members::delete))
        .at(
            "/members/:id/sessions/revoke",
            post(members::revoke_sessions),
        )
        .at("/members/:id/api-keys", post(keys::issue))
        .at("/roles", get(roles::show).post(roles::create))
        .at("/roles/:name/delete", post(roles::delete))
        .at("/api-keys", get(keys::list))
        .at("/api-keys/:id/revoke", post(keys::revoke))
        .at("/audit", get(audit::show))
        .at("/audit/export.csv", get(audit::export))
        .at("/mail", get(mail::show))
        .at("/mail/:id/retry", post(mail::retry));
    let guarded = {
        let console = console.clone();
        signed_in.around(move |next, req| guard(next, req, console.clone(), Door::Console))
    };
    Route::new()
        .at("/sign-in", get(sign_in::show).post(sign_in::request_link))
        .at("/assets/:name", get(assets::serve))
        .nest("/", guarded)
        .data(console)
        .around(security_headers)
}

/// The hosted sign-in, to be nested at `/sign-in`: no session needed.
pub fn sign_in_routes(console: Arc<Console>) -> impl Endpoint {
    Route::new()
        .at("/", get(hosted::show).post(hosted::request_link))
        .at("/wait", get(hosted::wait))
        .at("/code", post(hosted::code))
        .at("/status", post(hosted::check_status))
        .data(console)
        .around(security_headers)
}

/// A member's account, to be nested at `/account`, behind its own cookie.
pub fn account_routes(console: Arc<Console>) -> impl Endpoint {
    let account = Route::new()
        .at("/", get(account::show))
        .at("/sessions/end-others", post(account::end_others))
        .at("/sessions/:id/end", post(account::end_session))
        .at("/sign-out", post(account::sign_out))
        .at("/delete", post(account::delete));
    let guarded = {
        let console = console.clone();
        account.around(move |next, req| guard(next, req, console.clone(), Door::Account))
    };
    guarded.data(console).around(security_headers)
}

/// The stylesheet and scripts, to be nested at `/assets`.
pub fn asset_routes() -> impl Endpoint {
    Route::new()
        .at("/:name", get(assets::serve))
        .around(security_headers)
}

/// Finds the member behind the door's session cookie (an admin, for the
/// console) and checks state-changing requests; only then does the page run.
pub async fn guard<E: Endpoint>(
    next: Arc<E>,
    mut req: Request,
    console: Arc<Console>,
    door: Door,
) -> poem::Result<Response> {
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD);
    if changes_state && !console.came_from_console(&req) {
        return Ok(page::refusal(&console, &req, page::Refusal::CrossSite));
    }
    let cookie = req
        .headers()
        .get(header::COOKIE)
        .and_then(|v| v.to_str().ok())
        .and_then(|header| read_cookie(header, door.cookie()))
        .and_then(|value| console.keys(door).open(value));
    let Some(cookie) = cookie else {
        return Ok(page::to_sign_in(&console, door, None));
    };
    let now = console.clock.now();
    if now - cookie.last_seen > console.idle.as_secs() as i64 {
        return Ok(page::to_sign_in(
            &console,
            door,
            Some("You were signed out after a while without activity. Sign in again to go on."),
        ));
    }
    let member = match console
        .store
        .session_member(&cookie.member_id, &cookie.session_id, now)
        .await
    {
        Ok(Some(member)) => member,
        Ok(None) => {
            return Ok(page::to_sign_in(
                &console,
                door,
                Some("Your session has ended. Sign in again to go on."),
            ));
        }
        Err(error) => return Ok(page::unavailable(&console, &req, &error)),
    };
    if door == Door::Console && !member.has_role(Role::ADMIN) {
        let mut response = page::refusal(&console, &req, page::Refusal::NotAdmin);
        set_header(&mut response, console.clear_session_cookie(door));
        return Ok(response);
    }
    let session = BrowserSession {
        door,
        csrf: console.keys(door).csrf_token(&cookie.session_id),
        ip: console.proxies.client_ip(&req),
        principal: Principal {
            member,
            session_id: cookie.session_id.clone(),
            api_key: None,
        },
    };
    if changes_state {
        match page::read_form(&console, &session, &mut req).await {
            Ok(Some(fields)) => {
                req.extensions_mut().insert(fields);
            }
            // A multipart upload: its handler checks the token it carries.
            Ok(None) => {}
            Err(refusal) => return Ok(page::refusal(&console, &req, refusal)),
        }
    }
    let refresh = now - cookie.last_seen >= REFRESH_EVERY_SECS;
    req.extensions_mut().insert(session);
    let mut response = next.call(req).await?.into_response();
    let sets_own = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .any(|v| v.as_bytes().starts_with(door.cookie().as_bytes()));
    if refresh && !sets_own {
        set_header(
            &mut response,
            console.session_cookie(door, &cookie.member_id, &cookie.session_id),
        );
    }
    Ok(response)
}

fn set_header(response: &mut Response, cookie: String) {
    if let Ok(value) = cookie.parse() {
        response.headers_mut().append(header::SET_COOKIE, value);
    }
}

/// The console's headers on every answer, errors included: nothing from
/// another origin, no inline script, never framed, no Referer.
async fn security_headers<E: Endpoint>(next: Arc<E>, req: Request) -> poem::Result<Response> {
    let mut response = match next.call(req).await {
        Ok(response) => response.into_response(),
        Err(error) => error.into_response(),
    };
    let headers = response.headers_mut();
    for (name, value) in [
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; object-src 'none'",
        ),
        (header::REFERRER_POLICY, "no-referrer"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ] {
        headers.insert(name, poem::http::HeaderValue::from_static(value));
    }
    Ok(response)
}

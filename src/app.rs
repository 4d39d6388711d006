//! Builds the application from settings and runs it: the HTTP server, the mail
//! and webhook delivery workers and the housekeeping job. `main` and the tests go through the same door.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use poem::listener::{Acceptor, Listener, TcpAcceptor, TcpListener};
use poem::middleware::SetHeader;
use poem::{Endpoint, EndpointExt, IntoResponse, Request, Response, Route, Server, get};
use tokio::sync::watch;

use crate::admin::AdminService;
use crate::api::body_limit::limit_body;
use crate::api::methods::{AllowedMethods, refuse_other_methods};
use crate::api::metrics::MetricsSources;
use crate::api::pages::SignInPages;
use crate::api::{ApiServices, TrustedProxies};
use crate::auth::{
    AuthService, AuthSettings, JwtKeys, KeyPolicy, SigningKeyError, SigningKeys,
    load_or_create_secret,
};
use crate::clock::Clock;
use crate::config::Settings;
use crate::housekeeping::Housekeeping;
use crate::mail::worker::{OutboxWorker, RetryPolicy, outbox_worker};
use crate::mail::{Mailer, Sealer, transport_from_settings};
use crate::metrics::Metrics;
use crate::store::{self, DynStore, Retention};
use crate::telemetry::RequestObserver;
use crate::templates::Templates;
use crate::web::{Console, ConsoleSettings};
use crate::webhooks::WebhookService;
use crate::webhooks::worker::{WebhookWorker, webhook_worker};

/// How long in-flight requests may take to finish after a shutdown signal.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(20);

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("server secret: {0}")]
    Secret(std::io::Error),
    #[error(transparent)]
    Store(#[from] store::StoreError),
    #[error("signing keys: {0}")]
    SigningKeys(#[from] SigningKeyError),
    #[error("templates: {0}")]
    Templates(#[from] minijinja::Error),
    #[error("mail: {0}")]
    Mail(#[from] crate::mail::MailError),
    #[error("webhooks: {0}")]
    Webhooks(#[from] reqwest::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

/// Everything the application is built from; [`routes`] hands each part of the
/// HTTP surface only what it uses. Tests hold it to reach the services directly.
pub struct AppState {
    pub settings: Settings,
    /// The resolved public URL (the configured one, or `http://<bound address>`).
    pub public_url: String,
    pub clock: Clock,
    pub store: DynStore,
    pub auth: Arc<AuthService>,
    pub admin: Arc<AdminService>,
    /// The access-token signing keys: JWKS, rotation, revocation.
    pub signing_keys: Arc<SigningKeys>,
    pub mailer: Arc<Mailer>,
    pub templates: Arc<Templates>,
    pub metrics: Arc<Metrics>,
    pub console: Arc<Console>,
    pub webhooks: Arc<WebhookService>,
}

pub struct Application {
    acceptor: TcpAcceptor,
    state: Arc<AppState>,
    worker: OutboxWorker,
    webhook_worker: WebhookWorker,
    local_addr: SocketAddr,
}

/// Opens the store named in the settings and brings its schema up to date.
pub async fn open_store(settings: &Settings) -> Result<DynStore, StartError> {
    let store = store::connect(&settings.database_url, settings.db_max_connections).await?;
    store.migrate().await?;
    Ok(store)
}

impl Application {
    /// Prepares everything and binds the listener, but serves nothing yet.
    pub async fn build(settings: Settings) -> Result<Self, StartError> {
        Self::build_with_clock(settings, Clock::system()).await
    }

    /// [`Application::build`] on `clock`: tests pass one they move, to expire
    /// links and bring retries due without waiting.
    pub async fn build_with_clock(settings: Settings, clock: Clock) -> Result<Self, StartError> {
        // Several dependencies bring rustls with different crypto back ends; pick
        // one for the process, or TLS (SMTPS, HTTPS to a mail provider) would panic.
        let _ = rustls::crypto::ring::default_provider().install_default();
        settings.ensure_data_dir()?;
        let acceptor = TcpListener::bind(settings.bind)
            .into_acceptor()
            .await
            .map_err(|source| StartError::Bind {
                addr: settings.bind,
                source,
            })?;
        let local_addr = acceptor
            .local_addr()
            .first()
            .and_then(|addr| addr.as_socket_addr().copied())
            .unwrap_or(settings.bind);
        let public_url = settings
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{local_addr}"));

        if settings.database_url.is_postgres()
            && (settings.jwt_secret.is_none() || settings.public_url.is_none())
        {
            tracing::warn!(
                "on Postgres, set GATEHOUSE_JWT_SECRET and GATEHOUSE_PUBLIC_URL alike on every instance: \
                 instances with their own secret or issuer refuse each other's tokens and cannot open each other's queued mail"
            );
        }
        let secret = load_or_create_secret(settings.jwt_secret.as_ref(), &settings.data_dir)
            .map_err(StartError::Secret)?;
        let store = open_store(&settings).await?;
        // Before the bootstrap admins: whether members exist tells an
        // installation from before signing keys (it keeps HS256) from a new one.
        let signing_keys = Arc::new(
            SigningKeys::start(
                store.clone(),
                clock.clone(),
                &secret,
                KeyPolicy::from_settings(&settings),
            )
            .await?,
        );
        store
            .bootstrap_admins(&settings.bootstrap_admins, clock.now())
            .await?;

        let templates = Arc::new(Templates::new(settings.mail.templates_dir.clone())?);
        let mailer = Arc::new(Mailer::new(
            templates.clone(),
            Sealer::new(secret.derive("outbox sealing key")),
            &settings.mail,
        ));
        let transport = transport_from_settings(&settings)?;
        let issuer = settings
            .jwt_issuer
            .clone()
            .unwrap_or_else(|| public_url.clone());
        let jwt = JwtKeys::new(
            signing_keys.keyring(),
            &issuer,
            &settings.jwt_audience,
            settings.access_ttl,
        );
        let auth_settings = AuthSettings::from_settings(&settings, &public_url);
        let metrics = Arc::new(Metrics::new());
        let auth = AuthService::new(
            store.clone(),
            clock.clone(),
            jwt,
            mailer.clone(),
            &secret,
            auth_settings,
        )
        .with_metrics(metrics.clone());
        let worker = outbox_worker(
            store.clone(),
            clock.clone(),
            mailer.clone(),
            transport,
            RetryPolicy::from_settings(&settings.mail),
            metrics.clone(),
        );

        let webhook_sealer = Arc::new(Sealer::new(secret.derive("webhook secret sealing key")));
        let webhook_wake = Arc::new(tokio::sync::Notify::new());
        let webhook_worker = webhook_worker(
            store.clone(),
            clock.clone(),
            webhook_sealer.clone(),
            &settings.webhooks,
            metrics.clone(),
            webhook_wake.clone(),
        )?;
        let webhooks = Arc::new(WebhookService::new(
            store.clone(),
            clock.clone(),
            webhook_sealer,
            settings.webhooks.clone(),
            webhook_wake,
        ));

        let admin = Arc::new(AdminService::new(
            store.clone(),
            clock.clone(),
            mailer.wake_signal(),
        ));
        let auth = Arc::new(auth);
        let console = Arc::new(Console::new(
            admin.clone(),
            auth.clone(),
            store.clone(),
            clock.clone(),
            templates.clone(),
            &secret,
            TrustedProxies::new(&settings.trusted_proxies),
            ConsoleSettings {
                org_name: settings.mail.org_name.clone(),
                public_url: public_url.clone(),
                idle: settings.console_idle,
                max_form_bytes: settings.max_body_bytes,
                max_upload_bytes: settings.max_import_bytes,
            },
        ));
        let state = Arc::new(AppState {
            settings,
            public_url,
            admin,
            signing_keys,
            clock,
            store,
            auth,
            mailer,
            templates,
            metrics,
            console,
            webhooks,
        });
        Ok(Self {
            acceptor,
            state,
            worker,
            webhook_worker,
            local_addr,
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    pub fn state(&self) -> Arc<AppState> {
        self.state.clone()
    }

    /// Serves until `shutdown` completes, then drains requests and the mail worker.
    pub async fn run_until_stopped(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let (stop_tx, stop_rx) = watch::channel(false);
        let worker = tokio::spawn(self.worker.run(stop_rx.clone()));
        let webhook_worker = tokio::spawn(self.webhook_worker.run(stop_rx.clone()));
        let housekeeping = Housekeeping::new(
            self.state.store.clone(),
            self.state.clock.clone(),
            Retention::with_audit_days(self.state.settings.audit_retention_days),
            self.state.metrics.clone(),
        );
        let housekeeping = tokio::spawn(housekeeping.run(stop_rx.clone()));
        let key_reloader = tokio::spawn(self.state.signing_keys.clone().run(stop_rx));
        tracing::info!(addr = %self.local_addr, public_url = %self.state.public_url, "gatehouse is serving");
        let served = Server::new_with_acceptor(self.acceptor)
            .run_with_graceful_shutdown(routes(self.state.clone()), shutdown, Some(DRAIN_TIMEOUT))
            .await;
        tracing::info!("draining the mail and webhook workers");
        let _ = stop_tx.send(true);
        let _ = worker.await;
        let _ = webhook_worker.await;
        let _ = housekeeping.await;
        let _ = key_reloader.await;
        served
    }
}

/// The whole HTTP surface: API, pages, spec and docs, with the middleware stack.
pub fn routes(state: Arc<AppState>) -> impl Endpoint {
    let proxies = TrustedProxies::new(&state.settings.trusted_proxies);
    let observer = RequestObserver::new(state.metrics.clone(), proxies.clone());
    let services = ApiServices {
        store: state.store.clone(),
        clock: state.clock.clone(),
        auth: state.auth.clone(),
        admin: state.admin.clone(),
        signing_keys: state.signing_keys.clone(),
        mailer: state.mailer.clone(),
        webhooks: state.webhooks.clone(),
        proxies: proxies.clone(),
        public_eligibility: state.settings.public_eligibility,
    };
    let api = crate::api::service(&services, &state.public_url);
    let pages = Arc::new(SignInPages {
        auth: state.auth.clone(),
        templates: state.templates.clone(),
        org_name: state.settings.mail.org_name.clone(),
        public_url: state.public_url.clone(),
        proxies: proxies.clone(),
        console: state.console.clone(),
    });
    let metrics = MetricsSources {
        metrics: state.metrics.clone(),
        store: state.store.clone(),
    };
    let spec = api.spec_endpoint();
    let docs = api.swagger_ui();
    let limits = (
        state.settings.max_body_bytes,
        state.settings.max_import_bytes,
    );
    let allowed = AllowedMethods::of::<crate::api::Documented<crate::api::Apis>>();
    Route::new()
        .nest(
            "/",
            api.around(move |ep, req| limit_body(ep, req, limits))
                .around(move |ep, req| refuse_other_methods(ep, req, allowed.clone())),
        )
        .at(
            "/auth/confirm",
            get(crate::api::pages::confirm_page).post(
                crate::api::pages::confirm.around(move |ep, req| limit_body(ep, req, limits)),
            ),
        )
        .nest(
            crate::web::CONSOLE_PATH,
            crate::web::routes(state.console.clone())
                .around(move |ep, req| limit_body(ep, req, limits)),
        )
        .nest(
            "/sign-in",
            crate::web::sign_in_routes(state.console.clone())
                .around(move |ep, req| limit_body(ep, req, limits)),
        )
        .nest(
            "/account",
            crate::web::account_routes(state.console.clone())
                .around(move |ep, req| limit_body(ep, req, limits)),
        )
        .nest("/assets", crate::web::asset_routes())
        .at("/metrics", get(crate::api::metrics::metrics))
        .at("/openapi.json", spec)
        .nest("/docs", docs)
        .data(state.auth.clone())
        .data(proxies)
        .data(pages)
        .data(metrics)
        .with(SetHeader::new().overriding("x-content-type-options", "nosniff"))
        .around(no_store_unless_cacheable)
        .around(move |ep, req| crate::telemetry::observe(ep, req, observer.clone()))
        .catch_all_error(|err| async move { crate::error::render_any_error(err) })
}

/// Marks every response `Cache-Control: no-store`, except those that say how
/// they may be cached (the JWKS and the OpenID configuration).
async fn no_store_unless_cacheable<E: Endpoint>(
    next: Arc<E>,
    req: Request,
) -> poem::Result<Response> {
    let mut response = next.call(req).await?.into_response();
    if !response
        .headers()
        .contains_key(poem::http::header::CACHE_CONTROL)
    {
        response.headers_mut().insert(
            poem::http::header::CACHE_CONTROL,
            poem::http::HeaderValue::from_static("no-store"),
        );
    }
    Ok(response)
}

//! Wiring: services over a store, and the HTTP application around them.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use keyward_core::hash::SecretHasher;
use keyward_store::Store;
use tokio::net::TcpListener;

use crate::api::forward_auth::ForwardAuthConfig;
use crate::app::{self, AppState};
use crate::clock::{Clock, SystemClock};
use crate::keys::KeyService;
use crate::usage::{UsageRecorder, run_flusher};
use crate::verifier::Verifier;
use crate::workspaces::WorkspaceService;
use keyward_verifier::cache::KeyCache;

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    /// How often usage counts are written.
    pub usage_flush_interval: Duration,
    /// Keys held in memory.
    pub cache_capacity: usize,
    /// How long an unknown key id is remembered as unknown.
    pub negative_cache_ttl: Duration,
    /// How long a key record is trusted without reading it again: the
    /// bound on staleness if a cluster's invalidation notices are lost.
    pub cache_max_age: Duration,
    pub max_body_bytes: usize,
    pub forward_auth: ForwardAuthConfig,
    /// A second listener serving only forward-auth to trusted gateways
    /// (bind it to a private address).
    pub forward_auth_listen: Option<SocketAddr>,
    /// Where Envoy's ext_authz is served over gRPC, if anywhere.
    pub grpc_listen: Option<SocketAddr>,
    /// Where time comes from (tests pass a manual clock).
    pub clock: Arc<dyn Clock>,
    /// Failed authentications per client address per minute before that
    /// address is refused (429) for the rest of the minute; 0: no limit.
    pub ip_failure_limit: u32,
    /// Redis shared by every node for exact rate limits; without it each
    /// node limits on its own.
    pub redis_url: Option<String>,
    /// The master keys (current first) recoverable secrets are sealed with.
    pub master_keys: Option<Arc<keyward_core::sealed::Keyring>>,
    /// The URL people reach this server at (behind a proxy), whose origin
    /// cookie-authenticated requests may name besides the request's host.
    pub public_url: Option<String>,
    /// Days of usage history kept (and the longest period a query may
    /// ask for).
    pub retention_days: u32,
    /// Keys older than this many days are due for rotation (hygiene report).
    pub rotation_days: u32,
    /// Access tokens, refresh tokens and signing keys.
    pub oauth: crate::oauth::OAuthConfig,
    /// The FTP server's host name, shown beside a workspace's FTP username.
    pub ftp_host: Option<String>,
    /// Where webhooks may go (hosts allowed plain HTTP and private addresses).
    pub webhook_urls: crate::webhooks::UrlPolicy,
    /// How this node sends webhooks.
    pub webhook_delivery: crate::webhooks::deliver::DeliveryConfig,
    /// The public keys code hosts sign leak alerts with (a JSON file, read
    /// again when it changes).
    pub leak_public_keys: Option<std::path::PathBuf>,
    /// How long an `Idempotency-Key` and its answer are kept.
    pub idempotency_ttl: Duration,
    /// The node-wide replication token: embedded verifiers of every
    /// workspace may stream with it.
    pub replication_token: Option<String>,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            usage_flush_interval: Duration::from_secs(1),
            cache_capacity: 100_000,
            negative_cache_ttl: Duration::from_secs(5),
            cache_max_age: Duration::from_secs(60),
            max_body_bytes: 64 * 1024,
            forward_auth: ForwardAuthConfig::default(),
            forward_auth_listen: None,
            grpc_listen: None,
            clock: Arc::new(SystemClock),
            ip_failure_limit: 50,
            redis_url: None,
            public_url: None,
            master_keys: None,
            retention_days: 90,
            rotation_days: 90,
            oauth: crate::oauth::OAuthConfig::default(),
            ftp_host: None,
            webhook_urls: crate::webhooks::UrlPolicy::default(),
            webhook_delivery: crate::webhooks::deliver::DeliveryConfig::default(),
            leak_public_keys: None,
            idempotency_ttl: Duration::from_secs(24 * 3600),
            replication_token: None,
        }
    }
}

/// The services of one node, shared by the HTTP API and the CLI.
#[derive(Clone)]
pub struct Services {
    pub store: Arc<dyn Store>,
    pub verifier: Arc<Verifier>,
    pub keys: Arc<KeyService>,
    pub workspaces: Arc<WorkspaceService>,
    pub identities: Arc<crate::identities::IdentityService>,
    pub members: Arc<crate::members::MemberService>,
    pub roles: Arc<crate::roles::RoleService>,
    pub usage: Arc<UsageRecorder>,
    pub audit: Arc<crate::audit::AuditLog>,
    pub insights: Arc<crate::insights::Insights>,
    pub oauth: Arc<crate::oauth::OAuthService>,
    pub pgp: Arc<crate::pgp::PgpService>,
    pub integrations: Arc<crate::integrations::IntegrationsService>,
    pub webhooks: Arc<crate::webhooks::WebhookService>,
    pub deliverer: Arc<crate::webhooks::deliver::Deliverer>,
    pub leaks: Arc<crate::leaks::LeakService>,
    pub idempotency: Arc<crate::idempotency::IdempotencyService>,
}

impl Services {
    /// Checks that `hasher` is the key this store was created with (a
    /// fingerprint is stored on first use) and wires the services.
    pub async fn new(store: Arc<dyn Store>, hasher: SecretHasher, config: &ServerConfig) -> anyhow::Result<Self> {
        let fingerprint = hasher.fingerprint();
        let stored =
            store.meta_get_or_set("hash_key_fingerprint", &fingerprint).await.context("reading the database")?;
        if stored != fingerprint {
            anyhow::bail!(
                "the hash key (fingerprint {fingerprint}) is not the one this database was created with \
                 (fingerprint {stored}); start keyward with that key (--hash-key-file or KEYWARD_HASH_KEY)"
            );
        }
        // Every sealed secret must open with a configured master key.
        let in_use = store.master_keys_in_use().await.context("reading the database")?;
        let missing: Vec<&String> =
            in_use.iter().filter(|id| !config.master_keys.as_ref().is_some_and(|k| k.has(id))).collect();
        if !missing.is_empty() {
            let ids: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
            anyhow::bail!(
                "recoverable keys in this database are sealed with master key {} (by id), which is not configured; \
                 start keyward with that master key (--master-key-file or KEYWARD_MASTER_KEY; several keys, \
                 newest first, while rotating)",
                ids.join(", ")
            );
        }
        let clock = config.clock.clone();
        let usage = Arc::new(UsageRecorder::new(clock.clone()));
        let retention = chrono::Duration::days(i64::from(config.retention_days));
        let work = Arc::new(crate::work::UnitOfWork::new(store.clone()));
        let audit =
            Arc::new(crate::audit::AuditLog::new(work.clone(), store.clone(), &hasher, clock.clone(), retention));
        let cache = KeyCache::new(
            config.cache_capacity,
            config.negative_cache_ttl,
            config.cache_max_age,
            usage.pending().clone(),
        );
        let limiter = match &config.redis_url {
            Some(url) => crate::ratelimit::Limiter::with_redis(url).await.map_err(|e| anyhow::anyhow!("{e}"))?,
            None => crate::ratelimit::Limiter::local(),
        };
        let signer = Arc::new(crate::oauth::Signer::new(
            work.clone(),
            store.clone(),
            config.master_keys.clone(),
            clock.clone(),
            config.oauth.algorithm,
            config.oauth.signing_key_rotation,
            config.oauth.access_token_lifetime,
        ));
        signer.load().await.map_err(|e| anyhow::anyhow!("loading signing keys: {}", e.message))?;
        let verifier = Arc::new(Verifier::new(
            store.clone(),
            hasher.clone(),
            cache,
            usage.clone(),
            clock.clone(),
            config.ip_failure_limit,
            limiter,
            audit.clone(),
            signer.clone(),
            config.master_keys.clone(),
        ));
        work.attach(&verifier);
        if let Some(token) = &config.replication_token {
            verifier.replication().set_token(token);
        }
        verifier.refresh_import_prefixes().await.map_err(|e| anyhow::anyhow!("loading import prefixes: {e}"))?;
        verifier.load_revoked_tokens().await.map_err(|e| anyhow::anyhow!("loading revoked tokens: {}", e.message))?;
        let keys = Arc::new(KeyService::new(
            store.clone(),
            verifier.clone(),
            clock.clone(),
            config.master_keys.clone(),
            audit.clone(),
        ));
        let identities = Arc::new(crate::identities::IdentityService::new(store.clone(), clock.clone(), audit.clone()));
        let members = Arc::new(
            crate::members::MemberService::new(
                store.clone(),
                verifier.clone(),
                hasher.clone(),
                clock.clone(),
                audit.clone(),
            )
            .await,
        );
        let oauth = Arc::new(crate::oauth::OAuthService::new(
            store.clone(),
            verifier.clone(),
            members.clone(),
            signer,
            hasher,
            clock.clone(),
            audit.clone(),
            config.oauth.clone(),
        ));
        let integrations = Arc::new(crate::integrations::IntegrationsService::new(
            store.clone(),
            keys.clone(),
            members.clone(),
            clock.clone(),
            config.master_keys.clone(),
            audit.clone(),
            usage.clone(),
            verifier.clone(),
            config.ftp_host.clone(),
        ));
        let workspaces = Arc::new(WorkspaceService::new(
            store.clone(),
            keys.clone(),
            members.clone(),
            integrations.clone(),
            clock.clone(),
            audit.clone(),
        ));
        let roles =
            Arc::new(crate::roles::RoleService::new(store.clone(), verifier.clone(), clock.clone(), audit.clone()));
        let insights =
            Arc::new(crate::insights::Insights::new(store.clone(), keys.clone(), clock.clone(), config.rotation_days));
        let pgp = Arc::new(crate::pgp::PgpService::new(
            store.clone(),
            clock.clone(),
            config.master_keys.clone(),
            audit.clone(),
        ));
        let webhooks = Arc::new(crate::webhooks::WebhookService::new(
            store.clone(),
            clock.clone(),
            config.master_keys.clone(),
            audit.clone(),
            config.webhook_urls.clone(),
        ));
        let deliverer = Arc::new(crate::webhooks::deliver::Deliverer::new(
            store.clone(),
            clock.clone(),
            webhooks.clone(),
            audit.clone(),
            config.webhook_delivery.clone(),
        )?);
        let alert_keys = crate::leaks::AlertKeys::new(config.leak_public_keys.clone());
        alert_keys.check().context("reading the leak alert public keys (--leak-public-keys)")?;
        let leaks = Arc::new(crate::leaks::LeakService::new(
            store.clone(),
            keys.clone(),
            verifier.clone(),
            audit.clone(),
            clock.clone(),
            alert_keys,
        ));
        let idempotency = Arc::new(crate::idempotency::IdempotencyService::new(
            store.clone(),
            audit.work().clone(),
            clock.clone(),
            config.master_keys.clone(),
            chrono::Duration::from_std(config.idempotency_ttl).unwrap_or(chrono::Duration::days(1)),
        ));
        Ok(Services {
            store,
            verifier,
            keys,
            workspaces,
            identities,
            members,
            roles,
            usage,
            audit,
            insights,
            oauth,
            pgp,
            integrations,
            webhooks,
            deliverer,
            leaks,
            idempotency,
        })
    }
}

/// A bound, ready-to-run server. Tests bind port 0 and read [`Application::local_addr`].
pub struct Application {
    listener: TcpListener,
    forward_auth_listener: Option<TcpListener>,
    grpc_listener: Option<TcpListener>,
    services: Services,
    config: ServerConfig,
}

impl Application {
    pub async fn build(config: ServerConfig, store: Arc<dyn Store>, hasher: SecretHasher) -> anyhow::Result<Self> {
        // Before the services resolve their metric handles.
        let _ = crate::telemetry::prometheus();
        let services = Services::new(store, hasher, &config).await?;
        let listener = TcpListener::bind(config.listen).await.with_context(|| format!("binding {}", config.listen))?;
        let forward_auth_listener = match config.forward_auth_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?),
            None => None,
        };
        let grpc_listener = match config.grpc_listen {
            Some(addr) => Some(TcpListener::bind(addr).await.with_context(|| format!("binding {addr}"))?),
            None => None,
        };
        Ok(Application { listener, forward_auth_listener, grpc_listener, services, config })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.listener.local_addr().expect("a bound listener has an address")
    }

    /// The address of the forward-auth listener, when one is configured.
    pub fn forward_auth_addr(&self) -> Option<SocketAddr> {
        self.forward_auth_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// The address of the gRPC (Envoy ext_authz) listener, when one is configured.
    pub fn grpc_addr(&self) -> Option<SocketAddr> {
        self.grpc_listener.as_ref().and_then(|l| l.local_addr().ok())
    }

    pub fn services(&self) -> &Services {
        &self.services
    }

    /// Serves until `shutdown` completes, then drains connections and
    /// flushes pending usage counts.
    pub async fn run_until(self, shutdown: impl Future<Output = ()> + Send + 'static) -> anyhow::Result<()> {
        let state = AppState::new(&self.services, &self.config);
        let Services { store, usage, audit, deliverer, .. } = self.services;
        let work = audit.work().clone();
        // Other nodes' changes reach this node's caches (PostgreSQL).
        let watcher = store.watch().await.map(|mut notices| {
            let verifier = state.verifier.clone();
            tokio::spawn(async move {
                while let Some(what) = notices.recv().await {
                    verifier.invalidated(what).await;
                }
            })
        });
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let flusher =
            tokio::spawn(run_flusher(usage, store.clone(), audit, self.config.usage_flush_interval, stop_rx.clone()));
        let sender = tokio::spawn(deliverer.run(stop_rx.clone()));
        let scheduler = Arc::new(crate::webhooks::notices::Scheduler::new(
            store.clone(),
            self.config.clock.clone(),
            work,
            self.config.webhook_delivery.notice_interval,
        ));
        let notices = tokio::spawn(scheduler.run(stop_rx.clone()));
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let side = self.forward_auth_listener.map(|listener| {
            let app = app::forward_auth_router(&state, self.config.max_body_bytes);
            tokio::spawn(axum::serve(listener, app).with_graceful_shutdown(stopped(stop_rx.clone())).into_future())
        });
        let grpc = self.grpc_listener.map(|listener| {
            let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            let service = crate::grpc::ExtAuthz::service(&state);
            tokio::spawn(
                tonic::transport::Server::builder()
                    .add_service(service)
                    .serve_with_incoming_shutdown(incoming, stopped(stop_rx.clone())),
            )
        });
        let replication = state.verifier.replication().clone();
        let shutdown = async move {
            shutdown.await;
            replication.close();
        };
        let app = app::router(state, self.config.max_body_bytes);
        let served = axum::serve(self.listener, app).with_graceful_shutdown(shutdown).await;
        let _ = stop_tx.send(true);
        if let Some(side) = side {
            side.await.context("forward-auth listener")?.context("serving forward-auth")?;
        }
        if let Some(grpc) = grpc {
            grpc.await.context("gRPC listener")?.context("serving gRPC")?;
        }
        flusher.await.context("usage flusher")?;
        sender.await.context("webhook deliverer")?;
        notices.await.context("notice scheduler")?;
        // After the last write: the database file alone holds everything.
        if let Err(e) = store.checkpoint().await {
            tracing::warn!(error = %e, "checkpoint at shutdown failed");
        }
        if let Some(w) = watcher {
            w.abort();
        }
        served.context("serving HTTP")
    }
}

/// Completes on SIGINT or SIGTERM. The handlers are installed when this is
/// called, not when the future is first polled: call it before telling
/// anyone the server is up, so a signal sent at once is a clean stop.
/// Must be called within the runtime.
pub fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    let (mut interrupt, mut terminate) = {
        use tokio::signal::unix::{SignalKind, signal};
        (signal(SignalKind::interrupt()).ok(), signal(SignalKind::terminate()).ok())
    };
    async move {
        #[cfg(unix)]
        {
            async fn received(s: &mut Option<tokio::signal::unix::Signal>) {
                match s {
                    Some(s) => {
                        s.recv().await;
                    }
                    None => std::future::pending::<()>().await,
                }
            }
            tokio::select! {
                _ = received(&mut interrupt) => {}
                _ = received(&mut terminate) => {}
            }
        }
        #[cfg(not(unix))]
        let _ = tokio::signal::ctrl_c().await;
        tracing::info!("shutdown requested; draining connections");
    }
}

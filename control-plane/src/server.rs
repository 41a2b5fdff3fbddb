//! Assembles a server from its configuration: storage, bus, keys, domain, gRPC services with
//! health, reflection and gRPC-Web, the HTTP port, and a graceful shutdown.

use std::{net::SocketAddr, sync::Arc};

use anyhow::Context;
use tokio::{net::TcpListener, task::JoinHandle};
use tokio_stream::{StreamExt, wrappers::TcpListenerStream};
use tonic::{
    codec::CompressionEncoding,
    service::Routes,
    transport::{Identity, Server, ServerTlsConfig},
};
use tonic_health::{
    ServingStatus,
    pb::health_server::HealthServer,
    server::{HealthReporter, HealthService},
};
use veza_proto::{SERVICE_NAMES, analytics, auth as auth_pb, chat, notification, stream};
use veza_storage::{BlobStore, Db};

use crate::{
    auth::{AuthLayer, Authenticator, Revocations, TokenKeys},
    bus::Bus,
    config::Config,
    conn_caps::ConnLimits,
    connect::ConnectLayer,
    cors,
    domain::{
        Accounts, Analytics, DomainError, Media, NewAccount, Notifier,
        analytics::AnalyticsOptions,
        chat::Chat,
        create_account,
        limits::LocalLimiter,
        live::{Live, LiveOptions},
        media::{MediaOptions, Quotas},
    },
    grpc::{
        analytics::AnalyticsApi, auth::AuthApi, chat::ChatApi, direct::ConnIo,
        health::DrainingHealth, live_audio::LiveAudio, metrics_layer::MetricsLayer,
        notification::NotificationApi, rate_limit::RateLimitLayer, stream::StreamApi,
    },
    http::{HttpState, router},
    metrics::Metrics,
    net::{self, PublicStreamsLayer, UnaryDeadlineLayer},
    shutdown::{self, ShutdownTrigger},
    telemetry::SpanLayer,
};

/// Applies the same compression settings to every Veza service.
macro_rules! compressed {
    ($svc:expr) => {
        $svc.accept_compressed(CompressionEncoding::Gzip)
            .accept_compressed(CompressionEncoding::Zstd)
            .send_compressed(CompressionEncoding::Gzip)
            .send_compressed(CompressionEncoding::Zstd)
    };
}

/// The layered API, shared by both ports.
type ApiService = tower::util::BoxCloneSyncService<
    http::Request<axum::body::Body>,
    http::Response<tonic::body::Body>,
    std::convert::Infallible,
>;

/// A started server: its bound addresses and the handle that stops it.
pub struct RunningServer {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub db: Db,
    trigger: ShutdownTrigger,
    health: HealthReporter,
    grace: std::time::Duration,
    tasks: Vec<JoinHandle<anyhow::Result<()>>>,
}

/// Everything the services share.
struct Parts {
    db: Db,
    bus: Bus,
    auth: Arc<Authenticator>,
    accounts: Arc<Accounts>,
    metrics: Arc<Metrics>,
    blobs: BlobStore,
    /// Notifications: `create` for the server's own producers (mentions, track_ready…).
    notifier: Notifier,
    /// Analytics: `emit` for the server's own events (message_sent, room_joined…).
    analytics: Analytics,
    /// The analytics writer; ends once its queue is drained after shutdown.
    analytics_writer: JoinHandle<anyhow::Result<()>>,
    chat: Arc<Chat>,
}

/// Opens storage and the bus, binds both ports and starts serving.
///
/// Sets the process umask to `077` first: everything the server writes (database, blobs, temp
/// files, keys) is readable by its own user only.
pub async fn start(config: Config) -> anyhow::Result<RunningServer> {
    private_umask();
    let (trigger, shutdown) = shutdown::channel();
    let parts = assemble(&config, &shutdown).await?;
    if config.demo {
        seed_demo(&parts.db, &parts.chat).await?;
    }
    let grpc = TcpListener::bind(config.grpc_addr)
        .await
        .with_context(|| format!("binding {}", config.grpc_addr))?;
    let http = TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("binding {}", config.http_addr))?;
    let (grpc_addr, http_addr) = (grpc.local_addr()?, http.local_addr()?);
    let media = Media::start(
        parts.db.clone(),
        parts.blobs.clone(),
        parts.notifier.clone(),
        parts.analytics.clone(),
        parts.metrics.clone(),
        MediaOptions {
            max_upload_bytes: config.max_upload_bytes,
            processing_workers: config.processing_workers,
            renditions: config.renditions.clone(),
            cache_bytes: config.media_cache_bytes,
            url_ttl: config.media_url_ttl,
            public_url: config
                .public_url
                .clone()
                .unwrap_or_else(|| format!("http://{http_addr}")),
            tmp_dir: config.data_dir.join("tmp"),
            max_track_duration: config.max_track_duration,
            processing_attempts: config.processing_attempts,
            quotas: Quotas {
                storage_bytes: config.storage_quota_bytes,
                uploads: config.max_uploads_per_user,
                live: config.max_live_per_user,
            },
        },
        shutdown.clone(),
    )
    .await
    .context("starting the media service")?;
    let live = Live::start(
        parts.db.clone(),
        parts.bus.clone(),
        media.clone(),
        parts.analytics.clone(),
        parts.metrics.clone(),
        LiveOptions {
            chunk_ms: config.live_chunk_ms,
            burst_ms: config.live_burst_ms,
            max_lag_ms: config.live_max_lag_ms,
            grace: config.live_grace,
            max_listeners_per_stream: config.live_max_listeners_per_stream,
            max_listeners: config.live_max_listeners,
            bitrate_kbps: config.live_bitrate,
            writers: config.live_writers,
            tmp_dir: config.data_dir.join("tmp"),
        },
        shutdown.clone(),
    )
    .context("starting live streaming")?;
    let health = HealthReporter::new();
    let health_service = HealthServer::new(DrainingHealth::new(
        HealthService::from_health_reporter(health.clone()),
        shutdown.clone(),
    ));
    set_health(&health, ServingStatus::Serving).await;

    let tls = match &config.tls {
        Some((cert, key)) => Some(
            ServerTlsConfig::new()
                .identity(Identity::from_pem(
                    std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?,
                    std::fs::read(key).with_context(|| format!("reading {}", key.display()))?,
                ))
                .timeout(config.header_timeout),
        ),
        None => None,
    };
    // Transport limits (SPEC §13): streams per connection, keepalive pings that close dead
    // peers; the deadlines and connection caps are in `net` and `grpc::direct::ConnIo`.
    let mut builder = Server::builder()
        .accept_http1(true)
        .max_concurrent_streams(config.max_concurrent_streams)
        .http2_keepalive_interval(config.keepalive_interval)
        .http2_keepalive_timeout(Some(config.keepalive_timeout));
    if let Some(tls) = tls {
        builder = builder.tls_config(tls)?;
    }
    let api = api_service(
        &config,
        &parts,
        media.clone(),
        live.clone(),
        &shutdown,
        health_service,
    )?;
    let cors = cors::layer(&config.cors_origins)?;
    let routes = builder.add_routes(Routes::from(with_cors(
        axum::Router::new().fallback_service(api.clone()),
        &cors,
    )));

    // Direct live writes follow plain connections only (TLS encrypts in rustls), and only when
    // `--live-direct` is on.
    let follow = config.tls.is_none() && config.live_direct;
    let detach = config.live_detach;
    let limits = ConnLimits::new(
        config.max_connections_per_ip,
        config.max_connections,
        &parts.metrics,
    );
    let (header_timeout, idle_timeout) = (config.header_timeout, config.idle_timeout);
    let grpc_limits = limits.clone();
    let incoming = TcpListenerStream::new(grpc).filter_map(move |s| match s {
        Ok(s) => {
            let ip = s.peer_addr().ok()?.ip();
            // Over a cap: the socket is dropped (closed) here.
            let slot = grpc_limits.admit(ip, "grpc")?;
            let _ = s.set_nodelay(true);
            Some(Ok(ConnIo::new(s, follow).detaching(detach).limited(
                slot,
                header_timeout,
                idle_timeout,
            )))
        }
        Err(e) => Some(Err(e)),
    });
    let mut sd = shutdown.clone();
    let grpc_task = tokio::spawn(async move {
        routes
            .serve_with_incoming_shutdown(incoming, async move { sd.wait().await })
            .await?;
        Ok(())
    });
    let live_http = crate::http::icecast::LiveHttp {
        live: live.clone(),
        media: media.clone(),
        metrics: parts.metrics.clone(),
        shutdown: shutdown.clone(),
        header_timeout,
        idle: idle_timeout,
        direct: config.live_direct,
    };
    let state = HttpState {
        db: parts.db.clone(),
        auth: parts.auth.clone(),
        metrics: parts.metrics.clone(),
        media,
        live,
    };
    let http_task = tokio::spawn(net::serve_http(
        http,
        with_cors(router(state).merge(api_routes(api)), &cors),
        live_http,
        limits,
        net::HttpOptions {
            header_timeout,
            idle: idle_timeout,
            max_streams: config.max_concurrent_streams,
            keepalive_interval: config.keepalive_interval,
            keepalive_timeout: config.keepalive_timeout,
        },
        shutdown.clone(),
    ));
    tracing::info!(%grpc_addr, %http_addr, database = ?parts.db.backend(), bus = if matches!(parts.bus, Bus::Nats(_)) { "nats" } else { "in-process" }, "veza serving");
    Ok(RunningServer {
        grpc_addr,
        http_addr,
        db: parts.db,
        trigger,
        health,
        grace: config.shutdown_grace,
        tasks: vec![grpc_task, http_task, parts.analytics_writer],
    })
}

/// Every service behind the shared layers, outermost first: Connect, gRPC-Web, spans,
/// panics, metrics, deadlines, public-stream caps, authentication, rate limits. Both ports
/// serve this one stack (SPEC §11).
fn api_service(
    config: &Config,
    parts: &Parts,
    media: Media,
    live: Live,
    shutdown: &shutdown::Shutdown,
    health: HealthServer<DrainingHealth>,
) -> anyhow::Result<ApiService> {
    let reflection_v1 = reflection()?.build_v1()?;
    let reflection_v1alpha = reflection()?.build_v1alpha()?;
    let routes = Routes::new(health)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(compressed!(
            auth_pb::auth_service_server::AuthServiceServer::new(AuthApi::new(
                parts.accounts.clone(),
                shutdown.clone()
            ))
        ))
        .add_service(compressed!(
            chat::chat_service_server::ChatServiceServer::new(ChatApi::new(
                parts.chat.clone(),
                shutdown.clone()
            ))
        ))
        .add_service(LiveAudio::new(
            compressed!(stream::stream_service_server::StreamServiceServer::new(
                StreamApi::new(media.clone(), live.clone(), shutdown.clone())
            )),
            live,
            media,
            shutdown.clone(),
        ))
        .add_service(compressed!(
            analytics::analytics_service_server::AnalyticsServiceServer::new(AnalyticsApi::new(
                parts.analytics.clone(),
                parts.metrics.clone(),
                shutdown.clone()
            ))
        ))
        .add_service(compressed!(
            notification::notification_service_server::NotificationServiceServer::new(
                NotificationApi::new(parts.notifier.clone(), shutdown.clone())
            )
        ))
        .prepare();
    let stack = tower::ServiceBuilder::new()
        .layer(ConnectLayer::new()?)
        .layer(tonic_web::GrpcWebLayer::new())
        .layer(SpanLayer)
        .layer(crate::grpc::catch_panic::CatchPanicLayer)
        .layer(MetricsLayer::new(parts.metrics.clone()))
        .layer(UnaryDeadlineLayer::new(config.unary_timeout))
        .layer(PublicStreamsLayer::new(config.max_public_streams))
        .layer(AuthLayer::new(parts.auth.clone()))
        .layer(RateLimitLayer::new(LocalLimiter::per_second(
            config.rate_limit_rps,
            config.rate_limit_burst,
        )))
        .service(routes);
    Ok(ApiService::new(stack))
}

/// Reflection over every service, the standard ones (health, both reflection versions)
/// included.
fn reflection() -> anyhow::Result<tonic_reflection::server::Builder<'static>> {
    Ok(tonic_reflection::server::Builder::configure()
        .include_reflection_service(false)
        .register_encoded_file_descriptor_set(veza_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET))
}

/// Answers CORS preflights and adds the CORS headers, when origins are configured.
fn with_cors(router: axum::Router, cors: &Option<tower_http::cors::CorsLayer>) -> axum::Router {
    match cors {
        Some(layer) => router.layer(layer.clone()),
        None => router,
    }
}

/// The API on the HTTP port: `/<package>.<Service>/<Method>` for gRPC-Web and Connect.
fn api_routes(api: ApiService) -> axum::Router {
    axum::Router::new().route_service("/{service}/{method}", api)
}

async fn assemble(config: &Config, shutdown: &shutdown::Shutdown) -> anyhow::Result<Parts> {
    private_data_dir(config)?;
    let db = Db::connect(&config.database_url)
        .await
        .context("opening the database")?;
    let blobs = BlobStore::open(config.blob_url.as_deref(), &config.data_dir.join("blobs"))?;
    let bus = match &config.nats_url {
        Some(url) => Bus::nats(url)
            .await
            .with_context(|| format!("connecting to NATS at {}", crate::bus::redact_url(url)))?,
        None => Bus::local(),
    };
    let tokens = TokenKeys::load(&config.jwt, &db, &config.data_dir).await?;
    let revocations = Revocations::start(&bus, &db).await?;
    let auth = Arc::new(Authenticator::new(tokens, revocations, db.clone()));
    let metrics = Arc::new(Metrics::new());
    let analytics_opts = AnalyticsOptions {
        queue_capacity: config.analytics_queue_capacity,
        retention: (config.analytics_retention_days > 0)
            .then(|| std::time::Duration::from_secs(config.analytics_retention_days * 86_400)),
        ..AnalyticsOptions::default()
    };
    let (analytics, analytics_writer) = Analytics::start(
        db.clone(),
        bus.clone(),
        metrics.clone(),
        analytics_opts,
        shutdown.clone(),
    )
    .await?;
    let notifier = Notifier::new(db.clone(), bus.clone(), metrics.clone());
    let accounts = Arc::new(
        Accounts::new(
            db.clone(),
            bus.clone(),
            auth.clone(),
            config.access_token_ttl,
            config.refresh_token_ttl,
        )
        .with_analytics(analytics.clone())
        .with_register_limit(config.register_per_hour),
    );
    let chat = Arc::new(Chat::new(
        db.clone(),
        bus.clone(),
        analytics.clone(),
        notifier.clone(),
    ));
    Ok(Parts {
        db,
        bus,
        auth,
        accounts,
        metrics,
        blobs,
        notifier,
        analytics,
        analytics_writer,
        chat,
    })
}

/// Makes the server's files private to its user from now on (`umask 077`): files the libraries
/// create (object_store's blobs, SQLite's companions, temp files) get 0600, directories 0700.
pub fn private_umask() {
    #[cfg(unix)]
    // SAFETY: umask only swaps the process's file-creation mask; it cannot fail.
    unsafe {
        libc::umask(0o077);
    }
}

/// Creates (or tightens) the data directory and its `tmp` folder to 0700.
pub fn private_data_dir(config: &Config) -> anyhow::Result<()> {
    for dir in [config.data_dir.clone(), config.data_dir.join("tmp")] {
        veza_storage::private::dir(&dir)
            .with_context(|| format!("creating {} (mode 0700)", dir.display()))?;
    }
    Ok(())
}

async fn set_health(health: &HealthReporter, status: ServingStatus) {
    health.set_service_status("", status).await;
    for name in SERVICE_NAMES {
        health.set_service_status(name, status).await;
    }
}

/// The demo accounts and room 1 `general` of SPEC §2, created when absent.
async fn seed_demo(db: &Db, chat: &Chat) -> anyhow::Result<()> {
    let demo = [
        ("user@veza.app", "password123", "demo", false),
        ("admin@veza.app", "admin123", "admin", true),
    ];
    for (email, password, username, admin) in demo {
        let account = NewAccount {
            email: email.into(),
            password: password.into(),
            username: username.into(),
            admin,
            ..Default::default()
        };
        match create_account(db, account).await {
            Ok(_) => tracing::info!(email, "seeded demo account"),
            Err(DomainError::AlreadyExists { .. }) => {}
            Err(e) => return Err(anyhow::anyhow!("seeding {email}: {e}")),
        }
    }
    let mut members = Vec::new();
    for (email, ..) in demo {
        members.extend(db.user_by_email(email).await?.map(|u| u.id));
    }
    chat.seed_room(1, "general", &members).await?;
    Ok(())
}

impl RunningServer {
    /// Drains: health turns NOT_SERVING, streams end with `UNAVAILABLE`, new connections are
    /// refused, unary calls finish; after the grace period the rest is dropped.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        set_health(&self.health, ServingStatus::NotServing).await;
        self.trigger.trigger();
        let mut tasks = self.tasks;
        let drained = tokio::time::timeout(self.grace, async {
            let mut results = Vec::new();
            for t in tasks.iter_mut() {
                results.push(t.await);
            }
            results
        })
        .await;
        self.db.close().await;
        match drained {
            Ok(results) => {
                for r in results {
                    r??;
                }
            }
            Err(_) => {
                tracing::warn!(grace = ?self.grace, "shutdown grace period over; dropping remaining connections");
                tasks.iter().for_each(JoinHandle::abort);
            }
        }
        Ok(())
    }
}

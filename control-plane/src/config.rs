//! Server configuration: command-line flags > `VEZA_*` environment > `veza.toml` > defaults.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context;
use serde::Deserialize;

/// Every option, each optional so the layers can be merged. Clap reads flags and environment;
/// serde reads the same names (snake_case) from the config file.
#[derive(clap::Args, Deserialize, Debug, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct Options {
    /// Config file (TOML); `veza.toml` in the working directory is read when present.
    #[arg(long, env = "VEZA_CONFIG")]
    #[serde(skip)]
    pub config: Option<PathBuf>,
    /// gRPC and gRPC-Web listen address [default: 127.0.0.1:9090].
    #[arg(long, env = "VEZA_GRPC_ADDR")]
    pub grpc_addr: Option<SocketAddr>,
    /// HTTP listen address for media URLs, /metrics, /healthz and JWKS [default: 127.0.0.1:8080].
    #[arg(long, env = "VEZA_HTTP_ADDR")]
    pub http_addr: Option<SocketAddr>,
    /// Data directory: SQLite database, blobs and signing key [default: ./veza-data].
    #[arg(long, env = "VEZA_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Database URL: sqlite://… or postgres://… [default: SQLite in the data directory].
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// NATS URL for cross-instance fan-out [default: in-process bus].
    #[arg(long, env = "VEZA_NATS_URL")]
    pub nats_url: Option<String>,
    /// Object store URL: file:///…, memory://, s3://bucket/prefix [default: <data-dir>/blobs].
    #[arg(long, env = "VEZA_BLOB_URL")]
    pub blob_url: Option<String>,
    /// Public base URL of the HTTP port, used in audio_url and waveform_url.
    #[arg(long, env = "VEZA_PUBLIC_URL")]
    pub public_url: Option<String>,
    /// TLS certificate (PEM); TLS is on when both certificate and key are given.
    #[arg(long, env = "VEZA_TLS_CERT")]
    pub tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, env = "VEZA_TLS_KEY")]
    pub tls_key: Option<PathBuf>,
    /// JWT signing algorithm: eddsa or hs256 [default: eddsa].
    #[arg(long, env = "VEZA_JWT_ALG")]
    pub jwt_alg: Option<String>,
    /// Shared secret for hs256 (at least 32 bytes).
    #[arg(long, env = "VEZA_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Access token lifetime in seconds [default: 900].
    #[arg(long, env = "VEZA_ACCESS_TOKEN_TTL")]
    pub access_token_ttl: Option<u64>,
    /// Refresh token lifetime in seconds [default: 2592000, 30 days].
    #[arg(long, env = "VEZA_REFRESH_TOKEN_TTL")]
    pub refresh_token_ttl: Option<u64>,
    /// Log format: text or json [default: text].
    #[arg(long, env = "VEZA_LOG_FORMAT")]
    pub log_format: Option<String>,
    /// Seconds to wait for calls to finish on shutdown [default: 10].
    #[arg(long, env = "VEZA_SHUTDOWN_GRACE")]
    pub shutdown_grace: Option<u64>,
    /// Seed the demo users (and room) if absent.
    #[arg(long, env = "VEZA_DEMO", num_args = 0..=1, default_missing_value = "true")]
    pub demo: Option<bool>,
    /// Days analytics events are kept before pruning; 0 keeps them forever [default: 90].
    #[arg(long, env = "VEZA_ANALYTICS_RETENTION_DAYS")]
    pub analytics_retention_days: Option<u64>,
    /// Largest accepted upload in bytes [default: 536870912, 512 MiB].
    #[arg(long, env = "VEZA_MAX_UPLOAD_BYTES")]
    pub max_upload_bytes: Option<u64>,
    /// Uploads transcoded at once [default: the number of CPU cores].
    #[arg(long, env = "VEZA_PROCESSING_WORKERS")]
    pub processing_workers: Option<usize>,
    /// Opus rendition bitrates in kbps, comma-separated [default: 32,64,128].
    #[arg(long, env = "VEZA_RENDITIONS")]
    pub renditions: Option<String>,
    /// Memory for renditions cached for playback, in bytes [default: 268435456, 256 MiB].
    #[arg(long, env = "VEZA_MEDIA_CACHE_BYTES")]
    pub media_cache_bytes: Option<u64>,
    /// Lifetime of signed media URLs in seconds [default: 21600, 6 hours].
    #[arg(long, env = "VEZA_MEDIA_URL_TTL")]
    pub media_url_ttl: Option<u64>,
    /// Audio per live page and chunk in ms, 1–1000 [default: 200].
    #[arg(long, env = "VEZA_LIVE_CHUNK_MS")]
    pub live_chunk_ms: Option<u32>,
    /// Recent audio a live listener gets on joining, in ms [default: 500].
    #[arg(long, env = "VEZA_LIVE_BURST_MS")]
    pub live_burst_ms: Option<u32>,
    /// How far a live listener may fall behind before it skips to the live edge, in ms
    /// [default: 3000].
    #[arg(long, env = "VEZA_LIVE_MAX_LAG_MS")]
    pub live_max_lag_ms: Option<u32>,
    /// Seconds a live stream waits for its producer to reconnect [default: 10].
    #[arg(long, env = "VEZA_LIVE_GRACE")]
    pub live_grace: Option<u64>,
    /// Listeners per live stream over all instances; 0 = no cap [default: 0].
    #[arg(long, env = "VEZA_LIVE_MAX_LISTENERS_PER_STREAM")]
    pub live_max_listeners_per_stream: Option<usize>,
    /// Live listeners on this instance; 0 = no cap [default: 0].
    #[arg(long, env = "VEZA_LIVE_MAX_LISTENERS")]
    pub live_max_listeners: Option<usize>,
    /// Opus bitrate of live streams with PCM input, in kbps [default: 128].
    #[arg(long, env = "VEZA_LIVE_BITRATE")]
    pub live_bitrate: Option<u32>,
    /// Threads writing live audio to listeners' connections [default: 1].
    #[arg(long, env = "VEZA_LIVE_WRITERS")]
    pub live_writers: Option<usize>,
    /// Write live audio straight onto listeners' sockets from the writer threads; `false` sends
    /// it through hyper's ordinary response bodies (the reference path) [default: true].
    #[arg(long, env = "VEZA_LIVE_DIRECT", num_args = 1)]
    pub live_direct: Option<bool>,
    /// Let hyper go from a gRPC connection whose only stream has been a live one for a second
    /// (hyper's 28 KB of buffers freed; the client gets a GOAWAY). Clients on hyper (tonic),
    /// which fail their next call after a GOAWAY, are left on hyper unless the call carries
    /// `x-veza-connection: dedicated` [default: true].
    #[arg(long, env = "VEZA_LIVE_DETACH", num_args = 1)]
    pub live_detach: Option<bool>,
    /// Longest decoded duration of an upload, in seconds [default: 21600, 6 h].
    #[arg(long, env = "VEZA_MAX_TRACK_DURATION")]
    pub max_track_duration: Option<u64>,
    /// Processing attempts per track before it is `failed` [default: 3].
    #[arg(long, env = "VEZA_PROCESSING_ATTEMPTS")]
    pub processing_attempts: Option<u32>,
    /// Storage quota per user in bytes; 0 = none [default: 10737418240, 10 GiB].
    #[arg(long, env = "VEZA_STORAGE_QUOTA_BYTES")]
    pub storage_quota_bytes: Option<u64>,
    /// Uploads in progress per user; 0 = no cap [default: 4].
    #[arg(long, env = "VEZA_MAX_UPLOADS_PER_USER")]
    pub max_uploads_per_user: Option<u32>,
    /// Live streams on air per user; 0 = no cap [default: 2].
    #[arg(long, env = "VEZA_MAX_LIVE_PER_USER")]
    pub max_live_per_user: Option<u32>,
    /// Requests per second per credential (user or API key), sustained; 0 = no limit
    /// [default: 100].
    #[arg(long, env = "VEZA_RATE_LIMIT_RPS")]
    pub rate_limit_rps: Option<u32>,
    /// Burst of requests per credential above the sustained rate [default: 200].
    #[arg(long, env = "VEZA_RATE_LIMIT_BURST")]
    pub rate_limit_burst: Option<u32>,
    /// `Register` calls per hour per client IP; 0 = no limit [default: 10].
    #[arg(long, env = "VEZA_REGISTER_PER_HOUR")]
    pub register_per_hour: Option<u32>,
    /// Concurrent streams per HTTP/2 connection [default: 1000].
    #[arg(long, env = "VEZA_MAX_CONCURRENT_STREAMS")]
    pub max_concurrent_streams: Option<u32>,
    /// Seconds between HTTP/2 keepalive pings; 0 = none [default: 30].
    #[arg(long, env = "VEZA_KEEPALIVE_INTERVAL")]
    pub keepalive_interval: Option<u64>,
    /// Seconds a keepalive ping may go unanswered before the connection closes [default: 20].
    #[arg(long, env = "VEZA_KEEPALIVE_TIMEOUT")]
    pub keepalive_timeout: Option<u64>,
    /// Seconds a unary call without a client deadline may run [default: 30].
    #[arg(long, env = "VEZA_UNARY_TIMEOUT")]
    pub unary_timeout: Option<u64>,
    /// Concurrent unauthenticated streams (health Watch, reflection) per client IP
    /// [default: 100].
    #[arg(long, env = "VEZA_MAX_PUBLIC_STREAMS")]
    pub max_public_streams: Option<u32>,
    /// Seconds a new connection has to send its request head or HTTP/2 preface [default: 5].
    #[arg(long, env = "VEZA_HEADER_TIMEOUT")]
    pub header_timeout: Option<u64>,
    /// Seconds an idle keep-alive connection stays open [default: 60].
    #[arg(long, env = "VEZA_IDLE_TIMEOUT")]
    pub idle_timeout: Option<u64>,
    /// Concurrent connections per client IP over both ports; 0 = no cap [default: 1000].
    #[arg(long, env = "VEZA_MAX_CONNECTIONS_PER_IP")]
    pub max_connections_per_ip: Option<usize>,
    /// Concurrent connections over both ports; 0 = no cap [default: 16384].
    #[arg(long, env = "VEZA_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Origins allowed to call the API from a browser (CORS), comma-separated; `*` = any
    /// [default: none].
    #[arg(long, env = "VEZA_CORS_ORIGINS", value_delimiter = ',')]
    pub cors_origins: Option<Vec<String>>,
    /// File holding the HS256 secret, so it stays out of `ps` and the environment.
    #[arg(long, env = "VEZA_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
}

/// JWT signing configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwtConfig {
    /// Ed25519 key generated into the data directory and shared through the database.
    EdDsa,
    /// HMAC-SHA256 with a configured secret.
    Hs256(String),
}

/// The resolved configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub grpc_addr: SocketAddr,
    pub http_addr: SocketAddr,
    pub data_dir: PathBuf,
    pub database_url: String,
    pub nats_url: Option<String>,
    pub blob_url: Option<String>,
    pub public_url: Option<String>,
    pub tls: Option<(PathBuf, PathBuf)>,
    pub jwt: JwtConfig,
    pub access_token_ttl: Duration,
    pub refresh_token_ttl: Duration,
    pub log_json: bool,
    pub shutdown_grace: Duration,
    pub demo: bool,
    /// Days analytics events are kept; 0 = forever.
    pub analytics_retention_days: u64,
    /// Analytics events queued for writing before `TrackEvent` answers `RESOURCE_EXHAUSTED`.
    pub analytics_queue_capacity: usize,
    /// Largest accepted upload in bytes.
    pub max_upload_bytes: u64,
    /// Uploads transcoded at once.
    pub processing_workers: usize,
    /// Opus rendition bitrates in kbps, ascending.
    pub renditions: Vec<u32>,
    /// Byte budget of the rendition cache.
    pub media_cache_bytes: u64,
    /// Lifetime of signed media URLs.
    pub media_url_ttl: Duration,
    /// Live page/chunk duration in ms.
    pub live_chunk_ms: u32,
    /// Join burst in ms.
    pub live_burst_ms: u32,
    /// Lag before a live listener skips ahead, in ms.
    pub live_max_lag_ms: u32,
    /// Producer reconnect grace.
    pub live_grace: Duration,
    /// Listener caps (0 = none).
    pub live_max_listeners_per_stream: usize,
    pub live_max_listeners: usize,
    /// Opus bitrate for PCM live input.
    pub live_bitrate: u32,
    /// Live writer threads (at least 1).
    pub live_writers: usize,
    /// Live audio written straight to sockets (`false`: through hyper's bodies).
    pub live_direct: bool,
    /// gRPC connections left to their one live stream once hyper is quiet (direct path only).
    pub live_detach: bool,
    /// Longest decoded duration of an upload.
    pub max_track_duration: Duration,
    /// Processing attempts per track (at least 1).
    pub processing_attempts: u32,
    /// Storage quota per user in bytes (0 = none).
    pub storage_quota_bytes: u64,
    /// Uploads in progress per user (0 = no cap).
    pub max_uploads_per_user: u32,
    /// Live streams on air per user (0 = no cap).
    pub max_live_per_user: u32,
    /// Sustained requests per second per credential (0 = no limit).
    pub rate_limit_rps: u32,
    /// Burst per credential.
    pub rate_limit_burst: u32,
    /// `Register` calls per hour per client IP (0 = no limit).
    pub register_per_hour: u32,
    /// Concurrent streams per HTTP/2 connection.
    pub max_concurrent_streams: u32,
    /// HTTP/2 keepalive ping interval (`None` = no pings) and ack timeout.
    pub keepalive_interval: Option<Duration>,
    pub keepalive_timeout: Duration,
    /// Deadline of unary calls that carry none.
    pub unary_timeout: Duration,
    /// Concurrent unauthenticated streams per client IP.
    pub max_public_streams: u32,
    /// Time a new connection has to send its request head or preface.
    pub header_timeout: Duration,
    /// Time an idle keep-alive connection stays open.
    pub idle_timeout: Duration,
    /// Concurrent connections per client IP and in total (0 = no cap).
    pub max_connections_per_ip: usize,
    pub max_connections: usize,
    /// Origins allowed by CORS (`*` = any; empty = no cross-origin calls).
    pub cors_origins: Vec<String>,
}

macro_rules! merge {
    ($a:ident, $b:ident; $($f:ident),*) => { Options { config: $a.config, $($f: $a.$f.or($b.$f)),* } };
}

impl Options {
    /// Fills what flags and environment left unset from the config file.
    pub fn with_file(self) -> anyhow::Result<Options> {
        let path = self
            .config
            .clone()
            .or_else(|| Some(PathBuf::from("veza.toml")).filter(|p| p.exists()));
        let Some(path) = path else { return Ok(self) };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let file: Options =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        Ok(
            merge!(self, file; grpc_addr, http_addr, data_dir, database_url, nats_url, blob_url, public_url,
            tls_cert, tls_key, jwt_alg, jwt_secret, access_token_ttl, refresh_token_ttl, log_format,
            shutdown_grace, demo, analytics_retention_days, max_upload_bytes, processing_workers, renditions,
            media_cache_bytes, media_url_ttl, live_chunk_ms, live_burst_ms, live_max_lag_ms, live_grace,
            live_max_listeners_per_stream, live_max_listeners, live_bitrate, live_writers, live_direct, live_detach,
            max_track_duration, processing_attempts, storage_quota_bytes, max_uploads_per_user,
            max_live_per_user, rate_limit_rps, rate_limit_burst, register_per_hour,
            max_concurrent_streams, keepalive_interval, keepalive_timeout, unary_timeout,
            max_public_streams, header_timeout, idle_timeout, max_connections_per_ip,
            max_connections, jwt_secret_file, cors_origins),
        )
    }

    /// Applies the defaults and checks the combination.
    pub fn resolve(self) -> anyhow::Result<Config> {
        let o = self.with_file()?;
        let data_dir = o.data_dir.unwrap_or_else(|| PathBuf::from("veza-data"));
        let database_url = o
            .database_url
            .unwrap_or_else(|| veza_storage::Db::sqlite_url(&data_dir));
        let tls = match (o.tls_cert, o.tls_key) {
            (Some(c), Some(k)) => Some((c, k)),
            (None, None) => None,
            _ => anyhow::bail!("--tls-cert and --tls-key go together"),
        };
        let jwt = match o
            .jwt_alg
            .as_deref()
            .unwrap_or("eddsa")
            .to_ascii_lowercase()
            .as_str()
        {
            "eddsa" | "ed25519" => JwtConfig::EdDsa,
            "hs256" => {
                let secret = match (o.jwt_secret, &o.jwt_secret_file) {
                    (Some(s), None) => s,
                    (None, Some(path)) => std::fs::read_to_string(path)
                        .with_context(|| format!("reading {}", path.display()))?
                        .trim_end_matches(['\r', '\n'])
                        .to_string(),
                    (Some(_), Some(_)) => {
                        anyhow::bail!("--jwt-secret and --jwt-secret-file exclude each other")
                    }
                    (None, None) => anyhow::bail!(
                        "--jwt-alg hs256 needs --jwt-secret-file (or --jwt-secret / VEZA_JWT_SECRET)"
                    ),
                };
                anyhow::ensure!(
                    secret.len() >= 32,
                    "the HS256 secret must be at least 32 bytes"
                );
                JwtConfig::Hs256(secret)
            }
            other => anyhow::bail!("unknown JWT algorithm {other:?}: use eddsa or hs256"),
        };
        let log_json = match o.log_format.as_deref().unwrap_or("text") {
            "text" => false,
            "json" => true,
            other => anyhow::bail!("unknown log format {other:?}: use text or json"),
        };
        let mut renditions = Vec::new();
        for r in o.renditions.as_deref().unwrap_or("32,64,128").split(',') {
            let kbps: u32 = r
                .trim()
                .parse()
                .with_context(|| format!("--renditions: {r:?} is not a bitrate in kbps"))?;
            anyhow::ensure!(
                (6..=510).contains(&kbps),
                "--renditions: {kbps} kbps is outside Opus's 6–510"
            );
            renditions.push(kbps);
        }
        renditions.sort_unstable();
        renditions.dedup();
        let live_chunk_ms = o.live_chunk_ms.unwrap_or(200);
        anyhow::ensure!(
            (1..=1000).contains(&live_chunk_ms),
            "--live-chunk-ms must be 1–1000"
        );
        let live_bitrate = o.live_bitrate.unwrap_or(128);
        anyhow::ensure!(
            (6..=510).contains(&live_bitrate),
            "--live-bitrate: {live_bitrate} kbps is outside Opus's 6–510"
        );
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        Ok(Config {
            grpc_addr: o
                .grpc_addr
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 9090))),
            http_addr: o
                .http_addr
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8080))),
            data_dir,
            database_url,
            nats_url: o.nats_url.filter(|s| !s.is_empty()),
            blob_url: o.blob_url.filter(|s| !s.is_empty()),
            public_url: o.public_url.filter(|s| !s.is_empty()),
            tls,
            jwt,
            access_token_ttl: Duration::from_secs(o.access_token_ttl.unwrap_or(900)),
            refresh_token_ttl: Duration::from_secs(o.refresh_token_ttl.unwrap_or(30 * 24 * 3600)),
            log_json,
            shutdown_grace: Duration::from_secs(o.shutdown_grace.unwrap_or(10)),
            demo: o.demo.unwrap_or(false),
            analytics_retention_days: o.analytics_retention_days.unwrap_or(90),
            analytics_queue_capacity: 131_072,
            max_upload_bytes: o.max_upload_bytes.unwrap_or(512 << 20),
            processing_workers: o.processing_workers.unwrap_or(cores).max(1),
            renditions,
            media_cache_bytes: o.media_cache_bytes.unwrap_or(256 << 20),
            media_url_ttl: Duration::from_secs(o.media_url_ttl.unwrap_or(6 * 3600).max(1)),
            live_chunk_ms,
            live_burst_ms: o.live_burst_ms.unwrap_or(500),
            live_max_lag_ms: o.live_max_lag_ms.unwrap_or(3000).max(live_chunk_ms),
            live_grace: Duration::from_secs(o.live_grace.unwrap_or(10)),
            live_max_listeners_per_stream: o.live_max_listeners_per_stream.unwrap_or(0),
            live_max_listeners: o.live_max_listeners.unwrap_or(0),
            live_bitrate,
            live_writers: o.live_writers.unwrap_or(1).clamp(1, 64),
            live_direct: o.live_direct.unwrap_or(true),
            live_detach: o.live_detach.unwrap_or(true),
            max_track_duration: Duration::from_secs(
                o.max_track_duration.unwrap_or(6 * 3600).max(1),
            ),
            processing_attempts: o.processing_attempts.unwrap_or(3).max(1),
            storage_quota_bytes: o.storage_quota_bytes.unwrap_or(10 << 30),
            max_uploads_per_user: o.max_uploads_per_user.unwrap_or(4),
            max_live_per_user: o.max_live_per_user.unwrap_or(2),
            rate_limit_rps: o.rate_limit_rps.unwrap_or(100),
            rate_limit_burst: o.rate_limit_burst.unwrap_or(200).max(1),
            register_per_hour: o.register_per_hour.unwrap_or(10),
            max_concurrent_streams: o.max_concurrent_streams.unwrap_or(1000).max(1),
            keepalive_interval: Some(o.keepalive_interval.unwrap_or(30))
                .filter(|s| *s > 0)
                .map(Duration::from_secs),
            keepalive_timeout: Duration::from_secs(o.keepalive_timeout.unwrap_or(20).max(1)),
            unary_timeout: Duration::from_secs(o.unary_timeout.unwrap_or(30).max(1)),
            max_public_streams: o.max_public_streams.unwrap_or(100).max(1),
            header_timeout: Duration::from_secs(o.header_timeout.unwrap_or(5).max(1)),
            idle_timeout: Duration::from_secs(o.idle_timeout.unwrap_or(60).max(1)),
            max_connections_per_ip: o.max_connections_per_ip.unwrap_or(1000),
            max_connections: o.max_connections.unwrap_or(16_384),
            cors_origins: o
                .cors_origins
                .unwrap_or_default()
                .into_iter()
                .map(|o| o.trim().to_string())
                .filter(|o| !o.is_empty())
                .collect(),
        })
    }
}

impl Config {
    /// A configuration for tests: ephemeral ports, everything under `data_dir`.
    pub fn for_tests(data_dir: PathBuf) -> Config {
        let opts = Options {
            grpc_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            http_addr: Some(SocketAddr::from(([127, 0, 0, 1], 0))),
            data_dir: Some(data_dir),
            config: Some(PathBuf::from("/dev/null")),
            ..Options::default()
        };
        // Only fails on contradictory options, which these are not.
        let mut config = opts
            .resolve()
            .unwrap_or_else(|e| unreachable!("test config: {e}"));
        // Suites make hundreds of calls and accounts per second from one address; the tests of
        // the limits set them back explicitly.
        config.rate_limit_rps = 0;
        config.register_per_hour = 0;
        config
    }
}

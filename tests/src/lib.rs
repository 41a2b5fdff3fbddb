//! Test harness: starts the real server on port 0 over a temp directory, on SQLite or on a fresh
//! PostgreSQL database, and hands out real gRPC clients.

mod backend;

use std::path::{Path, PathBuf};

pub use backend::{Backend, nats_url, require_services};
use sqlx::{Connection, Executor};
use tonic::{
    Request,
    metadata::MetadataValue,
    transport::{Channel, Endpoint},
};
use veza_control_plane::{Config, RunningServer};
use veza_proto::{
    auth::{
        AuthenticateRequest, CreateApiKeyRequest, RegisterRequest,
        auth_service_client::AuthServiceClient,
    },
    chat::{CreateRoomRequest, chat_service_client::ChatServiceClient},
    stream::StartStreamRequest,
};

/// Runs an async test body once on SQLite and once on PostgreSQL.
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Sqlite).await }
            )*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() { super::$name($crate::Backend::Postgres).await }
            )*
        }
    };
}

/// A running server and what it stands on.
pub struct TestServer {
    server: Option<RunningServer>,
    pub backend: Backend,
    pub dir: tempfile::TempDir,
    pub config: Config,
    pub grpc_url: String,
    pub http_url: String,
    database: Option<backend::PgDatabase>,
}

impl TestServer {
    /// Starts a server on `backend`, or returns `None` (after printing why) when it is absent.
    pub async fn start(backend: Backend) -> Option<TestServer> {
        Self::start_with(backend, |_| {}).await
    }

    /// Like [`start`](Self::start), letting the test adjust the configuration first.
    pub async fn start_with(
        backend: Backend,
        adjust: impl FnOnce(&mut Config),
    ) -> Option<TestServer> {
        if std::env::var_os("VEZA_TEST_LOG").is_some() {
            veza_control_plane::telemetry::init_logging(false);
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_tests(dir.path().to_path_buf());
        let database = match backend {
            Backend::Sqlite => None,
            Backend::Postgres => {
                let db = backend::PgDatabase::create().await?;
                config.database_url = db.url.clone();
                Some(db)
            }
        };
        adjust(&mut config);
        let server = veza_control_plane::start(config.clone())
            .await
            .expect("server starts");
        let grpc_url = format!("http://{}", server.grpc_addr);
        let http_url = format!("http://{}", server.http_addr);
        Some(TestServer {
            server: Some(server),
            backend,
            dir,
            config,
            grpc_url,
            http_url,
            database,
        })
    }

    /// Starts a second instance sharing this one's database (and the given bus).
    pub async fn sibling(&self, adjust: impl FnOnce(&mut Config)) -> TestServer {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = Config::for_tests(dir.path().to_path_buf());
        config.database_url = self.config.database_url.clone();
        config.nats_url = self.config.nats_url.clone();
        adjust(&mut config);
        let server = veza_control_plane::start(config.clone())
            .await
            .expect("sibling starts");
        let grpc_url = format!("http://{}", server.grpc_addr);
        let http_url = format!("http://{}", server.http_addr);
        TestServer {
            server: Some(server),
            backend: self.backend,
            dir,
            config,
            grpc_url,
            http_url,
            database: None,
        }
    }

    /// A new connection to the gRPC port.
    pub async fn channel(&self) -> Channel {
        Endpoint::from_shared(self.grpc_url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connects")
    }

    /// An Auth client.
    pub async fn auth(&self) -> AuthServiceClient<Channel> {
        AuthServiceClient::new(self.channel().await)
    }

    /// The value of an unlabelled series on `/metrics` (0 when absent).
    pub async fn metric(&self, name: &str) -> f64 {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let host = self.http_url.trim_start_matches("http://");
        let mut sock = tokio::net::TcpStream::connect(host)
            .await
            .expect("connects");
        let head = format!("GET /metrics HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
        sock.write_all(head.as_bytes()).await.expect("writes");
        let mut text = String::new();
        sock.read_to_string(&mut text).await.expect("reads");
        text.lines()
            .find(|l| l.split_whitespace().next() == Some(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0.0)
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        self.dir.path()
    }

    /// Registers an account and returns its id.
    pub async fn register(&self, email: &str, password: &str) -> i64 {
        let req = RegisterRequest {
            email: email.into(),
            password: password.into(),
            ..Default::default()
        };
        let resp = self
            .auth()
            .await
            .register(req)
            .await
            .expect("register")
            .into_inner();
        resp.user_info.expect("user info").user_id
    }

    /// Logs in and returns (access token, refresh token).
    pub async fn login(&self, email: &str, password: &str) -> (String, String) {
        let req = AuthenticateRequest {
            email: email.into(),
            password: password.into(),
            ..Default::default()
        };
        let r = self
            .auth()
            .await
            .authenticate(req)
            .await
            .expect("login")
            .into_inner();
        (r.access_token, r.refresh_token)
    }

    /// Registers and logs in a fresh user: (id, access token).
    pub async fn user(&self, name: &str) -> (i64, String) {
        let email = format!("{name}@example.com");
        let id = self.register(&email, "correct horse battery").await;
        (id, self.login(&email, "correct horse battery").await.0)
    }

    /// Creates an admin directly in the database and logs in: (id, access token).
    pub async fn admin(&self) -> (i64, String) {
        let db = self.server.as_ref().expect("running").db.clone();
        let account = veza_control_plane::domain::NewAccount {
            email: "root@example.com".into(),
            password: "admin password".into(),
            admin: true,
            ..Default::default()
        };
        let user = veza_control_plane::domain::create_account(&db, account)
            .await
            .expect("admin");
        (
            user.id,
            self.login("root@example.com", "admin password").await.0,
        )
    }

    /// Creates an API key named `name` with `scopes` as `admin`: the key.
    pub async fn new_api_key(&self, admin: &str, name: &str, scopes: &[&str]) -> String {
        let req = CreateApiKeyRequest {
            name: name.into(),
            scopes: scopes.iter().map(|s| s.to_string()).collect(),
        };
        let created = self.auth().await.create_api_key(bearer(admin, req)).await;
        created.unwrap().into_inner().api_key
    }

    /// Creates a public room named `r` as `token`: its id.
    pub async fn room(&self, token: &str) -> i64 {
        let req = CreateRoomRequest {
            name: "r".into(),
            ..Default::default()
        };
        let mut c = ChatServiceClient::new(self.channel().await);
        let created = c.create_room(bearer(token, req)).await.unwrap();
        created.into_inner().room.unwrap().room_id
    }

    /// The running server's database handle.
    pub fn db(&self) -> veza_storage::Db {
        self.server.as_ref().expect("running").db.clone()
    }

    /// Stops the server gracefully and starts a new one on the same data directory and
    /// database (new ports), as after a restart.
    pub async fn restart(&mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
        let server = veza_control_plane::start(self.config.clone())
            .await
            .expect("server restarts");
        self.grpc_url = format!("http://{}", server.grpc_addr);
        self.http_url = format!("http://{}", server.http_addr);
        self.server = Some(server);
    }

    /// Stops the server gracefully and drops its database.
    pub async fn stop(mut self) {
        if let Some(s) = self.server.take() {
            s.shutdown().await.expect("clean shutdown");
        }
        if let Some(db) = self.database.take() {
            db.drop_database().await;
        }
    }
}

/// Wraps `msg` in a request carrying `authorization: Bearer <token>`.
pub fn bearer<T>(token: &str, msg: T) -> Request<T> {
    with_header(msg, "authorization", &format!("Bearer {token}"))
}

/// A live stream of 48 kHz stereo PCM titled `on air`.
pub fn on_air() -> StartStreamRequest {
    StartStreamRequest {
        title: "on air".into(),
        sample_rate: 48_000,
        channels: 2,
        codec: "pcm_s16le".into(),
        ..Default::default()
    }
}

/// Wraps `msg` in a request carrying `x-api-key`.
pub fn api_key<T>(key: &str, msg: T) -> Request<T> {
    with_header(msg, "x-api-key", key)
}

/// Wraps `msg` in a request with one metadata entry.
pub fn with_header<T>(msg: T, name: &'static str, value: &str) -> Request<T> {
    let mut req = Request::new(msg);
    let value: MetadataValue<_> = value.parse().expect("ascii metadata");
    req.metadata_mut().insert(name, value);
    req
}

/// Holds the database's write lock (SQLite) or a lock on `events` (PostgreSQL), so the
/// analytics writer cannot drain its queue.
pub enum WriteBlock {
    Sqlite(sqlx::SqliteConnection),
    Postgres(sqlx::PgConnection),
}

impl WriteBlock {
    pub async fn take(s: &TestServer) -> WriteBlock {
        let url = &s.config.database_url;
        if s.backend == Backend::Sqlite {
            let mut conn = sqlx::SqliteConnection::connect(url).await.unwrap();
            conn.execute("BEGIN IMMEDIATE").await.unwrap();
            WriteBlock::Sqlite(conn)
        } else {
            let mut conn = sqlx::PgConnection::connect(url).await.unwrap();
            conn.execute("BEGIN; LOCK TABLE events IN SHARE MODE")
                .await
                .unwrap();
            WriteBlock::Postgres(conn)
        }
    }

    pub async fn release(self) {
        match self {
            WriteBlock::Sqlite(mut c) => c.execute("ROLLBACK").await.map(drop).unwrap(),
            WriteBlock::Postgres(mut c) => c.execute("ROLLBACK").await.map(drop).unwrap(),
        }
    }
}

/// Makes a self-signed `localhost` server certificate in `dir` with openssl: (cert, key, how
/// openssl ended).
pub fn self_signed(dir: &Path) -> (PathBuf, PathBuf, std::io::Result<std::process::Output>) {
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let made = std::process::Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "1"])
        .args([
            "-subj",
            "/CN=localhost",
            "-addext",
            "subjectAltName=DNS:localhost",
        ])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .args(["-addext", "extendedKeyUsage=serverAuth"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output();
    (cert, key, made)
}

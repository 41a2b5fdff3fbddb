//! Secrets at rest (SPEC §13, issue 15 item 8): everything the server writes under its data
//! directory is readable by its own user only, a looser data directory is tightened, the HS256
//! secret can come from a file, and NATS credentials never show in an error.

mod stream_common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use stream_common::*;
use veza_control_plane::Config;
use veza_tests::{Backend, TestServer};

fn mode(p: &Path) -> u32 {
    std::fs::symlink_metadata(p)
        .unwrap_or_else(|e| panic!("{}: {e}", p.display()))
        .permissions()
        .mode()
        & 0o777
}

/// Every directory under `root` (itself included) is 0700 and every file 0600; returns the
/// files' paths relative to `root`.
fn assert_private(root: &Path) -> Vec<String> {
    assert_eq!(mode(root), 0o700, "{}", root.display());
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            if p.is_dir() {
                assert_eq!(mode(&p), 0o700, "directory {rel}");
                dirs.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "file {rel}");
                files.push(rel);
            }
        }
    }
    files
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn data_dir_contents_are_private_after_start_and_processing() {
    let s = TestServer::start(Backend::Sqlite).await.expect("sqlite");
    let files = assert_private(s.data_dir());
    for f in [
        "veza.db",
        "veza.db-wal",
        "veza.db-shm",
        "jwt-ed25519.pk8",
        "tmp/instance-id",
    ] {
        assert!(files.iter().any(|x| x == f), "{f} missing from {files:?}");
    }

    let (_, token) = s.user("owner").await;
    let id = upload(&s, &token, "private", &fixture("mono_48k.flac")).await;
    assert_eq!(settle(&s, &token, id).await.status, "ready");
    let files = assert_private(s.data_dir());
    let blobs = files.iter().filter(|f| f.starts_with("blobs/")).count();
    assert!(blobs >= 2, "source and renditions stored: {files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_loose_existing_data_dir_and_database_are_tightened() {
    let parent = tempfile::tempdir().unwrap();
    let dir = parent.path().join("data");
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o755)).unwrap();
    let db = dir.join("veza.db");
    std::fs::write(&db, b"").unwrap();
    std::fs::set_permissions(&db, std::fs::Permissions::from_mode(0o644)).unwrap();

    let s = TestServer::start_with(Backend::Sqlite, |c| {
        c.data_dir = dir.clone();
        c.database_url = veza_storage::Db::sqlite_url(&dir);
    })
    .await
    .expect("sqlite");
    s.user("someone").await;
    let files = assert_private(&dir);
    assert!(files.iter().any(|f| f == "veza.db"), "{files:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_credentials_stay_out_of_errors() {
    // A port nothing listens on: bind one, then free it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut config = Config::for_tests(dir.path().to_path_buf());
    config.nats_url = Some(format!("nats://veza:hunter2-nats-pw@127.0.0.1:{port}"));
    let err = match veza_control_plane::start(config).await {
        Ok(_) => panic!("started without NATS"),
        Err(e) => format!("{e:#} / {e:?}"),
    };
    assert!(!err.contains("hunter2"), "password in the error: {err}");
    assert!(
        err.contains(&format!("127.0.0.1:{port}")),
        "the error still names the server: {err}"
    );
}

/// The options of `veza serve --config /dev/null --jwt-alg hs256` plus `args`.
fn hs256_serve(args: &[&str]) -> veza_control_plane::config::Options {
    use clap::Parser;
    use veza_control_plane::cli::{Cli, Command};

    let head = [
        "veza",
        "serve",
        "--config",
        "/dev/null",
        "--jwt-alg",
        "hs256",
    ];
    let cli = Cli::try_parse_from(head.iter().chain(args)).unwrap();
    let Command::Serve(opts) = cli.command else {
        panic!("serve")
    };
    opts
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_hs256_secret_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "a-secret-of-at-least-32-bytes-from-a-file";
    let file = dir.path().join("jwt.secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let file = file.to_str().unwrap();
    let jwt = hs256_serve(&["--jwt-secret-file", file])
        .resolve()
        .unwrap()
        .jwt;
    let s = TestServer::start_with(Backend::Sqlite, |c| c.jwt = jwt)
        .await
        .expect("sqlite");
    let (_, token) = s.user("hs").await;
    let key = jsonwebtoken::DecodingKey::from_secret(secret.as_bytes());
    let mut v = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
    v.validate_aud = false;
    jsonwebtoken::decode::<serde_json::Value>(&token, &key, &v)
        .expect("token signed with the file's secret (trailing newline dropped)");

    let both = hs256_serve(&["--jwt-secret", secret, "--jwt-secret-file", file]);
    let err = both.resolve().unwrap_err().to_string();
    assert!(err.contains("exclude each other"), "{err}");
}

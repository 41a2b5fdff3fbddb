//! The example clients in `examples/` run against a real `--demo` server: Node.js (@grpc/grpc-js),
//! Connect-ES (@connectrpc/connect), Python (grpcio) and Go (Debian's grpc-go). Each skips,
//! saying why, when its toolchain is missing, and fails instead in CI
//! (`VEZA_TEST_REQUIRE_SERVICES=1`); `./dev test` installs them.

use std::{
    path::{Path, PathBuf},
    process::{Command, Output},
    time::Duration,
};

use veza_tests::{Backend, TestServer, require_services};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn absent(what: &str) {
    assert!(!require_services(), "{what} is required in CI");
    eprintln!("SKIPPED: {what}");
}

/// Whether `program args` runs and exits 0.
fn runs(program: impl AsRef<std::ffi::OsStr>, args: &[&str]) -> bool {
    Command::new(program)
        .args(args)
        .output()
        .is_ok_and(|o| o.status.success())
}

async fn demo_server() -> Option<TestServer> {
    TestServer::start_with(Backend::Sqlite, |c| c.demo = true).await
}

/// Runs an example client against `s` and returns its stdout, after checking that it succeeded.
async fn run_client(s: &TestServer, dir: &Path, program: &str, args: &[&str]) -> String {
    let child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(dir)
        .env("VEZA_ADDR", s.grpc_url.trim_start_matches("http://"))
        .env("VEZA_GRPC_ADDR", s.grpc_url.trim_start_matches("http://"))
        .env("VEZA_HTTP", s.http_url.trim_start_matches("http://"))
        .env("VEZA_MAX_MESSAGES", "1")
        .kill_on_drop(true)
        .output();
    let out: Output = tokio::time::timeout(Duration::from_secs(300), child)
        .await
        .unwrap_or_else(|_| panic!("{program} {args:?} still running after 300 s"))
        .unwrap_or_else(|e| panic!("{program} {args:?}: {e}"));
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    println!("{program} {args:?}:\n{stdout}");
    assert!(
        out.status.success(),
        "{program} {args:?}: {}\nstdout: {stdout}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

/// Runs `npm install` in `dir` unless `node_modules/{package}` is already there.
fn npm_install(dir: &Path, package: &str) -> Result<(), String> {
    if dir.join("node_modules").join(package).exists() {
        return Ok(());
    }
    let install = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(dir)
        .output()
        .map_err(|e| format!("npm does not run: {e}"))?;
    if install.status.success() {
        Ok(())
    } else {
        Err(format!(
            "npm install failed: {}",
            String::from_utf8_lossy(&install.stderr)
        ))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_authenticates_sends_and_streams() {
    let dir = examples().join("node");
    if !runs("npm", &["--version"]) {
        return absent("node/npm are not installed");
    }
    if let Err(why) = npm_install(&dir, "@grpc/grpc-js") {
        return absent(&why);
    }
    let Some(s) = demo_server().await else { return };
    let stdout = run_client(&s, &dir, "node", &["client.js"]).await;
    assert!(stdout.contains("Authenticated successfully"), "{stdout}");
    assert!(stdout.contains("Message sent: id 1 in room 1"), "{stdout}");
    assert!(
        stdout.contains("Received message: Hello from Node.js client! (id 1, from user 1)"),
        "{stdout}"
    );
    s.stop().await;
}

/// The published Connect client, once per protocol: Connect JSON and gRPC-Web over HTTP/1.1 on
/// the HTTP port, Connect binary and gRPC over HTTP/2 on the gRPC port.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_es_client_over_both_ports() {
    let dir = examples().join("connect-node");
    if !runs("npm", &["--version"]) || !runs("protoc", &["--version"]) {
        return absent("node/npm or protoc is not installed");
    }
    if let Err(why) = npm_install(&dir, "@connectrpc/connect-node") {
        return absent(&why);
    }
    let Some(s) = demo_server().await else { return };
    run_client(&s, &dir, "node", &["gen.js"]).await;
    let stdout = run_client(&s, &dir, "node", &["client.js"]).await;
    let protocols = [
        "connect+json over HTTP/1.1 on the HTTP port",
        "grpc-web over HTTP/1.1 on the HTTP port",
        "connect+proto over HTTP/2 on the gRPC port",
        "grpc over HTTP/2 on the gRPC port",
    ];
    for (i, name) in protocols.iter().enumerate() {
        let id = i + 1;
        for line in [
            format!("[{name}] Authenticated as user@veza.app (user 1)"),
            format!("[{name}] Message sent: id {id} in room 1"),
            format!("[{name}] Received message: Hello over {name}! (id {id}, from user 1)"),
            format!("[{name}] Wrong password refused: Unauthenticated: "),
        ] {
            assert!(stdout.contains(&line), "no {line:?} in {stdout}");
        }
    }
    assert!(stdout.contains("All protocols passed"), "{stdout}");
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_authenticates_sends_and_streams() {
    let dir = examples().join("python");
    // The venv `./dev test` creates when python3 itself lacks grpcio, else python3.
    let venv = dir.join(".venv/bin/python3");
    let python = if venv.exists() {
        venv.to_string_lossy().into_owned()
    } else {
        "python3".to_string()
    };
    if !runs(&python, &["-c", "import grpc, grpc_tools"]) {
        return absent(
            "python3 with grpcio and grpcio-tools is not installed (./dev test installs them, or pip install -r examples/python/requirements.txt)",
        );
    }
    let Some(s) = demo_server().await else { return };
    let stdout = run_client(&s, &dir, &python, &["client.py"]).await;
    assert!(stdout.contains("Authenticated successfully"), "{stdout}");
    assert!(stdout.contains("Message sent: id 1 in room 1"), "{stdout}");
    assert!(
        stdout.contains("Received message: Hello from Python client! (id 1, from user 1)"),
        "{stdout}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_authenticates_chats_uploads_streams_and_listens_live() {
    let tools = [
        ("go", "version"),
        ("protoc", "--version"),
        ("protoc-gen-go", "--version"),
        ("protoc-gen-go-grpc", "--version"),
    ];
    if let Some((tool, _)) = tools.iter().find(|(tool, arg)| !runs(tool, &[arg])) {
        return absent(&format!(
            "{tool} is not installed (./dev test installs Debian's golang-go, protobuf-compiler, protoc-gen-go, protoc-gen-go-grpc, golang-google-grpc-dev)"
        ));
    }
    let gocode = std::env::var("VEZA_GOCODE").unwrap_or_else(|_| "/usr/share/gocode".into());
    if !Path::new(&gocode)
        .join("src/google.golang.org/grpc")
        .exists()
    {
        return absent(&format!(
            "grpc-go is not in {gocode} (apt-get install golang-google-grpc-dev golang-google-protobuf-dev)"
        ));
    }
    let Some(s) = demo_server().await else { return };
    let stdout = run_client(&s, &examples().join("go"), "bash", &["run.sh"]).await;
    let line = |prefix: &str| {
        stdout
            .lines()
            .find(|l| l.starts_with(prefix))
            .unwrap_or_else(|| panic!("no line {prefix:?} in {stdout}"))
            .to_string()
    };
    assert!(stdout.contains("Authenticated successfully"), "{stdout}");
    assert!(stdout.contains("Message sent: id 1 in room 1"), "{stdout}");
    // The demo seeds no media: the upload is track 1, the 2 s tone in 64 KiB chunks.
    assert!(stdout.contains("Upload created: track 1\n"), "{stdout}");
    assert!(
        stdout.contains("Uploaded 192044 bytes in 3 chunks: track 1"),
        "{stdout}"
    );
    let ready = line("Track 1 is ready: ");
    assert!(
        ready.contains("2000 ms, pcm_s16le 48000 Hz 1 ch"),
        "{ready}"
    );
    let streamed = line("Streamed back ");
    let bytes: u64 = streamed
        .split_whitespace()
        .nth(2)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{streamed}"));
    assert!(bytes > 1000, "{streamed}");
    assert!(streamed.ends_with("starting with \"OggS\""), "{streamed}");
    assert!(
        stdout.contains("Received message: Hello from Go client! (id 1, from user 1)"),
        "{stdout}"
    );
    // The listener's connection was left by hyper (a GOAWAY) after a second: grpc-go sent the
    // next call on a new connection and it succeeded, the stream still playing.
    let heard = line("Live stream ");
    assert!(
        heard.ends_with("GetStreamInfo on the listener's client: live, 1 listener(s)"),
        "{heard}"
    );
    let chunks: u64 = heard
        .split_whitespace()
        .nth(3)
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{heard}"));
    assert!(chunks >= 12, "about 4 s of 200 ms pages: {heard}");
    assert_eq!(s.metric("veza_live_detached_total").await, 1.0);
    s.stop().await;
}

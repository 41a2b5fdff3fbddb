//! The example clients in `examples/` run against a real `--demo` server: the Node.js one always
//! in CI, the Python one where grpcio is installed.

use std::{path::PathBuf, process::Command};

use veza_tests::{Backend, TestServer, require_services};

fn examples() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../examples")
}

fn absent(what: &str) {
    assert!(!require_services(), "{what} is required in CI");
    eprintln!("SKIPPED: {what}");
}

async fn demo_server() -> Option<TestServer> {
    TestServer::start_with(Backend::Sqlite, |c| c.demo = true).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_client_authenticates_sends_and_streams() {
    let dir = examples().join("node");
    if Command::new("npm").arg("--version").output().is_err() {
        return absent("node/npm are not installed");
    }
    if !dir.join("node_modules/@grpc/grpc-js").exists() {
        let install = Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&dir)
            .output()
            .unwrap();
        if !install.status.success() {
            return absent(&format!(
                "npm install failed: {}",
                String::from_utf8_lossy(&install.stderr)
            ));
        }
    }
    let Some(s) = demo_server().await else { return };
    let addr = s.grpc_url.trim_start_matches("http://").to_string();
    let out = tokio::process::Command::new("node")
        .arg("client.js")
        .current_dir(&dir)
        .env("VEZA_ADDR", &addr)
        .env("VEZA_MAX_MESSAGES", "1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("Authenticated successfully"), "{stdout}");
    assert!(stdout.contains("Message sent: id 1 in room 1"), "{stdout}");
    assert!(
        stdout.contains("Received message: Hello from Node.js client! (id 1, from user 1)"),
        "{stdout}"
    );
    s.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_authenticates_sends_and_streams() {
    let has_grpc = Command::new("python3")
        .args(["-c", "import grpc, grpc_tools"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !has_grpc {
        eprintln!(
            "SKIPPED: python3 with grpcio and grpcio-tools is not installed (pip install -r examples/python/requirements.txt)"
        );
        return;
    }
    let Some(s) = demo_server().await else { return };
    let out = tokio::process::Command::new("python3")
        .arg("client.py")
        .current_dir(examples().join("python"))
        .env("VEZA_ADDR", s.grpc_url.trim_start_matches("http://"))
        .env("VEZA_MAX_MESSAGES", "1")
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout: {stdout}\nstderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("Received message: Hello from Python client! (id 1, from user 1)"),
        "{stdout}"
    );
    s.stop().await;
}

//! `veza live FILE` publishes a file at real-time pace (with `--record`), `veza listen ID` plays
//! the live stream into a playable file, and the recording becomes a ready track.

use std::{path::PathBuf, process::Stdio, time::Duration};

use tokio::io::{AsyncBufReadExt, BufReader};
use veza_proto::stream::{GetStreamInfoRequest, stream_service_client::StreamServiceClient};
use veza_tests::{Backend, TestServer, bearer, require_services};

/// The `veza` binary next to this test's directory (`cargo test --workspace` builds it).
fn veza_bin() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let bin = exe.parent()?.parent()?.join("veza");
    if bin.exists() {
        return Some(bin);
    }
    assert!(
        !require_services(),
        "{} is missing: run `cargo test --workspace`",
        bin.display()
    );
    eprintln!("skipped: {} is not built", bin.display());
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_file_listen_and_record() {
    let Some(veza) = veza_bin() else { return };
    let Some(s) = TestServer::start(Backend::Sqlite).await else {
        return;
    };
    let (_, token) = s.user("cli-dj").await;
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../fixtures/stereo_44k_s16.wav");
    let mut live = tokio::process::Command::new(&veza)
        .args([
            "live",
            fixture.to_str().expect("utf-8 path"),
            "--title",
            "cli",
            "--record",
        ])
        .args(["--server", &s.grpc_url, "--token", &token])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("veza live starts");
    let mut err = BufReader::new(live.stderr.take().expect("stderr")).lines();
    let id: i64 = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), err.next_line())
            .await
            .expect("veza live prints its stream id")
            .expect("reads")
            .expect("a line before exit");
        if let Some(rest) = line.strip_prefix("live stream ") {
            break rest
                .split(':')
                .next()
                .and_then(|n| n.parse().ok())
                .expect("stream id");
        }
    };
    let out = s.dir.path().join("live.opus");
    let listen = tokio::process::Command::new(&veza)
        .args([
            "listen",
            &id.to_string(),
            "-o",
            out.to_str().expect("utf-8 path"),
        ])
        .args(["--server", &s.grpc_url, "--token", &token])
        .kill_on_drop(true)
        .status();
    let drain = tokio::spawn(async move { while let Ok(Some(_)) = err.next_line().await {} });
    let listened = tokio::time::timeout(Duration::from_secs(30), listen)
        .await
        .expect("veza listen ends with the stream")
        .expect("runs");
    assert!(listened.success(), "veza listen exits 0");
    let done = tokio::time::timeout(Duration::from_secs(30), live.wait_with_output())
        .await
        .expect("veza live ends")
        .expect("runs");
    let _ = drain.await;
    assert!(done.status.success(), "veza live exits 0");
    let stdout = String::from_utf8_lossy(&done.stdout);
    assert!(
        stdout.contains(&format!("recorded as track {id}")),
        "{stdout}"
    );
    // What `veza listen` wrote is a complete Ogg Opus stream: headers first, EOS last.
    let bytes = std::fs::read(&out).expect("output file");
    let pages = veza_media_core::ogg::parse_pages(&bytes).expect("valid pages");
    assert!(bytes[pages[0].offset + 28..].starts_with(b"OpusHead"));
    assert!(pages.len() >= 3, "headers and audio");
    assert_eq!(pages.last().map(|p| p.flags & 4), Some(4), "EOS");
    // The recording turns into a ready track of the file's length (1.0 s).
    let mut c = StreamServiceClient::new(s.channel().await);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let info = loop {
        let i = c
            .get_stream_info(bearer(&token, GetStreamInfoRequest { stream_id: id }))
            .await
            .expect("info")
            .into_inner();
        if i.status != "processing" && i.status != "live" {
            break i;
        }
        assert!(tokio::time::Instant::now() < deadline, "still {}", i.status);
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(info.status, "ready", "{}", info.error_message);
    assert!(
        (900..=1100).contains(&info.duration_ms),
        "{} ms",
        info.duration_ms
    );
}

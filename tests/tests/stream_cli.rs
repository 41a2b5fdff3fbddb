//! The real `veza` binary as producer and listener: `veza upload` through a proxy that cuts the
//! connection mid-upload shows progress, resumes by itself, finishes with the source's SHA-256
//! and prints the URLs; `veza listen` writes a playable Ogg Opus file (and the same to stdout).

mod stream_common;

use std::{
    path::PathBuf,
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
};

use stream_common::*;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream},
};
use veza_tests::{Backend, TestServer, on_both_backends};

/// `target/<profile>/veza`, built by `cargo test --workspace` (the control-plane package's own
/// integration tests need it). Test executables live in `target/<profile>/deps/`.
fn veza_binary() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>")
        .join("veza");
    assert!(
        bin.exists(),
        "{} is missing: run `cargo build -p veza-control-plane --bin veza` (cargo test --workspace builds it)",
        bin.display()
    );
    bin
}

/// A TCP proxy to `upstream` whose first connection is cut after `cut_after` bytes from the
/// client; later connections pass everything. Returns its address and whether it cut.
async fn cutting_proxy(upstream: String, cut_after: usize) -> (String, Arc<AtomicBool>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let cut = Arc::new(AtomicBool::new(false));
    let flag = cut.clone();
    tokio::spawn(async move {
        let mut first = true;
        while let Ok((client, _)) = listener.accept().await {
            let Ok(server) = TcpStream::connect(&upstream).await else {
                continue;
            };
            let limit = if first { Some(cut_after) } else { None };
            first = false;
            let flag = flag.clone();
            tokio::spawn(async move {
                let (mut cr, mut cw) = client.into_split();
                let (mut sr, mut sw) = server.into_split();
                let down = tokio::spawn(async move {
                    let _ = tokio::io::copy(&mut sr, &mut cw).await;
                });
                let mut sent = 0usize;
                let mut buf = vec![0u8; 16 << 10];
                loop {
                    let n = match cr.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => n,
                    };
                    let n = match limit {
                        Some(l) if sent + n >= l => {
                            let _ = sw.write_all(&buf[..l - sent]).await;
                            flag.store(true, Ordering::SeqCst);
                            break;
                        }
                        _ => n,
                    };
                    if sw.write_all(&buf[..n]).await.is_err() {
                        break;
                    }
                    sent += n;
                }
                // Dropping both halves of both sockets closes the connection for both sides.
                down.abort();
            });
        }
    });
    (addr, cut)
}

async fn upload_resumes_and_listen_writes_a_playable_file(b: Backend) {
    let Some(s) = TestServer::start(b).await else {
        return;
    };
    let bin = veza_binary();
    let (_, token) = s.user("cli").await;
    let dir = tempfile::tempdir().unwrap();
    let data = fixture("stereo_44k_s16.wav");
    let file = dir.path().join("song.wav");
    std::fs::write(&file, &data).unwrap();
    let upstream = s.grpc_url.trim_start_matches("http://").to_string();
    let (proxy, cut) = cutting_proxy(upstream, data.len() / 2).await;

    let out = tokio::process::Command::new(&bin)
        .arg("upload")
        .arg(&file)
        .args(["--title", "From the CLI", "--chunk-size", "8192"])
        .args(["--server", &format!("http://{proxy}"), "--token", &token])
        .env("VEZA_CONFIG", "/dev/null")
        .output()
        .await
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    );
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {stderr}");
    assert!(cut.load(Ordering::SeqCst), "the proxy cut the upload");
    // Progress (bytes, rate, ETA), then the automatic resume.
    assert!(
        stderr.contains(&format!("/ {} bytes", data.len())) && stderr.contains("MB/s"),
        "{stderr}"
    );
    assert!(stderr.contains("ETA"), "{stderr}");
    assert!(stderr.contains("resuming at chunk"), "{stderr}");
    let id: i64 = stdout
        .lines()
        .find_map(|l| l.strip_prefix("track_id: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no track_id in {stdout}"));
    assert!(stdout.contains("status: ready"), "{stdout}");
    let audio_url = stdout
        .lines()
        .find_map(|l| l.strip_prefix("audio_url: "))
        .unwrap_or_else(|| panic!("no audio_url in {stdout}"));
    assert!(
        audio_url.starts_with(&format!("{}/media/{id}/audio.opus?exp=", s.http_url)),
        "{audio_url}"
    );
    assert!(stdout.contains("waveform_url: http"), "{stdout}");
    let row = s.db().media(id).await.unwrap().unwrap();
    assert_eq!(row.sha256, sha256(&data), "the resumed upload is the file");

    // `veza listen` straight to the server: a playable .opus of the track's length.
    let opus = dir.path().join("out.opus");
    let out = tokio::process::Command::new(&bin)
        .args(["listen", &id.to_string(), "-o"])
        .arg(&opus)
        .args(["--server", &s.grpc_url, "--token", &token])
        .env("VEZA_CONFIG", "/dev/null")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let written = std::fs::read(&opus).unwrap();
    assert!(written.starts_with(b"OggS"));
    let (frames, channels) = decode_opus(&written);
    let (want, want_ch) = source_frames_48k(&data);
    assert_eq!(channels, want_ch);
    assert!(
        frames.abs_diff(want) <= 960,
        "decoded {frames} frames, source {want} (± 20 ms)"
    );
    // `-o -` writes the same bytes to stdout, for piping into a player.
    let out = tokio::process::Command::new(&bin)
        .args(["listen", &id.to_string(), "-o", "-"])
        .args(["--server", &s.grpc_url, "--token", &token])
        .env("VEZA_CONFIG", "/dev/null")
        .output()
        .await
        .unwrap();
    assert!(out.status.success());
    assert_eq!(out.stdout, written);
    s.stop().await;
}

on_both_backends!(upload_resumes_and_listen_writes_a_playable_file);

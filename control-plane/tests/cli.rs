//! The `veza` binary itself: admin commands on the configured database, configuration
//! precedence, and graceful shutdown on SIGTERM.

use std::{
    io::{BufRead, BufReader},
    process::{Child, Command, Stdio},
    time::{Duration, Instant},
};

fn veza(data_dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_veza"))
        .args(args)
        .env_remove("DATABASE_URL")
        .env("VEZA_DATA_DIR", data_dir)
        .env("VEZA_CONFIG", "/dev/null")
        .output()
        .expect("veza runs")
}

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "stdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn admin_commands_manage_users_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = ok(&veza(
        dir.path(),
        &[
            "user",
            "add",
            "--email",
            "ops@example.com",
            "--password",
            "ops password",
            "--admin",
        ],
    ));
    assert!(
        out.contains("ops@example.com") && out.contains("admin"),
        "{out}"
    );
    let dup = veza(
        dir.path(),
        &[
            "user",
            "add",
            "--email",
            "ops@example.com",
            "--password",
            "ops password",
        ],
    );
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("email already exists"));
    let short = veza(
        dir.path(),
        &[
            "user",
            "add",
            "--email",
            "x@example.com",
            "--password",
            "short",
        ],
    );
    assert!(String::from_utf8_lossy(&short.stderr).contains("password"));

    let key = ok(&veza(
        dir.path(),
        &[
            "apikey",
            "create",
            "--name",
            "billing",
            "--scope",
            "notifications:send",
            "--scope",
            "analytics:write",
        ],
    ));
    let key = key.trim();
    assert!(
        key.starts_with("vz_") && !key.contains(' '),
        "only the key on stdout: {key}"
    );
    let list = ok(&veza(dir.path(), &["apikey", "list"]));
    assert!(
        list.contains("billing") && list.contains("notifications:send,analytics:write"),
        "{list}"
    );
    assert!(!list.contains(key), "the key is never listed");
    let id = list.split('\t').next().unwrap().to_string();
    ok(&veza(dir.path(), &["apikey", "revoke", &id]));
    assert!(ok(&veza(dir.path(), &["apikey", "list"])).trim().is_empty());
    assert!(ok(&veza(dir.path(), &["apikey", "list", "--all"])).contains("revoked"));
    let bad = veza(
        dir.path(),
        &["apikey", "create", "--name", "x", "--scope", "everything"],
    );
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown scope"));
}

/// Starts `veza serve` and returns it with the HTTP address it logged.
fn serve(cmd: &mut Command) -> (Child, String) {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("veza serve starts");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let http = line.rsplit("http://").next().unwrap().trim().to_string();
    (child, http)
}

fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut tcp = std::net::TcpStream::connect(addr).unwrap();
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    tcp.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn flags_beat_environment_beat_file_and_sigterm_drains() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("veza.toml");
    let from_file = dir.path().join("from-file");
    let from_env = dir.path().join("from-env");
    let from_flag = dir.path().join("from-flag");
    std::fs::write(&file, format!("data_dir = {:?}\nhttp_addr = \"127.0.0.1:0\"\ngrpc_addr = \"127.0.0.1:0\"\nlog_format = \"json\"\n", from_file)).unwrap();

    let base = || {
        let mut c = Command::new(env!("CARGO_BIN_EXE_veza"));
        c.arg("serve")
            .env_remove("DATABASE_URL")
            .env_remove("VEZA_DATA_DIR")
            .env("VEZA_CONFIG", &file);
        c
    };
    let (mut child, http) = serve(&mut base());
    assert!(http_get(&http, "/healthz").contains("200 OK"));
    assert!(from_file.join("veza.db").exists(), "file value used");
    stop(&mut child);

    let (mut child, _) = serve(base().env("VEZA_DATA_DIR", &from_env));
    assert!(from_env.join("veza.db").exists(), "environment beats file");
    stop(&mut child);

    let (mut child, http) = serve(
        base()
            .env("VEZA_DATA_DIR", &from_env)
            .arg("--data-dir")
            .arg(&from_flag),
    );
    assert!(from_flag.join("veza.db").exists(), "flag beats environment");
    let jwks = http_get(&http, "/.well-known/jwks.json");
    assert!(
        jwks.contains("\"kty\":\"OKP\"") && jwks.contains("\"crv\":\"Ed25519\""),
        "{jwks}"
    );
    assert!(http_get(&http, "/metrics").contains("# TYPE veza_open_streams gauge"));
    stop(&mut child);
}

fn stop(child: &mut Child) {
    let started = Instant::now();
    Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .unwrap();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(10),
            "exits on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "clean exit after SIGTERM: {status:?}");
}

#[test]
fn chat_command_prints_the_room_and_sends_lines() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let mut serve_cmd = Command::new(env!("CARGO_BIN_EXE_veza"));
    serve_cmd
        .args([
            "serve",
            "--demo",
            "--grpc-addr",
            "127.0.0.1:0",
            "--http-addr",
            "127.0.0.1:0",
        ])
        .env("VEZA_CONFIG", "/dev/null")
        .env("VEZA_DATA_DIR", dir.path())
        .env_remove("DATABASE_URL");
    let mut server = serve_cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(server.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let grpc = line
        .split("gRPC on ")
        .nth(1)
        .unwrap()
        .split(',')
        .next()
        .unwrap()
        .to_string();

    let mut chat = Command::new(env!("CARGO_BIN_EXE_veza"))
        .args([
            "chat",
            "1",
            "--server",
            &format!("http://{grpc}"),
            "--email",
            "user@veza.app",
            "--password",
            "password123",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    chat.stdin
        .take()
        .unwrap()
        .write_all(b"hello from the terminal\n\nsecond line\n")
        .unwrap();
    let out = chat.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("[1] #1 user 1: hello from the terminal"),
        "{stdout}"
    );
    assert!(stdout.contains("[1] #2 user 1: second line"), "{stdout}");
    stop(&mut server);
}

#[test]
fn transcode_writes_renditions_waveform_and_index() {
    let dir = tempfile::tempdir().unwrap();
    let input =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures/stereo_44k.flac");
    let out = Command::new(env!("CARGO_BIN_EXE_veza"))
        .arg("transcode")
        .arg(&input)
        .arg("--out")
        .arg(dir.path())
        .args(["--bitrates", "32,64"])
        .output()
        .unwrap();
    let report = ok(&out);
    assert!(
        report.contains("\"probe\"") && report.contains("\"timings\""),
        "{report}"
    );
    for file in [
        "32k.opus",
        "64k.opus",
        "32k.index.json",
        "waveform.json",
        "waveform.dat",
    ] {
        assert!(
            dir.path().join(file).metadata().unwrap().len() > 0,
            "{file}"
        );
    }
    assert!(!dir.path().join("128k.opus").exists());
    let bad = Command::new(env!("CARGO_BIN_EXE_veza"))
        .args(["transcode", "/dev/null", "--out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

/// Every directory under `root` is 0700 and every file 0600.
fn assert_private(root: &std::path::Path) {
    use std::os::unix::fs::PermissionsExt;
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        assert_eq!(
            std::fs::metadata(&d).unwrap().permissions().mode() & 0o777,
            0o700,
            "{}",
            d.display()
        );
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                dirs.push(p);
            } else {
                let m = std::fs::metadata(&p).unwrap().permissions().mode() & 0o777;
                assert_eq!(m, 0o600, "{}", p.display());
            }
        }
    }
}

#[test]
fn secrets_stay_out_of_argv_environment_logs_and_other_users_reach() {
    let dir = tempfile::tempdir().unwrap();
    let secret = "hs256-secret-read-from-a-file-0123456789";
    let file = dir.path().join("jwt.secret");
    std::fs::write(&file, format!("{secret}\n")).unwrap();
    let data = dir.path().join("data");
    let mut child = Command::new(env!("CARGO_BIN_EXE_veza"))
        .args(["serve", "--jwt-alg", "hs256", "--jwt-secret-file"])
        .arg(&file)
        .args(["--nats-url", "nats://veza:hunter2-nats-pw@127.0.0.1:4222"])
        .args(["--grpc-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(&data)
        .env_remove("DATABASE_URL")
        .env_remove("VEZA_JWT_SECRET")
        .env("VEZA_CONFIG", "/dev/null")
        // Debug level: the NATS client's own connection logs are included.
        .env("RUST_LOG", "debug")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("veza serve starts");
    // Logs go to stderr (read on a thread so the pipe never fills); stdout's first line is the
    // bound addresses, printed once serving.
    let mut err = child.stderr.take().unwrap();
    let logs = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    if first.contains("http://") {
        let proc = |f: &str| std::fs::read(format!("/proc/{}/{f}", child.id())).unwrap();
        let argv = String::from_utf8_lossy(&proc("cmdline")).into_owned();
        assert!(!argv.contains(secret), "secret in argv: {argv}");
        assert!(argv.contains("--jwt-secret-file"));
        let environ = String::from_utf8_lossy(&proc("environ")).into_owned();
        assert!(!environ.contains(secret), "secret in the environment");
        assert_private(&data);
        stop(&mut child);
    } else {
        // No NATS on this machine: the start-up error must not show the password either.
        let _ = child.wait();
    }
    let mut logs = logs.join().unwrap();
    std::io::Read::read_to_string(&mut out, &mut logs).unwrap();
    logs.push_str(&first);
    assert!(logs.contains("nats") || logs.contains("NATS"), "{logs}");
    assert!(
        !logs.contains("hunter2"),
        "NATS password in the output:\n{logs}"
    );
    assert!(!logs.contains(secret), "JWT secret in the output");
}

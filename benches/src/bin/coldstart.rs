//! Cold start: time from spawning `veza serve` on an empty data directory to the first
//! SERVING answer of the gRPC health check. Usage: `coldstart PATH/TO/veza [RUNS]`.

use std::{
    process::{Command, Stdio},
    time::{Duration, Instant},
};

use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let mut args = std::env::args().skip(1);
    let bin = args.next().unwrap_or_else(|| "target/release/veza".into());
    let runs: usize = args.next().map(|r| r.parse()).transpose()?.unwrap_or(10);
    let mut times = Vec::with_capacity(runs);
    for i in 0..runs {
        let dir = tempfile::tempdir()?;
        let port = 19_400 + i as u16;
        let started = Instant::now();
        let mut child = Command::new(&bin)
            .args([
                "serve",
                "--grpc-addr",
                &format!("127.0.0.1:{port}"),
                "--http-addr",
                "127.0.0.1:0",
            ])
            .env("VEZA_CONFIG", "/dev/null")
            .env("VEZA_DATA_DIR", dir.path())
            .env_remove("DATABASE_URL")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()?;
        let took = loop {
            let endpoint =
                tonic::transport::Endpoint::from_shared(format!("http://127.0.0.1:{port}"))?;
            if let Ok(channel) = endpoint.connect().await {
                let mut c = HealthClient::new(channel);
                let r = c
                    .check(HealthCheckRequest {
                        service: String::new(),
                    })
                    .await;
                if r.is_ok_and(|r| r.into_inner().status() == ServingStatus::Serving) {
                    break started.elapsed();
                }
            }
            anyhow::ensure!(
                started.elapsed() < Duration::from_secs(10),
                "server did not come up"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        };
        child.kill()?;
        child.wait()?;
        times.push(took);
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!(
        "cold start to SERVING over {runs} runs: median {:.1} ms, min {:.1} ms, max {:.1} ms",
        ms(times[runs / 2]),
        ms(times[0]),
        ms(times[runs - 1])
    );
    Ok(())
}

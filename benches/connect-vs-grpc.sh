#!/usr/bin/env bash
# GetUserInfo over gRPC and over Connect JSON (HTTP/1.1 and HTTP/2) against a release
# `veza serve --demo`, and gRPC against a base build, alternating, in one series. Each line
# also gives the server's own CPU time per call (utime + stime from /proc over the run), the
# figure that a shared machine disturbs least.
#   benches/connect-vs-grpc.sh NEW_VEZA [BASE_VEZA] [RUNS] [SECONDS]
# NEW_VEZA/BASE_VEZA are `veza` binaries; the load tool is target/release/unary_load
# (cargo build --release -p veza-benches --bin unary_load). Loopback only.
set -euo pipefail
cd "$(dirname "$0")/.."
new=$1; base=${2:-}; runs=${3:-3}; secs=${4:-10}
load=${VEZA_UNARY_LOAD:-target/release/unary_load}
echo -15 > /proc/self/autogroup 2>/dev/null || true
serve() { # BIN DIR -> starts a demo server on 127.0.0.1:50951 (gRPC) / :50981 (HTTP)
  rm -rf "$2"; mkdir -p "$2"
  "$1" serve --demo --data-dir "$2" --grpc-addr 127.0.0.1:50951 --http-addr 127.0.0.1:50981 \
    --rate-limit-rps 0 --max-connections-per-ip 0 --max-connections 0 --log-format json \
    >"$2.log" 2>&1 &
  pid=$!
  for _ in $(seq 100); do
    (exec 3<>/dev/tcp/127.0.0.1/50981) 2>/dev/null && return 0
    sleep 0.1
  done
  echo "server did not start: $(tail -3 "$2.log")" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; }
tck=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
measure() { # LABEL MODE: one load run, its line and the server CPU per call
  local t0 t1 out
  t0=$(cpu)
  out=$("$load" --grpc 127.0.0.1:50951 --http 127.0.0.1:50981 --seconds "$secs" "$2" | tail -1)
  t1=$(cpu)
  awk -v l="$1" -v t=$((t1 - t0)) -v hz="$tck" -v s="$secs" \
    '{printf "%s %s  server CPU %.1f µs/call\n", l, $0, t * 1e6 / hz / ($4 * s)}' <<<"$out"
}
dir=$(mktemp -d); trap 'kill "${pid:-0}" 2>/dev/null || true; rm -rf "$dir"' EXIT
for run in $(seq "$runs"); do
  if [ -n "$base" ]; then
    serve "$base" "$dir/base"
    measure "base run $run" grpc
    stop
  fi
  serve "$new" "$dir/new"
  for mode in grpc connect-h1 connect-h2; do measure "new  run $run" "$mode"; done
  stop
done

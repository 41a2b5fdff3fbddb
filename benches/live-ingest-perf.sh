#!/usr/bin/env bash
# The per-page cost of an Ogg Opus source, Veza and Icecast alternating: the same ffmpeg source
# (128 kbps CBR Opus, PAGE_MS pages) pushed to `PUT /live/ID` or Icecast's mount, one `curl`
# listener, then `perf stat` of the server over 19 s (CPU, context switches, system calls).
#   [RUNS=R] benches/live-ingest-perf.sh [PAGE_MS]
# Needs the release build (veza, live_load), icecast2, ffmpeg, curl and perf.
set -euo pipefail
cd "$(dirname "$0")/.."
page_ms=${1:-100}
bin=${VEZA_BIN:-target/release}
ev=task-clock,context-switches,page-faults,syscalls:sys_enter_futex,syscalls:sys_enter_recvfrom,syscalls:sys_enter_sendto
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f /tmp/veza-icecast/icecast.pid ] && kill "$(cat /tmp/veza-icecast/icecast.pid)" 2>/dev/null; rm -rf "$work"' EXIT

wait_up() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && break; sleep 0.1; done; }
wait_down() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null || break; sleep 0.2; done; }
source_to() {
  ffmpeg -nostdin -loglevel error -re -f lavfi -i "sine=frequency=440:sample_rate=48000" -ac 2 \
    -c:a libopus -b:a 128k -vbr off -page_duration $((page_ms * 1000)) -content_type audio/ogg -f ogg \
    "$1" &
  fpid=$!
}
# Server $1 (pid) with listener URL $2: one curl, then perf stat.
measure() {
  curl -s "$2" >/dev/null &
  cpid=$!
  sleep 4
  perf stat -e $ev -p "$1" -- sleep 19 2>&1 | grep -E "task-clock|switches|sys_enter"
  kill "$cpid" "$fpid"; wait "$cpid" "$fpid" 2>/dev/null || true
}

for run in $(seq "${RUNS:-3}"); do
  echo "-- veza, run $run"
  VEZA_DATA_DIR=$work/veza-$run VEZA_GRPC_ADDR=127.0.0.1:19090 VEZA_HTTP_ADDR=127.0.0.1:18080 \
    VEZA_LIVE_CHUNK_MS=$page_ms VEZA_LIVE_BITRATE=128 RUST_LOG=warn \
    "$bin"/veza serve --demo >"$work/veza-$run.log" 2>&1 &
  vpid=$!
  wait_up 19090; wait_up 18080
  read -r id key < <($bin/live_load start http://127.0.0.1:19090)
  source_to "icecast://source:$key@127.0.0.1:18080/live/$id"
  sleep 2
  measure "$vpid" "http://127.0.0.1:18080/live/$id"
  kill "$vpid"; wait "$vpid" 2>/dev/null || true
  wait_down 18080

  echo "-- icecast, run $run"
  mkdir -p /tmp/veza-icecast && chown icecast2 /tmp/veza-icecast
  icecast2 -b -c benches/icecast/icecast.xml >/dev/null 2>&1
  wait_up 8000
  source_to icecast://source:hackme@127.0.0.1:8000/live.opus
  sleep 2
  measure "$(cat /tmp/veza-icecast/icecast.pid)" http://127.0.0.1:8000/live.opus
  kill "$(cat /tmp/veza-icecast/icecast.pid)"
  wait_down 8000
  sleep 1
done

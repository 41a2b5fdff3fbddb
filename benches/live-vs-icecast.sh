#!/usr/bin/env bash
# Live fan-out, Veza and Icecast side by side in one run, measured by the same client
# (target/release/live_load, one TCP connection per listener for both).
#   [RUNS=R] benches/live-vs-icecast.sh CHUNK_MS SECONDS N [N…]
# e.g. RUNS=3 benches/live-vs-icecast.sh 1000 20 1000 3000 6000
# With RUNS, each N is measured R times, Veza and Icecast alternating (runs at a few % of a core
# scatter by ±20 %: compare medians).
# Needs: cargo build --release -p veza-control-plane -p veza-benches; icecast2 and ffmpeg
# (Debian packages). Veza runs `veza serve --demo` on a temp dir with --live-chunk-ms CHUNK_MS
# with no connection caps and no request rate (every listener connects from 127.0.0.1 with the
# demo user's token);
# Icecast gets a 128 kbps CBR Ogg Opus stream from `ffmpeg -re` with pages of CHUNK_MS.
# VEZA_BASE_BIN=DIR also measures the `veza` in DIR (an earlier build) in each round, before
# this build's, so a change is compared with its parent in one series (live_load stays this one's).
set -euo pipefail
cd "$(dirname "$0")/.."
chunk_ms=$1; secs=$2; shift 2
ulimit -n 20000
bin=${VEZA_BIN:-target/release}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f /tmp/veza-icecast/icecast.pid ] && kill "$(cat /tmp/veza-icecast/icecast.pid)" 2>/dev/null; rm -rf "$work"' EXIT

for n in "$@"; do
for run in $(seq "${RUNS:-1}"); do
  echo "== $n listeners, run $run"
  for vbin in ${VEZA_BASE_BIN:+"$VEZA_BASE_BIN"} "$bin"; do
  echo "-- veza: $vbin"
  VEZA_DATA_DIR=$work/veza-$n-$run VEZA_GRPC_ADDR=127.0.0.1:19090 VEZA_HTTP_ADDR=127.0.0.1:18080 \
    VEZA_LIVE_CHUNK_MS=$chunk_ms VEZA_LIVE_BITRATE=128 RUST_LOG=warn \
    VEZA_MAX_CONNECTIONS_PER_IP=0 VEZA_MAX_CONNECTIONS=0 VEZA_RATE_LIMIT_RPS=0 \
    "$vbin"/veza serve --demo >"$work/veza-$n.log" 2>&1 &
  vpid=$!
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/19090) 2>/dev/null && break; sleep 0.1; done
  # The producer sends CHUNK_MS of audio at a time, as ffmpeg sends Icecast a page at a time.
  LIVE_LOAD_BATCH_MS=$chunk_ms $bin/live_load veza http://127.0.0.1:19090 "$vpid" "$n" "$n" "$secs"
  kill "$vpid"; wait "$vpid" 2>/dev/null || true
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/19090) 2>/dev/null || break; sleep 0.2; done
  done

  # Icecast
  mkdir -p /tmp/veza-icecast && chown icecast2 /tmp/veza-icecast
  icecast2 -b -c benches/icecast/icecast.xml >/dev/null
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/8000) 2>/dev/null && break; sleep 0.1; done
  ffmpeg -nostdin -loglevel error -re -f lavfi -i "sine=frequency=440:sample_rate=48000" -ac 2 \
    -c:a libopus -b:a 128k -vbr off -page_duration $((chunk_ms * 1000)) -content_type audio/ogg -f ogg \
    icecast://source:hackme@127.0.0.1:8000/live.opus &
  fpid=$!
  sleep 2
  for _ in $(seq 50); do [ -s /tmp/veza-icecast/icecast.pid ] && break; sleep 0.1; done
  ipid=$(cat /tmp/veza-icecast/icecast.pid)
  $bin/live_load icecast http://127.0.0.1:8000/live.opus "$ipid" "$n" "$secs"
  kill "$fpid"; wait "$fpid" 2>/dev/null || true
  kill "$ipid"
  # Wait for the port to be free before the next round.
  for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/8000) 2>/dev/null || break; sleep 0.2; done
  sleep 1
done
done

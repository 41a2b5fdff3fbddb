#!/usr/bin/env bash
# Live fan-out, Veza and Icecast side by side in one run, measured by the same client
# (target/release/live_load, one TCP connection per listener for both).
#   [RUNS=R] [MODE=grpc|http] [VEZA_LIVE_DIRECT="true false"] benches/live-vs-icecast.sh CHUNK_MS SECONDS N [N…]
# e.g. RUNS=3 benches/live-vs-icecast.sh 1000 20 1000 3000 6000
# With RUNS, each N is measured R times, Veza and Icecast alternating (runs at a few % of a core
# scatter by ±20 %: compare medians).
# Needs: cargo build --release -p veza-control-plane -p veza-benches; icecast2 and ffmpeg
# (Debian packages). Veza runs `veza serve --demo` on a temp dir with --live-chunk-ms CHUNK_MS
# with no connection caps and no request rate (every listener connects from 127.0.0.1 with the
# demo user's token);
# Icecast gets a 128 kbps CBR Ogg Opus stream from `ffmpeg -re` with pages of CHUNK_MS.
# MODE=grpc (default): Veza's producer is live_load over gRPC, its listeners gRPC `StreamAudio`.
# MODE=http: Veza is measured exactly as Icecast is: the same ffmpeg pushes to
#   icecast://source:KEY@127.0.0.1:18080/live/ID (`live_load start` makes the stream and prints
#   ID KEY) and `live_load icecast` opens the listeners on http://127.0.0.1:18080/live/ID.
#   VEZA_LIVE_DIRECT (a list, e.g. "true false") measures Veza once per value in each round:
#   false serves listeners through hyper (`--live-direct false`).
# VEZA_BASE_BIN=DIR also measures the `veza` in DIR (an earlier build) in each round, before
# this build's, so a change is compared with its parent in one series (live_load stays this one's).
set -euo pipefail
cd "$(dirname "$0")/.."
chunk_ms=$1; secs=$2; shift 2
mode=${MODE:-grpc}
directs=${VEZA_LIVE_DIRECT:-true}
ulimit -n 20000
bin=${VEZA_BIN:-target/release}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null || true; [ -f /tmp/veza-icecast/icecast.pid ] && kill "$(cat /tmp/veza-icecast/icecast.pid)" 2>/dev/null; rm -rf "$work"' EXIT

wait_up() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null && break; sleep 0.1; done; }
wait_down() { for _ in $(seq 100); do (echo >/dev/tcp/127.0.0.1/"$1") 2>/dev/null || break; sleep 0.2; done; }

# The source both servers get in MODE=http (and Icecast always): ffmpeg -re, 128 kbps CBR Ogg
# Opus, pages of CHUNK_MS, pushed to the icecast:// URL $1. Sets fpid.
source_to() {
  ffmpeg -nostdin -loglevel error -re -f lavfi -i "sine=frequency=440:sample_rate=48000" -ac 2 \
    -c:a libopus -b:a 128k -vbr off -page_duration $((chunk_ms * 1000)) -content_type audio/ogg -f ogg \
    "$1" &
  fpid=$!
}

# Veza binary $1 with VEZA_LIVE_DIRECT=$2, N=$3 listeners, run $4.
veza_round() {
  VEZA_DATA_DIR=$work/veza-$3-$4-$2 VEZA_GRPC_ADDR=127.0.0.1:19090 VEZA_HTTP_ADDR=127.0.0.1:18080 \
    VEZA_LIVE_CHUNK_MS=$chunk_ms VEZA_LIVE_BITRATE=128 VEZA_LIVE_DIRECT=$2 RUST_LOG=warn \
    VEZA_MAX_CONNECTIONS_PER_IP=0 VEZA_MAX_CONNECTIONS=0 VEZA_RATE_LIMIT_RPS=0 \
    "$1"/veza serve --demo >"$work/veza-$3.log" 2>&1 &
  vpid=$!
  wait_up 19090; wait_up 18080
  if [ "$mode" = http ]; then
    local id key
    read -r id key < <($bin/live_load start http://127.0.0.1:19090)
    source_to "icecast://source:$key@127.0.0.1:18080/live/$id"
    sleep 2
    $bin/live_load icecast "http://127.0.0.1:18080/live/$id" "$vpid" "$3" "$secs"
    kill "$fpid"; wait "$fpid" 2>/dev/null || true
  else
    # The producer sends CHUNK_MS of audio at a time, as ffmpeg sends Icecast a page at a time.
    LIVE_LOAD_BATCH_MS=$chunk_ms $bin/live_load veza http://127.0.0.1:19090 "$vpid" "$3" "$3" "$secs"
    # How many listeners left hyper (--live-detach), read before the server stops.
    curl -s http://127.0.0.1:18080/metrics | grep -E '^veza_live_detached_total' || true
  fi
  kill "$vpid"; wait "$vpid" 2>/dev/null || true
  wait_down 19090; wait_down 18080
}

# Icecast 2.4 with N=$1 listeners.
icecast_round() {
  mkdir -p /tmp/veza-icecast && chown icecast2 /tmp/veza-icecast
  icecast2 -b -c benches/icecast/icecast.xml >/dev/null
  wait_up 8000
  source_to icecast://source:hackme@127.0.0.1:8000/live.opus
  sleep 2
  for _ in $(seq 50); do [ -s /tmp/veza-icecast/icecast.pid ] && break; sleep 0.1; done
  ipid=$(cat /tmp/veza-icecast/icecast.pid)
  $bin/live_load icecast http://127.0.0.1:8000/live.opus "$ipid" "$1" "$secs"
  kill "$fpid"; wait "$fpid" 2>/dev/null || true
  kill "$ipid"
  # Wait for the port to be free before the next round.
  wait_down 8000
  sleep 1
}

for n in "$@"; do
for run in $(seq "${RUNS:-1}"); do
  echo "== $n listeners, run $run ($mode, ${chunk_ms} ms pages)"
  for vbin in ${VEZA_BASE_BIN:+"$VEZA_BASE_BIN"} "$bin"; do
  for direct in $directs; do
  echo "-- veza: $vbin, live direct $direct"
  veza_round "$vbin" "$direct" "$n" "$run"
  done
  done
  echo "-- icecast"
  icecast_round "$n"
done
done

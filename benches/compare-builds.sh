#!/usr/bin/env bash
# Two release builds side by side in one series: chat_load send, events_load and the media-core
# transcode of the 10-minute FLAC, alternating base and new, RUNS times each.
#   benches/compare-builds.sh BASE_TARGET_DIR NEW_TARGET_DIR [RUNS]
# Each dir is a CARGO_TARGET_DIR holding `release/{chat_load,events_load}` and
# `release/examples/transcode` (cargo build --release -p veza-benches --bins and
# -p veza-media-core --example transcode). Inputs: fixtures/bench-inputs.sh (VEZA_BENCH_MEDIA).
set -euo pipefail
cd "$(dirname "$0")/.."
base=$1; new=$2; runs=${3:-3}
media=${VEZA_BENCH_MEDIA:-target/bench-media}
bash fixtures/bench-inputs.sh "$media" >/dev/null
echo -15 > /proc/self/autogroup 2>/dev/null || true
out=$(mktemp -d); trap 'rm -rf "$out"' EXIT
for run in $(seq "$runs"); do
  for side in base new; do
    dir=$base; [ "$side" = new ] && dir=$new
    echo "== $side run $run: chat_load send 10 64"
    (cd /tmp && "$dir"/release/chat_load send 10 64) 2>&1 | grep -v '^\s*$' | tail -3
    echo "== $side run $run: events_load --seconds 10 --rate 0 --concurrency 128 --connections 4"
    (cd /tmp && "$dir"/release/events_load --seconds 10 --rate 0 --concurrency 128 --connections 4) 2>&1 | tail -4
    echo "== $side run $run: transcode music_10min.flac"
    /usr/bin/time -f "wall %e s, cpu %U+%S s, max rss %M KB" \
      "$dir"/release/examples/transcode "$media/music_10min.flac" --out "$out" 2>&1 | tail -1
  done
done

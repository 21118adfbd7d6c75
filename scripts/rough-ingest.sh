#!/usr/bin/env bash
# A first, rough ingest measurement (the real benchmark is issue 5's `mekong bench ingest`):
# starts a release `mekong serve` on a temporary data directory, runs `mekong simulate`
# against it (one MQTT connection per station, QoS 1, one timestamp per pack), waits until
# every acknowledged pack is stored or counted lost, and prints a JSON line with the rates,
# the loss and the server's peak resident memory.
#
#   scripts/rough-ingest.sh DEVICES INTERVAL_SECONDS DURATION_SECONDS
set -euo pipefail
devices=${1:-100} interval=${2:-0.01} duration=${3:-20}
cd "$(dirname "$0")/.."
cargo build -q --release -p mekong
bin=target/release/mekong
data=$(mktemp -d)
mqtt=$((20000 + RANDOM % 10000)) http=$((30000 + RANDOM % 10000))
MEKONG__STORAGE__DATA_DIR=$data MEKONG__BROKER__LISTEN="127.0.0.1:$mqtt" MEKONG__BROKER__LISTEN_V5="" \
  MEKONG__API__LISTEN="127.0.0.1:$http" $bin serve >"$data.log" 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; rm -rf "$data" "$data.log"' EXIT
until curl -sf "localhost:$http/healthz" >/dev/null; do sleep 0.1; done

peak=0
( while kill -0 $server 2>/dev/null; do
    rss=$(ps -o rss= -p $server | tr -d ' '); [ "${rss:-0}" -gt "$peak" ] && peak=$rss && echo "$peak" >"$data.peak"
    sleep 0.2
  done ) &

start=$(date +%s.%N)
report=$($bin simulate --broker "127.0.0.1:$mqtt" --devices "$devices" --interval "$interval" --duration "$duration" | tail -1)
published=$(echo "$report" | sed 's/.*"packs":\([0-9]*\).*/\1/')
while :; do
  stats=$(curl -s "localhost:$http/v1/stats")
  handled=$(echo "$stats" | python3 -c 'import json,sys; s=json.load(sys.stdin); print(s["received"]+s["lost"])')
  [ "$handled" -ge "$published" ] && break
  sleep 0.1
done
end=$(date +%s.%N)
python3 - "$report" "$stats" "$start" "$end" "$(cat "$data.peak")" "$devices" "$interval" "$duration" <<'PY'
import json, sys
report, stats = json.loads(sys.argv[1]), json.loads(sys.argv[2])
start, end, peak = float(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
elapsed = end - start
print(json.dumps({
    "devices": int(sys.argv[6]), "interval_s": float(sys.argv[7]), "duration_s": float(sys.argv[8]),
    "packs_acked_by_broker": report["packs"], "readings_published": report["readings"],
    "payload_bytes_per_reading": round(report["bytes"] / max(report["readings"], 1), 1),
    "packs_stored": stats["accepted"], "readings_stored": stats["readings"], "packs_lost": stats["lost"],
    "seconds_until_all_handled": round(elapsed, 2),
    "stored_readings_per_s": round(stats["readings"] / elapsed),
    "server_peak_rss_mib": round(peak / 1024),
}))
PY

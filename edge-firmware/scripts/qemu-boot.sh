#!/usr/bin/env bash
# Boots the node image under QEMU (mps2-an386, Cortex-M4) twice:
#  1. without a config page: it must print "unprovisioned" and halt;
#  2. with a config page written by provision.py, its MQTT UART wired to a real mekong
#     platform on free local ports: it must connect, publish packs, and get them
#     acknowledged (the platform's downlink after its disk flush), and the readings must be
#     readable from the platform's HTTP API.
# Step 2 needs a mekong binary: $MEKONG_BIN, else ../target/release/mekong (build it with
# `cargo build --release -p mekong` at the repository root). Without one, step 2 is skipped
# with a message (exit 0) unless REQUIRE_E2E=1.
#
# Needs: qemu-system-arm (apt-get install -y qemu-system-arm), python3, curl, and the
# rustup target thumbv7em-none-eabihf.
set -euo pipefail

here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
image="target/thumbv7em-none-eabihf/release/mekong-node-qemu"
work="$(mktemp -d)"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

cargo build --release -p mekong-node-qemu --target thumbv7em-none-eabihf -q

# Waits up to $2 seconds for the pattern $1 in file $3.
wait_for() {
    local pattern="$1" secs="$2" file="$3"
    for _ in $(seq $((secs * 10))); do
        if grep -q -- "$pattern" "$file" 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

qemu_base=(qemu-system-arm -M mps2-an386 -nographic -monitor none -icount shift=0
           -kernel "$image")

echo "== 1. no config page"
"${qemu_base[@]}" -serial "file:$work/console1.log" -serial null &
pids+=($!)
if ! wait_for "halted" 20 "$work/console1.log"; then
    cat "$work/console1.log"; echo "FAIL: the node did not halt"; exit 1
fi
cat "$work/console1.log"
grep -q "unprovisioned" "$work/console1.log" || { echo "FAIL: no 'unprovisioned' message"; exit 1; }
kill "${pids[-1]}"; unset 'pids[-1]'
echo "ok: refuses to run unprovisioned"

mekong="${MEKONG_BIN:-$here/../target/release/mekong}"
if [[ ! -x "$mekong" ]]; then
    echo "skip 2: no mekong binary at $mekong (set MEKONG_BIN or build it)"
    [[ "${REQUIRE_E2E:-0}" == 1 ]] && exit 1
    exit 0
fi

echo "== 2. provisioned, against mekong ($mekong)"
mqtt=$(free_port); mqtt5=$(free_port); api=$(free_port)
MEKONG__BROKER__LISTEN="127.0.0.1:$mqtt" MEKONG__BROKER__LISTEN_V5="127.0.0.1:$mqtt5" \
MEKONG__API__LISTEN="127.0.0.1:$api" MEKONG__STORAGE__DATA_DIR="$work/data" \
    "$mekong" serve --config /dev/null >"$work/mekong.log" 2>&1 &
pids+=($!)
for _ in $(seq 100); do
    curl -sf "http://127.0.0.1:$api/healthz" >/dev/null && break
    sleep 0.1
done

head -c 32 /dev/urandom >"$work/node.key"
python3 scripts/provision.py --id qemu-01 --kind water --water 5 --air 5 --traffic 10 \
    --broker 127.0.0.1 --port "$mqtt" --key-file "$work/node.key" -o "$work/node.bin"
"${qemu_base[@]}" -device "loader,file=$work/node.bin,addr=0x3FC00" \
    -serial "file:$work/console2.log" \
    -chardev "socket,id=mqtt,host=127.0.0.1,port=$mqtt,reconnect=1" -serial chardev:mqtt &
pids+=($!)
if ! wait_for "acked pack 1" 90 "$work/console2.log"; then
    cat "$work/console2.log"; tail -20 "$work/mekong.log"; echo "FAIL: no acknowledged pack"; exit 1
fi
cat "$work/console2.log"
echo "-- the platform's view"
curl -s "http://127.0.0.1:$api/v1/devices/qemu-01/series"; echo
curl -s "http://127.0.0.1:$api/v1/rejections?limit=3"; echo
series=$(curl -s "http://127.0.0.1:$api/v1/devices/qemu-01/series")
for m in water_level pm2_5 pm10 vehicle_count; do
    grep -q "\"$m\"" <<<"$series" || { echo "FAIL: no $m series on the platform"; exit 1; }
done
echo "ok: boots, connects, publishes, acknowledged, readings on the platform"

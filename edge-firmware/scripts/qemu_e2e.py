#!/usr/bin/env python3
# End-to-end test of the node image under QEMU (mps2-an386) against a real `mekong serve`.
#
# 1. Boots without a config page (must print "unprovisioned" and halt), with a damaged one
#    (must print "config page corrupt" and halt), and with a page of format 1, written before
#    MQTT passwords (must say to provision the node again, and halt).
# 2. Provisions the node with `mekong device provision` (registry entry with its key and the
#    SHA-256 of its MQTT password, and the config blob with the password, checked against
#    each other here) as a mixed station: all three simulated sensors through the real drivers
#    (PMS5003 frames -> pm2_5 and pm10, a Modbus level transducer -> water_level, a loop pair
#    -> vehicle_count and speed), starts `mekong serve` with that registry and
#    require_registration = true,
#    and boots the image with the blob loaded into its config page. The node's MQTT UART goes
#    to a TCP bridge of this script, which forwards it to mekong's MQTT port; the node logs in
#    with its device id and the blob's password. The node prints every sample it takes and
#    every reading it packs (with the time it will be stored at) on its console. Before the
#    node boots, a CONNECT of this script with the blob's password must be accepted, and one
#    with a wrong password tells whether the broker checks passwords.
# 3. Cuts the bridge (closes both sides and refuses connections) for OUTAGE_S seconds while
#    the node keeps sampling, then restores it; the node must notice the dead link, reconnect
#    and send what it queued.
# 4. Checks through the HTTP API: every reading the node packed is stored exactly once with
#    the same value (to the bit) and time, nothing else is stored, every metric of the three
#    sensors is there and was sampled during the outage too, readings sampled during the
#    outage arrived, the device has a sequence number, nothing was refused, and the node
#    printed an acknowledgement after the outage.
# 5. If the broker checks passwords: boots a second node with the same id, provisioned into
#    another registry (so another password), straight to mekong's MQTT port. It must print
#    "broker refused the login" twice, the second time after a longer pause (its back-off),
#    while the first node stays online. A broker that does not check passwords yet (mekong
#    before MQTT authentication) skips this step, and says so; MEKONG_REQUIRE_MQTT_AUTH=1
#    makes that skip a failure.
#
# Python 3 standard library only. Needs qemu-system-arm, the image
# (cargo build --release -p mekong-node-qemu --target thumbv7em-none-eabihf) and a mekong
# binary: $MEKONG_BIN, else ../target/debug/mekong, else ../target/release/mekong.
# Usage: scripts/qemu_e2e.py [--keep] (--keep leaves the work directory for a look).

import asyncio
import hashlib
import json
import os
import re
import shutil
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
import zlib

HERE = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
IMAGE = os.path.join(HERE, "target/thumbv7em-none-eabihf/release/mekong-node-qemu")
CONFIG_ADDR = 0x3FC00  # the CONFIG region of boards/qemu-mps2/memory.x
# The config blob's layout (crates/schema/src/provision.rs): format 2 adds the password at 178
# and moves the CRC to 210; format 1 ended at the CRC at 178.
PASSWORD_AT, CRC_AT, V1_CRC_AT = 178, 210, 178
DEVICE = "qemu-01"
# A mixed station: a water node whose air sensor samples every 2 s too and whose traffic loop
# counts in windows of 4 s (about 2 readings a second in all: an outage fits the node's queue).
PERIOD_S = 2  # water level every 2 s (the kind's sensor)
AIR_S = 2
TRAFFIC_S = 4
# Every metric the three simulated sensors give (speed: the loop sim sends a vehicle every 2 to
# 3 s, so every 4 s window has one).
METRICS = ("pm2_5", "pm10", "water_level", "vehicle_count", "speed")
OUTAGE_S = 20
STEP_TIMEOUT_S = 45

SAMPLE = re.compile(r"^sample up=(\d+) (\w+)=\S+ \((0x[0-9a-f]{16})\)")
PACKED = re.compile(r"^packed up=(\d+) t=(-?\d+) (\w+)=\S+ \((0x[0-9a-f]{16})\)")
ACK = re.compile(r"acked pack \d+ seq \d+: (\d+ readings stored|hello)")


def log(msg):
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def fail(msg):
    raise SystemExit(f"FAIL: {msg}")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def bits(hex_bits):
    return struct.unpack(">d", int(hex_bits, 16).to_bytes(8, "big"))[0]


def mekong_binary():
    repo = os.path.dirname(HERE)
    for path in (os.environ.get("MEKONG_BIN"), f"{repo}/target/debug/mekong", f"{repo}/target/release/mekong"):
        if path and os.access(path, os.X_OK):
            return path
    fail("no mekong binary: set MEKONG_BIN or run `cargo build -p mekong` at the repository root")


def reconnect_option():
    # QEMU 9.2 renamed the client socket's `reconnect` (seconds) to `reconnect-ms`.
    out = subprocess.run(["qemu-system-arm", "--version"], capture_output=True, text=True).stdout
    m = re.search(r"version (\d+)\.(\d+)", out)
    major, minor = (int(m.group(1)), int(m.group(2))) if m else (7, 0)
    return "reconnect-ms=500" if (major, minor) >= (9, 2) else "reconnect=1"


def qemu_command(console_args, extra):
    # -icount shift=0: one instruction per virtual ns, so the bench lines are instruction
    # counts; QEMU's idle warp keeps the virtual clock on real time while the core sleeps in WFI.
    return [
        "qemu-system-arm", "-M", "mps2-an386", "-nographic", "-monitor", "none",
        "-icount", "shift=0", "-kernel", IMAGE, *console_args, *extra,
    ]


class Console:
    """The node's console (UART0 on QEMU's stdout), line by line, with awaitable patterns."""

    def __init__(self, path):
        self.lines = []
        self.changed = asyncio.Condition()
        self.file = open(path, "w")

    async def pump(self, stream):
        while True:
            raw = await stream.readline()
            if not raw:
                break
            line = raw.decode("utf-8", "replace").rstrip("\r\n")
            self.file.write(line + "\n")
            self.file.flush()
            async with self.changed:
                self.lines.append(line)
                self.changed.notify_all()

    async def wait_for(self, pattern, since=0, timeout=STEP_TIMEOUT_S, what=None):
        """Index of the first line at or after `since` that matches `pattern`."""
        rx = re.compile(pattern)

        def find():
            return next((i for i in range(since, len(self.lines)) if rx.search(self.lines[i])), None)

        async def wait():
            async with self.changed:
                await self.changed.wait_for(lambda: find() is not None)
                return find()

        try:
            return await asyncio.wait_for(wait(), timeout)
        except asyncio.TimeoutError:
            tail = "\n".join(self.lines[-30:])
            fail(f"no {what or pattern!r} on the console within {timeout} s; last lines:\n{tail}")


class Bridge:
    """A TCP bridge between QEMU's UART1 socket (a client that reconnects) and mekong's MQTT
    port, which the test can cut (both sides closed, new connections refused) and restore."""

    def __init__(self, upstream_port):
        self.port = free_port()
        self.upstream_port = upstream_port
        self.server = None
        self.writers = set()
        self.connections = 0

    async def start(self):
        self.server = await asyncio.start_server(self.handle, "127.0.0.1", self.port, reuse_address=True)

    async def handle(self, node_r, node_w):
        # Dial mekong when the node first sends, as a modem opens its TCP session when the
        # node has something to say: QEMU reconnects its UART socket at once, and a link
        # dialled then would sit silent until the broker's CONNECT timeout (5 s) closed it,
        # over and over, with the node's next CONNECT due at an unrelated moment.
        self.writers.add(node_w)
        try:
            first = await node_r.read(4096)
        except (ConnectionError, OSError):
            first = b""
        if not first:
            node_w.close()
            self.writers.discard(node_w)
            return
        try:
            up_r, up_w = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            node_w.close()
            self.writers.discard(node_w)
            return
        self.connections += 1
        self.writers.add(up_w)
        up_w.write(first)

        async def pipe(r, w):
            try:
                while data := await r.read(4096):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                # Either side gone: close both, as a dropped modem link would.
                for x in (node_w, up_w):
                    x.close()
                    self.writers.discard(x)

        await asyncio.gather(pipe(node_r, up_w), pipe(up_r, node_w))

    async def cut(self):
        self.server.close()
        for w in list(self.writers):
            w.close()
        self.writers.clear()

    async def restore(self):
        await self.start()


def api(port, path):
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as r:
        return json.load(r)


async def api_async(port, path):
    return await asyncio.to_thread(api, port, path)


async def until(check, timeout, what):
    """Polls `check` (an async function returning a truthy value when done)."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        if time.monotonic() > deadline:
            fail(f"{what} within {timeout} s")
        await asyncio.sleep(0.5)


async def boot_refused(work, name, extra, expect):
    """Boots with `extra` QEMU arguments; the node must print `expect` and halt."""
    proc = await asyncio.create_subprocess_exec(
        *qemu_command(["-serial", "stdio", "-serial", "null"], extra),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    console = Console(os.path.join(work, f"console-{name}.log"))
    pump = asyncio.create_task(console.pump(proc.stdout))
    try:
        at = await console.wait_for("halted", timeout=30, what="halted")
        if not any(expect in line for line in console.lines[: at + 1]):
            fail(f"{name}: no {expect!r} before halting:\n" + "\n".join(console.lines))
        log(f"ok: {name}: {console.lines[at - 1]!r}, then halted")
    finally:
        proc.kill()
        await proc.wait()
        pump.cancel()


def provision(mekong, work, broker_port, name="devices"):
    registry = os.path.join(work, f"{name}.toml")
    blob = os.path.join(work, f"{name}-node.bin")
    subprocess.run(
        [mekong, "device", "provision", DEVICE, "--kind", "water", "--broker", f"127.0.0.1:{broker_port}",
         "--period-secs", str(PERIOD_S), "--air-secs", str(AIR_S), "--traffic-secs", str(TRAFFIC_S),
         "--registry", registry, "--out", blob],
        check=True, stdout=subprocess.DEVNULL,
    )
    return registry, blob


def password_of(blob):
    """The node's MQTT password as it presents it: the blob's 32 bytes as lowercase hex."""
    data = open(blob, "rb").read()
    if len(data) != CRC_AT + 4 or data[6] != 2:
        fail(f"{blob}: not a format-2 config blob ({len(data)} bytes, format {data[6]})")
    return data[PASSWORD_AT:CRC_AT].hex().encode()


def check_registry_digest(registry, blob):
    """The registry entry holds the SHA-256 of the blob's password text, never the password."""
    text = open(registry).read()
    password = password_of(blob)
    digest = hashlib.sha256(password).hexdigest()
    if f'password_sha256 = "{digest}"' not in text:
        # The registry's text is not shown: it holds the node's key.
        fail(f"{registry} has no password_sha256 matching the blob's password")
    if password.decode() in text:
        fail(f"{registry} holds the password itself")


def format_1_blob(blob):
    """The blob as format 1 wrote it: no password, the CRC at 178."""
    data = bytearray(open(blob, "rb").read()[:V1_CRC_AT])
    data[4:7] = struct.pack("<HB", V1_CRC_AT, 1)
    return bytes(data) + struct.pack("<I", zlib.crc32(data))


def mqtt_connack(port, client_id, username, password):
    """The CONNACK return code for an MQTT 3.1.1 CONNECT with these credentials (the
    connection is closed after), or None if the broker closed it without a CONNACK."""
    def field(b):
        return struct.pack(">H", len(b)) + b
    body = (field(b"MQTT") + bytes([4, 0xC2]) + struct.pack(">H", 10)
            + field(client_id.encode()) + field(username.encode()) + field(password))
    assert len(body) < 128  # a one-byte remaining length
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        s.sendall(bytes([0x10, len(body)]) + body)
        data = b""
        while len(data) < 4:
            chunk = s.recv(4 - len(data))
            if not chunk:
                return None
            data += chunk
        if data[:3] != b"\x20\x02\x00":
            fail(f"not a CONNACK: {data.hex()}")
        if data[3] == 0:
            s.sendall(b"\xe0\x00")  # DISCONNECT
        return data[3]


async def wrong_password(work, mekong, mqtt, first_console):
    """Boots a node with the same id but the password of another provisioning run, straight to
    mekong's MQTT port: it must be refused twice, backing off in between, while the first node
    (whose console is `first_console`) stays online."""
    _, blob = provision(mekong, work, mqtt, name="other")
    watch_from = len(first_console.lines)
    uart1 = ["-chardev", f"socket,id=mqtt,host=127.0.0.1,port={mqtt},{reconnect_option()}",
             "-serial", "chardev:mqtt"]
    proc = await asyncio.create_subprocess_exec(
        *qemu_command(["-serial", "stdio"], ["-device", f"loader,file={blob},addr={CONFIG_ADDR:#x}", *uart1]),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    console = Console(os.path.join(work, "console-other.log"))
    pump = asyncio.create_task(console.pump(proc.stdout))
    try:
        refused = r"\[(\d+)\] offline: broker refused the login: bad credentials, re-provision the node " \
                  r"\(CONNACK [45]; next try in (\d+) s\)"
        first = await console.wait_for(refused, what="the refused login")
        second = await console.wait_for(refused, since=first + 1, what="a second refused login")
        (t1, pause1), (t2, pause2) = (map(int, re.search(refused, console.lines[i]).groups()) for i in (first, second))
        if not (pause2 > pause1 and t2 - t1 >= pause1 * 1000):
            fail(f"no back-off between refused logins: {console.lines[first]!r}, {console.lines[second]!r}")
        if any("online:" in line for line in console.lines):
            fail("the node with the wrong password got online")
        dropped = [line for line in first_console.lines[watch_from:] if "offline:" in line]
        if dropped:
            fail(f"the node with the right password was pushed off: {dropped}")
        log(f"ok: refused, then again after {pause1} s: {console.lines[second]!r}; the first node stayed online")
    finally:
        proc.kill()
        await proc.wait()
        pump.cancel()


async def main(work):
    if not os.path.exists(IMAGE):
        fail(f"no image at {IMAGE}: cargo build --release -p mekong-node-qemu --target thumbv7em-none-eabihf")
    mekong = mekong_binary()
    started = time.monotonic()

    log("1. boots that must refuse to run")
    await boot_refused(work, "unprovisioned", [], "unprovisioned")
    mqtt, mqtt5, http = free_port(), free_port(), free_port()
    bridge = Bridge(mqtt)
    registry, blob = provision(mekong, work, bridge.port)
    check_registry_digest(registry, blob)
    damaged = os.path.join(work, "damaged.bin")
    data = bytearray(open(blob, "rb").read())
    data[20] ^= 0x01
    open(damaged, "wb").write(data)
    await boot_refused(work, "damaged", ["-device", f"loader,file={damaged},addr={CONFIG_ADDR:#x}"],
                       "config page corrupt")
    old = os.path.join(work, "format-1.bin")
    open(old, "wb").write(format_1_blob(blob))
    await boot_refused(work, "format-1", ["-device", f"loader,file={old},addr={CONFIG_ADDR:#x}"],
                       "predates MQTT passwords: provision the node again")

    log(f"2. mekong ({mekong}) and the node, through the bridge")
    env = dict(os.environ)
    env.update({
        "MEKONG__BROKER__LISTEN": f"127.0.0.1:{mqtt}",
        "MEKONG__BROKER__LISTEN_V5": f"127.0.0.1:{mqtt5}",
        "MEKONG__API__LISTEN": f"127.0.0.1:{http}",
        "MEKONG__STORAGE__DATA_DIR": os.path.join(work, "data"),
        "MEKONG__REGISTRY__PATH": registry,
        "MEKONG__INGEST__REQUIRE_REGISTRATION": "true",
    })
    server_log = open(os.path.join(work, "mekong.log"), "w")
    server = subprocess.Popen([mekong, "serve", "--config", "/dev/null"], env=env,
                              stdout=server_log, stderr=subprocess.STDOUT)
    qemu = None
    pump = None
    try:
        async def healthy():
            if server.poll() is not None:
                fail(f"mekong exited ({server.returncode}); see {work}/mekong.log")
            try:
                return await api_async(http, "/healthz")
            except OSError:
                return None
        await until(healthy, 30, "mekong did not answer /healthz")
        # The blob's password logs in; a wrong one tells whether the broker checks passwords.
        good = await asyncio.to_thread(mqtt_connack, mqtt, DEVICE, DEVICE, password_of(blob))
        if good != 0:
            fail(f"the blob's password was refused: CONNACK {good}")
        wrong = await asyncio.to_thread(mqtt_connack, mqtt, DEVICE, DEVICE, b"0" * 64)
        checks_passwords = wrong != 0
        if checks_passwords and wrong not in (4, 5):
            fail(f"a wrong password got CONNACK {wrong} (MQTT 3.1.1: 4 or 5)")
        log(f"ok: the blob's password logs in; a wrong one: "
            + (f"CONNACK {wrong}" if checks_passwords else "accepted (the broker does not check passwords)"))
        await bridge.start()

        uart1 = ["-chardev", f"socket,id=mqtt,host=127.0.0.1,port={bridge.port},{reconnect_option()}",
                 "-serial", "chardev:mqtt"]
        qemu = await asyncio.create_subprocess_exec(
            *qemu_command(["-serial", "stdio"], ["-device", f"loader,file={blob},addr={CONFIG_ADDR:#x}", *uart1]),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        console = Console(os.path.join(work, "console.log"))
        pump = asyncio.create_task(console.pump(qemu.stdout))

        await console.wait_for(r"online: connected", what="online")
        hello = await console.wait_for(r"acked pack \d+ seq \d+: hello", what="the hello's acknowledgement")
        log(f"ok: online, clock set: {console.lines[hello]!r}")
        first = await console.wait_for(r"acked pack \d+ seq \d+: \d+ readings", since=hello, what="a reading ack")
        await console.wait_for(r"acked pack \d+ seq \d+: \d+ readings", since=first + 1, what="a second reading ack")

        log(f"3. outage: the bridge drops for {OUTAGE_S} s")
        await bridge.cut()
        cut_time = time.monotonic()
        cut_at = len(console.lines)
        offline = await console.wait_for(r"offline: ", since=cut_at, timeout=OUTAGE_S, what="the node noticing")
        log(f"ok: the node noticed: {console.lines[offline]!r}")
        # The outage itself, not a wait for an event: readings queue up meanwhile.
        await asyncio.sleep(max(0.0, OUTAGE_S - (time.monotonic() - cut_time)))
        restore_at = len(console.lines)
        await bridge.restore()
        log("   bridge restored")
        online = await console.wait_for(r"online: connected", since=restore_at, what="reconnection")
        after = await console.wait_for(r"acked pack \d+ seq \d+: \d+ readings", since=online,
                                       what="an acknowledgement after the outage")
        log(f"ok: back online, {console.lines[after]!r}")

        log("4. the platform's copy of every reading")
        sampled_before = [m for m in map(SAMPLE.match, console.lines[:restore_at]) if m]
        during = [m for m in map(SAMPLE.match, console.lines[cut_at:restore_at]) if m]
        if len(during) < OUTAGE_S // PERIOD_S // 2:
            fail(f"only {len(during)} samples during the outage")
        for metric in METRICS:
            if not any(m.group(2) == metric for m in during):
                fail(f"no {metric} sampled during the outage")

        def packed():
            out = {}
            for m in filter(None, map(PACKED.match, list(console.lines))):
                key = (int(m.group(1)), m.group(3))
                if key in out:
                    fail(f"sample {key} packed twice")
                out[key] = (int(m.group(2)), m.group(4))
            return out

        # Every sample taken up to the restore must be packed, with its value.
        async def all_packed():
            p = packed()
            return p if all((int(m.group(1)), m.group(2)) in p for m in sampled_before) else None
        snapshot = await until(all_packed, STEP_TIMEOUT_S, "samples taken before the restore were not all packed")
        for m in sampled_before:
            if snapshot[(int(m.group(1)), m.group(2))][1] != m.group(3):
                fail(f"sample {m.group(0)!r} was packed with another value")

        async def stored():
            out = {}
            for metric in {k[1] for k in snapshot}:
                series = await api_async(http, f"/v1/devices/{DEVICE}/series/{metric}?from=946684800000"
                                               f"&to={int(time.time() * 1000) + 86_400_000}&limit=10000")
                for p in series["points"]:
                    if (metric, p["t_ms"]) in out:
                        fail(f"{metric} at {p['t_ms']} returned twice")
                    out[(metric, p["t_ms"])] = p["v"]
            return out

        async def all_stored():
            s = await stored()
            return s if all((k[1], t) in s for k, (t, _) in snapshot.items()) else None
        api_points = await until(all_stored, STEP_TIMEOUT_S, "readings packed by the node are missing from the API")
        final = packed()  # packs made since the snapshot may be stored too
        by_time = {(k[1], t): (k, b) for k, (t, b) in final.items()}
        for (metric, t), v in api_points.items():
            if (metric, t) not in by_time:
                fail(f"the API has {metric} = {v} at {t}, which the node never packed (stored twice or at a wrong time?)")
            key, b = by_time[(metric, t)]
            if v != bits(b):
                fail(f"{metric} at {t}: API {v!r}, node {bits(b)!r}")
        for m in during:
            if (m.group(2), snapshot[(int(m.group(1)), m.group(2))][0]) not in api_points:
                fail(f"sample taken during the outage missing: {m.group(0)!r}")
        per_metric = {metric: sum(1 for k in api_points if k[0] == metric) for metric in METRICS}
        for metric, n in per_metric.items():
            if n < 3:
                fail(f"only {n} {metric} readings through the API")
        listed = await api_async(http, f"/v1/devices/{DEVICE}/series")
        others = {x["metric"] for x in listed["series"]} - set(METRICS) - {"uptime", "dropped"}
        if others:
            fail(f"unexpected series stored: {sorted(others)}")
        log(f"ok: {len(snapshot)} readings packed, all stored once with the node's values and times, "
            f"{len(during)} of them sampled during the outage; through the API: "
            + ", ".join(f"{metric} {n}" for metric, n in per_metric.items()))

        device = await api_async(http, f"/v1/devices/{DEVICE}")
        stats = await api_async(http, "/v1/stats")
        rejections = await api_async(http, "/v1/rejections?limit=5")
        if device.get("seq") is None:
            fail(f"the device has no sequence number: {device}")
        if stats.get("rejected") != 0 or rejections.get("total") != 0:
            fail(f"refusals: stats {stats}, rejections {rejections}")
        uptime = await api_async(http, f"/v1/devices/{DEVICE}/series/uptime")
        log(f"ok: device seq {device['seq']}, seq_gaps {device.get('seq_gaps')}, packs {device.get('packs')}, "
            f"duplicates {device.get('duplicates')}, rejected 0; hello stored {len(uptime['points'])}x; "
            f"bridge connections {bridge.connections}")

        log("5. a node with another password")
        if checks_passwords:
            await wrong_password(work, mekong, mqtt, console)
        elif os.environ.get("MEKONG_REQUIRE_MQTT_AUTH") == "1":
            fail("the broker accepted a wrong password, and MEKONG_REQUIRE_MQTT_AUTH=1")
        else:
            log("skipped: the broker does not check MQTT passwords (set MEKONG_REQUIRE_MQTT_AUTH=1 to require it)")
        log(f"passed in {time.monotonic() - started:.0f} s")
    finally:
        if qemu is not None and qemu.returncode is None:
            qemu.kill()
            await qemu.wait()
        if pump is not None:
            pump.cancel()
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()


if __name__ == "__main__":
    keep = "--keep" in sys.argv
    work = tempfile.mkdtemp(prefix="mekong-qemu-e2e-")
    ok = False
    try:
        asyncio.run(main(work))
        ok = True
    finally:
        if keep or not ok:
            print(f"work directory (console.log, mekong.log): {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

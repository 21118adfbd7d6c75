#!/usr/bin/env python3
"""Writes a mekong node's config page (node.bin): its identity, key, broker and periods.

Python 3 standard library only, so a technician's laptop needs nothing else. The layout is
the temporary one of node/src/provision.rs (180 bytes, little-endian, CRC-32 at the end);
it will follow mekong_schema::provision when that lands.

    scripts/provision.py --id hau-01 --kind water --water 60 --key-file hau-01.key -o node.bin

Without --key-file a random key is made and written next to the output as <output>.key:
register that key with the platform, and keep it secret.
"""
import argparse
import os
import re
import struct
import sys
import zlib

KINDS = ["traffic", "water", "air", "unknown"]  # DeviceKind::ALL order


def blob(device_id, kind, key, host, port, air, water, traffic):
    if not re.fullmatch(r"[a-z0-9-]{1,64}", device_id):
        raise ValueError("device id must be 1 to 64 characters of a-z, 0-9 and '-'")
    if len(key) != 32:
        raise ValueError("key must be 32 bytes")
    host_b = host.encode()
    if len(host_b) > 64:
        raise ValueError("broker host longer than 64 bytes")
    body = b"MKNC" + bytes([1, KINDS.index(kind), len(device_id), len(host_b)])
    body += device_id.encode().ljust(64, b"\0") + key + host_b.ljust(64, b"\0")
    body += struct.pack("<HHHH", port, air, water, traffic)
    assert len(body) == 176
    return body + struct.pack("<I", zlib.crc32(body) & 0xFFFFFFFF)


def main():
    a = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    a.add_argument("--id", required=True, help="device id, e.g. hau-01")
    a.add_argument("--kind", choices=KINDS, required=True)
    a.add_argument("--broker", default="mqtt.mekong.local", help="broker host name (for the modem)")
    a.add_argument("--port", type=int, default=1883)
    a.add_argument("--air", type=int, default=0, help="PM sampling period, s (0: no sensor)")
    a.add_argument("--water", type=int, default=0, help="water level sampling period, s (0: no sensor)")
    a.add_argument("--traffic", type=int, default=0, help="traffic counting window, s (0: no sensor)")
    a.add_argument("--key-file", help="file holding the 32-byte key (raw)")
    a.add_argument("-o", "--output", default="node.bin")
    args = a.parse_args()
    for name in ("air", "water", "traffic"):
        if not 0 <= getattr(args, name) <= 65535:
            sys.exit(f"--{name} must be 0 to 65535 seconds")
    if args.key_file:
        key = open(args.key_file, "rb").read()
    else:
        key = os.urandom(32)
        with open(args.output + ".key", "wb") as f:
            f.write(key)
    try:
        b = blob(args.id, args.kind, key, args.broker, args.port, args.air, args.water, args.traffic)
    except ValueError as e:
        sys.exit(str(e))
    with open(args.output, "wb") as f:
        f.write(b)
    print(f"{args.output}: {len(b)} bytes for {args.id} ({args.kind}), crc32 {b[-4:][::-1].hex()}")


if __name__ == "__main__":
    main()

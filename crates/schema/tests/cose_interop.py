#!/usr/bin/env python3
"""Cross-checks mekong's COSE_Mac0 envelopes (crates/schema/src/cose.rs) with pycose, an
independent implementation of RFC 9052.

    cose_interop.py            check the committed fixtures (our golden vector verifies with
                               pycose; pycose still makes the committed pycose vector)
    cose_interop.py probe      exit 0 if pycose is usable here, else 2 with the reason
    cose_interop.py verify HEX KEY_HEX
                               verify an envelope; print kid, seq and payload
    cose_interop.py make KEY_HEX KID SEQ PAYLOAD_HEX
                               seal a payload with pycose; print the envelope's hex

Needs `pip install pycose 'cbor2<6'`: pycose 1.1 expects cbor2 to decode arrays as lists and
maps as dicts, which cbor2 6 no longer does. The Rust test `cose_interop` runs this script.
"""

import sys
from pathlib import Path

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"

# The parameters of the two committed vectors; the Rust tests use the same ones.
GOLDEN_KEY = bytes(range(32))
GOLDEN_KID = b"hau-ninh-kieu-01"
GOLDEN_SEQ = 1
PYCOSE_KEY = bytes(range(32, 64))
PYCOSE_KID = b"pycose-node-07"
PYCOSE_SEQ = 4_294_967_296  # above u32, so the eight-byte integer form is covered

SEQ_LABEL = -65537


def usable():
    """None if pycose works with the installed cbor2, else why not."""
    try:
        import cbor2
        import pycose  # noqa: F401
    except ImportError as e:
        return f"cannot import pycose or cbor2: {e}"
    # cbor2 6 decodes a tagged array (a COSE message) as a tuple, which pycose 1.1 refuses.
    if not isinstance(cbor2.loads(b"\xd1\x80").value, list):
        return "pycose 1.1 needs cbor2 < 6 (cbor2 6 decodes tagged arrays as tuples): pip install 'cbor2<6'"
    return None


def verify(envelope: bytes, key: bytes):
    """(kid, seq, payload) of a valid envelope; raises if the tag or the shape is wrong."""
    from pycose.headers import KID, Algorithm
    from pycose.algorithms import HMAC256
    from pycose.keys import SymmetricKey
    from pycose.messages import CoseMessage, Mac0Message

    msg = CoseMessage.decode(envelope)
    if not isinstance(msg, Mac0Message):
        raise ValueError(f"not a COSE_Mac0 but {type(msg).__name__}")
    if msg.uhdr:
        raise ValueError(f"unprotected header is not empty: {msg.uhdr}")
    if msg.phdr.get(Algorithm) is not HMAC256:
        raise ValueError(f"algorithm is {msg.phdr.get(Algorithm)}, not HMAC 256/256")
    msg.key = SymmetricKey(k=key)
    if not msg.verify_tag():
        raise ValueError("tag does not verify")
    return msg.phdr[KID], msg.phdr[SEQ_LABEL], msg.payload


def make(key: bytes, kid: bytes, seq: int, payload: bytes) -> bytes:
    from pycose.headers import KID, Algorithm
    from pycose.algorithms import HMAC256
    from pycose.keys import SymmetricKey
    from pycose.messages import Mac0Message

    # Inserted in the order mekong writes them (RFC 8949 deterministic order): 1, 4, -65537.
    msg = Mac0Message(phdr={Algorithm: HMAC256, KID: kid, SEQ_LABEL: seq}, uhdr={}, payload=payload)
    msg.key = SymmetricKey(k=key)
    return msg.encode()


def fixture(name: str) -> bytes:
    return bytes.fromhex((FIXTURES / name).read_text().strip())


def check():
    pack = fixture("water-pack.hex")
    golden = fixture("signed-water-pack.hex")
    assert verify(golden, GOLDEN_KEY) == (GOLDEN_KID, GOLDEN_SEQ, pack), "golden vector"
    try:
        verify(golden, PYCOSE_KEY)
    except ValueError:
        pass
    else:
        raise AssertionError("the golden vector verifies with the wrong key")
    # Both sides encode deterministically, so pycose makes the very same bytes.
    assert make(GOLDEN_KEY, GOLDEN_KID, GOLDEN_SEQ, pack) == golden, "pycose encodes the golden vector differently"
    assert make(PYCOSE_KEY, PYCOSE_KID, PYCOSE_SEQ, pack) == fixture("pycose-mac0.hex"), "pycose vector changed"
    print("ok: golden vector verified by pycose; pycose vector reproduced")


def main(args):
    reason = usable()
    if reason:
        print(reason, file=sys.stderr)
        return 2
    if not args:
        check()
    elif args[0] == "probe":
        pass
    elif args[0] == "verify" and len(args) == 3:
        kid, seq, payload = verify(bytes.fromhex(args[1]), bytes.fromhex(args[2]))
        print(f"kid={kid.hex()} seq={seq} payload={payload.hex()}")
    elif args[0] == "make" and len(args) == 5:
        print(make(bytes.fromhex(args[1]), args[2].encode(), int(args[3]), bytes.fromhex(args[4])).hex())
    else:
        print(__doc__, file=sys.stderr)
        return 64
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

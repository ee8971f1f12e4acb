"""Writes the link fuzz seeds (core/fuzz/seeds/link/*.bin) with an implementation independent of
the Rust one: Python's struct and zlib.crc32. core/src/link.rs's tests parse these files.

    python3 core/fuzz/seeds/make_link_seeds.py
"""
import pathlib
import struct
import zlib

HERE = pathlib.Path(__file__).resolve().parent
FIXTURES = HERE.parents[2] / "tests" / "fixtures" / "p256"


def frame(kind: int, payload: bytes) -> bytes:
    body = bytes([kind]) + struct.pack(">H", len(payload)) + payload
    return b"\x53" + body + struct.pack(">I", zlib.crc32(body) & 0xFFFFFFFF)


def field(b: bytes) -> bytes:
    return struct.pack(">H", len(b)) + b


leaf = (FIXTURES / "leaf.der").read_bytes()
issuer = (FIXTURES / "issuer.der").read_bytes()
csr = bytes.fromhex("3003020100")  # a stand-in: the seed is about framing, not CSR contents
seeds = {
    "sign_request": frame(1, struct.pack(">I", 7) + field(b"device") + field(b"default") + field(b"") + field(csr)),
    "sign_answer": frame(2, struct.pack(">I", 7) + b"\x00" + field(leaf) + field(issuer)),
    "refused": frame(2, struct.pack(">I", 8) + b"\x07" + b"permission denied: id mismatch"),
    "tls_data": frame(3, struct.pack(">H", 3) + bytes.fromhex("160301002a010000260303") + bytes(32)),
    "tls_close": frame(4, struct.pack(">H", 3)),
}
out = HERE / "link"
out.mkdir(exist_ok=True)
for name, data in seeds.items():
    (out / f"{name}.bin").write_bytes(data)
    print(f"{name}.bin: {len(data)} bytes")

"""Seeds for the `deframer` fuzz target: the link seeds (make_link_seeds.py) cut into pieces.

Each record is a control byte (low 6 bits: piece length - 1; high 2 bits: the time step before
the piece, 3 = longer than the 1 s stall) and the piece. Run from the repository root."""
import os

SRC, DST = "core/fuzz/seeds/link", "core/fuzz/seeds/deframer"


def cut(data: bytes, size: int, step: int) -> bytes:
    out = b""
    for i in range(0, len(data), size):
        piece = data[i : i + size]
        out += bytes([(step << 6) | (len(piece) - 1)]) + piece
    return out


stream = b"".join(
    open(os.path.join(SRC, f), "rb").read() for f in sorted(os.listdir(SRC)) if f.endswith(".bin")
)
os.makedirs(DST, exist_ok=True)
with open(os.path.join(DST, "frames_in_pieces.bin"), "wb") as f:
    f.write(cut(stream, 64, 0))
# Noise, a frame cut short, then every frame; a stall between pieces.
with open(os.path.join(DST, "frames_with_stalls.bin"), "wb") as f:
    f.write(cut(b"\x00noise" + stream[:40] + stream, 17, 3))

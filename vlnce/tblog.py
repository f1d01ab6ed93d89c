"""Training logs: TensorBoard event files (written directly, no tensorflow or tensorboard needed),
a JSON-lines history and a PNG of the curves.

The event file is a TFRecord stream of ``tensorflow.Event`` protocol buffers: each record is
``uint64 length, uint32 masked_crc32c(length), data, uint32 masked_crc32c(data)``. Only the fields
scalars need are encoded (wall_time, step, file_version, summary.value{tag, simple_value}), which
``tensorboard --logdir`` reads.
"""

from __future__ import annotations

import json
import os
import socket
import struct
import time
from pathlib import Path


def _crc32c_table() -> list[int]:
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1
        table.append(c)
    return table


_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecord uses."""
    c = 0xFFFFFFFF
    for b in data:
        c = _TABLE[(c ^ b) & 0xFF] ^ (c >> 8)
    return c ^ 0xFFFFFFFF


def masked_crc(data: bytes) -> int:
    c = crc32c(data)
    return (((c >> 15) | (c << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _field(num: int, wire: int) -> bytes:
    return _varint((num << 3) | wire)


def _bytes_field(num: int, payload: bytes) -> bytes:
    return _field(num, 2) + _varint(len(payload)) + payload


def encode_event(wall_time: float, step: int, *, file_version: str | None = None,
                 scalars: dict[str, float] | None = None) -> bytes:
    msg = _field(1, 1) + struct.pack("<d", wall_time) + _field(2, 0) + _varint(step)
    if file_version is not None:
        msg += _bytes_field(3, file_version.encode())
    if scalars:
        values = b"".join(_bytes_field(1, _bytes_field(1, tag.encode()) + _field(2, 5) + struct.pack("<f", float(v)))
                          for tag, v in scalars.items())
        msg += _bytes_field(5, values)
    return msg


def read_records(path: str | Path) -> list[bytes]:
    """The records of a TFRecord file, with both checksums verified (used by the tests)."""
    data = Path(path).read_bytes()
    out, i = [], 0
    while i < len(data):
        (n,) = struct.unpack_from("<Q", data, i)
        (lc,) = struct.unpack_from("<I", data, i + 8)
        if lc != masked_crc(data[i:i + 8]):
            raise ValueError(f"{path}: bad length checksum at byte {i}")
        rec = data[i + 12:i + 12 + n]
        (dc,) = struct.unpack_from("<I", data, i + 12 + n)
        if dc != masked_crc(rec):
            raise ValueError(f"{path}: bad data checksum at byte {i}")
        out.append(rec)
        i += 16 + n
    return out


class TrainingLog:
    """Scalars to TensorBoard (``events.out.tfevents.*``) and to ``history.jsonl`` in ``log_dir``."""

    def __init__(self, log_dir: str | Path) -> None:
        self.dir = Path(log_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        name = f"events.out.tfevents.{int(time.time())}.{socket.gethostname()}.{os.getpid()}"
        self._events = open(self.dir / name, "ab")
        self._write(encode_event(time.time(), 0, file_version="brain.Event:2"))
        self._history = open(self.dir / "history.jsonl", "a", encoding="utf-8")

    def _write(self, rec: bytes) -> None:
        header = struct.pack("<Q", len(rec))
        self._events.write(header + struct.pack("<I", masked_crc(header)) + rec + struct.pack("<I", masked_crc(rec)))

    def truncate_after(self, step: int) -> None:
        """Drop history rows after ``step`` (logged by a run that crashed before its checkpoint)."""
        rows = [r for r in read_history(self.dir) if r.get("step", 0) <= step]
        self._history.close()
        from vlnce.fileio import atomic_write_bytes

        atomic_write_bytes(self.dir / "history.jsonl", "".join(json.dumps(r) + "\n" for r in rows).encode())
        self._history = open(self.dir / "history.jsonl", "a", encoding="utf-8")

    def scalars(self, step: int, values: dict[str, float]) -> None:
        values = {k: float(v) for k, v in values.items() if v is not None}
        self._write(encode_event(time.time(), int(step), scalars=values))
        self._events.flush()
        self._history.write(json.dumps({"step": int(step), **values}) + "\n")
        self._history.flush()

    def close(self) -> None:
        self._events.close()
        self._history.close()


def read_history(log_dir: str | Path) -> list[dict]:
    path = Path(log_dir) / "history.jsonl"
    rows = []
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                pass  # a line torn by a crash
    return rows


AGENT_PANELS = (("train/loss", (200, 60, 40)), ("val/spl", (40, 120, 200)), ("val/success", (40, 160, 80)))


def plot_curves(log_dir: str | Path, out_png: str | Path, panels=AGENT_PANELS) -> None:
    """Scalars against optimisation step, one panel per (tag, RGB colour), as a PNG (Pillow only).

    The default panels are a navigation agent's: training loss, validation SPL and success.
    """
    from PIL import Image, ImageDraw

    from vlnce.fileio import atomic_path

    rows = read_history(log_dir)
    w, h, pad = 360, 240, 36
    img = Image.new("RGB", (w * len(panels), h), "white")
    draw = ImageDraw.Draw(img)
    for k, (tag, color) in enumerate(panels):
        # the last value per step wins: a resumed run re-logs the steps after its checkpoint
        pts = sorted({r["step"]: r[tag] for r in rows if tag in r}.items())
        x0 = k * w
        draw.rectangle([x0 + pad, 10, x0 + w - 10, h - pad], outline=(120, 120, 120))
        draw.text((x0 + pad + 4, 12), tag, fill=(0, 0, 0))
        if not pts:
            continue
        xs, ys = [p[0] for p in pts], [p[1] for p in pts]
        lo, hi = min(ys), max(ys)
        hi = hi if hi > lo else lo + 1e-6
        xmax = max(xs) if max(xs) > min(xs) else min(xs) + 1
        sx = lambda x: x0 + pad + (x - min(xs)) / (xmax - min(xs)) * (w - pad - 12)  # noqa: E731
        sy = lambda y: h - pad - (y - lo) / (hi - lo) * (h - pad - 22)  # noqa: E731
        line = [(sx(x), sy(y)) for x, y in pts]
        if len(line) > 1:
            draw.line(line, fill=color, width=2)
        for p in line:
            draw.ellipse([p[0] - 2, p[1] - 2, p[0] + 2, p[1] + 2], fill=color)
        draw.text((x0 + 2, 14), f"{hi:.3g}", fill=(0, 0, 0))
        draw.text((x0 + 2, h - pad - 10), f"{lo:.3g}", fill=(0, 0, 0))
        draw.text((x0 + pad, h - pad + 6), f"step {min(xs)}", fill=(0, 0, 0))
        draw.text((x0 + w - 90, h - pad + 6), f"{xmax}", fill=(0, 0, 0))
    with atomic_path(Path(out_png)) as tmp:
        img.save(tmp, format="PNG")

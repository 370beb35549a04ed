"""TensorBoardWriter: scalars and PNG images in TensorBoard's event-file format, without TensorFlow.

An event file is a sequence of TFRecords, each

    uint64 length (little-endian) | uint32 masked_crc32c(length bytes) | data | uint32 masked_crc32c(data)

(masked_crc32c(b) = rotr15(crc32c(b)) + 0xa282ead8 mod 2^32, CRC-32C being the Castagnoli CRC) whose data
is a serialised tensorflow.Event protobuf. The fields written here (tensorflow/core/util/event.proto,
summary.proto):

    Event      { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5;
                 SessionLog session_log = 7; }
    Summary    { repeated Value value = 1; }
    Value      { string tag = 1; float simple_value = 2; Image image = 4; }
    Image      { int32 height = 1; int32 width = 2; int32 colorspace = 3; bytes encoded_image_string = 4; }
    SessionLog { SessionStatus status = 1; }   (START = 1)

The first record carries file_version "brain.Event:2". A writer opened at a step > 0 (a resumed run)
writes SessionLog START at that step, so TensorBoard drops what an earlier, interrupted writer logged
from that step on (its purge of orphaned data) instead of drawing two curves over the same steps.
"""
import os
import socket
import struct
import time

__all__ = ["TensorBoardWriter", "crc32c", "masked_crc32c"]


def _crc32c_table():
    table = []
    for i in range(256):
        c = i
        for _ in range(8):
            c = (c >> 1) ^ 0x82F63B78 if c & 1 else c >> 1  # the reflected Castagnoli polynomial
        table.append(c)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data):
    """CRC-32C (Castagnoli) of bytes; crc32c(b"123456789") == 0xE3069283."""
    crc = 0xFFFFFFFF
    table = _CRC_TABLE
    for b in bytes(data):
        crc = table[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked_crc32c(data):
    """The CRC TFRecord stores: rotate crc32c right by 15 bits and add 0xa282ead8 (mod 2^32)."""
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


# ------------------------------------------------------------------ protobuf encoding (the few types used)
def _varint(n):
    n &= 0xFFFFFFFFFFFFFFFF  # negative int64 -> two's complement, 10 bytes, as protobuf does
    out = bytearray()
    while True:
        byte = n & 0x7F
        n >>= 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _key(field, wire):
    return _varint((field << 3) | wire)


def _f_varint(field, n):
    return _key(field, 0) + _varint(int(n))


def _f_double(field, x):
    return _key(field, 1) + struct.pack("<d", float(x))


def _f_float(field, x):
    return _key(field, 5) + struct.pack("<f", float(x))


def _f_bytes(field, b):
    b = b.encode("utf-8") if isinstance(b, str) else bytes(b)
    return _key(field, 2) + _varint(len(b)) + b


def _record(data):
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


class TensorBoardWriter:
    """TensorBoardWriter(logdir, start_step=0): appends events to a new file
    logdir/events.out.tfevents.<time>.<host>.<pid>.<n> (the folder is created).

    add_scalar(tag, value, step), add_scalars({tag: value}, step), add_image(tag, png_bytes, height,
    width, channels, step); flush() and close() (also a context manager). start_step > 0 marks a resumed
    run (see the module docstring)."""

    _count = 0

    def __init__(self, logdir, start_step=0):
        if not isinstance(logdir, (str, os.PathLike)):
            raise TypeError(f"TensorBoardWriter: logdir must be a path, got {type(logdir).__name__}")
        if isinstance(start_step, bool) or not isinstance(start_step, int) or start_step < 0:
            raise ValueError(f"TensorBoardWriter: start_step must be an int >= 0, got {start_step!r}")
        self.logdir = os.fspath(logdir)
        os.makedirs(self.logdir, exist_ok=True)
        TensorBoardWriter._count += 1
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}.{os.getpid()}."
                f"{TensorBoardWriter._count}")
        self.path = os.path.join(self.logdir, name)
        self._f = open(self.path, "wb")
        self._write(_f_double(1, time.time()) + _f_bytes(3, "brain.Event:2"))
        if start_step > 0:
            self._write(_f_double(1, time.time()) + _f_varint(2, start_step) + _f_bytes(7, _f_varint(1, 1)))
        self.flush()

    def _write(self, event):
        if self._f is None:
            raise ValueError(f"TensorBoardWriter: {self.path} is closed")
        self._f.write(_record(event))

    def _event(self, step, values, wall_time=None):
        summary = b"".join(_f_bytes(1, v) for v in values)
        wall = time.time() if wall_time is None else float(wall_time)
        self._write(_f_double(1, wall) + _f_varint(2, step) + _f_bytes(5, summary))

    @staticmethod
    def _check_step(step, where):
        if isinstance(step, bool) or not isinstance(step, int):
            raise TypeError(f"TensorBoardWriter.{where}: step must be an int, got {type(step).__name__}")

    def add_scalars(self, values, step, wall_time=None):
        """One event with a scalar summary per {tag: number} item (non-numbers are skipped)."""
        self._check_step(step, "add_scalars")
        vals = []
        for tag, v in values.items():
            if not isinstance(tag, str) or not tag:
                raise TypeError(f"TensorBoardWriter.add_scalars: tags must be non-empty strings, got {tag!r}")
            if isinstance(v, bool):
                continue
            try:
                x = float(v)
            except (TypeError, ValueError):
                continue
            vals.append(_f_bytes(1, tag) + _f_float(2, x))  # NaN / inf too: TensorBoard shows them
        if vals:
            self._event(step, vals, wall_time)

    def add_scalar(self, tag, value, step, wall_time=None):
        """One scalar summary value (stored as float32, as TensorBoard does)."""
        self.add_scalars({tag: value}, step, wall_time)

    def add_image(self, tag, png, height, width, channels, step, wall_time=None):
        """An image summary holding encoded PNG bytes (channels 1 grey, 3 RGB, 4 RGBA)."""
        self._check_step(step, "add_image")
        if not isinstance(png, (bytes, bytearray)) or not bytes(png[:8]) == b"\x89PNG\r\n\x1a\n":
            raise ValueError("TensorBoardWriter.add_image: png must be the bytes of a PNG file")
        image = _f_varint(1, height) + _f_varint(2, width) + _f_varint(3, channels) + _f_bytes(4, png)
        self._event(step, [_f_bytes(1, tag) + _f_bytes(4, image)], wall_time)

    def flush(self):
        """Pushes what was written to the file (TensorBoard reads files while they grow)."""
        if self._f is not None:
            self._f.flush()

    def close(self):
        """Flushes and closes the file (idempotent)."""
        if self._f is not None:
            self._f.close()
            self._f = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self):
        return f"TensorBoardWriter({self.path!r}{', closed' if self._f is None else ''})"

"""The safetensors file format, read and written by hand (no dependency).

Layout (https://github.com/huggingface/safetensors, "Format"):
    8 bytes      N, unsigned little-endian: the header's length
    N bytes      UTF-8 JSON object: {name: {"dtype": "F32", "shape": [..], "data_offsets": [begin, end]}, ...,
                 optionally "__metadata__": {str: str}}; may be padded with trailing spaces
    rest         the tensors' bytes, little-endian, C order; offsets are relative to the start of
                 this section, and the tensors tile it exactly (no gaps, no overlaps)

Reading (load_file) validates everything before it allocates anything: the header length
against the file size, the JSON, every entry's dtype/shape/offsets, that the byte size of each
tensor is numel * itemsize, that the tensors tile the data section exactly, and that the file
is exactly as long as the header says. Any problem raises CheckpointError naming the file and
the problem; the result is returned only once every tensor has been read (nothing half-loaded).
The file is read with readinto() straight into the new tensors' memory (no mmap, no
intermediate copy) and closed before load_file returns, so it can be overwritten at once.

dtypes on load:  F32, I64, BOOL       -> float32 / int64 / bool, bit-exact
                 F16, BF16            -> float32, exact (every value is representable)
                 F64                  -> float32, rounded to nearest (beyond float32's range: +-inf)
                 I8, I16, I32, U8, U16, U32 -> int64, exact
                 U64                  -> int64 when every value fits, else CheckpointError
                 anything else (F8_*, C64, ...) -> CheckpointError naming the dtype
Checksum: every file mmu writes carries a CRC-32C (Castagnoli) of the whole file in its
__metadata__, as the first key: "mmu.checksum": "crc32c:XXXXXXXX" (8 hex digits), computed over
the 8 length bytes, the header with those 8 digits as "00000000", and the data section. Reading a
file that has one (load_file, load, load_metadata) verifies it, so a flipped bit or a zeroed block
anywhere — data, tensor entries, the mmu structure, the checksum itself — raises CheckpointError
instead of loading wrong numbers, renamed keys or a different structure. A damaged checksum key
is caught too: every mmu file's header starts with the same 40 bytes, and a header that differs
from them in only a few bytes is refused. Files without a checksum (the safetensors package,
torch, mmu before it) load as before, unchecked. The CRC runs in C with the SSE4.2 instruction
(mmu._C.crc32c, ~3 GB/s here: ~35 ms for a 100 MB file, against ~300 ms for this Python's
zlib.crc32). load_metadata and read_raw hide the key; save_file refuses it in user metadata.
Writing (save_file) stores mmu Tensors as F32/I64/BOOL and NumPy arrays in their own dtype when
safetensors has one (float16/32/64, int8-64, uint8-64, bool); the file is written to a temp
file in the same directory, flushed, fsync'ed and moved into place with os.replace, so a
crash or an exception (KeyboardInterrupt too) leaves either the old file or the new one, and
never a temp file.
"""
import json
import os
import struct
import tempfile

import numpy as np

from .._C import MAX_DIMS as _C_MAX_DIMS, Tensor
from .._C import crc32c as _crc32c
from ..tensor import bool as _bool
from ..tensor import float32 as _float32
from ..tensor import int64 as _int64
from ..tensor import tensor as _tensor
from ..tensor import zeros as _zeros

__all__ = ["CheckpointError", "save_file", "load_file", "read_raw", "write_file"]

MAX_HEADER = 100_000_000  # the safetensors library's own limit
MAX_DIMS = _C_MAX_DIMS  # the C core's limit: more dims can be read as NumPy arrays, not as Tensors
MAX_ELEMENTS = (2**63 - 1) // 64  # the C core's limit on a shape's element count (tensor.c check_shape)
_UMASK = os.umask(0o022)  # read once at import (os.umask can only be read by setting it)
os.umask(_UMASK)


CHECKSUM_KEY = "mmu.checksum"
_CRC_PLACEHOLDER = "crc32c:00000000"
# every checksummed header starts with these bytes (the key is written first)
_CRC_PREFIX = ('{"__metadata__":{"' + CHECKSUM_KEY + '":"crc32c:').encode()
_CRC_DIGITS = slice(len(_CRC_PREFIX), len(_CRC_PREFIX) + 8)  # where the hex digits sit in the header


class CheckpointError(ValueError):
    """A checkpoint file is truncated, corrupt or inconsistent (the message names the file)."""


# safetensors dtype <-> NumPy dtype (little-endian)
_NP = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "BF16": np.dtype("<u2"),
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"), "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"), "U32": np.dtype("<u4"), "U16": np.dtype("<u2"), "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_FROM_NP = {np.dtype(np.float64): "F64", np.dtype(np.float32): "F32", np.dtype(np.float16): "F16",
            np.dtype(np.int64): "I64", np.dtype(np.int32): "I32", np.dtype(np.int16): "I16",
            np.dtype(np.int8): "I8", np.dtype(np.uint64): "U64", np.dtype(np.uint32): "U32",
            np.dtype(np.uint16): "U16", np.dtype(np.uint8): "U8", np.dtype(np.bool_): "BOOL"}
_KNOWN_UNSUPPORTED = {"F8_E4M3", "F8_E5M2", "F8_E8M0", "F4", "F6_E2M3", "F6_E3M2", "C64", "C128"}
_NATIVE = {"F32": _float32, "I64": _int64, "BOOL": _bool}


# ------------------------------------------------------------------------------------ writing
def _as_array(name, value):
    """A C-contiguous little-endian array of a safetensors dtype (no copy when possible)."""
    if isinstance(value, Tensor):
        return value.detach().numpy()
    if isinstance(value, np.ndarray):
        dt = value.dtype
        if dt.byteorder == ">":
            value = value.astype(dt.newbyteorder("<"))
        if value.dtype.newbyteorder("=") not in _FROM_NP:
            raise TypeError(f"save_file: array {name!r} has dtype {value.dtype}, which safetensors cannot store")
        # (not np.ascontiguousarray: it turns a 0-d array into shape (1,))
        return value if value.flags.c_contiguous else value.copy(order="C")
    raise TypeError(f"save_file: value {name!r} must be an mmu Tensor or a NumPy array, got {type(value).__name__}")


def _header(arrays, metadata):
    header, offset = {}, 0
    header["__metadata__"] = {CHECKSUM_KEY: _CRC_PLACEHOLDER, **(metadata or {})}
    for name, arr in arrays.items():
        n = arr.nbytes
        header[name] = {"dtype": _FROM_NP[arr.dtype.newbyteorder("=")], "shape": list(arr.shape),
                        "data_offsets": [offset, offset + n]}
        offset += n
    raw = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    raw += b" " * (-(8 + len(raw)) % 8)  # data section 8-byte aligned, as the safetensors library does
    return raw


def _check_args(tensors, metadata):
    if not isinstance(tensors, dict):
        raise TypeError(f"save_file: tensors must be a dict of str -> Tensor/ndarray, got {type(tensors).__name__}")
    for k in tensors:
        if not isinstance(k, str):
            raise TypeError(f"save_file: tensor names must be str, got {type(k).__name__} {k!r}")
        if k == "__metadata__":
            raise ValueError("save_file: '__metadata__' is reserved and cannot name a tensor")
    if metadata is not None and CHECKSUM_KEY in metadata:
        raise ValueError(f"save_file: metadata key {CHECKSUM_KEY!r} is reserved (mmu writes the file's checksum there)")
    if metadata is not None:
        if not isinstance(metadata, dict):
            raise TypeError(f"save_file: metadata must be a dict of str -> str, got {type(metadata).__name__}")
        for k, v in metadata.items():
            if not isinstance(k, str) or not isinstance(v, str):
                raise TypeError(f"save_file: metadata must map str -> str, got {type(k).__name__} -> "
                                f"{type(v).__name__} ({k!r})")


def _atomic_write(path, write):
    """Calls write(f) on a temp file next to path, fsyncs it and moves it onto path."""
    path = os.fspath(path)
    d = os.path.dirname(os.path.abspath(path))
    try:  # the new file gets the old one's permissions, or the usual ones (mkstemp makes 0600)
        mode = os.stat(path).st_mode & 0o7777
    except OSError:
        mode = 0o666 & ~_UMASK
    fd, tmp = tempfile.mkstemp(dir=d, prefix="." + os.path.basename(path) + ".", suffix=".tmp")
    try:
        try:
            os.fchmod(fd, mode)
        except OSError:
            pass
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename itself durable (best effort: not every filesystem allows it)
        dfd = os.open(d, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass


def write_file(arrays, path, metadata=None):
    """Writes {name: ndarray} (already validated little-endian contiguous arrays) atomically."""
    raw = _header(arrays, metadata)
    assert raw.startswith(_CRC_PREFIX)

    def write(f):
        head = struct.pack("<Q", len(raw)) + raw
        f.write(head)
        crc = _crc32c(head)
        for arr in arrays.values():
            if arr.nbytes:
                data = memoryview(arr.reshape(-1)).cast("B")
                crc = _crc32c(data, crc)
                f.write(data)
        f.seek(8 + _CRC_DIGITS.start)  # the digits go in place of the placeholder's
        f.write(b"%08x" % crc)

    _atomic_write(path, write)


def save_file(tensors, path, metadata=None):
    """Writes {name: Tensor | ndarray} to `path` in the safetensors format (atomically).

    metadata: optional {str: str}, stored as the header's __metadata__."""
    _check_args(tensors, metadata)
    arrays = {name: _as_array(name, v) for name, v in tensors.items()}
    write_file(arrays, path, metadata)


# ------------------------------------------------------------------------------------ reading
def _no_duplicates(pairs):
    d = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {k!r}")
        d[k] = v
    return d


def _parse_header(path, f, size):
    def fail(msg):
        raise CheckpointError(f"{path}: {msg}")

    if size < 8:
        fail(f"file is {size} bytes, too short for a safetensors header (at least 8)")
    (n,) = struct.unpack("<Q", f.read(8))
    if n > MAX_HEADER:
        fail(f"header length {n} exceeds the {MAX_HEADER}-byte limit (corrupt file?)")
    if 8 + n > size:
        fail(f"header length {n} runs past the end of the file ({size} bytes): truncated or corrupt")
    raw = f.read(n)
    if len(raw) != n:
        fail("file shrank while being read")
    head = raw[:len(_CRC_PREFIX)]
    if head != _CRC_PREFIX and len(head) == len(_CRC_PREFIX) and \
            sum(a != b for a, b in zip(head, _CRC_PREFIX)) <= 6:
        fail("the checksum field at the start of the header is damaged (corrupt file)")
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates)
    except (UnicodeDecodeError, ValueError) as e:
        fail(f"header is not valid UTF-8 JSON ({e})")
    except RecursionError:
        fail("header JSON is nested too deeply (corrupt file?)")
    if not isinstance(header, dict):
        fail(f"header must be a JSON object, got {type(header).__name__}")
    metadata = header.pop("__metadata__", None)
    if metadata is not None:
        if not isinstance(metadata, dict) or not all(isinstance(k, str) and isinstance(v, str)
                                                     for k, v in metadata.items()):
            fail("__metadata__ must be an object mapping strings to strings")
    checksum = None
    if metadata is not None and CHECKSUM_KEY in metadata:
        value = metadata.pop(CHECKSUM_KEY)
        digits = raw[_CRC_DIGITS]
        if not raw.startswith(_CRC_PREFIX) or value != "crc32c:" + digits.decode("ascii", "replace") or \
                len(digits) != 8 or not all(c in b"0123456789abcdef" for c in digits):
            fail(f"malformed checksum field {value!r} (corrupt file)")
        checksum = (int(digits, 16), _crc32c(raw[_CRC_DIGITS.stop:], _crc32c(
            struct.pack("<Q", n) + raw[:_CRC_DIGITS.start] + b"00000000")))
    data_len = size - 8 - n
    entries = []
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            fail(f"tensor {name!r}: entry must have exactly dtype, shape and data_offsets")
        dt, shape, offs = info["dtype"], info["shape"], info["data_offsets"]
        if not isinstance(dt, str):
            fail(f"tensor {name!r}: dtype must be a string")
        if dt not in _NP:
            what = "unsupported" if dt in _KNOWN_UNSUPPORTED else "unknown"
            fail(f"tensor {name!r}: {what} dtype {dt!r} (mmu reads F32, F16, BF16, F64, I64, I32, I16, I8, "
                 "U64, U32, U16, U8, BOOL)")
        if not isinstance(shape, list) or not all(type(s) is int and s >= 0 for s in shape):
            fail(f"tensor {name!r}: shape must be a list of non-negative ints, got {shape!r}")
        if not isinstance(offs, list) or len(offs) != 2 or not all(type(o) is int and o >= 0 for o in offs):
            fail(f"tensor {name!r}: data_offsets must be two non-negative ints, got {offs!r}")
        begin, end = offs
        numel = nonzero = 1
        for s in shape:
            numel *= s
            nonzero *= max(s, 1)
        if nonzero > MAX_ELEMENTS:  # NumPy and the C core refuse such shapes even when empty
            fail(f"tensor {name!r}: shape {shape} is too large")
        if end < begin:
            fail(f"tensor {name!r}: data_offsets {offs} end before they begin")
        if end > data_len:
            fail(f"tensor {name!r}: data_offsets {offs} run past the end of the data ({data_len} bytes): "
                 "truncated file?")
        if end - begin != numel * _NP[dt].itemsize:
            fail(f"tensor {name!r}: {end - begin} bytes for shape {shape} of {dt} "
                 f"(expected {numel * _NP[dt].itemsize})")
        entries.append((begin, end, name, dt, tuple(shape)))
    entries.sort(key=lambda e: (e[0], e[1]))
    pos = 0
    for begin, end, name, _, _ in entries:
        if begin != pos:
            fail(f"tensor {name!r}: data starts at {begin}, expected {pos} "
                 f"({'overlapping' if begin < pos else 'a gap between'} tensors)")
        pos = end
    if pos != data_len:
        fail(f"the tensors cover {pos} bytes but the data section has {data_len}: "
             f"{'trailing garbage' if pos < data_len else 'truncated file'}")
    return metadata, entries, 8 + n, checksum


def _verify(path, checksum, crc):
    """checksum: (stored, crc of the header) from _parse_header or None; crc: of the whole file."""
    if checksum is not None and crc != checksum[0]:
        raise CheckpointError(f"{path}: checksum mismatch (stored crc32c {checksum[0]:08x}, the file's bytes give "
                              f"{crc:08x}): the file is corrupt")


def read_raw(path, tensors=None):
    """Validates the whole file, then reads it: returns (metadata, {name: data}, {name: dtype}).

    Entries of a native dtype (F32/I64/BOOL) named by tensors(metadata) (a set; every entry when
    tensors is None) are read straight into new mmu Tensors; the rest come back as NumPy arrays
    in the file's own dtype (BF16 as its uint16 bit patterns)."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        metadata, entries, start, checksum = _parse_header(path, f, size)
        crc = None if checksum is None else checksum[1]
        want = None if tensors is None else tensors(metadata)
        out, dtypes = {}, {}
        f.seek(start)
        for begin, end, name, dt, shape in entries:  # sorted by offset: one sequential pass
            if dt in _NATIVE and (want is None or name in want):
                _check_dims(path, name, shape)
                obj = _zeros(shape, dtype=_NATIVE[dt])
                arr = obj.numpy()
            else:
                obj = arr = np.empty(shape, dtype=_NP[dt])
            if end > begin:
                data = memoryview(arr.reshape(-1)).cast("B")
                got = f.readinto(data)
                if got != end - begin:
                    raise CheckpointError(f"{path}: file shrank while being read (tensor {name!r})")
                if crc is not None:  # the entries tile the data section in this order
                    crc = _crc32c(data, crc)
            out[name] = obj
            dtypes[name] = dt
        _verify(path, checksum, crc)  # before anything is returned or decoded
    return metadata, out, dtypes


def _data_crc(f, start, size, crc, chunk=1 << 23):
    """Continues crc over the file's bytes from start to size (read in chunks into one buffer)."""
    f.seek(start)
    buf = bytearray(min(chunk, max(size - start, 1)))
    view = memoryview(buf)
    left = size - start
    while left > 0:
        got = f.readinto(view[:min(left, len(buf))])
        if not got:
            raise CheckpointError(f"{f.name}: file shrank while being read")
        crc = _crc32c(view[:got], crc)
        left -= got
    return crc


def _check_dims(path, name, shape):
    if len(shape) > MAX_DIMS:
        raise CheckpointError(f"{path}: tensor {name!r} has shape {list(shape)}: {len(shape)} dims, but mmu "
                              f"tensors have at most {MAX_DIMS}")


def _to_tensor(path, name, arr, dt):
    """A file array -> an mmu Tensor (float32 / int64 / bool) by the rules in the module docstring."""
    _check_dims(path, name, arr.shape)
    if isinstance(arr, Tensor):
        if dt == "BOOL":
            raw = arr.numpy().view(np.uint8)
            if raw.size and raw.max() > 1:
                raise CheckpointError(f"{path}: tensor {name!r}: BOOL bytes must be 0 or 1")
        return arr
    if dt in ("F32", "I64", "BOOL"):
        return _to_tensor(path, name, _tensor(arr), dt)
    if dt == "BF16":
        return _tensor((arr.astype(np.uint32) << 16).view(np.float32))
    if dt in ("F16", "F64"):
        with np.errstate(over="ignore"):
            return _tensor(arr.astype(np.float32))
    if dt == "U64":
        if arr.size and arr.max() > np.iinfo(np.int64).max:
            raise CheckpointError(f"{path}: tensor {name!r}: U64 values above 2**63-1 do not fit int64")
        return _tensor(arr.astype(np.int64))
    return _tensor(arr.astype(np.int64))  # the other integer types: exact


def load_file(path):
    """Reads a safetensors file into {name: Tensor} (dtype rules in the module docstring)."""
    path = os.fspath(path)
    _, arrays, dtypes = read_raw(path)
    return {name: _to_tensor(path, name, arr, dtypes[name]) for name, arr in arrays.items()}


def load_metadata(path):
    """The __metadata__ dict of a safetensors file (None if it has none), validated. A file mmu wrote is
    read to the end to verify its checksum (a damaged file raises CheckpointError); the checksum key
    itself is not in the returned dict."""
    path = os.fspath(path)
    with open(path, "rb") as f:
        size = os.fstat(f.fileno()).st_size
        metadata, _, start, checksum = _parse_header(path, f, size)
        if checksum is not None:
            _verify(path, checksum, _data_crc(f, start, size, checksum[1]))
    return metadata

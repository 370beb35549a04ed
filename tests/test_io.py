"""mmu.io: safetensors save_file/load_file and mmu.save/mmu.load: bit-exact round trips, interop
with the safetensors package (both ways), validation of corrupt files, atomic writes."""
import json
import math
import os
import struct

import numpy as np
import pytest

import mmu
from mmu.io import CheckpointError


def _bits(x):
    a = x.numpy() if isinstance(x, mmu.Tensor) else np.asarray(x)
    return a.dtype, a.shape, a.tobytes()


def _special_f32():
    raw = np.array([0x7FC00001, 0xFFC12345, 0x7F800000, 0xFF800000, 0x80000000, 0x00000001, 0x3F800000],
                   dtype=np.uint32)  # NaNs with payloads, +-inf, -0.0, a denormal, 1.0
    return raw.view(np.float32)


def _sample():
    rng = np.random.default_rng(0)
    return {
        "f32": mmu.tensor(rng.standard_normal((3, 5)).astype(np.float32)),
        "special": mmu.tensor(_special_f32()),
        "i64": mmu.tensor(np.array([-(2 ** 63), -1, 0, 2 ** 63 - 1], np.int64)),
        "mask": mmu.tensor(np.array([[True, False], [False, True]])),
        "scalar": mmu.tensor(np.float32(2.5)),
        "empty": mmu.zeros(0, 4),
        "empty_i": mmu.zeros(0, dtype=mmu.int64),
    }


def test_save_file_load_file_bit_exact(tmp_path):
    path = tmp_path / "a.safetensors"
    t = _sample()
    mmu.io.save_file(t, path, metadata={"k": "v"})
    back = mmu.io.load_file(path)
    assert set(back) == set(t)
    for k in t:
        assert isinstance(back[k], mmu.Tensor)
        assert _bits(back[k]) == _bits(t[k]), k
    assert mmu.io.load_metadata(path) == {"k": "v"}
    # the header is 8-byte aligned and valid JSON
    raw = path.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    assert (8 + n) % 8 == 0
    assert json.loads(raw[8:8 + n])["f32"]["dtype"] == "F32"
    # numpy arrays are accepted as values
    mmu.io.save_file({"a": np.arange(6, dtype=np.float32).reshape(2, 3)}, path)
    np.testing.assert_array_equal(mmu.io.load_file(path)["a"].numpy(), np.arange(6).reshape(2, 3))
    # 0-d, non-contiguous and big-endian arrays keep their shape and values
    base = np.arange(6, dtype=np.float32).reshape(2, 3)
    mmu.io.save_file({"z": np.array(3.5, np.float32), "t": base.T, "be": base.astype(">f4")}, path)
    back = mmu.io.load_file(path)
    assert back["z"].shape == () and back["z"].item() == 3.5
    np.testing.assert_array_equal(back["t"].numpy(), base.T)
    np.testing.assert_array_equal(back["be"].numpy(), base)


def test_load_does_not_hold_the_file(tmp_path):
    path = tmp_path / "a.safetensors"
    mmu.io.save_file({"x": mmu.ones(4)}, path)
    back = mmu.io.load_file(path)
    mmu.io.save_file({"x": mmu.zeros(4)}, path)  # overwrite while the loaded tensors live
    os.remove(path)
    np.testing.assert_array_equal(back["x"].numpy(), 1)
    back["x"].add_(1.0)  # writable, owned memory


def test_safetensors_reads_mmu_files(tmp_path):
    st_np = pytest.importorskip("safetensors.numpy")
    path = tmp_path / "a.safetensors"
    t = _sample()
    mmu.io.save_file(t, path)
    back = st_np.load_file(str(path))
    for k in t:
        assert _bits(back[k]) == _bits(t[k]), k


def test_safetensors_torch_reads_mmu_files(tmp_path):
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    from safetensors.torch import load_file as torch_load

    path = tmp_path / "a.safetensors"
    t = _sample()
    mmu.io.save_file(t, path)
    back = torch_load(str(path))
    assert back["f32"].dtype == torch.float32 and back["i64"].dtype == torch.int64 and back["mask"].dtype == torch.bool
    for k in t:
        assert _bits(back[k].numpy()) == _bits(t[k]), k


def test_mmu_reads_safetensors_numpy_files(tmp_path):
    st_np = pytest.importorskip("safetensors.numpy")
    path = str(tmp_path / "n.safetensors")
    rng = np.random.default_rng(1)
    f64 = rng.standard_normal(5) * 1e3
    f64[0] = 1e300  # beyond float32: becomes inf
    arrays = {
        "f32": _special_f32(), "f16": rng.standard_normal(6).astype(np.float16), "f64": f64,
        "i32": np.array([-5, 7, 2 ** 31 - 1], np.int32), "u8": np.array([0, 255], np.uint8),
        "i8": np.array([-128, 127], np.int8), "u64": np.array([2 ** 63 - 1], np.uint64),
        "b": np.array([True, False]), "i64": np.arange(3, dtype=np.int64),
    }
    st_np.save_file(arrays, path, metadata={"m": "1"})
    back = mmu.io.load_file(path)
    assert _bits(back["f32"]) == _bits(arrays["f32"])
    assert back["f16"].dtype == mmu.float32
    np.testing.assert_array_equal(back["f16"].numpy(), arrays["f16"].astype(np.float32))
    with np.errstate(over="ignore"):
        np.testing.assert_array_equal(back["f64"].numpy(), arrays["f64"].astype(np.float32))
    assert math.isinf(back["f64"].numpy()[0])
    for k in ("i32", "u8", "i8", "u64", "i64"):
        assert back[k].dtype == mmu.int64
        np.testing.assert_array_equal(back[k].numpy(), arrays[k].astype(np.int64))
    assert back["b"].dtype == mmu.bool
    # U64 values that do not fit int64 are refused
    st_np.save_file({"u": np.array([2 ** 64 - 1], np.uint64)}, path)
    with pytest.raises(CheckpointError, match="U64"):
        mmu.io.load_file(path)


def test_mmu_reads_safetensors_torch_files_bf16(tmp_path):
    pytest.importorskip("safetensors")
    torch = pytest.importorskip("torch")
    from safetensors.torch import save_file as torch_save

    path = str(tmp_path / "t.safetensors")
    x = torch.randn(4, 3)
    tensors = {"bf16": x.bfloat16(), "f16": x.half(), "f32": x, "f64": x.double(),
               "i16": torch.arange(3, dtype=torch.int16)}
    torch_save(tensors, path)
    back = mmu.io.load_file(path)
    for k in ("bf16", "f16", "f32", "f64"):
        assert back[k].dtype == mmu.float32
        np.testing.assert_array_equal(back[k].numpy(), tensors[k].float().numpy())
    np.testing.assert_array_equal(back["i16"].numpy(), [0, 1, 2])


def _write_raw(path, header, data=b"", n=None, pad=True):
    raw = header if isinstance(header, bytes) else json.dumps(header).encode()
    if pad:
        raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw) if n is None else n) + raw + data)


def test_truncated_files_raise(tmp_path):
    path = tmp_path / "a.safetensors"
    mmu.io.save_file(_sample(), path)
    good = path.read_bytes()
    cut_path = tmp_path / "cut.safetensors"
    for cut in [0, 3, 8, 9, 20, len(good) // 2, len(good) - 5, len(good) - 1]:
        cut_path.write_bytes(good[:cut])
        with pytest.raises(CheckpointError, match="cut.safetensors"):
            mmu.io.load_file(cut_path)
    cut_path.write_bytes(good + b"junk")
    with pytest.raises(CheckpointError, match="trailing"):
        mmu.io.load_file(cut_path)


@pytest.mark.parametrize("header,data,match", [
    (b"not json", b"", "JSON"),
    (b"[1, 2]", b"", "JSON object"),
    (b"\xff\xfe{}", b"", "UTF-8"),
    ({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0, 4]}}, b"\0" * 4, "expected 8"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]},
      "b": {"dtype": "F32", "shape": [1], "data_offsets": [2, 6]}}, b"\0" * 6, "overlapping"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 8]}}, b"\0" * 8, "gap"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 2, "past the end"),
    ({"a": {"dtype": "F32", "shape": [1], "data_offsets": [4, 0]}}, b"\0" * 4, "end before"),
    ({"a": {"dtype": "X99", "shape": [1], "data_offsets": [0, 4]}}, b"\0" * 4, "unknown dtype"),
    ({"a": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}, b"\0", "unsupported dtype"),
    ({"a": {"dtype": "F32", "shape": [-1], "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
    ({"a": {"dtype": "F32", "shape": [1.5], "data_offsets": [0, 4]}}, b"\0" * 4, "shape"),
    ({"a": {"dtype": "F32", "shape": [1]}}, b"\0" * 4, "exactly"),
    ({"a": [1, 2]}, b"", "exactly"),
    ({"__metadata__": {"k": 1}}, b"", "__metadata__"),
    ({"a": {"dtype": "BOOL", "shape": [2], "data_offsets": [0, 2]}}, b"\x00\x07", "0 or 1"),
])
def test_corrupt_headers_raise(tmp_path, header, data, match):
    path = tmp_path / "bad.safetensors"
    _write_raw(path, header, data)
    with pytest.raises(CheckpointError, match=match) as e:
        mmu.io.load_file(path)
    assert "bad.safetensors" in str(e.value)
    assert isinstance(e.value, ValueError)


def test_header_length_and_duplicates(tmp_path):
    path = tmp_path / "bad.safetensors"
    _write_raw(path, {}, n=2 ** 40)
    with pytest.raises(CheckpointError, match="limit"):
        mmu.io.load_file(path)
    _write_raw(path, {}, n=1000)
    with pytest.raises(CheckpointError, match="past the end"):
        mmu.io.load_file(path)
    _write_raw(path, b'{"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}, '
                     b'"a": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]}}')
    with pytest.raises(CheckpointError, match="duplicate"):
        mmu.io.load_file(path)
    with pytest.raises(FileNotFoundError):
        mmu.io.load_file(tmp_path / "missing.safetensors")


def test_bad_save_arguments(tmp_path):
    path = tmp_path / "a.safetensors"
    with pytest.raises(TypeError, match="names must be str"):
        mmu.io.save_file({1: mmu.ones(2)}, path)
    with pytest.raises(TypeError, match="Tensor or a NumPy array"):
        mmu.io.save_file({"a": [1, 2]}, path)
    with pytest.raises(TypeError, match="dtype"):
        mmu.io.save_file({"a": np.array(["x"])}, path)
    with pytest.raises(TypeError, match="str -> str"):
        mmu.io.save_file({"a": mmu.ones(2)}, path, metadata={"k": 1})
    with pytest.raises(TypeError):
        mmu.io.save_file([mmu.ones(2)], path)
    with pytest.raises(TypeError, match="cannot save an object of type object"):
        mmu.save({"a": object()}, path)
    with pytest.raises(TypeError, match="keys must be"):
        mmu.save({(1, 2): 3}, path)
    cyc = []
    cyc.append(cyc)
    with pytest.raises(ValueError, match="cycle"):
        mmu.save(cyc, path)
    assert not path.exists() and os.listdir(tmp_path) == []


def test_atomic_write_keeps_old_file(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.safetensors"
    mmu.save({"w": mmu.ones(3)}, path)
    before = path.read_bytes()
    import mmu.io.safetensors as sf

    for exc in (OSError("disk full"), KeyboardInterrupt()):
        real_fsync = os.fsync

        def failing_fsync(fd, exc=exc):
            raise exc

        monkeypatch.setattr(sf.os, "fsync", failing_fsync)
        with pytest.raises(type(exc)):
            mmu.save({"w": mmu.zeros(1000)}, path)
        monkeypatch.setattr(sf.os, "fsync", real_fsync)
        assert path.read_bytes() == before
        assert os.listdir(tmp_path) == ["ckpt.safetensors"]  # no temp file left behind
    # a failure while writing the data (an array that cannot be written midway)
    class Boom(np.ndarray):
        pass

    real_write = sf.write_file

    def write_then_fail(arrays, p, metadata=None):
        def bad(f):
            f.write(b"partial")
            raise RuntimeError("midway")
        sf._atomic_write(p, bad)

    monkeypatch.setattr("mmu.io.write_file", write_then_fail)
    with pytest.raises(RuntimeError, match="midway"):
        mmu.save({"w": mmu.zeros(5)}, path)
    monkeypatch.setattr("mmu.io.write_file", real_write)
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["ckpt.safetensors"]
    assert _bits(mmu.load(path)["w"]) == _bits(mmu.ones(3))


def test_save_load_nested_round_trip(tmp_path):
    path = tmp_path / "obj.safetensors"
    t = _sample()
    shared = mmu.tensor(np.arange(4, dtype=np.float32), requires_grad=True)
    obj = {
        "tensors": t,
        "list": [1, -2 ** 70, 2.5, -0.0, math.inf, -math.inf, math.nan, "str", "", None, True, False],
        "tuple": (1, (2.0, "x"), []),
        "int_keys": {0: "a", 1: {"nested": shared}, -3: None},
        "other_keys": {2.5: 1, True: 2, None: 3},
        "array": np.arange(6, dtype=np.int16).reshape(2, 3),
        "np_scalar": np.float32(1.25),
        "np_float64": np.float64(0.1),  # a float subclass: saved as a Python float
        "again": shared,
        "dotted.key": {"x": mmu.ones(1)},
        "dotted": {"key.x": mmu.zeros(1)},
    }
    mmu.save(obj, path)
    back = mmu.load(path)
    assert list(back) == list(obj)
    for k in t:
        assert _bits(back["tensors"][k]) == _bits(t[k])
    lst = back["list"]
    assert lst[:4] == [1, -2 ** 70, 2.5, -0.0] and math.copysign(1, lst[3]) == -1
    assert type(lst[0]) is int and type(lst[2]) is float
    assert lst[4] == math.inf and lst[5] == -math.inf and math.isnan(lst[6]) and lst[7:] == obj["list"][7:]
    assert back["tuple"] == (1, (2.0, "x"), []) and isinstance(back["tuple"][1], tuple)
    assert list(back["int_keys"]) == [0, 1, -3] and back["int_keys"][0] == "a"
    assert back["other_keys"] == {2.5: 1, True: 2, None: 3}
    assert _bits(back["array"]) == _bits(obj["array"]) and isinstance(back["array"], np.ndarray)
    assert back["np_scalar"].dtype == np.float32 and back["np_scalar"] == 1.25 and back["np_scalar"].shape == ()
    assert type(back["np_float64"]) is float and back["np_float64"] == 0.1
    assert back["again"] is back["int_keys"][1]["nested"] and back["again"].requires_grad
    assert back["dotted.key"]["x"].item() == 1.0 and back["dotted"]["key.x"].item() == 0.0
    # the file is an ordinary safetensors file
    st_np = pytest.importorskip("safetensors.numpy")
    names = set(st_np.load_file(str(path)))
    assert "tensors.f32" in names and "array" in names


def test_load_plain_file_and_bad_structure(tmp_path):
    path = tmp_path / "plain.safetensors"
    mmu.io.save_file({"a": mmu.ones(2)}, path)
    assert list(mmu.load(path)) == ["a"]
    mmu.io.save_file({"a": mmu.ones(2)}, path, metadata={"mmu.structure": "{not json"})
    with pytest.raises(CheckpointError, match="structure"):
        mmu.load(path)
    mmu.io.save_file({"a": mmu.ones(2)}, path, metadata={"mmu.structure": '{"tensor": "zzz"}'})
    with pytest.raises(CheckpointError, match="missing tensor"):
        mmu.load(path)
    mmu.io.save_file({"a": mmu.ones(2)}, path, metadata={"mmu.structure": '{"weird": 1}'})
    with pytest.raises(CheckpointError, match="malformed"):
        mmu.load(path)


def test_optimizer_state_dict_round_trip(tmp_path):
    p = mmu.tensor(np.ones(3, np.float32), requires_grad=True)
    opt = mmu.optim.AdamW([p], lr=0.1, amsgrad=True)
    p.grad = mmu.ones(3)
    opt.step()
    sd = opt.state_dict()
    mmu.save(sd, tmp_path / "opt.safetensors")
    back = mmu.load(tmp_path / "opt.safetensors")
    assert back["param_groups"][0]["betas"] == (0.9, 0.999)
    assert back["state"][0]["step"] == 1 and type(back["state"][0]["step"]) is int
    assert _bits(back["state"][0]["exp_avg"]) == _bits(sd["state"][0]["exp_avg"])


def test_saved_file_permissions(tmp_path):
    path = tmp_path / "p.safetensors"
    mmu.save({"a": 1}, path)
    umask = os.umask(0o022)
    os.umask(umask)
    assert os.stat(path).st_mode & 0o777 == 0o666 & ~umask
    os.chmod(path, 0o640)
    mmu.save({"a": 2}, path)  # overwriting keeps the old file's permissions
    assert os.stat(path).st_mode & 0o777 == 0o640
    assert mmu.load(path) == {"a": 2}


# ------------------------------------------------------------ checksum (issue 11)
def _crc32c_reference(data, crc=0):
    """Bitwise CRC-32C (reflected polynomial 0x82F63B78), straight from the definition."""
    crc ^= 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_crc32c_matches_the_definition():
    assert mmu._C.crc32c(b"123456789") == 0xE3069283  # the standard check value
    data = np.random.default_rng(3).integers(0, 256, 1000, dtype=np.uint8).tobytes()
    for lo, hi in ((0, 0), (0, 1), (3, 11), (1, 1000), (7, 300)):
        assert mmu._C.crc32c(data[lo:hi]) == _crc32c_reference(data[lo:hi])
    assert mmu._C.crc32c(data[500:], mmu._C.crc32c(data[:500])) == mmu._C.crc32c(data)
    with pytest.raises(ValueError, match="crc32c"):
        mmu._C.crc32c(b"", 2**32)


def _checksummed_files(tmp_path):
    """A small mmu.save checkpoint (structure JSON, tensors, array, numbers) and a save_file file."""
    rng = np.random.default_rng(4)
    p1, p2 = tmp_path / "ckpt.safetensors", tmp_path / "flat.safetensors"
    mmu.save({"model": {"w": mmu.tensor(rng.standard_normal((3, 2)).astype(np.float32)),
                        "codes": mmu.tensor(np.arange(3))},
              "opt": {"lr": 0.001, "betas": (0.9, 0.99), "step": 7, "name": "adamw"},
              "arr": np.float16([1.5, -2.0])}, p1)
    mmu.io.save_file({"a": mmu.tensor(rng.standard_normal(4).astype(np.float32)),
                      "m": mmu.tensor(np.array([True, False]))}, p2, metadata={"k": "v"})
    return p1, p2


# issue 11: damaged tensor data loaded silently (every bit flip in the data section, every
# zero-fill), a flip inside the JSON structure renamed keys or changed numbers (0.001 -> 0.201),
# and a damaged structure key made load() return a flat dict. Every byte of the file, every
# class of position (length, checksum field, metadata, structure JSON, tensor entries, padding,
# data), flipped or zeroed, must raise CheckpointError.
def test_every_damaged_byte_raises(tmp_path):
    for path in _checksummed_files(tmp_path):
        good = path.read_bytes()
        (n,) = struct.unpack("<Q", good[:8])
        header = good[8:8 + n].decode()
        assert header.startswith('{"__metadata__":{"mmu.checksum":"crc32c:')
        assert len(good) > 8 + n  # there is a data section to damage
        bad = tmp_path / "bad.safetensors"
        loads = (mmu.load, mmu.io.load_file, mmu.io.load_metadata)
        for pos in range(len(good)):
            # one flip a byte, the bit and the reader rotating (every combination at every byte is slow)
            b = good[pos] ^ (0x01, 0x80, 0x24)[pos % 3]
            bad.write_bytes(good[:pos] + bytes([b]) + good[pos + 1:])
            with pytest.raises(CheckpointError):
                loads[(pos // 3) % 3](bad)
        for start in range(0, len(good), 8):  # zeroed 8-byte blocks
            block = good[start:start + 8]
            if block == bytes(len(block)):
                continue
            bad.write_bytes(good[:start] + bytes(len(block)) + good[start + 8:])
            with pytest.raises(CheckpointError):
                mmu.load(bad)


def test_checksummed_files_load_and_foreign_files_still_load(tmp_path):
    p1, p2 = _checksummed_files(tmp_path)
    back = mmu.load(p1)
    assert back["opt"] == {"lr": 0.001, "betas": (0.9, 0.99), "step": 7, "name": "adamw"}
    assert mmu.io.load_metadata(p2) == {"k": "v"}  # the checksum key is the file's, not the user's
    assert set(mmu.io.load_file(p2)) == {"a", "m"}
    with pytest.raises(ValueError, match="mmu.checksum"):
        mmu.io.save_file({}, p2, metadata={"mmu.checksum": "x"})
    # a file without a checksum (the safetensors package, torch, an older mmu) loads unchecked
    safetensors_numpy = pytest.importorskip("safetensors.numpy")
    p3 = tmp_path / "foreign.safetensors"
    safetensors_numpy.save_file({"x": np.float32([1, 2, 3])}, str(p3), metadata={"format": "np"})
    np.testing.assert_array_equal(mmu.io.load_file(p3)["x"].numpy(), [1, 2, 3])
    assert mmu.io.load_metadata(p3) == {"format": "np"}
    old = tmp_path / "old.safetensors"  # mmu.save's layout before the checksum
    structure = json.dumps({"dict": [["x", {"tensor": "x"}]]})
    safetensors_numpy.save_file({"x": np.float32([4, 5])}, str(old),
                                metadata={"mmu.version": "1", "mmu.structure": structure})
    np.testing.assert_array_equal(mmu.load(old)["x"].numpy(), [4, 5])
    # and the safetensors package reads mmu's checksummed files (the checksum is plain metadata)
    assert safetensors_numpy.load_file(str(p2))["a"].shape == (4,)

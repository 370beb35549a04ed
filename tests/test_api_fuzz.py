"""Seeded fuzz of the public API: mmu.*, mmu.functional.*, the Tensor methods (operators too), nn layers
and mmu.losses' functions, called with odd arguments — wrong types, None, NaN, ±inf, 1e300, ints past
int64, negative sizes, out-of-range dims, empty and 0-d tensors, int64/bool tensors, mismatched shapes.

Every call must either return or raise one of ALLOWED with a message that names the function or
op (the spec of tests/test_errors.py, here over thousands of random calls instead of a table).
A segfault or an OverflowError / AttributeError / ZeroDivisionError / "tuple index out of range"
is a failure. Sizes stay tiny (ints <= 16, or >= 2**62 which no allocator grants), so no call can
allocate much memory.

    python -m tests.test_api_fuzz --seed 0 --calls 20000     (from the repo root; also under ASan)

prints every distinct failure and exits 1 if there is one; the test runs a small budget.
"""
import argparse
import functools
import inspect
import math
import random
import re
import sys
import warnings

import numpy as np

import mmu
import mmu.functional as F  # noqa: N812

ALLOWED = (ValueError, TypeError, IndexError, RuntimeError, NotImplementedError)

# global state the fuzz must not change (threads, grad mode) or files it must not touch
_SKIP_MMU = {"save", "load", "set_num_threads", "get_num_threads", "is_grad_enabled", "stats", "manual_seed",
             "no_grad", "enable_grad", "set_grad_enabled", "Tensor"}
_SKIP_METHODS = {"numpy", "tolist", "_data_ptr", "dim", "contiguous", "item", "detach", "numel"}

# operators: the names a message may use for them (Python's own message uses the symbol)
_DUNDERS = {
    "__add__": "add|\\+", "__radd__": "add|\\+", "__sub__": "sub|-", "__rsub__": "sub|-", "__mul__": "mul|\\*",
    "__rmul__": "mul|\\*", "__truediv__": "div|/", "__rtruediv__": "div|/", "__matmul__": "matmul|@",
    "__pow__": "pow|\\*\\*", "__rpow__": "pow|\\*\\*", "__floordiv__": "floordiv|//", "__mod__": "mod|%",
    "__lt__": "lt|<|compar", "__ge__": "ge|>=|compar", "__eq__": "eq|==|compar", "__ne__": "ne|!=|compar",
    "__and__": "and|&", "__or__": "or|\\|", "__xor__": "xor|\\^", "__neg__": "neg|-", "__invert__": "invert|~|not",
    "__getitem__": "index|getitem", "__setitem__": "index|setitem", "__iadd__": "add|\\+", "__imul__": "mul|\\*",
    "__bool__": "bool|ambiguous", "__float__": "float|item|convert", "__int__": "int|item|convert",
    "__index__": "index", "__format__": "format",
}

# names a message may use for a function besides its own (a wrapper that reports its C op's name)
_ALIASES = {"view": "reshape", "flatten": "flatten|reshape", "T": "permute", "t": "t|transpose",
            "float": "to|float", "long": "to|long", "bool": "to|bool", "requires_grad_": "requires_grad",
            "ones_like": "ones_like|ones", "zeros_like": "zeros_like|zeros", "max": "max|argmax|amax",
            "min": "min|argmin|amin", "std": "std|var", "group_norm_silu": "group_norm", "relu": "relu",
            "conv_transpose1d": "conv_transpose", "conv_transpose2d": "conv_transpose",
            "conv_transpose3d": "conv_transpose", "conv1d": "conv", "conv2d": "conv", "conv3d": "conv"}


def targets():
    """(label, callable(self_tensor, args, kwargs), pattern the message must match)."""
    out = []
    for name in sorted(dir(mmu)):
        obj = getattr(mmu, name)
        if name.startswith("_") or name in _SKIP_MMU or isinstance(obj, type) or not callable(obj) \
                or inspect.ismodule(obj):
            continue
        out.append((f"mmu.{name}", _plain(obj), name))
    for name in F.__all__:
        if not name.startswith("_"):
            out.append((f"F.{name}", _plain(getattr(F, name)), name))
    for name in sorted(dir(mmu.Tensor)):
        if name.startswith("_") or name in _SKIP_METHODS:
            continue
        attr = inspect.getattr_static(mmu.Tensor, name)
        if isinstance(attr, property) or not callable(getattr(mmu.Tensor, name)):
            continue
        out.append((f"Tensor.{name}", _method(name), name))
    for name, pattern in _DUNDERS.items():
        out.append((f"Tensor.{name}", _method(name), pattern))
    for name in mmu.nn.__all__:
        cls = getattr(mmu.nn, name)
        if isinstance(cls, type) and issubclass(cls, mmu.nn.Module) and name not in _SKIP_NN:
            out.append((f"nn.{name}", _layer(cls), _layer_pattern(name)))
    return out


def loss_targets():
    """The public functions of mmu.losses (the classes are left out), each naming itself."""
    out = []
    for name in sorted(dir(mmu.losses)):
        obj = getattr(mmu.losses, name)
        if name.startswith("_") or isinstance(obj, type) or not inspect.isfunction(obj):
            continue
        out.append((f"losses.{name}", _plain(obj), name))
    return out


# nn layers: constructed with random arguments, then called on a random input. Containers and
# composites (whose errors come from the ops inside them) are left out.
_SKIP_NN = {"Module", "Sequential", "ModuleList", "ModuleDict", "MultiheadAttention", "TransformerBlock",
            "RotaryEmbedding"}


def _layer_pattern(name):
    """A layer's error may name the layer or its functional op (Conv2d: conv2d, AvgPool2d:
    avg_pool2d, BatchNorm2d: batch_norm, LayerNorm: layer_norm)."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name).lower()
    base = re.sub(r"\d+d$", "", snake)
    names = {name, re.sub(r"\d+d$", "", name), snake, base, name.lower(), _LAYER_OPS.get(name, name)}
    return "|".join(re.escape(v) for v in sorted(names))


_LAYER_OPS = {"Upsample": "interpolate", "RMSNorm": "rms_norm", "LeakyReLU": "leaky_relu", "SiLU": "silu",
              "GELU": "gelu", "ReLU": "relu"}


def _layer(cls):
    def call(self, args, kwargs):
        layer = cls(*args, **kwargs)
        return layer(self)
    call.signature_of = cls.__init__
    return call


def _plain(fn):
    def call(self, args, kwargs):
        return fn(*args, **kwargs)
    call.signature_of = fn
    return call


def _method(name):
    def call(self, args, kwargs):
        return getattr(self, name)(*args, **kwargs)
    call.signature_of = getattr(mmu.Tensor, name)
    call.is_method = True
    return call


# ------------------------------------------------------------------ values
class Values:
    """Random arguments: plausible ones by parameter name (so a call gets past its first check)
    and odd ones."""

    def __init__(self, rng):
        self.rng = rng

    def ftensor(self, *shape):
        return mmu.tensor(np.asarray(self.rng.standard_normal(shape), np.float32).reshape(shape))

    def tensor(self):
        r = self.rng.random()
        shapes = [(2, 3), (3,), (), (1, 2, 3, 3), (2, 0), (2, 3, 4), (1, 2, 2, 2, 2)]
        if r < 0.7:
            return self.ftensor(*shapes[self.rng.integers(len(shapes))])
        if r < 0.8:
            return mmu.tensor(self.rng.integers(-3, 4, size=(2, 3)))
        if r < 0.9:
            return mmu.tensor(self.rng.random((2, 3)) > 0.5)
        return self.ftensor(2, 3).requires_grad_()

    def odd(self):
        pool = [None, float("nan"), float("inf"), -float("inf"), 1e300, -1e300, 2 ** 62, 2 ** 63, 2 ** 64,
                -2 ** 63 - 1, 2 ** 70, 10 ** 30, -1, -7, 0, 1, 2, 3, 16, True, False, 0.5, -0.5, 2.5, "abc", "",
                "mean", (), (2, 3), (2, -1), (2 ** 64,), (1.5,), (None,), [], [[1, 2], [3]], object(),
                complex(1, 2), np.float64("nan"), np.int64(2), np.int64(-1), slice(1, 2), Ellipsis,
                np.zeros((2, 3), np.float64), np.zeros((0,), np.float32), np.ones((2, 3), np.int32),
                mmu.zeros(0), mmu.zeros(2, 0), mmu.tensor(1.0), mmu.tensor([np.nan, np.inf]),
                mmu.zeros(3, 2), mmu.zeros(1, 1, 1, 1, 1, 1), {"a": 1}, b"x", range(3), np.array([2 ** 62])]
        if self.rng.random() < 0.4:
            return self.tensor()
        return pool[self.rng.integers(len(pool))]

    def plausible(self, name, like):
        r = self.rng.integers
        n = name.lower()
        if n in ("dim", "dim0", "dim1", "start_dim", "end_dim", "diagonal", "axis"):
            return int(r(-2, 2))
        if n in ("size", "shape", "sizes", "output_size", "normalized_shape", "dims", "unflattened_size"):
            return tuple(int(v) for v in r(1, 4, size=r(1, 3)))
        if n in ("kernel_size", "stride", "dilation", "chunks", "split_size_or_sections", "groups",
                 "num_groups", "upscale_factor", "downscale_factor", "end", "start", "step", "exponent"):
            return int(r(1, 3))
        if n in ("padding", "output_padding", "ignore_index"):
            return int(r(0, 2))
        if n in ("p", "eps", "negative_slope", "momentum", "label_smoothing", "beta", "alpha", "value",
                 "fill_value", "min", "max", "scale_factor", "threshold", "dropout_p", "scale"):
            return float(self.rng.choice([0.5, 1.0, 2.0]))
        if n == "reduction":
            return str(self.rng.choice(["mean", "sum", "none"]))
        if n in ("keepdim", "training", "inplace", "requires_grad", "is_causal", "align_corners", "ceil_mode",
                 "retain_graph", "create_graph", "approximate"):
            return bool(r(0, 2)) if n != "approximate" else "none"
        if n in ("tensors", "seq"):
            return [like, like]
        if n in ("index", "indices", "target", "input_ids") and self.rng.random() < 0.6:
            return mmu.tensor(r(0, 2, size=like.shape if isinstance(like, mmu.Tensor) else (2,)))
        if n == "logits" and self.rng.random() < 0.6:  # the token losses' (B, L, V)
            return self.ftensor(2, 3, 4)
        if n in ("tokens", "targets") and self.rng.random() < 0.6:  # (B, L), a few out of [0, V)
            return mmu.tensor(r(-1, 5, size=(2, 3)))
        if n in ("mask", "condition", "attn_mask"):
            return mmu.tensor(self.rng.random(like.shape if isinstance(like, mmu.Tensor) else (2, 3)) > 0.5)
        if n == "dtype":
            return self.rng.choice([mmu.float32, mmu.int64, mmu.bool, None])
        if n in ("mode", "padding_mode"):
            return str(self.rng.choice(["nearest", "bilinear", "constant", "reflect"]))
        if self.rng.random() < 0.5 and isinstance(like, mmu.Tensor):
            return like
        return self.tensor()


def _params(fn):
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):
        return None
    return [p for p in sig.parameters.values() if p.name != "self"]


def make_call(values, call):
    """(self tensor, args, kwargs) for one random call."""
    rng = values.rng
    self_t = values.tensor() if rng.random() < 0.8 else values.ftensor(2, 3)
    params = _params(call.signature_of)
    like = self_t
    args, kwargs = [], {}
    n_odd = 0
    if params is None:  # a C method without a signature: 0-3 random arguments
        return self_t, [values.odd() for _ in range(rng.integers(0, 4))], {}
    for p in params:
        if p.kind is p.VAR_KEYWORD:
            continue
        if p.kind is p.VAR_POSITIONAL:
            for _ in range(rng.integers(0, 4)):
                args.append(values.plausible(p.name, like) if rng.random() < 0.6 else values.odd())
            continue
        required = p.default is p.empty
        if not required and rng.random() < 0.6:
            continue
        odd = rng.random() < 0.35
        n_odd += odd
        v = values.odd() if odd else values.plausible(p.name, like)
        if p.kind is p.KEYWORD_ONLY or (not required and rng.random() < 0.5 and p.kind is not p.POSITIONAL_ONLY):
            kwargs[p.name] = v
        else:
            if kwargs:  # a positional after keywords: pass it by keyword as well
                if p.kind is p.POSITIONAL_ONLY:
                    continue
                kwargs[p.name] = v
            else:
                args.append(v)
        if isinstance(v, mmu.Tensor) and v.dtype == mmu.float32 and p.name in ("input", "x", "a"):
            like = v
    if rng.random() < 0.05:
        args.append(values.odd())  # one argument too many
    return self_t, args, kwargs


def _short(v):
    if isinstance(v, mmu.Tensor):
        return f"Tensor{tuple(v.shape)}:{v.dtype}"
    if isinstance(v, np.ndarray):
        return f"ndarray{v.shape}:{v.dtype}"
    if isinstance(v, (list, tuple)):
        inner = ", ".join(_short(e) for e in v[:4])
        return f"[{inner}]" if isinstance(v, list) else f"({inner})"
    r = repr(v)
    return r if len(r) < 40 else r[:37] + "..."


def check_exception(exc, pattern, allowed=()):
    """None if exc is an allowed exception naming the op, else why not."""
    if isinstance(exc, _Broken):
        return str(exc)
    if not isinstance(exc, ALLOWED + tuple(allowed)):
        return f"{type(exc).__name__} is not one of {[e.__name__ for e in ALLOWED]}"
    msg = str(exc)
    if pattern in _ALIASES:
        pattern = _ALIASES[pattern]
    elif pattern.endswith("_") and not pattern.startswith("_"):  # add_: the op is add
        pattern = f"{pattern}|{pattern[:-1]}"
    if not re.search(f"({pattern})", msg, re.IGNORECASE):
        return f"the message does not name {pattern!r}"
    return None


def fuzz(seed=0, calls=2000, verbose=False, tgts=None):
    """Runs `calls` random calls (over targets(), or tgts); returns {(label, exception type, message
    shape): example} of failures."""
    rng = np.random.default_rng(seed)
    values = Values(rng)
    tgts = targets() if tgts is None else tgts
    failures = {}
    grad_mode = mmu.is_grad_enabled()
    threads = mmu.get_num_threads()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for i in range(calls):
            label, call, pattern = tgts[rng.integers(len(tgts))]
            invariant = None
            if getattr(call, "scenario", False):
                desc, thunk, invariant = call(values)
            else:
                self_t, args, kwargs = make_call(values, call)
                desc = f"{label}(" + ", ".join([_short(a) for a in args] +
                                               [f"{k}={_short(v)}" for k, v in kwargs.items()]) + ")"
                if getattr(call, "is_method", False):
                    desc = f"[self={_short(self_t)}] " + desc
                thunk = functools.partial(call, self_t, args, kwargs)
            if verbose:
                print(i, desc, flush=True)
            try:
                out = thunk()
                if isinstance(out, mmu.Tensor) and label.endswith(("backward",)) is False:
                    out.shape  # noqa: B018 (touch it)
            except Exception as e:  # noqa: BLE001 (judged below)
                why = check_exception(e, pattern, getattr(call, "allowed", ()))
                if why is None and invariant is not None:
                    changed = invariant()
                    if changed:
                        why, e = f"a failing call changed state: {changed}", _Broken(f"{type(e).__name__}: {e}")
                if why:
                    key = (label, type(e).__name__, re.sub(r"\d+", "N", str(e))[:80])
                    failures.setdefault(key, f"{desc} -> {type(e).__name__}: {e}  [{why}]")
            finally:
                if mmu.is_grad_enabled() != grad_mode:
                    mmu.set_grad_enabled(grad_mode)
                if mmu.get_num_threads() != threads:
                    mmu.set_num_threads(threads)
    return failures


# ------------------------------------------------------------------ scenarios (issue 12's API)
# The transformer parts, the KV cache, the text tokenizer, the captioned data, the model registry,
# the config codec and the checkpoint converters need a valid object (a model, a cache, a trained
# tokenizer, a state dict) before a wrong argument can reach their checks. A scenario builds one,
# breaks zero to two of the call's arguments with odd values, makes the call, and checks that a
# failing call changed nothing: the cache's length and buffers, the tokenizer's vocabulary, the
# registry. A scenario call(values) returns (description, thunk, invariant): invariant() (after a
# raising thunk) returns None or what changed.

class _Broken(AssertionError):
    """A failing call left its object changed (raised by a scenario's invariant)."""


def _maybe(values, v, p=0.25):
    """v, or (probability p) an odd value in its place."""
    return values.odd() if values.rng.random() < p else v


def _snapshot_cache(cache):
    return cache.length, [b.numpy().copy() for b in cache.keys + cache.values]


def _cache_changed(cache, snap):
    length, bufs = snap
    if cache.length != length:
        return f"the cache length moved from {length} to {cache.length}"
    for b, old in zip(cache.keys + cache.values, bufs):
        if not np.array_equal(b.numpy()[:, :, :length], old[:, :, :length], equal_nan=True):
            return "the cache's filled positions changed"
    return None


_TINY = {}


def _tiny_lm(pos, kv_heads, rot):
    key = ("lm", pos, kv_heads, rot)
    if key not in _TINY:
        _TINY[key] = mmu.nn.TransformerLM(11, 8, 2, 2, num_kv_heads=kv_heads, pos=pos, rotary_fraction=rot,
                                         max_seq_len=8, hidden_dim=12)
    return _TINY[key]


def _scenario_lm_forward(values):
    rng = values.rng
    pos = str(rng.choice(["rope", "learned"]))
    model = _tiny_lm(pos, int(rng.choice([1, 2])), float(rng.choice([0.5, 1.0])))
    b, l = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    cache = None
    if rng.random() < 0.7:
        cache = model.new_cache(b, int(rng.integers(2, 9)))
        cache.length = int(rng.integers(0, cache.max_len))
        for buf in cache.keys + cache.values:
            buf.numpy()[...] = rng.standard_normal(buf.shape)
    s_total = (cache.length if cache is not None else 0) + l
    kw = {"input_ids": mmu.tensor(rng.integers(0, 11, size=(b, l)))}
    if rng.random() < 0.1:
        kw["input_ids"] = mmu.tensor(rng.integers(-2, 14, size=(b, l)))  # ids out of range
    if rng.random() < 0.3:
        kw["attention_mask"] = mmu.tensor(rng.random((b, s_total)) > 0.3)
    if rng.random() < 0.2:
        kw["position_ids"] = mmu.tensor(rng.integers(0, 8, size=(b, l)))
    if rng.random() < 0.3:
        kw["logits_at"] = rng.choice(["all", "last", None, "first"]) if rng.random() < 0.6 else \
            mmu.tensor(rng.integers(-1, l + 1, size=(b, int(rng.integers(0, 3)))))
    if rng.random() < 0.2:
        kw["attn_mask"] = mmu.tensor(rng.random((1, 1, l, s_total)) > 0.2)
    if rng.random() < 0.1:
        del kw["input_ids"]
        kw["inputs_embeds"] = values.ftensor(b, l, 8)
    for name in list(kw) + ["attention_mask", "position_ids", "logits_at", "attn_mask"]:
        if rng.random() < 0.12:
            kw[name] = values.odd()
    if cache is not None and rng.random() < 0.1:
        cache = _maybe(values, model.new_cache(b + 1, 4), 0.5)
    snap = _snapshot_cache(cache) if isinstance(cache, mmu.nn.KVCache) else None
    params = {k: v.numpy().copy() for k, v in model.state_dict().items()} if rng.random() < 0.05 else None

    def run():
        with mmu.no_grad():
            return model(cache=cache, **kw)

    def invariant():
        if snap is not None:
            why = _cache_changed(cache, snap)
            if why:
                return why
        if params is not None:
            for k, v in model.state_dict().items():
                if not np.array_equal(v.numpy(), params[k]):
                    return f"parameter {k} changed"
        return None
    return f"TransformerLM(pos={pos}).forward(cache={cache!r}, " + \
        ", ".join(f"{k}={_short(v)}" for k, v in kw.items()) + ")", run, invariant


def _scenario_attention(values):
    rng = values.rng
    kv = int(rng.choice([1, 2]))
    rot = float(rng.choice([0.0, 0.5, 1.0]))
    qk = rng.choice([None, "layernorm", "rmsnorm"])
    args = dict(dim=8, num_heads=2, num_kv_heads=kv, rotary_fraction=rot, qk_norm=qk)
    for name in list(args):
        if rng.random() < 0.05:
            args[name] = values.odd()
    b, l = int(rng.integers(1, 3)), int(rng.integers(1, 4))
    cache = mmu.nn.KVCache(1, b, kv, int(rng.integers(2, 7)), 4) if rng.random() < 0.5 else None
    if cache is not None:
        cache.length = int(rng.integers(0, cache.max_len))
    s = (cache.length if cache is not None else 0) + l
    kw = {"x": values.ftensor(b, l, 8)}
    if rng.random() < 0.3:
        kw["attn_mask"] = mmu.tensor(rng.random((b, 1, l, s)) > 0.3)
    if rng.random() < 0.3:
        kw["is_causal"] = bool(rng.integers(0, 2))
    if rng.random() < 0.2 and rot:
        r = int(4 * rot)
        cos, sin = F.rotary_cos_sin(np.arange(l), r)
        kw["rope"] = (cos, sin) if rng.random() < 0.5 else (values.ftensor(b, 1, l, r), values.ftensor(b, 1, l, r))
    if rng.random() < 0.1:
        kw["layer_idx"] = values.odd()
    for name in list(kw):
        if rng.random() < 0.15:
            kw[name] = values.odd()
    snap = _snapshot_cache(cache) if cache is not None else None

    def run():
        layer = mmu.nn.Attention(**args)
        with mmu.no_grad():
            return layer(cache=cache, **kw)

    def invariant():
        return None if snap is None or cache.length == snap[0] else "the cache length moved"
    return f"Attention({args}).forward({', '.join(f'{k}={_short(v)}' for k, v in kw.items())})", run, invariant


def _scenario_parts(values):
    """MLP / TransformerLayer / ViTEncoder: construction and forward with wrong shapes and dtypes."""
    rng = values.rng
    which = int(rng.integers(0, 3))
    if which == 0:
        cls = mmu.nn.MLP
        args = dict(dim=8, hidden_dim=int(rng.integers(1, 12)),
                    activation=str(rng.choice(["gelu", "gelu_tanh", "swiglu", "relu", "silu"])))
        x = values.ftensor(2, 3, 8)
    elif which == 1:
        cls = mmu.nn.TransformerLayer
        args = dict(dim=8, num_heads=2, residual=str(rng.choice(["sequential", "parallel"])),
                    norm=str(rng.choice(["layernorm", "rmsnorm"])), rotary_fraction=float(rng.choice([0.0, 0.5])))
        x = values.ftensor(2, 3, 8)
    else:
        cls = mmu.nn.ViTEncoder
        args = dict(image_size=8, patch_size=4, in_channels=int(rng.integers(1, 4)), dim=8, depth=1, num_heads=2,
                    pos=str(rng.choice(["learned", "rope2d"])), num_extra_tokens=int(rng.integers(0, 3)))
        x = values.ftensor(int(rng.integers(1, 3)), args["in_channels"], 8, 8)
    for name in list(args):
        if rng.random() < 0.08:
            args[name] = values.odd()
    if rng.random() < 0.4:
        x = values.odd() if rng.random() < 0.5 else values.tensor()

    def run():
        return cls(**args)(x)
    return f"{cls.__name__}({args})({_short(x)})", run, lambda: None


def _scenario_kv_cache(values):
    rng = values.rng
    sizes = dict(num_layers=2, batch_size=int(rng.integers(1, 3)), num_kv_heads=int(rng.integers(1, 3)),
                 max_len=int(rng.integers(1, 6)), head_dim=2)
    if rng.random() < 0.1:
        name = str(rng.choice(list(sizes)))
        sizes[name] = values.odd()
        return f"KVCache({sizes})", lambda: mmu.nn.KVCache(**sizes), lambda: None
    cache = mmu.nn.KVCache(**sizes)
    cache.length = int(rng.integers(0, sizes["max_len"] + 1))
    for buf in cache.keys + cache.values:
        buf.numpy()[...] = rng.standard_normal(buf.shape)
    method = str(rng.choice(["update", "append", "advance", "crop", "expand", "copy", "reset"]))
    b, h = sizes["batch_size"], sizes["num_kv_heads"]
    if method in ("update", "append"):
        n = int(rng.integers(0, 3))
        args = [int(rng.integers(-1, 3)), values.ftensor(b, h, n, 2), values.ftensor(b, h, n, 2)]
    else:
        args = [int(rng.integers(-1, 4))] if method in ("advance", "crop", "expand") else []
    args = [_maybe(values, a, 0.2) for a in args]
    snap = _snapshot_cache(cache)

    def invariant():
        why = _cache_changed(cache, snap)
        if why is None:  # a failed update must not write into the free positions either
            for buf, old in zip(cache.keys + cache.values, snap[1]):
                if not np.array_equal(buf.numpy(), old, equal_nan=True):
                    return "the cache's buffers changed"
        return why
    return f"KVCache.{method}({', '.join(_short(a) for a in args)})", \
        lambda: getattr(cache, method)(*args), invariant


def _word_tokenizer():
    if "tok" not in _TINY:
        _TINY["tok"] = mmu.text.TextTokenizer.train_word_level(
            ["a small red circle", "the digit seven", "what digit is this?"], special_tokens=["<image>"])
    return _TINY["tok"]


def _scenario_text(values):
    rng = values.rng
    base = _word_tokenizer()
    tok = mmu.text.TextTokenizer(_copy_backend(base), **{f"{r}_token": t for r, t in base.special_tokens.items()})
    v = tok.vocab_size
    calls = {
        "encode": lambda: ["a red circle", bool(rng.integers(0, 2)), bool(rng.integers(0, 2))],
        "encode_batch": lambda: [["a circle", "the digit seven is red"], str(rng.choice(["longest", "max_length"])),
                                 int(rng.integers(1, 6)), bool(rng.integers(0, 2)), str(rng.choice(["left", "right"]))],
        "decode": lambda: [rng.integers(0, v, size=int(rng.integers(0, 5)))],
        "decode_batch": lambda: [rng.integers(0, v, size=(2, 3)), rng.random((2, 3)) > 0.5],
        "add_special_tokens": lambda: [[str(rng.choice(["<a>", "<b>", "<image>", "red", ""]))
                                        for _ in range(int(rng.integers(1, 3)))]],
        "token_to_id": lambda: [str(rng.choice(["red", "<pad>", "nope"]))],
        "id_to_token": lambda: [int(rng.integers(-1, v + 2))],
        "save": None,
    }
    method = str(rng.choice([m for m in calls if calls[m] is not None] + ["set_role"]))
    if method == "set_role":
        role, value = str(rng.choice(["pad", "bos", "eos", "unk"])), _maybe(values, "red", 0.5)
        args = [role, value]

        def run():
            setattr(tok, f"{role}_token", value)
    else:
        args = [_maybe(values, a, 0.25) for a in calls[method]()]

        def run():
            return getattr(tok, method)(*args)
    before = (tok.vocab_size, tok.get_vocab(), tok.special_tokens)

    def invariant():
        after = (tok.vocab_size, tok.get_vocab(), tok.special_tokens)
        return None if after == before else f"the tokenizer changed: {before[0]} -> {after[0]} ids, roles {after[2]}"
    return f"TextTokenizer.{method}({', '.join(_short(a) for a in args)})", run, invariant


def _copy_backend(tok):
    import tokenizers
    return tokenizers.Tokenizer.from_str(tok.backend.to_str())


def _scenario_data(values):
    rng = values.rng
    if rng.random() < 0.5:
        fn, name = mmu.data.captioned_digits, "captioned_digits"
        kw = dict(size=int(rng.choice([8, 16])), split=str(rng.choice(["train", "test", "all"])),
                  seed=int(rng.integers(0, 3)), test_fraction=0.2)
    else:
        fn, name = mmu.data.captioned_shapes, "captioned_shapes"
        kw = dict(n=int(rng.integers(1, 4)), size=16, split=str(rng.choice(["train", "test"])),
                  seed=int(rng.integers(0, 3)), pair_fraction=float(rng.choice([0.0, 0.5, 1.0])),
                  held_out=None if rng.random() < 0.7 else [("red", "circle")])
    name_odd = str(rng.choice(list(kw)))
    kw[name_odd] = values.odd()
    if name_odd == "n" and isinstance(kw["n"], int) and kw["n"] > 4:
        kw["n"] = 4  # a valid large n only costs time

    def run():
        try:
            return fn(**kw)
        except TypeError as e:  # captioned_shapes is lru_cached: an unhashable argument
            if "unhashable" in str(e):
                raise _Broken(f"{name}: an unhashable argument raised Python's own {e!r}") from None
            raise
    return f"{name}({', '.join(f'{k}={_short(v)}' for k, v in kw.items())})", run, lambda: None


class _Dummy(mmu.nn.Module):
    pass


def _scenario_registry(values):
    rng = values.rng
    import mmu.models as models
    before = dict(models._REGISTRY)
    if rng.random() < 0.5:
        name = _maybe(values, str(rng.choice(["phi", "llama", "vit", "vqvae", "nope", "Phi", "a-b"])), 0.4)
        return f"mmu.models.get({_short(name)})", lambda: models.get(name), lambda: None
    name = _maybe(values, str(rng.choice(["phi", "fuzz_model", "9x"])), 0.3)
    cls = _maybe(values, _Dummy, 0.3)
    overwrite = _maybe(values, False, 0.2)

    def run():
        try:
            return models.register(name, cls, overwrite=overwrite)
        finally:
            models._REGISTRY.clear()
            models._REGISTRY.update(before)
    return f"mmu.models.register({_short(name)}, {_short(cls)}, overwrite={_short(overwrite)})", run, lambda: None


def _mutate(values, obj, depth=0):
    """obj (a JSON-like dict/list) with one value, key or level replaced by an odd one."""
    rng = values.rng
    if isinstance(obj, dict) and obj and depth < 4 and rng.random() < 0.7:
        obj = dict(obj)
        k = list(obj)[int(rng.integers(len(obj)))]
        r = rng.random()
        if r < 0.15:
            del obj[k]
        elif r < 0.25:
            obj[[None, 3, (1, 2), "extra"][int(rng.integers(4))]] = values.odd()
        else:
            obj[k] = _mutate(values, obj[k], depth + 1)
        return obj
    if isinstance(obj, list) and obj and depth < 4 and rng.random() < 0.7:
        obj = list(obj)
        i = int(rng.integers(len(obj)))
        obj[i] = _mutate(values, obj[i], depth + 1)
        return obj
    pool = [None, -1, 0, 2 ** 70, 1.5, float("nan"), "", "abc", "mmu.nn.Linear", "os.system", [], {}, [1, 2],
            {"class": "mmu.nn.Linear"}, {"__config__": {}}, {"__module__": 3}, {"__import__": "os.system"}, True]
    return pool[int(rng.integers(len(pool)))]


def _config_examples():
    if "configs" not in _TINY:
        from mmu.tokenizers import VQVAEConfig
        _TINY["configs"] = [mmu.get_config(mmu.nn.Linear(3, 2)), mmu.get_config(mmu.nn.MLP(4, 6, "swiglu")),
                            mmu.get_config(mmu.nn.Sequential(mmu.nn.Linear(2, 2), mmu.nn.ReLU())),
                            mmu.get_config(VQVAEConfig())]
    return _TINY["configs"]


def _scenario_config(values):
    rng = values.rng
    if rng.random() < 0.15:
        obj = values.odd()
        return f"mmu.get_config({_short(obj)})", lambda: mmu.get_config(obj), lambda: None
    cfgs = _config_examples()
    cfg = _mutate(values, cfgs[int(rng.integers(len(cfgs)))])
    return f"mmu.from_config({_short(cfg)} {str(cfg)[:120]})", lambda: mmu.from_config(cfg), lambda: None


_CONVERTERS = {
    "phi": ("convert_phi_state_dict", dict(model_type="phi", vocab_size=5, hidden_size=4, intermediate_size=6,
                                           num_hidden_layers=1, num_attention_heads=2, partial_rotary_factor=0.5,
                                           qk_layernorm=True, max_position_embeddings=8)),
    "llama": ("convert_llama_state_dict", dict(model_type="llama", vocab_size=5, hidden_size=4, intermediate_size=6,
                                               num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=1,
                                               max_position_embeddings=8)),
    "vit": ("convert_vit_state_dict", dict(model_type="siglip_vision_model", hidden_size=4, intermediate_size=6,
                                           num_hidden_layers=1, num_attention_heads=2, image_size=4, patch_size=2,
                                           num_channels=1)),
}


def _published_keys(name):
    """{published key: shape} the converter wants for its tiny config, read from its own error
    message (missing keys, then the needed shapes of keys given the wrong one)."""
    if ("keys", name) in _TINY:
        return _TINY[("keys", name)]
    import importlib
    fn_name, config = _CONVERTERS[name]
    fn = getattr(importlib.import_module(f"mmu.models.{name}"), fn_name)
    try:
        fn({}, config)
    except ValueError as e:
        missing = eval(re.search(r"missing key\(s\): (\[.*?\])", str(e)).group(1))  # noqa: S307 (our own text)
    try:
        fn({k: np.zeros(1, np.float32) for k in missing}, config)
    except ValueError as e:
        shapes = {m.group(1): eval(m.group(2)) for m in  # noqa: S307
                  re.finditer(r"(\S+) has shape \(1,\), .*? needs (\([0-9, ]*\))", str(e))}
    assert set(shapes) == set(missing), (name, set(missing) - set(shapes))
    _TINY[("keys", name)] = shapes
    return shapes


def _scenario_converter(values):
    rng = values.rng
    import importlib
    name = str(rng.choice(sorted(_CONVERTERS)))
    fn_name, config = _CONVERTERS[name]
    fn = getattr(importlib.import_module(f"mmu.models.{name}"), fn_name)
    shapes = _published_keys(name)
    sd = {k: rng.standard_normal(s).astype(np.float32) for k, s in shapes.items()}
    config = dict(config)
    for _ in range(int(rng.integers(1, 3))):
        r = rng.random()
        k = list(sd)[int(rng.integers(len(sd)))]
        if r < 0.15:
            del sd[k]
        elif r < 0.3:
            a = sd[k]
            sd[k] = a.reshape(-1)[:-1] if isinstance(a, np.ndarray) and a.size > 1 else np.zeros((2, 2), np.float32)
        elif r < 0.45:
            a = np.asarray(sd[k], np.float32) if isinstance(sd[k], np.ndarray) else np.zeros(3, np.float32)
            bad = [a.astype(np.int64), a > 0, np.array(["x"] * a.size), None, "abc", mmu.tensor(a),
                   a.astype(np.float16), np.full(a.shape, np.nan)]
            sd[k] = bad[int(rng.integers(len(bad)))]
        elif r < 0.55:
            odd_keys = [None, 3, (1, 2), b"x", 1.5, "extra.weight", "model.layers.9.mlp.fc1.weight"]
            sd[odd_keys[int(rng.integers(len(odd_keys)))]] = np.zeros(2, np.float32)
        else:
            config = _mutate(values, config)
    args = [sd, config]
    if rng.random() < 0.1:
        args[int(rng.integers(0, 2))] = values.odd()
    kw = {"prefix": values.odd()} if rng.random() < 0.05 else {}
    return f"{fn_name}({len(sd) if isinstance(sd, dict) else ''} keys, {str(args[1])[:200]}, {kw})", \
        lambda: fn(*args, **kw), lambda: None


def _scenario_cached_ops(values):
    """F.scaled_dot_product_attention with query_offset / kv_len / masks together with is_causal,
    F.apply_rotary with partial and per-batch tables, topk/sort/argsort/cumsum on odd k and dims."""
    rng = values.rng
    which = int(rng.integers(0, 3))
    if which == 0:
        b, h, hk, l, sb, e = 1, 2, int(rng.choice([1, 2])), int(rng.integers(0, 4)), int(rng.integers(0, 5)), 4
        q, k, v = values.ftensor(b, h, l, e), values.ftensor(b, hk, sb, e), values.ftensor(b, hk, sb, e)
        kw = dict(is_causal=bool(rng.integers(0, 2)), enable_gqa=hk != h,
                  query_offset=int(rng.integers(0, 6)), kv_len=int(rng.integers(0, sb + 2)) if rng.random() < 0.7
                  else None)
        if rng.random() < 0.4:
            s = kw["kv_len"] if kw["kv_len"] is not None and rng.random() < 0.5 else sb
            kw["attn_mask"] = mmu.tensor(rng.random((1, 1, l, s)) > 0.4) if rng.random() < 0.5 else \
                values.ftensor(b, 1, 1, s)
        for name in ("query_offset", "kv_len", "attn_mask"):
            if rng.random() < 0.12:
                kw[name] = values.odd()
        args = [q, k, v]
        if rng.random() < 0.1:
            args[int(rng.integers(0, 3))] = values.odd()
        return f"F.scaled_dot_product_attention({', '.join(_short(a) for a in args)}, " + \
            ", ".join(f"{k2}={_short(v2)}" for k2, v2 in kw.items()) + ")", \
            lambda: F.scaled_dot_product_attention(*args, **kw), lambda: None
    if which == 1:
        bb, l, d = int(rng.integers(1, 3)), int(rng.integers(0, 4)), int(rng.choice([2, 4, 6]))
        r = int(rng.choice([x for x in (2, 4, 6) if x <= d]))
        x = values.ftensor(bb, 2, l, d)
        shape = [(l, r), (bb, 1, l, r), (1, 1, l, r), (bb, 2, l, r)][int(rng.integers(0, 4))]
        cos, sin = values.ftensor(*shape), values.ftensor(*shape)
        args = [_maybe(values, a, 0.15) for a in (x, cos, sin)]
        return f"F.apply_rotary({', '.join(_short(a) for a in args)})", lambda: F.apply_rotary(*args), lambda: None
    fn_name = str(rng.choice(["topk", "sort", "argsort", "cumsum"]))
    x = values.tensor()
    kw = {}
    if fn_name == "topk":
        args = [x, int(rng.integers(0, 4))]
        kw = dict(dim=int(rng.integers(-3, 3)), largest=bool(rng.integers(0, 2)), sorted=bool(rng.integers(0, 2)))
    elif fn_name in ("sort", "argsort"):
        args = [x]
        kw = dict(dim=int(rng.integers(-3, 3)), descending=bool(rng.integers(0, 2)), stable=bool(rng.integers(0, 2)))
    else:
        args = [x, int(rng.integers(-3, 3))]
    args = [_maybe(values, a, 0.2) for a in args]
    kw = {k2: _maybe(values, v2, 0.15) for k2, v2 in kw.items()}
    fn = getattr(mmu, fn_name)

    def run():
        out = fn(*args, **kw)
        if isinstance(x, mmu.Tensor) and x.requires_grad and args[0] is x:
            o = out[0] if isinstance(out, tuple) else out
            if o.dtype == mmu.float32 and o.numel():
                o.sum().backward()
        return out
    return f"mmu.{fn_name}({', '.join(_short(a) for a in args)}, " + \
        ", ".join(f"{k2}={_short(v2)}" for k2, v2 in kw.items()) + ")", run, lambda: None


def _scenario_trainer(values):
    """A Trainer whose model's training_step returns a bad value leaves the weights, the optimizer's
    state and the step count as they were."""
    rng = values.rng
    from mmu.train import Trainer, TrainConfig

    class Tiny(mmu.nn.Module):
        def __init__(self, bad):
            super().__init__()
            self.lin = mmu.nn.Linear(2, 1)
            self.bad = bad

        def training_step(self, batch, step):
            loss = self.lin(mmu.tensor(batch.astype(np.float32))).pow(2).mean()
            kind = self.bad
            if kind == "loss":
                return values.odd(), {}
            if kind == "logs":
                return loss, {"term": values.odd()}
            if kind == "shape":
                return loss.reshape(1, 1) * mmu.ones(1, 2), {}
            if kind == "tuple":
                return (loss,)
            if kind == "nan":
                return loss * float("nan"), {}
            if kind == "int":
                return mmu.tensor(3), {}
            return loss, {"term": 1.0}

    model = Tiny("ok")
    trainer = Trainer(model, rng.standard_normal((8, 2)), TrainConfig(steps=1, batch_size=2, lr=0.1, log_every=0))
    trainer.train_step()  # one good step first, so the optimizer has state
    weights = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    step = trainer.step
    opt = repr(trainer.optimizer.state_dict())
    model.bad = str(rng.choice(["loss", "logs", "shape", "tuple", "nan", "int", "ok"]))

    def invariant():
        if trainer.step != step:
            return "the step count moved"
        for k, v in model.state_dict().items():
            if not np.array_equal(v.numpy(), weights[k]):
                return f"the weight {k} changed"
        if repr(trainer.optimizer.state_dict()) != opt:
            return "the optimizer's state changed"
        return None
    return f"Trainer.train_step(training_step returns {model.bad})", trainer.train_step, invariant


def _scenario(fn, pattern, allowed=()):
    fn.scenario = True
    fn.allowed = allowed
    return (f"scenario.{fn.__name__[10:]}", fn, pattern)


def scenario_targets():
    """Issue 12's API through scenarios: (label, scenario, pattern the message must match)."""
    return [
        _scenario(_scenario_lm_forward, "TransformerLM"),
        _scenario(_scenario_attention, "Attention"),
        _scenario(_scenario_parts, "MLP|TransformerLayer|ViTEncoder"),
        _scenario(_scenario_kv_cache, "KVCache"),
        _scenario(_scenario_text, "TextTokenizer"),
        _scenario(_scenario_data, "captioned_digits|captioned_shapes|digits"),
        _scenario(_scenario_registry, "mmu.models", (KeyError,)),
        _scenario(_scenario_config, "get_config|from_config"),
        _scenario(_scenario_converter, "convert_phi_state_dict|convert_llama_state_dict|convert_vit_state_dict|"
                                       "phi_config_from_hf|llama_config_from_hf|vit_config_from_hf", (FileNotFoundError,)),
        _scenario(_scenario_cached_ops, "scaled_dot_product_attention|apply_rotary|topk|sort|argsort|cumsum"),
        _scenario(_scenario_trainer, "Trainer", (FloatingPointError,)),
    ]


def test_fuzz_findings_that_return_values():
    """Edge cases the fuzz found raising where torch returns: x[[]] of a tensor with a zero-size
    dim, logsumexp over an empty dim (-inf, torch's value), norm(p=None) (the 2-norm)."""
    empty = mmu.zeros(2, 0)
    assert empty[[]].shape == (0, 0)
    out = mmu.logsumexp(empty, -1)
    assert out.shape == (2,) and np.all(out.numpy() == -np.inf)
    assert mmu.norm(mmu.tensor([3.0, 4.0]), None).item() == 5.0


def test_generated_functions_and_methods_name_themselves():
    """Python's own argument-count errors name the function: the factories' closures said
    "_unary.<locals>.fn() takes 1 positional argument" before."""
    for fn, name in ((lambda: mmu.exp(mmu.ones(2), 1), "exp()"), (lambda: mmu.ones(2).float(1), "float()"),
                     (lambda: mmu.sum(mmu.ones(2), 0, False, 1), "sum()"),
                     (lambda: mmu.ones(2).add_(1, 2), "add_()")):
        try:
            fn()
        except TypeError as e:
            assert str(e).startswith(name), str(e)
        else:
            raise AssertionError(f"{name} did not raise")


def test_api_fuzz():
    """15,000 seeded calls (about 2 s); every exception allowed and naming its op."""
    failures = fuzz(seed=0, calls=10000)
    failures.update(fuzz(seed=1, calls=5000))
    assert not failures, f"{len(failures)} distinct failures:\n" + "\n".join(failures.values())


def test_scenario_fuzz():
    """1,500 seeded scenario calls of issue 12's API (transformer parts, KV cache, text tokenizer,
    captioned data, registry, config codec, converters, cached attention, RoPE, sort ops, Trainer);
    every exception allowed and naming what was called, and no failing call changes state."""
    failures = fuzz(seed=0, calls=1500, tgts=scenario_targets())
    assert not failures, f"{len(failures)} distinct failures:\n" + "\n".join(failures.values())


def test_losses_fuzz():
    """3,000 seeded calls of mmu.losses' functions; every exception allowed and naming its loss."""
    failures = fuzz(seed=0, calls=3000, tgts=loss_targets())
    assert not failures, f"{len(failures)} distinct failures:\n" + "\n".join(failures.values())


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--calls", type=int, default=20000)
    ap.add_argument("--verbose", action="store_true", help="print each call before making it")
    a = ap.parse_args(argv)
    failures = fuzz(a.seed, a.calls, a.verbose)
    # issue 12's scenarios (each builds a model, a cache or a tokenizer first): a tenth of the calls
    failures.update(fuzz(a.seed, max(a.calls // 10, 1), a.verbose, tgts=scenario_targets()))
    for v in failures.values():
        print(v)
    print(f"{a.calls} calls (+ {max(a.calls // 10, 1)} scenarios), seed {a.seed}: {len(failures)} distinct failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

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


def check_exception(exc, pattern):
    """None if exc is an allowed exception naming the op, else why not."""
    if not isinstance(exc, ALLOWED):
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
            self_t, args, kwargs = make_call(values, call)
            desc = f"{label}(" + ", ".join([_short(a) for a in args] +
                                           [f"{k}={_short(v)}" for k, v in kwargs.items()]) + ")"
            if getattr(call, "is_method", False):
                desc = f"[self={_short(self_t)}] " + desc
            if verbose:
                print(i, desc, flush=True)
            try:
                out = call(self_t, args, kwargs)
                if isinstance(out, mmu.Tensor) and label.endswith(("backward",)) is False:
                    out.shape  # noqa: B018 (touch it)
            except Exception as e:  # noqa: BLE001 (judged below)
                why = check_exception(e, pattern)
                if why:
                    key = (label, type(e).__name__, re.sub(r"\d+", "N", str(e))[:80])
                    failures.setdefault(key, f"{desc} -> {type(e).__name__}: {e}  [{why}]")
            finally:
                if mmu.is_grad_enabled() != grad_mode:
                    mmu.set_grad_enabled(grad_mode)
                if mmu.get_num_threads() != threads:
                    mmu.set_num_threads(threads)
    return failures


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
    for v in failures.values():
        print(v)
    print(f"{a.calls} calls, seed {a.seed}: {len(failures)} distinct failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

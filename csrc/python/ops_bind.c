/* Op entry points of mmu._C: parse arguments, convert tensor-likes, release
 * the GIL around the C op, wrap the result. Argument normalisation that is
 * easier in Python (dim=int or tuple, defaults, keyword names) happens in
 * mmu/tensor.py and mmu/functional.py; these take positional arguments. */
#include "binding.h"

#include "../ops/ops.h"



#define FINISH(st, out)         \
    if (st) {                   \
        mmu_raise(st);          \
        goto fail;              \
    }                           \
    result = mmu_wrap(out);

static int dtype_of(PyObject *o, int fallback) {
    return PyTensor_Check(o) ? (int)((PyTensor *)o)->t->dtype : fallback;
}

static const char *binary_names[MMU_BIN_COUNT] = {
    "add", "sub", "mul", "div", "maximum", "minimum", "lt", "le", "gt", "ge", "eq", "ne",
    "logical_and", "logical_or", "logical_xor",
};

/* binary(op, a, b): a or b may be a Python scalar, which takes the other's dtype */
static PyObject *py_binary(PyObject *m, PyObject *args) {
    int op;
    PyObject *ao, *bo, *result = NULL;
    mmu_tensor *a = NULL, *b = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "iOO", &op, &ao, &bo)) return NULL;
    if (op < 0 || op >= MMU_BIN_COUNT) return PyErr_Format(PyExc_ValueError, "binary: bad op %d", op);
    const char *name = binary_names[op];
    int like = dtype_of(ao, dtype_of(bo, MMU_FLOAT32));
    if (!(a = mmu_to_tensor(ao, like, name, "input"))) goto fail;
    if (!(b = mmu_to_tensor(bo, like, name, "other"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_binary(&out, (mmu_binary_op)op, a, b));
    FINISH(st, out);
fail:
    mmu_tensor_decref(a);
    mmu_tensor_decref(b);
    return result;
}

static PyObject *py_where(PyObject *m, PyObject *args) {
    PyObject *co, *ao, *bo, *result = NULL;
    mmu_tensor *c = NULL, *a = NULL, *b = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "OOO", &co, &ao, &bo)) return NULL;
    int like = dtype_of(ao, dtype_of(bo, MMU_FLOAT32));
    if (!(c = mmu_to_tensor(co, MMU_BOOL, "where", "condition"))) goto fail;
    if (!(a = mmu_to_tensor(ao, like, "where", "input"))) goto fail;
    if (!(b = mmu_to_tensor(bo, like, "where", "other"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_where(&out, c, a, b));
    FINISH(st, out);
fail:
    mmu_tensor_decref(c);
    mmu_tensor_decref(a);
    mmu_tensor_decref(b);
    return result;
}

static const char *unary_names[MMU_UN_COUNT] = {
    "neg", "exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu", "gelu", "gelu", "silu",
};

static PyObject *py_unary(PyObject *m, PyObject *args) {
    int op;
    PyObject *xo, *result = NULL;
    mmu_tensor *x = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "iO", &op, &xo)) return NULL;
    if (op < 0 || op >= MMU_UN_COUNT) return PyErr_Format(PyExc_ValueError, "unary: bad op %d", op);
    if (!(x = mmu_to_tensor(xo, MMU_FLOAT32, unary_names[op], "input"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_unary(&out, (mmu_unary_op)op, x));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    return result;
}

static PyObject *py_pow(PyObject *m, PyObject *args) {
    PyObject *xo, *result = NULL;
    double p;
    mmu_tensor *x = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "Od", &xo, &p)) return NULL;
    if (!(x = mmu_to_tensor(xo, MMU_FLOAT32, "pow", "input"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_pow_scalar(&out, x, p));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    return result;
}

static PyObject *py_clamp(PyObject *m, PyObject *args) {
    PyObject *xo, *lo, *hi, *result = NULL;
    mmu_tensor *x = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "OOO", &xo, &lo, &hi)) return NULL;
    double vlo = 0, vhi = 0;
    if (lo != Py_None && (vlo = PyFloat_AsDouble(lo)) == -1.0 && PyErr_Occurred()) return NULL;
    if (hi != Py_None && (vhi = PyFloat_AsDouble(hi)) == -1.0 && PyErr_Occurred()) return NULL;
    if (!(x = mmu_to_tensor(xo, MMU_FLOAT32, "clamp", "input"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_clamp(&out, x, lo != Py_None, vlo, hi != Py_None, vhi));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    return result;
}

static PyObject *py_logical_not(PyObject *m, PyObject *xo) {
    PyObject *result = NULL;
    mmu_tensor *x = NULL, *out = NULL;
    if (!(x = mmu_to_tensor(xo, MMU_BOOL, "logical_not", "input"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_logical_not(&out, x));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    return result;
}

static PyObject *py_cast(PyObject *m, PyObject *args) {
    PyObject *xo, *result = NULL;
    int dt;
    mmu_tensor *x = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "Oi", &xo, &dt)) return NULL;
    if (!(x = mmu_to_tensor(xo, -1, "to", "input"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_cast(&out, x, (mmu_dtype)dt));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    return result;
}

/* dims: None (all) or a tuple of ints -> bit mask over x's dims */
static int dims_to_mask(PyObject *dims, int ndim, unsigned *mask, const char *op) {
    *mask = 0;
    if (dims == Py_None) {
        *mask = ndim ? (1u << ndim) - 1 : 0;
        return 0;
    }
    int n;
    int64_t d[MMU_MAX_DIMS];
    if (mmu_parse_shape(dims, &n, d, op, "dim") < 0) return -1;
    for (int i = 0; i < n; i++) {
        int w;
        mmu_status st = mmu_wrap_dim(&w, d[i], ndim, op);
        if (st) {
            mmu_raise(st);
            return -1;
        }
        if (ndim == 0) continue;
        if (*mask & (1u << w)) {
            PyErr_Format(PyExc_ValueError, "%s: dim %d appears more than once in the list of dims", op, w);
            return -1;
        }
        *mask |= 1u << w;
    }
    if (n == 0) *mask = ndim ? (1u << ndim) - 1 : 0; /* torch: dim=() reduces everything */
    return 0;
}

static const char *reduce_names[] = {"sum", "mean", "amax", "amin"};

static PyObject *py_reduce(PyObject *m, PyObject *args) {
    int op, keepdim;
    PyObject *xo, *dims, *result = NULL;
    mmu_tensor *x = NULL, *out = NULL;
    unsigned mask;
    if (!PyArg_ParseTuple(args, "iOOp", &op, &xo, &dims, &keepdim)) return NULL;
    if (op < 0 || op > 3) return PyErr_Format(PyExc_ValueError, "reduce: bad op %d", op);
    if (!(x = mmu_to_tensor(xo, MMU_FLOAT32, reduce_names[op], "input"))) goto fail;
    if (dims_to_mask(dims, x->ndim, &mask, reduce_names[op]) < 0) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_reduce(&out, (mmu_reduce_op)op, x, mask, keepdim));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    return result;
}

static PyObject *py_argreduce(PyObject *m, PyObject *args) {
    int is_max, keepdim;
    PyObject *xo, *dim, *result = NULL;
    mmu_tensor *x = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "pOOp", &is_max, &xo, &dim, &keepdim)) return NULL;
    const char *name = is_max ? "argmax" : "argmin";
    long long d = 0;
    if (dim != Py_None && (d = PyLong_AsLongLong(dim)) == -1 && PyErr_Occurred()) return NULL;
    if (!(x = mmu_to_tensor(xo, MMU_FLOAT32, name, "input"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_argreduce(&out, is_max, x, dim != Py_None, d, keepdim));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    return result;
}

static PyObject *py_reshape(PyObject *m, PyObject *args) {
    PyObject *xo, *shape_obj, *result = NULL;
    mmu_tensor *x = NULL, *out = NULL;
    int ndim;
    int64_t shape[MMU_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "OO", &xo, &shape_obj)) return NULL;
    if (mmu_parse_shape(shape_obj, &ndim, shape, "reshape", "shape") < 0) return NULL;
    if (!(x = mmu_to_tensor(xo, -1, "reshape", "input"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_reshape(&out, x, ndim, shape));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    return result;
}

static PyObject *py_expand(PyObject *m, PyObject *args) {
    PyObject *xo, *shape_obj, *result = NULL;
    mmu_tensor *x = NULL, *out = NULL;
    int ndim;
    int64_t shape[MMU_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "OO", &xo, &shape_obj)) return NULL;
    if (mmu_parse_shape(shape_obj, &ndim, shape, "expand", "size") < 0) return NULL;
    if (!(x = mmu_to_tensor(xo, -1, "expand", "input"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_expand(&out, x, ndim, shape));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    return result;
}

static PyObject *py_permute(PyObject *m, PyObject *args) {
    PyObject *xo, *perm_obj, *result = NULL;
    mmu_tensor *x = NULL, *out = NULL;
    int n;
    int64_t perm[MMU_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "OO", &xo, &perm_obj)) return NULL;
    if (mmu_parse_shape(perm_obj, &n, perm, "permute", "dims") < 0) return NULL;
    if (!(x = mmu_to_tensor(xo, -1, "permute", "input"))) goto fail;
    if (n != x->ndim) {
        PyErr_Format(PyExc_ValueError, "permute: got %d dims for a tensor of shape %s", n, mmu_shape_str(x));
        goto fail;
    }
    mmu_status st;
    MMU_NOGIL(st, mmu_permute(&out, x, perm));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    return result;
}

static PyObject *py_slice(PyObject *m, PyObject *args) {
    PyObject *xo, *so, *to, *lo, *result = NULL;
    mmu_tensor *x = NULL, *out = NULL;
    int n1, n2, n3;
    int64_t start[MMU_MAX_DIMS], step[MMU_MAX_DIMS], len[MMU_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "OOOO", &xo, &so, &to, &lo)) return NULL;
    if (mmu_parse_shape(so, &n1, start, "slice", "start") < 0 || mmu_parse_shape(to, &n2, step, "slice", "step") < 0 ||
        mmu_parse_shape(lo, &n3, len, "slice", "length") < 0)
        return NULL;
    if (!(x = mmu_to_tensor(xo, -1, "slice", "input"))) goto fail;
    if (n1 != x->ndim || n2 != x->ndim || n3 != x->ndim) {
        PyErr_Format(PyExc_ValueError, "slice: need one (start, step, length) per dim of %s", mmu_shape_str(x));
        goto fail;
    }
    mmu_status st;
    MMU_NOGIL(st, mmu_slice(&out, x, start, step, len));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    return result;
}

static PyObject *py_cat(PyObject *m, PyObject *args) {
    PyObject *seq_obj, *seq = NULL, *result = NULL;
    long long dim;
    mmu_tensor **xs = NULL, *out = NULL;
    Py_ssize_t n = 0;
    if (!PyArg_ParseTuple(args, "OL", &seq_obj, &dim)) return NULL;
    if (!(seq = PySequence_Fast(seq_obj, "cat: tensors must be a sequence of tensors"))) return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "cat: expected a non-empty sequence of tensors");
        goto fail;
    }
    xs = calloc(n, sizeof *xs);
    if (!xs) { PyErr_NoMemory(); goto fail; }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        if (!(xs[i] = mmu_to_tensor(item, dtype_of(PySequence_Fast_GET_ITEM(seq, 0), MMU_FLOAT32), "cat", "tensors")))
            goto fail;
    }
    mmu_status st;
    MMU_NOGIL(st, mmu_cat(&out, (int)n, xs, dim));
    FINISH(st, out);
fail:
    if (xs)
        for (Py_ssize_t i = 0; i < n; i++) mmu_tensor_decref(xs[i]);
    free(xs);
    Py_XDECREF(seq);
    return result;
}

/* op(x, dim, index) for gather and index_select */
static PyObject *indexing(PyObject *args, int is_gather) {
    PyObject *xo, *io, *result = NULL;
    long long dim;
    mmu_tensor *x = NULL, *idx = NULL, *out = NULL;
    const char *name = is_gather ? "gather" : "index_select";
    if (!PyArg_ParseTuple(args, "OLO", &xo, &dim, &io)) return NULL;
    if (!(x = mmu_to_tensor(xo, -1, name, "input"))) goto fail;
    if (!(idx = mmu_to_tensor(io, MMU_INT64, name, "index"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, is_gather ? mmu_gather(&out, x, dim, idx) : mmu_index_select(&out, x, dim, idx));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    mmu_tensor_decref(idx);
    return result;
}

static PyObject *py_gather(PyObject *m, PyObject *args) { return indexing(args, 1); }
static PyObject *py_index_select(PyObject *m, PyObject *args) { return indexing(args, 0); }

static PyObject *py_masked_select(PyObject *m, PyObject *args) {
    PyObject *xo, *mo, *result = NULL;
    mmu_tensor *x = NULL, *mask = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "OO", &xo, &mo)) return NULL;
    if (!(x = mmu_to_tensor(xo, -1, "masked_select", "input"))) goto fail;
    if (!(mask = mmu_to_tensor(mo, MMU_BOOL, "masked_select", "mask"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_masked_select(&out, x, mask));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    mmu_tensor_decref(mask);
    return result;
}

static PyObject *py_masked_fill(PyObject *m, PyObject *args) {
    PyObject *xo, *mo, *result = NULL;
    double value;
    mmu_tensor *x = NULL, *mask = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "OOd", &xo, &mo, &value)) return NULL;
    if (!(x = mmu_to_tensor(xo, -1, "masked_fill", "input"))) goto fail;
    if (!(mask = mmu_to_tensor(mo, MMU_BOOL, "masked_fill", "mask"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_masked_fill(&out, x, mask, value));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    mmu_tensor_decref(mask);
    return result;
}

static PyObject *py_matmul(PyObject *m, PyObject *args) {
    PyObject *ao, *bo, *result = NULL;
    mmu_tensor *a = NULL, *b = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "OO", &ao, &bo)) return NULL;
    if (!(a = mmu_to_tensor(ao, -1, "matmul", "input"))) goto fail;
    if (!(b = mmu_to_tensor(bo, -1, "matmul", "other"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_matmul(&out, a, b));
    FINISH(st, out);
fail:
    mmu_tensor_decref(a);
    mmu_tensor_decref(b);
    return result;
}

static PyObject *py_linear(PyObject *m, PyObject *args) {
    PyObject *xo, *wo, *bo, *result = NULL;
    mmu_tensor *x = NULL, *w = NULL, *b = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "OOO", &xo, &wo, &bo)) return NULL;
    if (!(x = mmu_to_tensor(xo, -1, "linear", "input"))) goto fail;
    if (!(w = mmu_to_tensor(wo, -1, "linear", "weight"))) goto fail;
    if (bo != Py_None && !(b = mmu_to_tensor(bo, -1, "linear", "bias"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_linear(&out, x, w, b));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    mmu_tensor_decref(w);
    mmu_tensor_decref(b);
    return result;
}

static PyObject *py_softmax(PyObject *m, PyObject *args) {
    PyObject *xo, *result = NULL;
    long long dim;
    int log;
    mmu_tensor *x = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "OLp", &xo, &dim, &log)) return NULL;
    if (!(x = mmu_to_tensor(xo, -1, log ? "log_softmax" : "softmax", "input"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_softmax(&out, x, dim, log));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    return result;
}

static PyObject *py_layer_norm(PyObject *m, PyObject *args) {
    PyObject *xo, *so, *wo, *bo, *result = NULL;
    double eps;
    mmu_tensor *x = NULL, *w = NULL, *b = NULL, *out = NULL;
    int nd;
    int64_t shape[MMU_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "OOOOd", &xo, &so, &wo, &bo, &eps)) return NULL;
    if (mmu_parse_shape(so, &nd, shape, "layer_norm", "normalized_shape") < 0) return NULL;
    if (!(x = mmu_to_tensor(xo, -1, "layer_norm", "input"))) goto fail;
    if (wo != Py_None && !(w = mmu_to_tensor(wo, -1, "layer_norm", "weight"))) goto fail;
    if (bo != Py_None && !(b = mmu_to_tensor(bo, -1, "layer_norm", "bias"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_layer_norm(&out, x, nd, shape, w, b, eps));
    FINISH(st, out);
fail:
    mmu_tensor_decref(x);
    mmu_tensor_decref(w);
    mmu_tensor_decref(b);
    return result;
}

static PyObject *py_embedding(PyObject *m, PyObject *args) {
    PyObject *io, *wo, *result = NULL;
    mmu_tensor *idx = NULL, *w = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "OO", &io, &wo)) return NULL;
    if (!(idx = mmu_to_tensor(io, MMU_INT64, "embedding", "input"))) goto fail;
    if (!(w = mmu_to_tensor(wo, -1, "embedding", "weight"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_embedding(&out, idx, w));
    FINISH(st, out);
fail:
    mmu_tensor_decref(idx);
    mmu_tensor_decref(w);
    return result;
}

static PyObject *py_cross_entropy(PyObject *m, PyObject *args) {
    PyObject *lo, *to, *result = NULL;
    long long ignore;
    double smoothing;
    int red;
    mmu_tensor *logits = NULL, *target = NULL, *out = NULL;
    if (!PyArg_ParseTuple(args, "OOLdi", &lo, &to, &ignore, &smoothing, &red)) return NULL;
    if (!(logits = mmu_to_tensor(lo, -1, "cross_entropy", "input"))) goto fail;
    if (!(target = mmu_to_tensor(to, MMU_INT64, "cross_entropy", "target"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_cross_entropy(&out, logits, target, ignore, smoothing, (mmu_reduction)red));
    FINISH(st, out);
fail:
    mmu_tensor_decref(logits);
    mmu_tensor_decref(target);
    return result;
}

static PyObject *regression_loss(PyObject *args, int l1) {
    PyObject *io, *to, *result = NULL;
    int red;
    mmu_tensor *in = NULL, *target = NULL, *out = NULL;
    const char *name = l1 ? "l1_loss" : "mse_loss";
    if (!PyArg_ParseTuple(args, "OOi", &io, &to, &red)) return NULL;
    if (!(in = mmu_to_tensor(io, MMU_FLOAT32, name, "input"))) goto fail;
    if (!(target = mmu_to_tensor(to, MMU_FLOAT32, name, "target"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, l1 ? mmu_l1_loss(&out, in, target, (mmu_reduction)red)
                     : mmu_mse_loss(&out, in, target, (mmu_reduction)red));
    FINISH(st, out);
fail:
    mmu_tensor_decref(in);
    mmu_tensor_decref(target);
    return result;
}

static PyObject *py_mse_loss(PyObject *m, PyObject *args) { return regression_loss(args, 0); }
static PyObject *py_l1_loss(PyObject *m, PyObject *args) { return regression_loss(args, 1); }

PyMethodDef mmu_op_methods[] = {
    {"binary", py_binary, METH_VARARGS, "binary(op, a, b) with NumPy broadcasting"},
    {"where", py_where, METH_VARARGS, NULL},
    {"unary", py_unary, METH_VARARGS, NULL},
    {"pow", py_pow, METH_VARARGS, NULL},
    {"clamp", py_clamp, METH_VARARGS, NULL},
    {"logical_not", py_logical_not, METH_O, NULL},
    {"cast", py_cast, METH_VARARGS, NULL},
    {"reduce", py_reduce, METH_VARARGS, NULL},
    {"argreduce", py_argreduce, METH_VARARGS, NULL},
    {"reshape", py_reshape, METH_VARARGS, NULL},
    {"expand", py_expand, METH_VARARGS, NULL},
    {"permute", py_permute, METH_VARARGS, NULL},
    {"slice", py_slice, METH_VARARGS, NULL},
    {"cat", py_cat, METH_VARARGS, NULL},
    {"gather", py_gather, METH_VARARGS, NULL},
    {"index_select", py_index_select, METH_VARARGS, NULL},
    {"masked_select", py_masked_select, METH_VARARGS, NULL},
    {"masked_fill", py_masked_fill, METH_VARARGS, NULL},
    {"matmul", py_matmul, METH_VARARGS, NULL},
    {"linear", py_linear, METH_VARARGS, NULL},
    {"softmax", py_softmax, METH_VARARGS, NULL},
    {"layer_norm", py_layer_norm, METH_VARARGS, NULL},
    {"embedding", py_embedding, METH_VARARGS, NULL},
    {"cross_entropy", py_cross_entropy, METH_VARARGS, NULL},
    {"mse_loss", py_mse_loss, METH_VARARGS, NULL},
    {"l1_loss", py_l1_loss, METH_VARARGS, NULL},
    {NULL},
};

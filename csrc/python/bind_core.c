/* Entry points of mmu._C for the core op families (binary, unary, reduce,
 * shape, index, matmul, softmax, embedding, cross_entropy): parse arguments, convert tensor-likes, release
 * the GIL around the C op, wrap the result. Argument normalisation that is
 * easier in Python (dim=int or tuple, defaults, keyword names) happens in
 * mmu/tensor.py and mmu/functional.py; these take positional arguments.
 *
 * Each entry point converts its tensor arguments into a tensor_args (so one
 * call releases them all), runs the op with the GIL released, and returns
 * through finish(), which wraps the output or raises the op's error. */
#include "binding.h"

#include "../ops/ops.h"

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
    PyObject *ao, *bo;
    tensor_args ta = {0};
    mmu_tensor *a, *b, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "iOO", &op, &ao, &bo)) return NULL;
    if (op < 0 || op >= MMU_BIN_COUNT) return PyErr_Format(PyExc_ValueError, "binary: bad op %d", op);
    int like = dtype_of(ao, dtype_of(bo, MMU_FLOAT32));
    if (!(a = arg(&ta, ao, like, binary_names[op], "input")) || !(b = arg(&ta, bo, like, binary_names[op], "other")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_binary(&out, (mmu_binary_op)op, a, b));
    return finish(&ta, st, out);
}

static PyObject *py_where(PyObject *m, PyObject *args) {
    PyObject *co, *ao, *bo;
    tensor_args ta = {0};
    mmu_tensor *c, *a, *b, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOO", &co, &ao, &bo)) return NULL;
    int like = dtype_of(ao, dtype_of(bo, MMU_FLOAT32));
    if (!(c = arg(&ta, co, MMU_BOOL, "where", "condition")) || !(a = arg(&ta, ao, like, "where", "input")) ||
        !(b = arg(&ta, bo, like, "where", "other")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_where(&out, c, a, b));
    return finish(&ta, st, out);
}

static const char *unary_names[MMU_UN_COUNT] = {
    "neg", "exp", "log", "sqrt", "abs", "tanh", "sigmoid", "relu", "gelu", "gelu", "silu",
};

static PyObject *py_unary(PyObject *m, PyObject *args) {
    int op;
    PyObject *xo;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "iO", &op, &xo)) return NULL;
    if (op < 0 || op >= MMU_UN_COUNT) return PyErr_Format(PyExc_ValueError, "unary: bad op %d", op);
    if (!(x = arg(&ta, xo, MMU_FLOAT32, unary_names[op], "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_unary(&out, (mmu_unary_op)op, x));
    return finish(&ta, st, out);
}

static PyObject *py_pow(PyObject *m, PyObject *args) {
    return mmu_call_x_double(args, "pow", MMU_FLOAT32, mmu_pow_scalar);
}

static PyObject *py_clamp(PyObject *m, PyObject *args) {
    PyObject *xo, *lo, *hi;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOO", &xo, &lo, &hi)) return NULL;
    double vlo = 0, vhi = 0;
    if (lo != Py_None && (vlo = PyFloat_AsDouble(lo)) == -1.0 && PyErr_Occurred()) return NULL;
    if (hi != Py_None && (vhi = PyFloat_AsDouble(hi)) == -1.0 && PyErr_Occurred()) return NULL;
    if (!(x = arg(&ta, xo, MMU_FLOAT32, "clamp", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_clamp(&out, x, lo != Py_None, vlo, hi != Py_None, vhi));
    return finish(&ta, st, out);
}

static PyObject *py_softplus(PyObject *m, PyObject *args) {
    PyObject *xo;
    double beta, threshold;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "Odd", &xo, &beta, &threshold)) return NULL;
    if (!(x = arg(&ta, xo, MMU_FLOAT32, "softplus", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_softplus(&out, x, beta, threshold));
    return finish(&ta, st, out);
}

static PyObject *py_swiglu(PyObject *m, PyObject *args) {
    PyObject *ao, *bo;
    tensor_args ta = {0};
    mmu_tensor *a, *b, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OO", &ao, &bo)) return NULL;
    if (!(a = arg(&ta, ao, MMU_FLOAT32, "swiglu", "gate")) || !(b = arg(&ta, bo, MMU_FLOAT32, "swiglu", "up")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_swiglu(&out, a, b));
    return finish(&ta, st, out);
}

static PyObject *py_leaky_relu(PyObject *m, PyObject *args) {
    return mmu_call_x_double(args, "leaky_relu", -1, mmu_leaky_relu);
}

static PyObject *py_logical_not(PyObject *m, PyObject *xo) {
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    if (!(x = arg(&ta, xo, MMU_BOOL, "logical_not", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_logical_not(&out, x));
    return finish(&ta, st, out);
}

static PyObject *py_cast(PyObject *m, PyObject *args) {
    PyObject *xo;
    int dt;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "Oi", &xo, &dt)) return NULL;
    if (!(x = arg(&ta, xo, -1, "to", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_cast(&out, x, (mmu_dtype)dt));
    return finish(&ta, st, out);
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
    PyObject *xo, *dims;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    unsigned mask;
    if (!PyArg_ParseTuple(args, "iOOp", &op, &xo, &dims, &keepdim)) return NULL;
    if (op < 0 || op >= (int)(sizeof reduce_names / sizeof *reduce_names))
        return PyErr_Format(PyExc_ValueError, "reduce: bad op %d", op);
    if (!(x = arg(&ta, xo, MMU_FLOAT32, reduce_names[op], "input")) ||
        dims_to_mask(dims, x->ndim, &mask, reduce_names[op]) < 0)
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_reduce(&out, (mmu_reduce_op)op, x, mask, keepdim));
    return finish(&ta, st, out);
}

static PyObject *py_argreduce(PyObject *m, PyObject *args) {
    int is_max, keepdim;
    PyObject *xo, *dim;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "pOOp", &is_max, &xo, &dim, &keepdim)) return NULL;
    int64_t d = 0;
    if (dim != Py_None && mmu_parse_int64(dim, &d, is_max ? "argmax" : "argmin", "dim", 1) < 0) return NULL;
    if (!(x = arg(&ta, xo, MMU_FLOAT32, is_max ? "argmax" : "argmin", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_argreduce(&out, is_max, x, dim != Py_None, d, keepdim));
    return finish(&ta, st, out);
}

/* cumsum(x, dim, reverse) */
static PyObject *py_cumsum(PyObject *m, PyObject *args) {
    PyObject *xo, *dimo;
    int reverse;
    int64_t dim;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOp", &xo, &dimo, &reverse)) return NULL;
    if (mmu_parse_int64(dimo, &dim, "cumsum", "dim", 1) < 0) return NULL;
    if (!(x = arg(&ta, xo, MMU_FLOAT32, "cumsum", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_cumsum(&out, x, dim, reverse));
    return finish(&ta, st, out);
}

/* reshape / expand / permute: (x, tuple of ints) */
static PyObject *shape_op(PyObject *args, const char *name) {
    PyObject *xo, *shape_obj;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    int ndim;
    int64_t shape[MMU_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "OO", &xo, &shape_obj)) return NULL;
    if (mmu_parse_shape(shape_obj, &ndim, shape, name, name[0] == 'p' ? "dims" : "shape") < 0) return NULL;
    if (!(x = arg(&ta, xo, -1, name, "input"))) return finish(&ta, MMU_OK, NULL);
    switch (name[0]) {
    case 'r': MMU_NOGIL(st, mmu_reshape(&out, x, ndim, shape)); break;
    case 'e': MMU_NOGIL(st, mmu_expand(&out, x, ndim, shape)); break;
    default:
        if (ndim != x->ndim)
            st = mmu_fail(MMU_EVALUE, "permute: got %d dims for a tensor of shape %s", ndim, mmu_shape_str(x));
        else
            MMU_NOGIL(st, mmu_permute(&out, x, shape));
    }
    return finish(&ta, st, out);
}

static PyObject *py_reshape(PyObject *m, PyObject *args) { return shape_op(args, "reshape"); }
static PyObject *py_expand(PyObject *m, PyObject *args) { return shape_op(args, "expand"); }
static PyObject *py_permute(PyObject *m, PyObject *args) { return shape_op(args, "permute"); }

static PyObject *py_slice(PyObject *m, PyObject *args) {
    PyObject *xo, *so, *to, *lo;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    int n1, n2, n3;
    int64_t start[MMU_MAX_DIMS], step[MMU_MAX_DIMS], len[MMU_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "OOOO", &xo, &so, &to, &lo)) return NULL;
    if (mmu_parse_shape(so, &n1, start, "slice", "start") < 0 || mmu_parse_shape(to, &n2, step, "slice", "step") < 0 ||
        mmu_parse_shape(lo, &n3, len, "slice", "length") < 0)
        return NULL;
    if (!(x = arg(&ta, xo, -1, "slice", "input"))) return finish(&ta, MMU_OK, NULL);
    if (n1 != x->ndim || n2 != x->ndim || n3 != x->ndim)
        st = mmu_fail(MMU_EVALUE, "slice: need one (start, step, length) per dim of %s", mmu_shape_str(x));
    else
        MMU_NOGIL(st, mmu_slice(&out, x, start, step, len));
    return finish(&ta, st, out);
}

static PyObject *py_cat(PyObject *m, PyObject *args) {
    PyObject *seq_obj, *seq, *result = NULL;
    PyObject *dim_obj;
    int64_t dim;
    mmu_tensor **xs = NULL, *out = NULL;
    Py_ssize_t n = 0;
    if (!PyArg_ParseTuple(args, "OO", &seq_obj, &dim_obj)) return NULL;
    if (mmu_parse_int64(dim_obj, &dim, "cat", "dim", 1) < 0) return NULL;
    if (!(seq = PySequence_Fast(seq_obj, "cat: tensors must be a sequence of tensors"))) return NULL;
    n = PySequence_Fast_GET_SIZE(seq);
    if (n == 0) {
        PyErr_SetString(PyExc_ValueError, "cat: expected a non-empty sequence of tensors");
        goto fail;
    }
    if (!(xs = calloc(n, sizeof *xs))) {
        PyErr_NoMemory();
        goto fail;
    }
    int like = dtype_of(PySequence_Fast_GET_ITEM(seq, 0), MMU_FLOAT32);
    for (Py_ssize_t i = 0; i < n; i++)
        if (!(xs[i] = mmu_to_tensor(PySequence_Fast_GET_ITEM(seq, i), like, "cat", "tensors"))) goto fail;
    mmu_status st;
    MMU_NOGIL(st, mmu_cat(&out, (int)n, xs, dim));
    result = st ? mmu_raise(st) : mmu_wrap(out);
fail:
    for (Py_ssize_t i = 0; xs && i < n; i++) mmu_tensor_decref(xs[i]);
    free(xs);
    Py_DECREF(seq);
    return result;
}

/* gather(x, dim, index) and index_select(x, dim, index) */
static PyObject *indexing(PyObject *args, int is_gather) {
    PyObject *xo, *io, *dim_obj;
    int64_t dim;
    tensor_args ta = {0};
    mmu_tensor *x, *idx, *out = NULL;
    mmu_status st;
    const char *name = is_gather ? "gather" : "index_select";
    if (!PyArg_ParseTuple(args, "OOO", &xo, &dim_obj, &io)) return NULL;
    if (mmu_parse_int64(dim_obj, &dim, name, "dim", 1) < 0) return NULL;
    if (!(x = arg(&ta, xo, -1, name, "input")) || !(idx = arg(&ta, io, MMU_INT64, name, "index")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, is_gather ? mmu_gather(&out, x, dim, idx) : mmu_index_select(&out, x, dim, idx));
    return finish(&ta, st, out);
}

static PyObject *py_gather(PyObject *m, PyObject *args) { return indexing(args, 1); }
static PyObject *py_index_select(PyObject *m, PyObject *args) { return indexing(args, 0); }

static PyObject *py_masked_select(PyObject *m, PyObject *args) {
    PyObject *xo, *mo;
    tensor_args ta = {0};
    mmu_tensor *x, *mask, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OO", &xo, &mo)) return NULL;
    if (!(x = arg(&ta, xo, -1, "masked_select", "input")) || !(mask = arg(&ta, mo, MMU_BOOL, "masked_select", "mask")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_masked_select(&out, x, mask));
    return finish(&ta, st, out);
}

static PyObject *py_masked_fill(PyObject *m, PyObject *args) {
    PyObject *xo, *mo;
    double value;
    tensor_args ta = {0};
    mmu_tensor *x, *mask, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOd", &xo, &mo, &value)) return NULL;
    if (!(x = arg(&ta, xo, -1, "masked_fill", "input")) || !(mask = arg(&ta, mo, MMU_BOOL, "masked_fill", "mask")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_masked_fill(&out, x, mask, value));
    return finish(&ta, st, out);
}

static PyObject *py_matmul(PyObject *m, PyObject *args) {
    PyObject *ao, *bo;
    tensor_args ta = {0};
    mmu_tensor *a, *b, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OO", &ao, &bo)) return NULL;
    if (!(a = arg(&ta, ao, -1, "matmul", "input")) || !(b = arg(&ta, bo, -1, "matmul", "other")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_matmul(&out, a, b));
    return finish(&ta, st, out);
}

static PyObject *py_linear(PyObject *m, PyObject *args) {
    PyObject *xo, *wo, *bo;
    tensor_args ta = {0};
    mmu_tensor *x, *w, *b = NULL, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOO", &xo, &wo, &bo)) return NULL;
    if (!(x = arg(&ta, xo, -1, "linear", "input")) || !(w = arg(&ta, wo, -1, "linear", "weight")) ||
        (bo != Py_None && !(b = arg(&ta, bo, -1, "linear", "bias"))))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_linear(&out, x, w, b));
    return finish(&ta, st, out);
}

static PyObject *py_softmax(PyObject *m, PyObject *args) {
    PyObject *xo, *dim_obj;
    int64_t dim;
    int log;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOp", &xo, &dim_obj, &log)) return NULL;
    if (mmu_parse_int64(dim_obj, &dim, log ? "log_softmax" : "softmax", "dim", 1) < 0) return NULL;
    if (!(x = arg(&ta, xo, -1, log ? "log_softmax" : "softmax", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_softmax(&out, x, dim, log));
    return finish(&ta, st, out);
}

static PyObject *py_embedding(PyObject *m, PyObject *args) {
    PyObject *io, *wo;
    tensor_args ta = {0};
    mmu_tensor *idx, *w, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OO", &io, &wo)) return NULL;
    if (!(idx = arg(&ta, io, MMU_INT64, "embedding", "input")) || !(w = arg(&ta, wo, -1, "embedding", "weight")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_embedding(&out, idx, w));
    return finish(&ta, st, out);
}

static PyObject *py_cross_entropy(PyObject *m, PyObject *args) {
    PyObject *lo, *to, *ignore_obj;
    int64_t ignore;
    double smoothing;
    int red;
    tensor_args ta = {0};
    mmu_tensor *logits, *target, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOOdi", &lo, &to, &ignore_obj, &smoothing, &red)) return NULL;
    if (mmu_parse_int64(ignore_obj, &ignore, "cross_entropy", "ignore_index", 0) < 0) return NULL;
    if (!(logits = arg(&ta, lo, -1, "cross_entropy", "input")) ||
        !(target = arg(&ta, to, MMU_INT64, "cross_entropy", "target")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_cross_entropy(&out, logits, target, ignore, smoothing, (mmu_reduction)red));
    return finish(&ta, st, out);
}

#define CODE(name, code) {name, code}
#define N_CODES(t) (int)(sizeof t / sizeof *t)

int mmu_core_add_constants(PyObject *m) {
    static const mmu_code dtypes[] = {CODE("float32", MMU_FLOAT32), CODE("int64", MMU_INT64), CODE("bool", MMU_BOOL)};
    static const mmu_code binary[] = {
        CODE("add", MMU_BIN_ADD), CODE("sub", MMU_BIN_SUB), CODE("mul", MMU_BIN_MUL), CODE("div", MMU_BIN_DIV),
        CODE("maximum", MMU_BIN_MAXIMUM), CODE("minimum", MMU_BIN_MINIMUM), CODE("lt", MMU_BIN_LT),
        CODE("le", MMU_BIN_LE), CODE("gt", MMU_BIN_GT), CODE("ge", MMU_BIN_GE), CODE("eq", MMU_BIN_EQ),
        CODE("ne", MMU_BIN_NE), CODE("logical_and", MMU_BIN_AND), CODE("logical_or", MMU_BIN_OR),
        CODE("logical_xor", MMU_BIN_XOR),
    };
    static const mmu_code unary[] = {
        CODE("neg", MMU_UN_NEG), CODE("exp", MMU_UN_EXP), CODE("log", MMU_UN_LOG), CODE("sqrt", MMU_UN_SQRT),
        CODE("abs", MMU_UN_ABS), CODE("tanh", MMU_UN_TANH), CODE("sigmoid", MMU_UN_SIGMOID),
        CODE("relu", MMU_UN_RELU), CODE("gelu", MMU_UN_GELU), CODE("gelu_tanh", MMU_UN_GELU_TANH),
        CODE("silu", MMU_UN_SILU),
    };
    static const mmu_code reduce[] = {CODE("sum", MMU_RED_SUM), CODE("mean", MMU_RED_MEAN), CODE("amax", MMU_RED_AMAX),
                                      CODE("amin", MMU_RED_AMIN)};
    static const mmu_code loss_reductions[] = {CODE("none", MMU_REDUCTION_NONE), CODE("mean", MMU_REDUCTION_MEAN),
                                               CODE("sum", MMU_REDUCTION_SUM)};
    _Static_assert(N_CODES(binary) == MMU_BIN_COUNT && N_CODES(unary) == MMU_UN_COUNT, "a code is not exported");
    PyObject *ops = PyTuple_New(MMU_OP_COUNT); /* the op table's names, in its order (OPS) */
    if (!ops) return -1;
    for (int i = 0; i < MMU_OP_COUNT; i++) {
        PyObject *name = PyUnicode_FromString(mmu_op_table[i].name);
        if (!name) {
            Py_DECREF(ops);
            return -1;
        }
        PyTuple_SET_ITEM(ops, i, name);
    }
    int rc = PyModule_AddObjectRef(m, "OPS", ops);
    Py_DECREF(ops);
    if (rc < 0) return -1;
    if (PyModule_AddIntConstant(m, "MAX_DIMS", MMU_MAX_DIMS) < 0 ||
        PyModule_AddIntConstant(m, "MAX_THREADS", MMU_MAX_THREADS) < 0 ||
        mmu_add_codes(m, "DTYPES", dtypes, N_CODES(dtypes)) < 0 ||
        mmu_add_codes(m, "BINARY_OPS", binary, N_CODES(binary)) < 0 ||
        mmu_add_codes(m, "UNARY_OPS", unary, N_CODES(unary)) < 0 ||
        mmu_add_codes(m, "REDUCE_OPS", reduce, N_CODES(reduce)) < 0 ||
        mmu_add_codes(m, "LOSS_REDUCTIONS", loss_reductions, N_CODES(loss_reductions)) < 0)
        return -1;
    return 0;
}

PyMethodDef mmu_core_methods[] = {
    {"binary", py_binary, METH_VARARGS, "binary(op, a, b) with NumPy broadcasting"},
    {"where", py_where, METH_VARARGS, "where(cond, a, b)"},
    {"unary", py_unary, METH_VARARGS, "unary(op, x)"},
    {"pow", py_pow, METH_VARARGS, "pow(x, exponent)"},
    {"softplus", py_softplus, METH_VARARGS, "softplus(x, beta, threshold)"},
    {"swiglu", py_swiglu, METH_VARARGS, "swiglu(gate, up)"},
    {"clamp", py_clamp, METH_VARARGS, "clamp(x, min or None, max or None)"},
    {"leaky_relu", py_leaky_relu, METH_VARARGS, "leaky_relu(x, negative_slope)"},
    {"logical_not", py_logical_not, METH_O, "logical_not(x)"},
    {"cast", py_cast, METH_VARARGS, "cast(x, dtype_code)"},
    {"reduce", py_reduce, METH_VARARGS, "reduce(op, x, dims or None, keepdim)"},
    {"argreduce", py_argreduce, METH_VARARGS, "argreduce(is_max, x, dim or None, keepdim)"},
    {"cumsum", py_cumsum, METH_VARARGS, "cumsum(x, dim, reverse)"},
    {"reshape", py_reshape, METH_VARARGS, "reshape(x, shape)"},
    {"expand", py_expand, METH_VARARGS, "expand(x, shape)"},
    {"permute", py_permute, METH_VARARGS, "permute(x, dims)"},
    {"slice", py_slice, METH_VARARGS, "slice(x, starts, steps, lengths)"},
    {"cat", py_cat, METH_VARARGS, "cat(tensors, dim)"},
    {"gather", py_gather, METH_VARARGS, "gather(x, dim, index)"},
    {"index_select", py_index_select, METH_VARARGS, "index_select(x, dim, index)"},
    {"masked_select", py_masked_select, METH_VARARGS, "masked_select(x, mask)"},
    {"masked_fill", py_masked_fill, METH_VARARGS, "masked_fill(x, mask, value)"},
    {"matmul", py_matmul, METH_VARARGS, "matmul(a, b)"},
    {"linear", py_linear, METH_VARARGS, "linear(x, weight, bias or None)"},
    {"softmax", py_softmax, METH_VARARGS, "softmax(x, dim, log)"},
    {"embedding", py_embedding, METH_VARARGS, "embedding(indices, weight)"},
    {"cross_entropy", py_cross_entropy, METH_VARARGS, "cross_entropy(logits, target, ignore_index, smoothing, red)"},
    {NULL},
};

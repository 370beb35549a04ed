/* mmu._C entry points of the inference kernels: attention of a block against a cached prefix
 * (csrc/ops/attention_cache.c), linear layers with a fused epilogue (csrc/ops/linear_post.c). */
#include <math.h>

#include "binding.h"

#include "../ops/ops.h"

/* attention_cached(heads, num_heads, num_kv_heads, k_cache, v_cache, prefix_start, prefix_len, query_rows or None,
 *                  scale or None) */
static PyObject *py_attention_cached(PyObject *m, PyObject *args) {
    const char *op = "attention_cached";
    PyObject *zo, *ko, *vo, *po, *ro, *so;
    long long hq, hkv, plen;
    tensor_args ta = {0};
    mmu_tensor *z, *k, *v, *start, *rows = NULL, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OLLOOOLOO", &zo, &hq, &hkv, &ko, &vo, &po, &plen, &ro, &so)) return NULL;
    if (!(z = arg(&ta, zo, MMU_FLOAT32, op, "heads")) || !(k = arg(&ta, ko, MMU_FLOAT32, op, "k_cache")) ||
        !(v = arg(&ta, vo, MMU_FLOAT32, op, "v_cache")) || !(start = arg(&ta, po, MMU_INT64, op, "prefix_start")) ||
        (ro != Py_None && !(rows = arg(&ta, ro, MMU_INT64, op, "query_rows"))))
        return finish(&ta, MMU_OK, NULL);
    double scale = 0.0;
    if (so != Py_None && (scale = PyFloat_AsDouble(so)) == -1.0 && PyErr_Occurred()) return finish(&ta, MMU_OK, NULL);
    if (so == Py_None) scale = z->ndim == 4 && z->shape[3] > 0 ? 1.0 / sqrt((double)z->shape[3]) : 1.0;
    MMU_NOGIL(st, mmu_attention_cached(&out, z, hq, hkv, k, v, start, plen, rows, scale));
    return finish(&ta, st, out);
}

/* linear_gelu_tanh(x, weight, bias or None) */
static PyObject *py_linear_gelu_tanh(PyObject *m, PyObject *args) {
    const char *op = "linear_gelu_tanh";
    PyObject *xo, *wo, *bo;
    tensor_args ta = {0};
    mmu_tensor *x, *w, *b = NULL, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOO", &xo, &wo, &bo)) return NULL;
    if (!(x = arg(&ta, xo, MMU_FLOAT32, op, "x")) || !(w = arg(&ta, wo, MMU_FLOAT32, op, "weight")) ||
        (bo != Py_None && !(b = arg(&ta, bo, MMU_FLOAT32, op, "bias"))))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_linear_gelu_tanh(&out, x, w, b));
    return finish(&ta, st, out);
}

/* linear_add_(acc, x, weight, bias or None): acc must be a Tensor (written in place); returns None */
static PyObject *py_linear_add_(PyObject *m, PyObject *args) {
    const char *op = "linear_add_";
    PyObject *ao, *xo, *wo, *bo;
    tensor_args ta = {0};
    mmu_tensor *x, *w, *b = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOOO", &ao, &xo, &wo, &bo)) return NULL;
    if (!PyTensor_Check(ao)) {
        PyErr_Format(PyExc_TypeError, "%s: acc must be an mmu Tensor (it is written in place), got %s", op,
                     Py_TYPE(ao)->tp_name);
        return NULL;
    }
    if (!(x = arg(&ta, xo, MMU_FLOAT32, op, "x")) || !(w = arg(&ta, wo, MMU_FLOAT32, op, "weight")) ||
        (bo != Py_None && !(b = arg(&ta, bo, MMU_FLOAT32, op, "bias"))))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_linear_add_(((PyTensor *)ao)->t, x, w, b));
    for (int i = 0; i < ta.n; i++) mmu_tensor_decref(ta.t[i]);
    if (st) return mmu_raise(st);
    Py_RETURN_NONE;
}

PyMethodDef mmu_inference_methods[] = {
    {"linear_gelu_tanh", py_linear_gelu_tanh, METH_VARARGS, "linear_gelu_tanh(x, weight, bias) -> gelu_tanh(x wT + b)"},
    {"linear_add_", py_linear_add_, METH_VARARGS, "linear_add_(acc, x, weight, bias): acc += x wT + b in place"},
    {"attention_cached", py_attention_cached, METH_VARARGS,
     "attention_cached(heads, num_heads, num_kv_heads, k_cache, v_cache, prefix_start, prefix_len, query_rows, scale)"},
    {NULL},
};

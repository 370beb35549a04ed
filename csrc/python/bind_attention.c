/* mmu._C entry points: scaled dot-product attention and rotary embeddings. */
#include "binding.h"

#include "../ops/ops.h"

/* sdpa(q, k, v, mask or None, dropout_p, is_causal, scale or None, enable_gqa, query_offset, kv_len (-1: all)) */
static PyObject *py_sdpa(PyObject *m, PyObject *args) {
    const char *op = "scaled_dot_product_attention";
    PyObject *qo, *ko, *vo, *mo, *so;
    double p;
    int causal, gqa;
    long long qoff, kv_len;
    tensor_args ta = {0};
    mmu_tensor *q, *k, *v, *mask = NULL, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOOOdpOpLL", &qo, &ko, &vo, &mo, &p, &causal, &so, &gqa, &qoff, &kv_len)) return NULL;
    double scale = 0.0;
    if (so != Py_None && (scale = PyFloat_AsDouble(so)) == -1.0 && PyErr_Occurred()) return NULL;
    if (!(q = arg(&ta, qo, MMU_FLOAT32, op, "query")) || !(k = arg(&ta, ko, MMU_FLOAT32, op, "key")) ||
        !(v = arg(&ta, vo, MMU_FLOAT32, op, "value")) ||
        (mo != Py_None && !(mask = arg(&ta, mo, -1, op, "attn_mask"))))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_sdpa(&out, q, k, v, mask, p, causal, so != Py_None, scale, gqa, qoff, kv_len));
    return finish(&ta, st, out);
}

/* apply_rotary(x, cos, sin) */
static PyObject *py_apply_rotary(PyObject *m, PyObject *args) {
    PyObject *xo, *co, *so;
    tensor_args ta = {0};
    mmu_tensor *x, *c, *s, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOO", &xo, &co, &so)) return NULL;
    if (!(x = arg(&ta, xo, MMU_FLOAT32, "apply_rotary", "x")) || !(c = arg(&ta, co, MMU_FLOAT32, "apply_rotary", "cos")) ||
        !(s = arg(&ta, so, MMU_FLOAT32, "apply_rotary", "sin")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_apply_rotary(&out, x, c, s));
    return finish(&ta, st, out);
}

/* qkv_heads(y, num_heads, num_kv_heads, norm (0/1/2), q_weight, q_bias, k_weight, k_bias (or None), eps, cos, sin) */
static PyObject *py_qkv_heads(PyObject *m, PyObject *args) {
    const char *op = "qkv_heads";
    PyObject *yo, *qwo, *qbo, *kwo, *kbo, *co, *so;
    long long hq, hkv;
    int norm;
    double eps;
    tensor_args ta = {0};
    mmu_tensor *y, *qw = NULL, *qb = NULL, *kw = NULL, *kb = NULL, *c = NULL, *s = NULL, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OLLiOOOOdOO", &yo, &hq, &hkv, &norm, &qwo, &qbo, &kwo, &kbo, &eps, &co, &so))
        return NULL;
    if (!(y = arg(&ta, yo, MMU_FLOAT32, op, "qkv")) || (qwo != Py_None && !(qw = arg(&ta, qwo, MMU_FLOAT32, op, "q_weight"))) ||
        (qbo != Py_None && !(qb = arg(&ta, qbo, MMU_FLOAT32, op, "q_bias"))) ||
        (kwo != Py_None && !(kw = arg(&ta, kwo, MMU_FLOAT32, op, "k_weight"))) ||
        (kbo != Py_None && !(kb = arg(&ta, kbo, MMU_FLOAT32, op, "k_bias"))) ||
        (co != Py_None && !(c = arg(&ta, co, MMU_FLOAT32, op, "cos"))) ||
        (so != Py_None && !(s = arg(&ta, so, MMU_FLOAT32, op, "sin"))))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_qkv_heads(&out, y, hq, hkv, norm, qw, qb, kw, kb, eps, c, s));
    return finish(&ta, st, out);
}

/* sdpa_packed(z, num_heads, num_kv_heads, mask or None, is_causal, scale or None, row_start, row_stop) */
static PyObject *py_sdpa_packed(PyObject *m, PyObject *args) {
    const char *op = "attention_of_heads";
    PyObject *zo, *mo, *so;
    long long hq, hkv, r0 = 0, r1 = -1;
    int causal;
    tensor_args ta = {0};
    mmu_tensor *z, *mask = NULL, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OLLOpO|LL", &zo, &hq, &hkv, &mo, &causal, &so, &r0, &r1)) return NULL;
    double scale = 0.0;
    if (so != Py_None && (scale = PyFloat_AsDouble(so)) == -1.0 && PyErr_Occurred()) return NULL;
    if (!(z = arg(&ta, zo, MMU_FLOAT32, op, "heads")) || (mo != Py_None && !(mask = arg(&ta, mo, -1, op, "attn_mask"))))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_sdpa_packed(&out, z, hq, hkv, mask, causal, so != Py_None, scale, r0, r1));
    return finish(&ta, st, out);
}

/* window_attention(q, k, v, bias or None, gh, gw, wh, ww, scale or None) */
static PyObject *py_window_attention(PyObject *m, PyObject *args) {
    const char *op = "window_attention";
    PyObject *qo, *ko, *vo, *bo, *so;
    long long gh, gw, wh, ww;
    tensor_args ta = {0};
    mmu_tensor *q, *k, *v, *bias = NULL, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOOOLLLLO", &qo, &ko, &vo, &bo, &gh, &gw, &wh, &ww, &so)) return NULL;
    double scale = 0.0;
    if (so != Py_None && (scale = PyFloat_AsDouble(so)) == -1.0 && PyErr_Occurred()) return NULL;
    if (!(q = arg(&ta, qo, MMU_FLOAT32, op, "query")) || !(k = arg(&ta, ko, MMU_FLOAT32, op, "key")) ||
        !(v = arg(&ta, vo, MMU_FLOAT32, op, "value")) || (bo != Py_None && !(bias = arg(&ta, bo, MMU_FLOAT32, op, "bias"))))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_window_attention(&out, q, k, v, bias, gh, gw, wh, ww, so != Py_None, scale));
    return finish(&ta, st, out);
}

/* temporal_attention(q, k, v, frames, causal, scale or None) */
static PyObject *py_temporal_attention(PyObject *m, PyObject *args) {
    const char *op = "temporal_attention";
    PyObject *qo, *ko, *vo, *so;
    long long frames;
    int causal;
    tensor_args ta = {0};
    mmu_tensor *q, *k, *v, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOOLpO", &qo, &ko, &vo, &frames, &causal, &so)) return NULL;
    double scale = 0.0;
    if (so != Py_None && (scale = PyFloat_AsDouble(so)) == -1.0 && PyErr_Occurred()) return NULL;
    if (!(q = arg(&ta, qo, MMU_FLOAT32, op, "query")) || !(k = arg(&ta, ko, MMU_FLOAT32, op, "key")) ||
        !(v = arg(&ta, vo, MMU_FLOAT32, op, "value")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_temporal_attention(&out, q, k, v, frames, causal, so != Py_None, scale));
    return finish(&ta, st, out);
}

PyMethodDef mmu_attention_methods[] = {
    {"window_attention", py_window_attention, METH_VARARGS, "window_attention(q, k, v, bias, gh, gw, wh, ww, scale)"},
    {"temporal_attention", py_temporal_attention, METH_VARARGS, "temporal_attention(q, k, v, frames, causal, scale)"},
    {"qkv_heads", py_qkv_heads, METH_VARARGS,
     "qkv_heads(qkv, num_heads, num_kv_heads, norm, q_weight, q_bias, k_weight, k_bias, eps, cos, sin)"},
    {"sdpa_packed", py_sdpa_packed, METH_VARARGS, "sdpa_packed(heads, num_heads, num_kv_heads, mask, is_causal, scale, row_start=0, row_stop=-1)"},
    {"sdpa", py_sdpa, METH_VARARGS, "sdpa(q, k, v, mask, dropout_p, is_causal, scale, enable_gqa, query_offset, kv_len)"},
    {"apply_rotary", py_apply_rotary, METH_VARARGS, "apply_rotary(x, cos, sin)"},
    {NULL, NULL, 0, NULL},
};

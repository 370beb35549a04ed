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

PyMethodDef mmu_attention_methods[] = {
    {"sdpa", py_sdpa, METH_VARARGS, "sdpa(q, k, v, mask, dropout_p, is_causal, scale, enable_gqa, query_offset, kv_len)"},
    {"apply_rotary", py_apply_rotary, METH_VARARGS, "apply_rotary(x, cos, sin)"},
    {NULL, NULL, 0, NULL},
};

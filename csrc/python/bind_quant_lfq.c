/* mmu._C entry points: LFQ entropy, FSQ and Gumbel kernels (csrc/quant/lfq.c, ...). */
#include "binding.h"

#include "../ops/ops.h"

/* fsq(z, levels tuple, with_indices) -> (zhat, indices or None) */
static PyObject *py_fsq(PyObject *m, PyObject *args) {
    const char *op = "fsq";
    PyObject *zo, *lo;
    int with_idx;
    int nlev;
    int64_t levels[MMU_MAX_DIMS > 64 ? MMU_MAX_DIMS : 64];
    tensor_args ta = {0};
    mmu_tensor *z, *out = NULL, *idx = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOp", &zo, &lo, &with_idx)) return NULL;
    PyObject *seq = PySequence_Fast(lo, "fsq: levels must be a sequence of ints");
    if (!seq) return NULL;
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n < 1 || n > 64) {
        Py_DECREF(seq);
        return PyErr_Format(PyExc_ValueError, "fsq: need 1..64 levels, got %zd", n);
    }
    nlev = (int)n;
    for (int i = 0; i < nlev; i++) {
        long long v = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(seq, i));
        if (v == -1 && PyErr_Occurred()) { Py_DECREF(seq); return NULL; }
        levels[i] = v;
    }
    Py_DECREF(seq);
    if (!(z = arg(&ta, zo, MMU_FLOAT32, op, "z"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_fsq(&out, with_idx ? &idx : NULL, z, nlev, levels));
    PyObject *o = finish(&ta, st, out);
    if (!o) return NULL;
    PyObject *i = idx ? mmu_wrap(idx) : (Py_INCREF(Py_None), Py_None);
    if (!i) { Py_DECREF(o); return NULL; }
    return Py_BuildValue("(NN)", o, i);
}

/* lfq_entropy(x (N, K, d), inv_temperature, codebook_scale, chunk=0) -> (2,) */
static PyObject *py_lfq_entropy(PyObject *m, PyObject *args) {
    PyObject *xo;
    double t, s;
    long long chunk = 0;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "Odd|L", &xo, &t, &s, &chunk)) return NULL;
    if (!(x = arg(&ta, xo, MMU_FLOAT32, "lfq_entropy", "x"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_lfq_entropy(&out, x, t, s, (int64_t)chunk));
    return finish(&ta, st, out);
}

PyMethodDef mmu_quant_lfq_methods[] = {
    {"fsq", py_fsq, METH_VARARGS, "fsq(z, levels, with_indices) -> (zhat, indices or None)"},
    {"lfq_entropy", py_lfq_entropy, METH_VARARGS, "lfq_entropy(x, inv_temperature, codebook_scale, chunk=0) -> (2,)"},
    {NULL, NULL, 0, NULL},
};

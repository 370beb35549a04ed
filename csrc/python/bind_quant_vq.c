/* mmu._C entry points: nearest-code search and EMA codebook statistics (csrc/quant/vq.c). */
#include "binding.h"

#include "../ops/ops.h"

/* _nearest_code(x, codebook, cosine) */
static PyObject *py_nearest_code(PyObject *m, PyObject *args) {
    PyObject *xo, *eo;
    int cosine;
    tensor_args ta = {0};
    mmu_tensor *x, *e, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOp", &xo, &eo, &cosine)) return NULL;
    if (!(x = arg(&ta, xo, MMU_FLOAT32, "nearest_code", "x"))) return finish(&ta, MMU_OK, NULL);
    if (!(e = arg(&ta, eo, MMU_FLOAT32, "nearest_code", "codebook"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_nearest_code(&out, x, e, cosine));
    return finish(&ta, st, out);
}

/* _vq_ema_update(x, indices, cluster_size, embed_avg, embed, c, decay, eps): in place on the last three */
static PyObject *py_vq_ema_update(PyObject *m, PyObject *args) {
    PyObject *o[5];
    double decay, eps;
    long long c;
    mmu_tensor *t[5] = {0};
    static const char *names[5] = {"x", "indices", "cluster_size", "embed_avg", "embed"};
    mmu_status st = MMU_OK;
    if (!PyArg_ParseTuple(args, "OOOOOLdd", &o[0], &o[1], &o[2], &o[3], &o[4], &c, &decay, &eps)) return NULL;
    for (int i = 0; i < 5; i++) {
        if (i >= 2 && !PyTensor_Check(o[i])) {
            PyErr_Format(PyExc_TypeError, "vq_ema_update: %s must be a Tensor (updated in place)", names[i]);
            goto fail;
        }
        if (!(t[i] = mmu_to_tensor(o[i], -1, "vq_ema_update", names[i]))) goto fail;
    }
    MMU_NOGIL(st, mmu_vq_ema_update(t[0], t[1], t[2], t[3], t[4], (int64_t)c, decay, eps));
    for (int i = 0; i < 5; i++) mmu_tensor_decref(t[i]);
    if (st) return mmu_raise(st);
    Py_RETURN_NONE;
fail:
    for (int i = 0; i < 5; i++)
        if (t[i]) mmu_tensor_decref(t[i]);
    return NULL;
}

PyMethodDef mmu_quant_vq_methods[] = {
    {"_nearest_code", py_nearest_code, METH_VARARGS, "nearest_code(x, codebook, cosine) -> int64 (N,)"},
    {"_vq_ema_update", py_vq_ema_update, METH_VARARGS,
     "vq_ema_update(x, indices, cluster_size, embed_avg, embed, c, decay, eps): EMA codebook update in place"},
    {NULL, NULL, 0, NULL},
};

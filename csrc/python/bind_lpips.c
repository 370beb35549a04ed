/* mmu._C entry points: max pooling and the fused LPIPS distance (csrc/ops/pool.c, csrc/loss/lpips.c). */
#include "binding.h"

#include "../ops/ops.h"

/* max_pool2d(x, kernel (2), stride (2), padding (2), dilation (2), ceil_mode, return_indices)
 * -> out, or (out, indices) */
static PyObject *py_max_pool2d(PyObject *m, PyObject *args) {
    const char *op = "max_pool2d";
    PyObject *xo, *ko, *so, *po, *dio;
    int ceil_mode, with_idx;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL, *idx = NULL;
    mmu_status st;
    int64_t k[2], s[2], p[2], d[2];
    if (!PyArg_ParseTuple(args, "OOOOOpp", &xo, &ko, &so, &po, &dio, &ceil_mode, &with_idx)) return NULL;
    if (mmu_parse_ints(ko, 2, k, op, "kernel_size") < 0 || mmu_parse_ints(so, 2, s, op, "stride") < 0 ||
        mmu_parse_ints(po, 2, p, op, "padding") < 0 || mmu_parse_ints(dio, 2, d, op, "dilation") < 0)
        return NULL;
    if (!(x = arg(&ta, xo, -1, op, "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_max_pool2d(&out, with_idx ? &idx : NULL, x, k, s, p, d, ceil_mode));
    PyObject *o = finish(&ta, st, out);
    if (!o || !with_idx) return o;
    PyObject *i = mmu_wrap(idx);
    if (!i) {
        Py_DECREF(o);
        return NULL;
    }
    return Py_BuildValue("(NN)", o, i);
}

/* lpips_distance(f0, f1, weight or None, eps) -> (B, 1, 1, 1) */
static PyObject *py_lpips_distance(PyObject *m, PyObject *args) {
    const char *op = "lpips_distance";
    PyObject *ao, *bo, *wo;
    double eps;
    tensor_args ta = {0};
    mmu_tensor *a, *b, *w = NULL, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOOd", &ao, &bo, &wo, &eps)) return NULL;
    if (!(a = arg(&ta, ao, MMU_FLOAT32, op, "f0")) || !(b = arg(&ta, bo, MMU_FLOAT32, op, "f1")) ||
        (wo != Py_None && !(w = arg(&ta, wo, MMU_FLOAT32, op, "weight"))))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_lpips_distance(&out, a, b, w, eps));
    return finish(&ta, st, out);
}

PyMethodDef mmu_lpips_methods[] = {
    {"max_pool2d", py_max_pool2d, METH_VARARGS,
     "max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices)"},
    {"lpips_distance", py_lpips_distance, METH_VARARGS, "lpips_distance(f0, f1, weight_or_None, eps) -> (B, 1, 1, 1)"},
    {NULL, NULL, 0, NULL},
};

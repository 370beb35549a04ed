/* mmu._C entry points: max and average 2-D pooling (csrc/ops/pool.c). */
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

static PyObject *py_avg_pool2d(PyObject *m, PyObject *args) {
    PyObject *xo, *ko, *so, *po, *dvo;
    int ceil_mode, include_pad;
    int64_t divisor;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    int64_t k[2], s[2], p[2];
    if (!PyArg_ParseTuple(args, "OOOOppO", &xo, &ko, &so, &po, &ceil_mode, &include_pad, &dvo)) return NULL;
    if (mmu_parse_int64(dvo, &divisor, "avg_pool2d", "divisor_override", 0) < 0) return NULL;
    if (mmu_parse_ints(ko, 2, k, "avg_pool2d", "kernel_size") < 0 ||
        mmu_parse_ints(so, 2, s, "avg_pool2d", "stride") < 0 || mmu_parse_ints(po, 2, p, "avg_pool2d", "padding") < 0)
        return NULL;
    if (!(x = arg(&ta, xo, -1, "avg_pool2d", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_avg_pool2d(&out, x, k, s, p, ceil_mode, include_pad, divisor));
    return finish(&ta, st, out);
}

PyMethodDef mmu_pool_methods[] = {
    {"max_pool2d", py_max_pool2d, METH_VARARGS,
     "max_pool2d(x, kernel, stride, padding, dilation, ceil_mode, return_indices)"},
    {"avg_pool2d", py_avg_pool2d, METH_VARARGS,
     "avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_or_0)"},
    {NULL, NULL, 0, NULL},
};

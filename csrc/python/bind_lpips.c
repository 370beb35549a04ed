/* mmu._C entry points: the fused LPIPS distance (csrc/loss/lpips.c). */
#include "binding.h"

#include "../ops/ops.h"

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
    {"lpips_distance", py_lpips_distance, METH_VARARGS, "lpips_distance(f0, f1, weight_or_None, eps) -> (B, 1, 1, 1)"},
    {NULL, NULL, 0, NULL},
};

/* mmu._C entry points: inference linear layers with a fused epilogue (csrc/ops/linear_post.c). */
#include "binding.h"

#include "../ops/ops.h"

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

PyMethodDef mmu_linear_post_methods[] = {
    {"linear_gelu_tanh", py_linear_gelu_tanh, METH_VARARGS, "linear_gelu_tanh(x, weight, bias) -> gelu_tanh(x wT + b)"},
    {"linear_add_", py_linear_add_, METH_VARARGS, "linear_add_(acc, x, weight, bias): acc += x wT + b in place"},
    {NULL},
};

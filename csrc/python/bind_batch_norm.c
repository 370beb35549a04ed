/* mmu._C entry points: batch norm (csrc/ops/batch_norm.c). */
#include "binding.h"

#include "../ops/ops.h"

// batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps): None for an absent tensor.
// The running statistics are written in place: they must be mmu Tensors (a NumPy array would be copied).
static PyObject *py_batch_norm(PyObject *m, PyObject *args) {
    PyObject *xo, *rmo, *rvo, *wo, *bo;
    int training;
    double momentum, eps;
    tensor_args ta = {0}, tr = {0}; /* five tensors: the running stats in their own set */
    mmu_tensor *x, *rm = NULL, *rv = NULL, *w = NULL, *b = NULL, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOOOOpdd", &xo, &rmo, &rvo, &wo, &bo, &training, &momentum, &eps)) return NULL;
    if ((rmo != Py_None && !PyTensor_Check(rmo)) || (rvo != Py_None && !PyTensor_Check(rvo))) {
        PyErr_SetString(PyExc_TypeError, "batch_norm: running_mean and running_var must be mmu Tensors or None "
                                         "(they are updated in place)");
        return NULL;
    }
    if (!(x = arg(&ta, xo, -1, "batch_norm", "input")) ||
        (wo != Py_None && !(w = arg(&ta, wo, -1, "batch_norm", "weight"))) ||
        (bo != Py_None && !(b = arg(&ta, bo, -1, "batch_norm", "bias"))) ||
        (rmo != Py_None && !(rm = arg(&tr, rmo, -1, "batch_norm", "running_mean"))) ||
        (rvo != Py_None && !(rv = arg(&tr, rvo, -1, "batch_norm", "running_var")))) {
        finish(&tr, MMU_OK, NULL);
        return finish(&ta, MMU_OK, NULL);
    }
    MMU_NOGIL(st, mmu_batch_norm(&out, x, rm, rv, w, b, training, momentum, eps));
    finish(&tr, MMU_OK, NULL);
    return finish(&ta, st, out);
}

PyMethodDef mmu_batch_norm_methods[] = {
    {"batch_norm", py_batch_norm, METH_VARARGS,
     "batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)"},
    {NULL, NULL, 0, NULL},
};

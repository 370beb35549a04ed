/* mmu._C entry points: dropout (csrc/ops/dropout.c). */
#include "binding.h"

#include "../ops/ops.h"

static PyObject *py_dropout(PyObject *m, PyObject *args) {
    return mmu_call_x_double(args, "dropout", -1, mmu_dropout);
}

PyMethodDef mmu_dropout_methods[] = {
    {"dropout", py_dropout, METH_VARARGS, "dropout(x, p): always drops (the caller handles eval / p == 0)"},
    {NULL, NULL, 0, NULL},
};

/* mmu._C entry points: sort and topk (csrc/ops/sort.c). */
#include "binding.h"

#include "../ops/ops.h"

/* (values, indices) from the two outputs of an op, or NULL with the error raised */
static PyObject *values_indices(tensor_args *ta, mmu_status st, mmu_tensor *values, mmu_tensor *indices) {
    PyObject *v = finish(ta, st, values);
    if (!v) {
        mmu_tensor_decref(indices);
        return NULL;
    }
    PyObject *i = mmu_wrap(indices);
    if (!i) {
        Py_DECREF(v);
        return NULL;
    }
    return Py_BuildValue("(NN)", v, i);
}

/* sort(x, dim, descending) -> (values, indices) */
static PyObject *py_sort(PyObject *m, PyObject *args) {
    PyObject *xo, *dimo;
    int descending;
    int64_t dim;
    tensor_args ta = {0};
    mmu_tensor *x, *values = NULL, *indices = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOp", &xo, &dimo, &descending)) return NULL;
    if (mmu_parse_int64(dimo, &dim, "sort", "dim", 1) < 0) return NULL;
    if (!(x = arg(&ta, xo, MMU_FLOAT32, "sort", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_sort(&values, &indices, x, dim, descending));
    return values_indices(&ta, st, values, indices);
}

/* topk(x, k, dim, largest) -> (values, indices) */
static PyObject *py_topk(PyObject *m, PyObject *args) {
    PyObject *xo, *ko, *dimo;
    int largest;
    int64_t k, dim;
    tensor_args ta = {0};
    mmu_tensor *x, *values = NULL, *indices = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOOp", &xo, &ko, &dimo, &largest)) return NULL;
    if (mmu_parse_int64(ko, &k, "topk", "k", 0) < 0 || mmu_parse_int64(dimo, &dim, "topk", "dim", 1) < 0)
        return NULL;
    if (!(x = arg(&ta, xo, MMU_FLOAT32, "topk", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_topk(&values, &indices, x, k, dim, largest));
    return values_indices(&ta, st, values, indices);
}

PyMethodDef mmu_sort_methods[] = {
    {"sort", py_sort, METH_VARARGS, "sort(x, dim, descending) -> (values, indices); stable"},
    {"topk", py_topk, METH_VARARGS, "topk(x, k, dim, largest) -> (values, indices), best first"},
    {NULL, NULL, 0, NULL},
};

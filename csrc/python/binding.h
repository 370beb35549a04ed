/* Shared pieces of the CPython binding: the Tensor object, conversions
 * between Python objects and mmu tensors, and status -> exception. */
#ifndef MMU_BINDING_H
#define MMU_BINDING_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>

#include "../core/mmu.h"

typedef struct {
    PyObject_HEAD
    mmu_tensor *t;
    PyObject *weakreflist;
} PyTensor;

extern PyTypeObject *mmu_TensorType;

static inline int PyTensor_Check(PyObject *o) { return PyObject_TypeCheck(o, mmu_TensorType); }

/* Wraps (steals) a C tensor into a new Python Tensor; NULL-safe (returns NULL). */
PyObject *mmu_wrap(mmu_tensor *t);

/* Any tensor-like -> new C tensor reference (NULL + Python error on failure).
 * like: -1, or a dtype that Python scalars take (so `x * 2` stays float32).
 * what: "<op>: argument <name>" for the error message. */
mmu_tensor *mmu_to_tensor(PyObject *obj, int like, const char *op, const char *arg);

/* Turns a failed status into the matching Python exception; returns NULL. */
PyObject *mmu_raise(mmu_status st);

/* Reads a tuple/list of ints into shape (ndim out). -1 on error (exception set). */
int mmu_parse_shape(PyObject *obj, int *ndim, int64_t *shape, const char *op, const char *arg);

/* Runs a core call with the GIL released. */
#define MMU_NOGIL(st, expr)      \
    do {                         \
        Py_BEGIN_ALLOW_THREADS   \
        (st) = (expr);           \
        Py_END_ALLOW_THREADS     \
    } while (0)

extern PyMethodDef mmu_op_methods[];

#endif

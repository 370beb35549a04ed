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

/* Reads one int argument. TypeError for a non-int, ValueError naming op and arg for one that
 * does not fit in int64 (CPython's own converters raise an OverflowError naming neither);
 * is_dim: an IndexError instead, as any dim that large is out of range. -1 on error. */
int mmu_parse_int64(PyObject *obj, int64_t *v, const char *op, const char *arg, int is_dim);

/* Reads a tuple/list of exactly n ints (per-spatial-dim kernel/stride/padding
 * arguments of the bind_*.c files). -1 on error (exception set). */
static inline int mmu_parse_ints(PyObject *obj, int n, int64_t *v, const char *op, const char *arg) {
    int nd;
    int64_t tmp[MMU_MAX_DIMS];
    if (mmu_parse_shape(obj, &nd, tmp, op, arg) < 0) return -1;
    if (nd != n) {
        PyErr_Format(PyExc_ValueError, "%s: %s must have %d values, got %d", op, arg, n, nd);
        return -1;
    }
    for (int i = 0; i < n; i++) v[i] = tmp[i];
    return 0;
}

/* Runs a core call with the GIL released. */
#define MMU_NOGIL(st, expr)      \
    do {                         \
        Py_BEGIN_ALLOW_THREADS   \
        (st) = (expr);           \
        Py_END_ALLOW_THREADS     \
    } while (0)

/* Tensor arguments of one op call, released together by finish(). Every
 * bind_*.c file uses these: convert with arg(), run the op under MMU_NOGIL,
 * return finish(&ta, st, out). */
#define MAX_TENSOR_ARGS 4

typedef struct {
    mmu_tensor *t[MAX_TENSOR_ARGS];
    int n;
} tensor_args;

/* Converts obj (Tensor, ndarray, scalar, list) and keeps it in a; NULL with
 * a Python error set on failure. Python scalars take dtype `like` (or -1). */
static inline mmu_tensor *arg(tensor_args *a, PyObject *obj, int like, const char *op, const char *name) {
    mmu_tensor *t = mmu_to_tensor(obj, like, op, name);
    if (t) a->t[a->n++] = t;
    return t;
}

/* Releases the arguments; raises on a failed status; wraps out. out == NULL
 * with MMU_OK means a Python error is already set (a failed conversion). */
static inline PyObject *finish(tensor_args *a, mmu_status st, mmu_tensor *out) {
    for (int i = 0; i < a->n; i++) mmu_tensor_decref(a->t[i]);
    if (st) return mmu_raise(st);
    return out ? mmu_wrap(out) : NULL;
}

/* Entry point of an op on one tensor and one float, (x, v): pow, dropout,
 * leaky_relu. Python scalars for x take dtype `like` (or -1). */
static inline PyObject *mmu_call_x_double(PyObject *args, const char *op, int like,
                                          mmu_status (*fn)(mmu_tensor **, mmu_tensor *, double)) {
    PyObject *xo;
    double v;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "Od", &xo, &v)) return NULL;
    if (!(x = arg(&ta, xo, like, op, "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, fn(&out, x, v));
    return finish(&ta, st, out);
}

/* Method tables of the op families, one per csrc/python file, all added to mmu._C. */
extern PyMethodDef mmu_op_methods[];      /* ops_bind.c: issue-2 core ops */
extern PyMethodDef mmu_conv_methods[];    /* bind_conv.c: convolutions */
extern PyMethodDef mmu_spatial_methods[]; /* bind_spatial.c: norms, dropout, pad/pool/resample */
extern PyMethodDef mmu_attention_methods[]; /* bind_attention.c: sdpa, rope */
extern PyMethodDef mmu_optim_methods[];      /* bind_optim.c: fused optimizer updates */
extern PyMethodDef mmu_quant_vq_methods[];  /* bind_quant_vq.c: nearest-code search, EMA codebook stats */
extern PyMethodDef mmu_quant_lfq_methods[]; /* bind_quant_lfq.c: LFQ/FSQ/Gumbel kernels */
extern PyMethodDef mmu_contrastive_methods[]; /* bind_contrastive.c: fused CLIP / SigLIP losses */
extern PyMethodDef mmu_autograd_methods[];  /* bind_autograd.c: autograd.grad, graph introspection */
extern PyMethodDef mmu_batchnorm_methods[]; /* bind_batchnorm.c: batch norm */
extern PyMethodDef mmu_lpips_methods[];     /* bind_lpips.c: max pooling, LPIPS distance */
extern PyMethodDef mmu_recon_methods[];     /* bind_recon.c: fused reconstruction / GAN losses */

#endif

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

/* bind_autograd.c: after a failed backward, re-raises the exception a post-accumulate-grad hook raised
 * (returns 1), or returns 0 when no hook failed. */
int mmu_grad_hook_error(void);

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
#define MAX_TENSOR_ARGS 8  /* the most tensors one op binding converts: qkv_heads' 7 */

typedef struct {
    mmu_tensor *t[MAX_TENSOR_ARGS];
    int n;
} tensor_args;

/* Converts obj (Tensor, ndarray, scalar, list) and keeps it in a; NULL with
 * a Python error set on failure. Python scalars take dtype `like` (or -1). */
static inline mmu_tensor *arg(tensor_args *a, PyObject *obj, int like, const char *op, const char *name) {
    if (a->n >= MAX_TENSOR_ARGS) {  /* a binding that converts more tensors than it can release */
        PyErr_Format(PyExc_SystemError, "%s: more than %d tensor arguments (at %s)", op, MAX_TENSOR_ARGS, name);
        return NULL;
    }
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

/* Op codes and limits exported to Python as module attributes, so mmu/ never
 * mirrors a C enum by hand: mmu_add_codes adds _C.<dict_name> = {name: code}. */
typedef struct { const char *name; long code; } mmu_code;
int mmu_add_codes(PyObject *m, const char *dict_name, const mmu_code *codes, int n);
int mmu_core_add_constants(PyObject *m);    /* bind_core.c: OPS, MAX_DIMS, dtypes, binary/unary/reduce/loss codes */
int mmu_spatial_add_constants(PyObject *m); /* bind_spatial.c: pad modes */

/* Method tables of the op families, one per csrc/python/bind_<family>.c file, all added to mmu._C. */
extern PyMethodDef mmu_core_methods[];           /* binary, unary, reduce, shape, index, matmul, softmax, ... */
extern PyMethodDef mmu_attention_methods[];      /* sdpa, rope */
extern PyMethodDef mmu_autograd_methods[];       /* autograd.grad, graph introspection */
extern PyMethodDef mmu_batch_norm_methods[];     /* batch norm */
extern PyMethodDef mmu_contrastive_methods[];    /* fused CLIP / SigLIP losses */
extern PyMethodDef mmu_conv_methods[];           /* convolutions */
extern PyMethodDef mmu_dropout_methods[];        /* dropout */
extern PyMethodDef mmu_lpips_methods[];          /* LPIPS distance */
extern PyMethodDef mmu_norm_methods[];           /* layer / group / RMS norm, normalize */
extern PyMethodDef mmu_optim_methods[];          /* fused optimizer updates */
extern PyMethodDef mmu_pool_methods[];           /* max / average pooling */
extern PyMethodDef mmu_quant_lfq_methods[];      /* LFQ entropy, FSQ */
extern PyMethodDef mmu_quant_vq_methods[];       /* nearest-code search, EMA codebook stats */
extern PyMethodDef mmu_reconstruction_methods[]; /* fused reconstruction losses */
extern PyMethodDef mmu_sort_methods[];           /* sort, topk */
extern PyMethodDef mmu_spatial_methods[];        /* pad, interpolation */
extern PyMethodDef mmu_attention_cache_methods[]; /* attention over a cached prefix (inference) */
extern PyMethodDef mmu_linear_post_methods[];   /* linear + GELU / + residual epilogues (inference) */
extern PyMethodDef mmu_sampling_methods[];       /* multinomial, sample_logits */

/* bind_sampling.c: the mmu.Generator type, added to the module as _C.Generator. */
int mmu_sampling_add_types(PyObject *m);
/* None -> *g = NULL (the global stream); an mmu.Generator -> its state; anything else is a
 * TypeError naming op. -1 on error. The object must outlive the use of *g (the caller's
 * argument tuple holds it). */
int mmu_parse_generator(PyObject *obj, mmu_generator **g, const char *op);

#endif

/* mmu._C: the Tensor type, conversions to and from NumPy, and module state
 * (grad mode, seed, threads, stats). Op entry points are in bind_<family>.c. */
#include "binding.h"

#include <ctype.h>
#include <math.h>
#include <structmember.h>

#define PY_ARRAY_UNIQUE_SYMBOL mmu_ARRAY_API
#include <numpy/arrayobject.h>

#include "../dnnl/mmu_dnnl.h"

PyTypeObject *mmu_TensorType;

/* ------------------------------------------------------------ errors */
PyObject *mmu_raise(mmu_status st) {
    PyObject *exc = PyExc_RuntimeError;
    switch (st) {
    case MMU_EVALUE: exc = PyExc_ValueError; break;
    case MMU_ETYPE: exc = PyExc_TypeError; break;
    case MMU_EINDEX: exc = PyExc_IndexError; break;
    case MMU_ENOMEM: exc = PyExc_MemoryError; break;
    default: break;
    }
    PyErr_SetString(exc, mmu_error_message());
    return NULL;
}

/* ------------------------------------------------------- conversions */
static int npy_type_of(mmu_dtype dt) {
    return dt == MMU_FLOAT32 ? NPY_FLOAT32 : dt == MMU_INT64 ? NPY_INT64 : NPY_BOOL;
}

PyObject *mmu_wrap(mmu_tensor *t) {
    if (!t) return NULL;
    PyTensor *self = PyObject_GC_New(PyTensor, mmu_TensorType);
    if (!self) {
        mmu_tensor_decref(t);
        return NULL;
    }
    self->t = t;
    self->weakreflist = NULL;
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static const char *type_name(PyObject *o) { return Py_TYPE(o)->tp_name; }

mmu_tensor *mmu_to_tensor(PyObject *obj, int like, const char *op, const char *arg) {
    if (PyTensor_Check(obj)) {
        mmu_tensor *t = ((PyTensor *)obj)->t;
        mmu_tensor_incref(t);
        return t;
    }
    /* Python scalars take the dtype of the tensor they meet (like torch) */
    if (like >= 0 && (PyFloat_Check(obj) || PyLong_Check(obj) || PyBool_Check(obj))) {
        mmu_dtype dt = (mmu_dtype)like;
        if (dt == MMU_INT64 && PyFloat_Check(obj)) dt = MMU_FLOAT32;
        if (dt == MMU_BOOL && !PyBool_Check(obj)) dt = PyFloat_Check(obj) ? MMU_FLOAT32 : MMU_INT64;
        double v = PyFloat_AsDouble(obj);
        if (dt == MMU_INT64) {
            int64_t iv = obj == Py_True;
            if (!PyBool_Check(obj) && mmu_parse_int64(obj, &iv, op, arg, 0) < 0) return NULL;
            v = (double)iv;
            mmu_tensor *t = NULL;
            mmu_status st = mmu_tensor_empty(&t, MMU_INT64, 0, NULL);
            if (st) return (mmu_tensor *)mmu_raise(st);
            mmu_i64(t)[0] = iv;
            return t;
        }
        if (v == -1.0 && PyErr_Occurred()) return NULL;
        mmu_tensor *t = NULL;
        mmu_status st = mmu_tensor_full(&t, dt, 0, NULL, v);
        if (st) return (mmu_tensor *)mmu_raise(st);
        return t;
    }
    if (obj == Py_None || PyUnicode_Check(obj) || PyBytes_Check(obj) || PyDict_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a Tensor or a numeric array, got %s", op, arg,
                     type_name(obj));
        return NULL;
    }
    PyArrayObject *arr = (PyArrayObject *)PyArray_FROM_O(obj);
    if (!arr) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: %s must be a Tensor or a numeric array, got %s", op, arg,
                     type_name(obj));
        return NULL;
    }
    char kind = PyArray_DESCR(arr)->kind;
    int target;
    mmu_dtype dt;
    if (kind == 'f') { target = NPY_FLOAT32; dt = MMU_FLOAT32; }
    else if (kind == 'i' || kind == 'u') { target = NPY_INT64; dt = MMU_INT64; }
    else if (kind == 'b') { target = NPY_BOOL; dt = MMU_BOOL; }
    else {
        PyErr_Format(PyExc_TypeError, "%s: %s must be numeric (float, int or bool), got an array of dtype %s",
                     op, arg, PyArray_DESCR(arr)->typeobj->tp_name);
        Py_DECREF(arr);
        return NULL;
    }
    int ndim = PyArray_NDIM(arr);
    if (ndim > MMU_MAX_DIMS) {
        PyErr_Format(PyExc_ValueError, "%s: %s has %d dims; mmu tensors have at most %d", op, arg, ndim,
                     MMU_MAX_DIMS);
        Py_DECREF(arr);
        return NULL;
    }
    int64_t shape[MMU_MAX_DIMS];
    for (int d = 0; d < ndim; d++) shape[d] = PyArray_DIM(arr, d);
    mmu_tensor *t = NULL;
    mmu_status st = mmu_tensor_empty(&t, dt, ndim, shape);
    if (st) {
        Py_DECREF(arr);
        return (mmu_tensor *)mmu_raise(st);
    }
    /* copy (and cast) straight into the tensor's buffer through a NumPy view of it */
    npy_intp dims[MMU_MAX_DIMS];
    for (int d = 0; d < ndim; d++) dims[d] = (npy_intp)shape[d];
    PyObject *dst = PyArray_New(&PyArray_Type, ndim, dims, target, NULL, mmu_data(t), 0, NPY_ARRAY_CARRAY, NULL);
    if (!dst || PyArray_CopyInto((PyArrayObject *)dst, arr) < 0) {
        Py_XDECREF(dst);
        Py_DECREF(arr);
        mmu_tensor_decref(t);
        return NULL;
    }
    Py_DECREF(dst);
    Py_DECREF(arr);
    return t;
}

int mmu_parse_shape(PyObject *obj, int *ndim, int64_t *shape, const char *op, const char *arg) {
    PyObject *seq = PySequence_Fast(obj, "");
    if (!seq) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a tuple of ints, got %s", op, arg, type_name(obj));
        return -1;
    }
    Py_ssize_t n = PySequence_Fast_GET_SIZE(seq);
    if (n > MMU_MAX_DIMS) {
        Py_DECREF(seq);
        PyErr_Format(PyExc_ValueError, "%s: %s has %zd dims; mmu tensors have at most %d", op, arg, n, MMU_MAX_DIMS);
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *item = PySequence_Fast_GET_ITEM(seq, i);
        PyObject *idx = PyNumber_Index(item);
        if (!idx) {
            Py_DECREF(seq);
            PyErr_Format(PyExc_TypeError, "%s: %s must contain ints, got %s", op, arg, type_name(item));
            return -1;
        }
        int overflow = 0;
        shape[i] = PyLong_AsLongLongAndOverflow(idx, &overflow);
        if (overflow) PyErr_Format(PyExc_ValueError, "%s: %s value %R does not fit in 64 bits", op, arg, idx);
        Py_DECREF(idx);
        if (overflow || (shape[i] == -1 && PyErr_Occurred())) {
            Py_DECREF(seq);
            return -1;
        }
    }
    *ndim = (int)n;
    Py_DECREF(seq);
    return 0;
}

int mmu_parse_int64(PyObject *obj, int64_t *v, const char *op, const char *arg, int is_dim) {
    if (PyBool_Check(obj) || !PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be an int, got %s", op, arg, type_name(obj));
        return -1;
    }
    PyObject *idx = PyNumber_Index(obj); /* a Tensor's __index__ raises for a non-int or a non-scalar one */
    if (!idx) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "%s: %s must be an int, got %s", op, arg, type_name(obj));
        return -1;
    }
    int overflow = 0;
    *v = PyLong_AsLongLongAndOverflow(idx, &overflow);
    if (overflow) {
        if (is_dim) PyErr_Format(PyExc_IndexError, "%s: %s %R is out of range", op, arg, idx);
        else PyErr_Format(PyExc_ValueError, "%s: %s %R does not fit in 64 bits", op, arg, idx);
    }
    Py_DECREF(idx);
    return overflow || (*v == -1 && PyErr_Occurred()) ? -1 : 0;
}

/* ------------------------------------------------------ Tensor type */
static int tensor_traverse(PyTensor *self, visitproc visit, void *arg) {
    Py_VISIT(Py_TYPE(self));
    return 0;
}

static void tensor_dealloc(PyTensor *self) {
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->weakreflist) PyObject_ClearWeakRefs((PyObject *)self);
    mmu_tensor_decref(self->t);
    tp->tp_free((PyObject *)self); /* PyObject_GC_Del, or a subclass's (which knows its managed dict) */
    Py_DECREF(tp);
}

/* Tensor(data) / Subclass(data): data a Tensor -> a new object sharing its
 * storage, cut from the graph (like .detach(); how nn.Parameter wraps a
 * tensor); anything else (ndarray, list, scalar) is copied as mmu.tensor does.
 * The object is allocated by `type`, so a Python subclass of Tensor (with its
 * own __dict__) gets a fully formed instance whose ops return plain Tensors
 * (mmu_wrap always makes the base type). */
static PyObject *tensor_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"data", NULL};
    PyObject *data = NULL;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "O:Tensor", kw, &data)) return NULL;
    mmu_tensor *t = NULL;
    if (PyTensor_Check(data)) {
        mmu_status st = mmu_tensor_detach(&t, ((PyTensor *)data)->t);
        if (st) return mmu_raise(st);
    } else if (!(t = mmu_to_tensor(data, -1, "Tensor", "data"))) {
        return NULL;
    }
    PyTensor *self = (PyTensor *)type->tp_alloc(type, 0); /* GC-tracked, holds a reference to type */
    if (!self) {
        mmu_tensor_decref(t);
        return NULL;
    }
    self->t = t;
    self->weakreflist = NULL;
    return (PyObject *)self;
}

static PyObject *tensor_get_shape(PyTensor *self, void *c) {
    PyObject *tup = PyTuple_New(self->t->ndim);
    if (!tup) return NULL;
    for (int d = 0; d < self->t->ndim; d++) PyTuple_SET_ITEM(tup, d, PyLong_FromLongLong(self->t->shape[d]));
    return tup;
}

static PyObject *tensor_get_ndim(PyTensor *self, void *c) { return PyLong_FromLong(self->t->ndim); }

static PyObject *tensor_get_dtype(PyTensor *self, void *c) {
    return (PyObject *)PyArray_DescrFromType(npy_type_of(self->t->dtype));
}

static PyObject *tensor_get_requires_grad(PyTensor *self, void *c) { return PyBool_FromLong(self->t->requires_grad); }

static int tensor_set_requires_grad(PyTensor *self, PyObject *v, void *c) {
    int b = v ? PyObject_IsTrue(v) : 0;
    if (b < 0) return -1;
    if (self->t->grad_fn) {
        PyErr_SetString(PyExc_RuntimeError, "requires_grad can only be changed on leaf tensors; "
                        "use .detach() to get a leaf");
        return -1;
    }
    if (b && self->t->dtype != MMU_FLOAT32) {
        PyErr_Format(PyExc_TypeError, "requires_grad: only float32 tensors can require gradients, this one is %s",
                     mmu_dtype_name(self->t->dtype));
        return -1;
    }
    self->t->requires_grad = b;
    return 0;
}

static PyObject *tensor_get_grad(PyTensor *self, void *c) {
    mmu_tensor *g = mmu_get_grad(self->t);
    if (!g) Py_RETURN_NONE;
    return mmu_wrap(g);
}

static int tensor_set_grad(PyTensor *self, PyObject *v, void *c) {
    if (!v || v == Py_None) {
        mmu_set_grad(self->t, NULL);
        return 0;
    }
    if (!PyTensor_Check(v)) {
        PyErr_Format(PyExc_TypeError, "grad must be a Tensor or None, got %s", type_name(v));
        return -1;
    }
    mmu_tensor *g = ((PyTensor *)v)->t;
    if (g->dtype != MMU_FLOAT32 || !mmu_same_shape(g, self->t)) {
        PyErr_Format(PyExc_ValueError, "grad has shape %s (%s); expected %s (float32)", mmu_shape_str(g),
                     mmu_dtype_name(g->dtype), mmu_shape_str(self->t));
        return -1;
    }
    mmu_set_grad(self->t, g);
    return 0;
}

static PyObject *tensor_get_is_leaf(PyTensor *self, void *c) { return PyBool_FromLong(self->t->grad_fn == NULL); }

static PyObject *tensor_get_grad_fn(PyTensor *self, void *c) {
    if (!self->t->grad_fn) Py_RETURN_NONE;
    /* the op table's MASKED_FILL reads MaskedFillBackward, as in torch */
    const char *name = mmu_op_table[self->t->grad_fn->op].name;
    char buf[64];
    size_t k = 0;
    for (int up = 1; *name && k < sizeof buf - 1; name++) {
        if (*name == '_') { up = 1; continue; }
        buf[k++] = up ? *name : (char)tolower((unsigned char)*name);
        up = 0;
    }
    buf[k] = 0;
    return PyUnicode_FromFormat("%sBackward", buf);
}

static PyObject *tensor_numpy(PyTensor *self, PyObject *unused) {
    mmu_tensor *t = self->t;
    npy_intp dims[MMU_MAX_DIMS];
    for (int d = 0; d < t->ndim; d++) dims[d] = (npy_intp)t->shape[d];
    PyObject *arr = PyArray_New(&PyArray_Type, t->ndim, dims, npy_type_of(t->dtype), NULL, mmu_data(t), 0,
                                NPY_ARRAY_CARRAY, NULL);
    if (!arr) return NULL;
    Py_INCREF(self); /* the array keeps the tensor (and so its storage) alive */
    if (PyArray_SetBaseObject((PyArrayObject *)arr, (PyObject *)self) < 0) {
        Py_DECREF(arr);
        return NULL;
    }
    return arr;
}

static PyObject *tensor_array(PyTensor *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"dtype", "copy", NULL};
    PyObject *dtype = Py_None, *copy = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO", kw, &dtype, &copy)) return NULL;
    PyObject *arr = tensor_numpy(self, NULL);
    if (!arr) return NULL;
    if (dtype != Py_None || copy == Py_True) {
        PyArray_Descr *descr = NULL;
        if (dtype != Py_None && !PyArray_DescrConverter(dtype, &descr)) {
            Py_DECREF(arr);
            return NULL;
        }
        if (!descr) descr = PyArray_DESCR((PyArrayObject *)arr), Py_INCREF(descr);
        PyObject *res = PyArray_FromArray((PyArrayObject *)arr, descr,
                                          copy == Py_True ? NPY_ARRAY_ENSURECOPY : 0);
        Py_DECREF(arr);
        return res;
    }
    return arr;
}

static PyObject *tensor_item(PyTensor *self, PyObject *unused) {
    mmu_tensor *t = self->t;
    if (t->numel != 1) {
        PyErr_Format(PyExc_ValueError, "item: only one-element tensors can be converted to a Python scalar; "
                     "this one has shape %s", mmu_shape_str(t));
        return NULL;
    }
    switch (t->dtype) {
    case MMU_FLOAT32: return PyFloat_FromDouble(mmu_f32(t)[0]);
    case MMU_INT64: return PyLong_FromLongLong(mmu_i64(t)[0]);
    default: return PyBool_FromLong(mmu_bool(t)[0]);
    }
}

static PyObject *tensor_backward(PyTensor *self, PyObject *args, PyObject *kwargs) {
    static char *kw[] = {"grad", "retain_graph", NULL};
    PyObject *gobj = Py_None, *robj = Py_False;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|OO:backward", kw, &gobj, &robj)) return NULL;
    if (!PyBool_Check(robj) && !PyLong_Check(robj))
        return PyErr_Format(PyExc_TypeError, "backward: retain_graph must be a bool, got %s", type_name(robj));
    int retain = PyObject_IsTrue(robj);
    mmu_tensor *g = NULL;
    if (gobj != Py_None && !(g = mmu_to_tensor(gobj, MMU_FLOAT32, "backward", "grad"))) return NULL;
    mmu_status st;
    MMU_NOGIL(st, mmu_backward(self->t, g, retain));
    mmu_tensor_decref(g);
    if (st && mmu_grad_hook_error()) return NULL; /* a hook's own exception, as it was raised */
    if (st) return mmu_raise(st);
    Py_RETURN_NONE;
}

static PyObject *tensor_detach(PyTensor *self, PyObject *unused) {
    mmu_tensor *out = NULL;
    mmu_status st = mmu_tensor_detach(&out, self->t);
    if (st) return mmu_raise(st);
    return mmu_wrap(out);
}

static PyObject *tensor_numel(PyTensor *self, PyObject *unused) { return PyLong_FromLongLong(self->t->numel); }

static Py_ssize_t tensor_len(PyTensor *self) {
    if (self->t->ndim == 0) {
        PyErr_SetString(PyExc_TypeError, "len() of a 0-d tensor");
        return -1;
    }
    return (Py_ssize_t)self->t->shape[0];
}

static PyObject *tensor_data_ptr(PyTensor *self, PyObject *unused) { return PyLong_FromVoidPtr(mmu_data(self->t)); }

static PyObject *tensor_get_version(PyTensor *self, void *c) {
    return PyLong_FromUnsignedLongLong(mmu_version(self->t));
}

static PyObject *tensor_bump_version(PyTensor *self, PyObject *unused) {
    mmu_bump_version(self->t);
    Py_RETURN_NONE;
}

static PyGetSetDef tensor_getset[] = {
    {"shape", (getter)tensor_get_shape, NULL, "Tuple of dimension sizes.", NULL},
    {"ndim", (getter)tensor_get_ndim, NULL, "Number of dimensions.", NULL},
    {"dtype", (getter)tensor_get_dtype, NULL, "NumPy dtype (float32, int64 or bool).", NULL},
    {"requires_grad", (getter)tensor_get_requires_grad, (setter)tensor_set_requires_grad,
     "Whether autograd records operations on this tensor.", NULL},
    {"grad", (getter)tensor_get_grad, (setter)tensor_set_grad, "Accumulated gradient (or None).", NULL},
    {"is_leaf", (getter)tensor_get_is_leaf, NULL, "True if no op of the graph produced this tensor.", NULL},
    {"grad_fn", (getter)tensor_get_grad_fn, NULL, "Name of the node that produced this tensor, or None.", NULL},
    {"_version", (getter)tensor_get_version, NULL,
     "In-place writes into this tensor's memory so far (shared by views; torch's _version). Writes "
     "through a NumPy view (t.numpy()) are not counted.", NULL},
    {NULL},
};

static PyMethodDef tensor_methods[] = {
    {"numpy", (PyCFunction)tensor_numpy, METH_NOARGS, "A NumPy view of the data (no copy; writes go through)."},
    {"__array__", (PyCFunction)(void (*)(void))tensor_array, METH_VARARGS | METH_KEYWORDS, NULL},
    {"item", (PyCFunction)tensor_item, METH_NOARGS, "The value of a one-element tensor as a Python scalar."},
    {"backward", (PyCFunction)(void (*)(void))tensor_backward, METH_VARARGS | METH_KEYWORDS,
     "backward(grad=None, retain_graph=False): accumulate d(self)/d(leaf) into every leaf's .grad."},
    {"detach", (PyCFunction)tensor_detach, METH_NOARGS, "A tensor sharing the data, cut from the graph."},
    {"numel", (PyCFunction)tensor_numel, METH_NOARGS, "Number of elements."},
    {"_data_ptr", (PyCFunction)tensor_data_ptr, METH_NOARGS, NULL},
    {"_bump_version", (PyCFunction)tensor_bump_version, METH_NOARGS,
     "Counts an in-place write made through a NumPy view (the Python in-place methods call it)."},
    {NULL},
};

static PyMemberDef tensor_members[] = {
    {"__weaklistoffset__", T_PYSSIZET, offsetof(PyTensor, weakreflist), READONLY, NULL},
    {NULL},
};

static PyType_Slot tensor_slots[] = {
    {Py_tp_dealloc, tensor_dealloc},
    {Py_tp_new, tensor_new},
    {Py_tp_traverse, tensor_traverse},
    {Py_tp_getset, tensor_getset},
    {Py_tp_methods, tensor_methods},
    {Py_tp_members, tensor_members},
    {Py_sq_length, tensor_len},
    {Py_tp_doc, "An n-dimensional float32 / int64 / bool array with autograd; see mmu.tensor."},
    {0, NULL},
};

/* A heap type without Py_TPFLAGS_IMMUTABLETYPE: mmu/tensor.py attaches the
 * documented Python-level methods (arithmetic, sum, reshape, ...) to it, so
 * mmu.Tensor is this very type. Py_TPFLAGS_BASETYPE: mmu.nn.Parameter is a
 * Python subclass (isinstance(p, mmu.Tensor), and every op accepts it). */
static PyType_Spec tensor_spec = {
    "mmu.Tensor", sizeof(PyTensor), 0, Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    tensor_slots,
};

/* ------------------------------------------------------ module functions */
static PyObject *py_set_grad_enabled(PyObject *m, PyObject *arg) {
    int b = PyObject_IsTrue(arg);
    if (b < 0) return NULL;
    return PyBool_FromLong(mmu_set_grad_enabled(b));
}

static PyObject *py_is_grad_enabled(PyObject *m, PyObject *unused) { return PyBool_FromLong(mmu_grad_enabled()); }

static PyObject *py_manual_seed(PyObject *m, PyObject *arg) {
    unsigned long long s = PyLong_AsUnsignedLongLongMask(arg);
    if (PyErr_Occurred()) return NULL;
    mmu_manual_seed(s);
    Py_RETURN_NONE;
}

static PyObject *py_get_rng_state(PyObject *m, PyObject *unused) {
    uint64_t seed, offset;
    mmu_get_rng_state(&seed, &offset);
    return Py_BuildValue("(KK)", (unsigned long long)seed, (unsigned long long)offset);
}

static PyObject *py_set_rng_state(PyObject *m, PyObject *args) {
    PyObject *so, *oo;
    if (!PyArg_ParseTuple(args, "OO:set_rng_state", &so, &oo)) return NULL;
    if (!PyLong_Check(so) || !PyLong_Check(oo)) {
        PyErr_SetString(PyExc_TypeError, "set_rng_state: seed and offset must be ints");
        return NULL;
    }
    unsigned long long seed = PyLong_AsUnsignedLongLong(so);
    if (PyErr_Occurred()) goto range;
    unsigned long long offset = PyLong_AsUnsignedLongLong(oo);
    if (PyErr_Occurred()) goto range;
    mmu_set_rng_state(seed, offset);
    Py_RETURN_NONE;
range:
    PyErr_Clear();
    PyErr_SetString(PyExc_ValueError, "set_rng_state: seed and offset must be in [0, 2**64)");
    return NULL;
}

static PyObject *py_set_num_threads(PyObject *m, PyObject *arg) {
    int overflow = 0;
    long n = PyLong_AsLongAndOverflow(arg, &overflow);
    if (n == -1 && PyErr_Occurred()) return NULL;
    if (overflow) n = overflow < 0 ? -1 : MMU_MAX_THREADS + 1L;
    if (n < 1 || n > MMU_MAX_THREADS) {
        PyErr_Format(PyExc_ValueError, "set_num_threads: n must be in [1, %d], got %ld", MMU_MAX_THREADS, n);
        return NULL;
    }
    mmu_set_num_threads((int)n);
    Py_RETURN_NONE;
}

static PyObject *py_get_num_threads(PyObject *m, PyObject *unused) { return PyLong_FromLong(mmu_get_num_threads()); }

static PyObject *py_stats(PyObject *m, PyObject *unused) {
    mmu_dnnl_counters c;
    mmu_dnnl_stats(&c);
    size_t in_use, cached, peak;
    mmu_alloc_stats(&in_use, &cached, &peak);
    return Py_BuildValue("{s:l,s:l,s:l,s:n,s:n,s:n}", "primitives_created", c.primitives_created,
                         "primitive_cache_hits", c.cache_hits, "primitive_cache_size", c.cache_size,
                         "bytes_in_use", (Py_ssize_t)in_use, "bytes_cached", (Py_ssize_t)cached,
                         "peak_bytes", (Py_ssize_t)peak);
}

static PyObject *py_reset_peak_bytes(PyObject *m, PyObject *unused) {
    mmu_alloc_reset_peak();
    Py_RETURN_NONE;
}

static PyObject *py_empty_cache(PyObject *m, PyObject *unused) {
    mmu_alloc_empty_cache();
    Py_RETURN_NONE;
}

static PyObject *py_measure_peak_gflops(PyObject *m, PyObject *arg) {
    double seconds = PyFloat_AsDouble(arg);
    if (seconds == -1.0 && PyErr_Occurred()) return NULL;
    double g;
    Py_BEGIN_ALLOW_THREADS
    g = mmu_measure_peak_gflops(seconds);
    Py_END_ALLOW_THREADS
    return PyFloat_FromDouble(g);
}

static PyObject *py_dnnl_version(PyObject *m, PyObject *unused) { return PyUnicode_FromString(mmu_dnnl_version()); }

/* The private entry points take a dtype as its code (mmu/tensor.py maps
 * mmu.float32 / int64 / bool to 0 / 1 / 2); a wrong code must not reach the
 * core, which sizes buffers by it. */
static int check_dtype_code(int code, const char *op) {
    if (code == MMU_FLOAT32 || code == MMU_INT64 || code == MMU_BOOL) return 0;
    PyErr_Format(PyExc_TypeError, "%s: unknown dtype code %d (float32 = 0, int64 = 1, bool = 2)", op, code);
    return -1;
}

static PyObject *py_tensor(PyObject *m, PyObject *args) {
    PyObject *obj;
    int dtype = -1, requires_grad = 0;
    if (!PyArg_ParseTuple(args, "O|ip", &obj, &dtype, &requires_grad)) return NULL;
    if (dtype != -1 && check_dtype_code(dtype, "tensor") < 0) return NULL;
    mmu_tensor *t = NULL;
    if (PyTensor_Check(obj)) { /* mmu.tensor(t) copies, like torch.tensor */
        mmu_status st = mmu_tensor_clone(&t, ((PyTensor *)obj)->t);
        if (st) return mmu_raise(st);
    } else if (!(t = mmu_to_tensor(obj, -1, "tensor", "data"))) {
        return NULL;
    }
    if (dtype >= 0 && dtype != (int)t->dtype) {
        mmu_tensor *c = NULL;
        mmu_status st;
        extern mmu_status mmu_cast(mmu_tensor **, mmu_tensor *, mmu_dtype);
        MMU_NOGIL(st, mmu_cast(&c, t, (mmu_dtype)dtype));
        mmu_tensor_decref(t);
        if (st) return mmu_raise(st);
        t = c;
    }
    if (requires_grad) {
        if (t->dtype != MMU_FLOAT32) {
            mmu_tensor_decref(t);
            PyErr_SetString(PyExc_TypeError, "tensor: only float32 tensors can require gradients");
            return NULL;
        }
        t->requires_grad = 1;
    }
    return mmu_wrap(t);
}

static PyObject *py_full(PyObject *m, PyObject *args) {
    PyObject *shape_obj;
    int dtype;
    double value;
    int ndim;
    int64_t shape[MMU_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "Oid", &shape_obj, &dtype, &value)) return NULL;
    if (check_dtype_code(dtype, "full") < 0) return NULL;
    if (mmu_parse_shape(shape_obj, &ndim, shape, "full", "size") < 0) return NULL;
    mmu_tensor *t = NULL;
    mmu_status st;
    MMU_NOGIL(st, value == 0.0 ? mmu_tensor_zeros(&t, (mmu_dtype)dtype, ndim, shape)
                               : mmu_tensor_full(&t, (mmu_dtype)dtype, ndim, shape, value));
    if (st) return mmu_raise(st);
    return mmu_wrap(t);
}

static PyObject *py_random(PyObject *m, PyObject *args) {
    PyObject *shape_obj, *gen_obj = Py_None;
    int normal, ndim;
    int64_t shape[MMU_MAX_DIMS];
    mmu_generator *g = NULL;
    if (!PyArg_ParseTuple(args, "Op|O", &shape_obj, &normal, &gen_obj)) return NULL;
    if (mmu_parse_shape(shape_obj, &ndim, shape, normal ? "randn" : "rand", "size") < 0) return NULL;
    if (mmu_parse_generator(gen_obj, &g, normal ? "randn" : "rand") < 0) return NULL;
    mmu_tensor *t = NULL;
    mmu_status st;
    MMU_NOGIL(st, normal ? mmu_randn(&t, ndim, shape, g) : mmu_rand(&t, ndim, shape, g));
    if (st) return mmu_raise(st);
    return mmu_wrap(t);
}

/* arange(start, end, step, dtype) -> values start + i * step < end, float32 or
 * int64 (like torch, bool is refused: a bool range has no meaning) */
static PyObject *py_arange(PyObject *m, PyObject *args) {
    double start, end, step;
    int dtype;
    if (!PyArg_ParseTuple(args, "dddi", &start, &end, &step, &dtype)) return NULL;
    if (check_dtype_code(dtype, "arange") < 0) return NULL;
    if (dtype == MMU_BOOL) {
        PyErr_SetString(PyExc_TypeError, "arange: dtype bool is not supported (use float32 or int64)");
        return NULL;
    }
    if (!isfinite(start) || !isfinite(end) || !isfinite(step)) {
        char msg[160]; /* PyErr_Format has no %g */
        snprintf(msg, sizeof msg, "arange: start, end and step must be finite, got %g, %g, %g", start, end, step);
        PyErr_SetString(PyExc_ValueError, msg);
        return NULL;
    }
    if (step == 0.0) {
        PyErr_SetString(PyExc_ValueError, "arange: step must be nonzero");
        return NULL;
    }
    double count = ceil((end - start) / step);
    if (!(count >= 0)) count = 0;
    if (count > 1e12) {
        PyErr_SetString(PyExc_ValueError, "arange: too many elements");
        return NULL;
    }
    int64_t n = (int64_t)count;
    mmu_tensor *t = NULL;
    mmu_status st = mmu_tensor_empty(&t, (mmu_dtype)dtype, 1, &n);
    if (st) return mmu_raise(st);
    if (dtype == MMU_INT64) {
        int64_t *p = mmu_i64(t);
        for (int64_t i = 0; i < n; i++) p[i] = (int64_t)(start + (double)i * step);
    } else {
        float *p = mmu_f32(t);
        for (int64_t i = 0; i < n; i++) p[i] = (float)(start + (double)i * step);
    }
    return mmu_wrap(t);
}

int mmu_add_codes(PyObject *m, const char *dict_name, const mmu_code *codes, int n) {
    PyObject *d = PyDict_New();
    if (!d) return -1;
    for (int i = 0; i < n; i++) {
        PyObject *v = PyLong_FromLong(codes[i].code);
        int bad = !v || PyDict_SetItemString(d, codes[i].name, v) < 0;
        Py_XDECREF(v);
        if (bad) {
            Py_DECREF(d);
            return -1;
        }
    }
    int rc = PyModule_AddObjectRef(m, dict_name, d);
    Py_DECREF(d);
    return rc;
}

/* crc32c(buffer, crc=0) -> the CRC-32C of the buffer's bytes continuing from crc (mmu.io's file
 * checksum), computed with the GIL released */
static PyObject *py_crc32c(PyObject *m, PyObject *args) {
    Py_buffer buf;
    unsigned long crc = 0;
    if (!PyArg_ParseTuple(args, "y*|k", &buf, &crc)) return NULL;
    if (crc > 0xFFFFFFFFul) {
        PyBuffer_Release(&buf);
        PyErr_Format(PyExc_ValueError, "crc32c: crc must be a 32-bit value, got %lu", crc);
        return NULL;
    }
    uint32_t out;
    Py_BEGIN_ALLOW_THREADS
    out = mmu_crc32c((uint32_t)crc, buf.buf, (size_t)buf.len);
    Py_END_ALLOW_THREADS
    PyBuffer_Release(&buf);
    return PyLong_FromUnsignedLong(out);
}

static PyMethodDef module_methods[] = {
    {"set_grad_enabled", py_set_grad_enabled, METH_O, "Sets grad mode for this thread; returns the previous."},
    {"is_grad_enabled", py_is_grad_enabled, METH_NOARGS, NULL},
    {"manual_seed", py_manual_seed, METH_O, NULL},
    {"get_rng_state", py_get_rng_state, METH_NOARGS, "(seed, offset) of the Philox generator."},
    {"set_rng_state", py_set_rng_state, METH_VARARGS, "set_rng_state(seed, offset): restores get_rng_state()."},
    {"set_num_threads", py_set_num_threads, METH_O, NULL},
    {"get_num_threads", py_get_num_threads, METH_NOARGS, NULL},
    {"stats", py_stats, METH_NOARGS, "Counters: oneDNN primitives created, cache hits and size, allocator bytes."},
    {"empty_cache", py_empty_cache, METH_NOARGS, "Return cached free buffers to the system."},
    {"reset_peak_bytes", py_reset_peak_bytes, METH_NOARGS, "Set stats()['peak_bytes'] to the bytes in use now."},
    {"dnnl_version", py_dnnl_version, METH_NOARGS, NULL},
    {"measure_peak_gflops", py_measure_peak_gflops, METH_O,
     "measure_peak_gflops(seconds): sustained fp32 FMA GFLOP/s of this CPU at the current thread count."},
    {"tensor", py_tensor, METH_VARARGS, NULL},
    {"full", py_full, METH_VARARGS, NULL},
    {"random", py_random, METH_VARARGS, "random(shape, normal, generator=None)"},
    {"arange", py_arange, METH_VARARGS, NULL},
    {"crc32c", py_crc32c, METH_VARARGS, "crc32c(buffer, crc=0) -> CRC-32C of the bytes, continuing from crc."},
    {NULL},
};

static struct PyModuleDef module_def = {PyModuleDef_HEAD_INIT, "mmu._C", "mmu's C core.", -1, NULL};

PyMODINIT_FUNC PyInit__C(void) {
    import_array();
    PyObject *m = PyModule_Create(&module_def);
    if (!m) return NULL;
    PyMethodDef *family_methods[] = {
        module_methods,         mmu_core_methods,         mmu_attention_methods, mmu_autograd_methods,
        mmu_batch_norm_methods, mmu_contrastive_methods,  mmu_conv_methods,      mmu_dropout_methods,
        mmu_lpips_methods,      mmu_norm_methods,         mmu_optim_methods,     mmu_pool_methods,
        mmu_quant_lfq_methods,  mmu_quant_vq_methods,     mmu_reconstruction_methods, mmu_spatial_methods,
        mmu_sort_methods,
        mmu_sampling_methods,   mmu_attention_cache_methods, mmu_linear_post_methods,
    };
    for (size_t f = 0; f < sizeof family_methods / sizeof *family_methods; f++)
        if (PyModule_AddFunctions(m, family_methods[f]) < 0) goto fail;
    if (mmu_core_add_constants(m) < 0 || mmu_spatial_add_constants(m) < 0 || mmu_sampling_add_types(m) < 0)
        goto fail;
    mmu_TensorType = (PyTypeObject *)PyType_FromSpec(&tensor_spec);
    if (!mmu_TensorType) goto fail;
    Py_INCREF(mmu_TensorType);
    if (PyModule_AddObject(m, "Tensor", (PyObject *)mmu_TensorType) < 0) goto fail;
    return m;
fail:
    Py_DECREF(m);
    return NULL;
}

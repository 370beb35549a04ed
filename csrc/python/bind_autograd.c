/* mmu._C entry points: autograd.grad (gradients of chosen inputs) and graph
 * introspection (csrc/core/autograd.c).
 *
 * grad(outputs, grad_outputs, inputs, retain_graph, allow_unused) runs the C
 * engine in capture mode. The Node handle type lets mmu/_double_backward.py
 * walk a graph (op name, input edges, saved tensors, small parameters) to
 * build differentiable gradients for create_graph=True. The small parameters
 * are decoded by name from the op table's field lists (core/op_table.h): this
 * file knows no op's layout. */
#include <ctype.h>
#include <string.h>

#include "binding.h"

/* A sequence of Tensors (NULL entries allowed when allow_none, for Python
 * None) -> a malloc'd array of new references; -1 with an error set. */
static int tensor_list(PyObject *seq, int allow_none, mmu_tensor ***out, Py_ssize_t *n, const char *what) {
    PyObject *fast = PySequence_Fast(seq, "");
    if (!fast) {
        PyErr_Format(PyExc_TypeError, "autograd.grad: %s must be a Tensor or a sequence of Tensors, got %s", what,
                     Py_TYPE(seq)->tp_name);
        return -1;
    }
    *n = PySequence_Fast_GET_SIZE(fast);
    *out = calloc(*n ? *n : 1, sizeof **out);
    if (!*out) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return -1;
    }
    for (Py_ssize_t i = 0; i < *n; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(fast, i);
        if (o == Py_None && allow_none) continue;
        if (!PyTensor_Check(o)) {
            PyErr_Format(PyExc_TypeError, "autograd.grad: %s[%zd] must be a Tensor%s, got %s", what, i,
                         allow_none ? " or None" : "", Py_TYPE(o)->tp_name);
            for (Py_ssize_t j = 0; j < i; j++) mmu_tensor_decref((*out)[j]);
            free(*out);
            Py_DECREF(fast);
            return -1;
        }
        (*out)[i] = ((PyTensor *)o)->t;
        mmu_tensor_incref((*out)[i]);
    }
    Py_DECREF(fast);
    return 0;
}

static void free_list(mmu_tensor **ts, Py_ssize_t n) {
    if (!ts) return;
    for (Py_ssize_t i = 0; i < n; i++) mmu_tensor_decref(ts[i]);
    free(ts);
}

/* grad(outputs, grad_outputs or None, inputs, retain_graph, allow_unused) -> tuple (None for unused) */
static PyObject *py_grad(PyObject *m, PyObject *args) {
    PyObject *outs_o, *gouts_o, *ins_o;
    int retain, allow_unused;
    if (!PyArg_ParseTuple(args, "OOOpp", &outs_o, &gouts_o, &ins_o, &retain, &allow_unused)) return NULL;
    mmu_tensor **outs = NULL, **gouts = NULL, **ins = NULL, **res = NULL;
    Py_ssize_t n_out = 0, n_gout = 0, n_in = 0;
    PyObject *ret = NULL;
    if (tensor_list(outs_o, 0, &outs, &n_out, "outputs") < 0) goto done;
    if (gouts_o != Py_None) {
        if (tensor_list(gouts_o, 1, &gouts, &n_gout, "grad_outputs") < 0) goto done;
        if (n_gout != n_out) {
            PyErr_Format(PyExc_ValueError, "autograd.grad: grad_outputs has %zd entries but there are %zd outputs",
                         n_gout, n_out);
            goto done;
        }
    }
    if (tensor_list(ins_o, 0, &ins, &n_in, "inputs") < 0) goto done;
    if (n_out > INT32_MAX || n_in > INT32_MAX) {
        PyErr_SetString(PyExc_ValueError, "autograd.grad: too many tensors");
        goto done;
    }
    if (!(res = calloc(n_in ? n_in : 1, sizeof *res))) {
        PyErr_NoMemory();
        goto done;
    }
    mmu_status st;
    MMU_NOGIL(st, mmu_grad(res, (int)n_out, outs, gouts, (int)n_in, ins, retain, allow_unused));
    if (st) {
        mmu_raise(st);
        goto done;
    }
    if (!(ret = PyTuple_New(n_in))) goto done;
    for (Py_ssize_t k = 0; k < n_in; k++) {
        PyObject *o;
        if (res[k]) {
            o = mmu_wrap(res[k]);
            res[k] = NULL;
            if (!o) {
                Py_CLEAR(ret);
                goto done;
            }
        } else {
            o = Py_None;
            Py_INCREF(o);
        }
        PyTuple_SET_ITEM(ret, k, o);
    }
done:
    free_list(outs, n_out);
    free_list(gouts, n_gout);
    free_list(ins, n_in);
    free_list(res, n_in);
    return ret;
}

/* ------------------------------------------------------------ Node handle */
typedef struct {
    PyObject_HEAD
    mmu_node *n;
} PyNode;

static PyTypeObject *node_type;

static PyObject *wrap_node(mmu_node *n) {
    PyNode *self = PyObject_New(PyNode, node_type);
    if (!self) return NULL;
    mmu_node_incref(n);
    self->n = n;
    return (PyObject *)self;
}

static void node_dealloc(PyNode *self) {
    PyTypeObject *tp = Py_TYPE(self);
    mmu_node_decref(self->n);
    PyObject_Free(self);
    Py_DECREF(tp);
}

static PyObject *dims_tuple(int ndim, const int64_t *shape) {
    PyObject *t = PyTuple_New(ndim);
    if (!t) return NULL;
    for (int d = 0; d < ndim; d++) {
        PyObject *v = PyLong_FromLongLong(shape[d]);
        if (!v) {
            Py_DECREF(t);
            return NULL;
        }
        PyTuple_SET_ITEM(t, d, v);
    }
    return t;
}

static PyObject *node_get_op(PyNode *self, void *c) { return PyUnicode_FromString(mmu_op_table[self->n->op].name); }
static PyObject *node_get_id(PyNode *self, void *c) { return PyLong_FromVoidPtr(self->n); }
static PyObject *node_get_released(PyNode *self, void *c) { return PyBool_FromLong(self->n->released); }
static PyObject *node_get_out_shape(PyNode *self, void *c) { return dims_tuple(self->n->out_ndim, self->n->out_shape); }

/* ((Node | leaf Tensor | None, leaf id or 0, shape), ...) per input. The
 * edges are read under the graph lock (a backward in another thread may be
 * freeing them), with references of our own, and wrapped after it: wrapping
 * allocates, and a collection then may run anything, even a backward. */
static PyObject *node_get_inputs(PyNode *self, void *c) {
    mmu_node *n = self->n;
    PyObject *t = NULL;
    mmu_node **fns = calloc(n->n_inputs ? n->n_inputs : 1, sizeof *fns);
    mmu_tensor **leaves = calloc(n->n_inputs ? n->n_inputs : 1, sizeof *leaves);
    if (!fns || !leaves) {
        PyErr_NoMemory();
        goto done;
    }
    mmu_graph_lock();
    for (int i = 0; i < n->n_inputs; i++) {
        fns[i] = n->inputs[i].fn;
        leaves[i] = n->inputs[i].leaf;
        mmu_node_incref(fns[i]);
        mmu_tensor_incref(leaves[i]);
    }
    mmu_graph_unlock();
    if (!(t = PyTuple_New(n->n_inputs))) goto done;
    for (int i = 0; i < n->n_inputs; i++) {
        mmu_edge *e = &n->inputs[i];
        PyObject *obj;
        if (fns[i]) obj = wrap_node(fns[i]);
        else if (leaves[i]) {
            mmu_tensor_incref(leaves[i]);
            obj = mmu_wrap(leaves[i]);
        } else {
            obj = Py_None;
            Py_INCREF(obj);
        }
        PyObject *item = obj ? Py_BuildValue("(NNN)", obj, PyLong_FromVoidPtr(leaves[i]),
                                             dims_tuple(e->ndim, e->shape)) : NULL;
        if (!item) {
            Py_CLEAR(t);
            goto done;
        }
        PyTuple_SET_ITEM(t, i, item);
    }
done:
    if (fns && leaves)
        for (int i = 0; i < n->n_inputs; i++) {
            mmu_node_decref(fns[i]);
            mmu_tensor_decref(leaves[i]);
        }
    free(fns);
    free(leaves);
    return t;
}

/* The saved tensors; a saved output is handed back attached to this node (a
 * tensor sharing its storage whose grad_fn is the node: torch's SavedVariable
 * unpacking), made only now so that the node never holds its own output. */
static PyObject *node_get_saved(PyNode *self, void *c) {
    mmu_node *n = self->n;
    mmu_tensor *saved[MMU_MAX_SAVED];
    mmu_graph_lock(); /* a backward in another thread may be freeing them */
    /* the double-backward engine reads them: the same version check as the C engine's */
    mmu_status vst = mmu_check_saved_versions(n, "autograd.grad");
    for (int s = 0; s < MMU_MAX_SAVED; s++) {
        saved[s] = vst ? NULL : n->saved[s];
        mmu_tensor_incref(saved[s]);
    }
    mmu_graph_unlock();
    if (vst) return mmu_raise(vst);
    PyObject *t = PyTuple_New(MMU_MAX_SAVED);
    for (int s = 0; t && s < MMU_MAX_SAVED; s++) {
        mmu_tensor *v = saved[s];
        PyObject *obj;
        if (!v) {
            obj = Py_None;
            Py_INCREF(obj);
        } else if (n->saved_output_mask & (1u << s)) {
            mmu_tensor *a = NULL;
            mmu_status st = mmu_tensor_detach(&a, v);
            if (st) {
                Py_CLEAR(t);
                mmu_raise(st);
                break;
            }
            mmu_node_incref(n);
            a->grad_fn = n;
            a->requires_grad = 1;
            obj = mmu_wrap(a);
        } else {
            mmu_tensor_incref(v);
            obj = mmu_wrap(v);
        }
        if (!obj) {
            Py_CLEAR(t);
            break;
        }
        PyTuple_SET_ITEM(t, s, obj);
    }
    for (int s = 0; s < MMU_MAX_SAVED; s++) mmu_tensor_decref(saved[s]);
    return t;
}

/* The length of an array field: a number, `ndim` (input 0's dims), `n_inputs`,
 * or an int field decoded before (a key of d). -1 with an error set. */
static int64_t field_length(const char *len, size_t n, mmu_node *node, PyObject *d, const char *op) {
    char word[32];
    if (n == 0 || n >= sizeof word) goto bad;
    memcpy(word, len, n);
    word[n] = 0;
    if (isdigit((unsigned char)word[0])) return strtoll(word, NULL, 10);
    if (!strcmp(word, "ndim")) return node->n_inputs > 0 ? node->inputs[0].ndim : 0;
    if (!strcmp(word, "n_inputs")) return node->n_inputs;
    PyObject *v = PyDict_GetItemString(d, word);
    if (v && PyLong_Check(v)) return PyLong_AsLongLong(v);
bad:
    PyErr_Format(PyExc_RuntimeError, "graph introspection: op %s: bad array length '%.*s' in its op-table fields", op,
                 (int)n, len);
    return -1;
}

/* The number of slots a field list reserves ("a[L/R]" reserves R, "a[L]" L),
 * without reading any value: a reserve must be a number, `ndim`, `n_inputs`
 * or a field already in d. -1 with an error set. */
static int64_t field_slots(const char *spec, mmu_node *node, PyObject *d, const char *op) {
    int64_t slots = 0;
    for (const char *p = spec; *p;) {
        while (*p == ' ') p++;
        if (!*p) break;
        while (*p && *p != ' ' && *p != '[') p++;
        int64_t used = 1;
        if (*p == '[') {
            const char *l = ++p;
            while (*p && *p != ']' && *p != '/') p++;
            const char *r = l, *r_end = p;
            if (*p == '/') {
                r = ++p;
                while (*p && *p != ']') p++;
                r_end = p;
            }
            if (*p == ']') p++;
            if ((used = field_length(r, (size_t)(r_end - r), node, d, op)) < 0) return -1;
        }
        slots += used;
    }
    return slots;
}

/* Decodes one field list of the op table ("a b[L] c[L/R]", core/op_table.h)
 * into d: ints from iv, or doubles from fv, each field at the next slot, at
 * most cap slots. -1 with an error set. */
static int decode_fields(PyObject *d, const char *spec, const int64_t *iv, const double *fv, int cap, mmu_node *node,
                         const char *op) {
    int slot = 0;
    for (const char *p = spec; *p;) {
        while (*p == ' ') p++;
        if (!*p) break;
        const char *name = p;
        while (*p && *p != ' ' && *p != '[') p++;
        size_t name_n = (size_t)(p - name);
        int64_t len = -1, reserve = -1; /* -1: a scalar */
        if (*p == '[') {
            const char *l = ++p;
            while (*p && *p != ']' && *p != '/') p++;
            if ((len = field_length(l, (size_t)(p - l), node, d, op)) < 0) return -1;
            reserve = len;
            if (*p == '/') {
                const char *r = ++p;
                while (*p && *p != ']') p++;
                if ((reserve = field_length(r, (size_t)(p - r), node, d, op)) < 0) return -1;
            }
            if (*p++ != ']' || len > reserve) {
                PyErr_Format(PyExc_RuntimeError, "graph introspection: op %s: bad field list '%s'", op, spec);
                return -1;
            }
        }
        int64_t used = reserve < 0 ? 1 : reserve;
        if (cap >= 0 && slot + used > cap) {
            PyErr_Format(PyExc_RuntimeError, "graph introspection: op %s: its fields '%s' need more than %d slots", op,
                         spec, cap);
            return -1;
        }
        PyObject *v;
        if (len < 0) {
            v = iv ? PyLong_FromLongLong(iv[slot]) : PyFloat_FromDouble(fv[slot]);
        } else if ((v = PyTuple_New(len))) {
            for (int64_t k = 0; k < len; k++) {
                PyObject *e = iv ? PyLong_FromLongLong(iv[slot + k]) : PyFloat_FromDouble(fv[slot + k]);
                if (!e) {
                    Py_CLEAR(v);
                    break;
                }
                PyTuple_SET_ITEM(v, k, e);
            }
        }
        PyObject *key = v ? PyUnicode_FromStringAndSize(name, (Py_ssize_t)name_n) : NULL;
        int bad = !key || PyDict_SetItem(d, key, v) < 0;
        Py_XDECREF(key);
        Py_XDECREF(v);
        if (bad) return -1;
        slot += (int)used;
    }
    return 0;
}

/* {field: value} for the node's ctx.i, ctx.f and extra, named by the op table
 * (the extra's fields are absent once a backward has freed it). ctx is fixed
 * when the op records the node; the extra is copied under the graph lock (a
 * backward in another thread may free it) and decoded after it, since making
 * Python objects may run a collection, and that anything, even a backward. */
static PyObject *node_get_ctx(PyNode *self, void *c) {
    mmu_node *n = self->n;
    const mmu_op_info *info = &mmu_op_table[n->op];
    int64_t buf[64], *copy = NULL;
    PyObject *d = PyDict_New();
    if (!d) return NULL;
    if (decode_fields(d, info->ctx_i, n->ctx.i, NULL, 8, n, info->name) < 0 ||
        decode_fields(d, info->ctx_f, NULL, n->ctx.f, 4, n, info->name) < 0)
        goto fail;
    if (info->extra[0]) {
        int64_t slots = field_slots(info->extra, n, d, info->name);
        if (slots < 0) goto fail;
        copy = slots <= 64 ? buf : malloc((size_t)slots * sizeof *copy);
        if (!copy) {
            PyErr_NoMemory();
            goto fail;
        }
        mmu_graph_lock();
        int present = n->extra != NULL;
        if (present) memcpy(copy, n->extra, (size_t)slots * sizeof *copy);
        mmu_graph_unlock();
        if (present && decode_fields(d, info->extra, copy, NULL, (int)slots, n, info->name) < 0) goto fail;
        if (copy != buf) free(copy);
    }
    return d;
fail:
    if (copy && copy != buf) free(copy);
    Py_DECREF(d);
    return NULL;
}

static PyObject *node_release(PyNode *self, PyObject *unused) {
    mmu_node_release(self->n);
    Py_RETURN_NONE;
}

static Py_hash_t node_hash(PyNode *self) { return _Py_HashPointer(self->n); }

static PyObject *node_richcompare(PyObject *a, PyObject *b, int op) {
    if ((op != Py_EQ && op != Py_NE) || Py_TYPE(a) != node_type || Py_TYPE(b) != node_type) Py_RETURN_NOTIMPLEMENTED;
    int eq = ((PyNode *)a)->n == ((PyNode *)b)->n;
    return PyBool_FromLong(op == Py_EQ ? eq : !eq);
}

static PyObject *node_repr(PyNode *self) {
    return PyUnicode_FromFormat("<mmu autograd Node %s at %p>", mmu_op_table[self->n->op].name, (void *)self->n);
}

static PyGetSetDef node_getset[] = {
    {"op", (getter)node_get_op, NULL, "The op's name in the op table (e.g. 'CONV').", NULL},
    {"id", (getter)node_get_id, NULL, "The node's address (a stable key while the node lives).", NULL},
    {"released", (getter)node_get_released, NULL, "True once a backward freed its saved tensors.", NULL},
    {"out_shape", (getter)node_get_out_shape, NULL, "Shape of the op's output.", NULL},
    {"inputs", (getter)node_get_inputs, NULL, "Per input: (Node | leaf Tensor | None, leaf id, shape).", NULL},
    {"saved", (getter)node_get_saved, NULL, "The saved tensors (outputs re-attached to this node).", NULL},
    {"ctx", (getter)node_get_ctx, NULL,
     "The op's small parameters as {name: value} (ctx.i, ctx.f and extra, named by core/op_table.h).", NULL},
    {NULL},
};

static PyMethodDef node_methods[] = {
    {"release", (PyCFunction)node_release, METH_NOARGS, "Free the saved tensors and edges (retain_graph=False)."},
    {NULL},
};

static PyType_Slot node_slots[] = {
    {Py_tp_dealloc, node_dealloc},   {Py_tp_getset, node_getset},         {Py_tp_methods, node_methods},
    {Py_tp_hash, node_hash},         {Py_tp_richcompare, node_richcompare}, {Py_tp_repr, node_repr},
    {Py_tp_doc, "A handle on one node of the autograd graph (read-only introspection)."},
    {0, NULL},
};

static PyType_Spec node_spec = {"mmu._C.Node", sizeof(PyNode), 0, Py_TPFLAGS_DEFAULT, node_slots};

static int node_type_ready(void) {
    if (node_type) return 0;
    node_type = (PyTypeObject *)PyType_FromSpec(&node_spec);
    return node_type ? 0 : -1;
}

/* graph_node(tensor) -> (Node or None, tensor id): the tensor's grad_fn and its address (leaf identity) */
static PyObject *py_graph_node(PyObject *m, PyObject *o) {
    if (!node_type) {
        if (node_type_ready() < 0) return NULL;
        if (PyModule_Check(m) && PyModule_AddObjectRef(m, "Node", (PyObject *)node_type) < 0) return NULL;
    }
    if (!PyTensor_Check(o)) return PyErr_Format(PyExc_TypeError, "graph_node: expected a Tensor, got %s",
                                                Py_TYPE(o)->tp_name);
    mmu_tensor *t = ((PyTensor *)o)->t;
    PyObject *node = t->grad_fn ? wrap_node(t->grad_fn) : (Py_INCREF(Py_None), Py_None);
    if (!node) return NULL;
    return Py_BuildValue("(NN)", node, PyLong_FromVoidPtr(t));
}

static PyObject *py_nodes_run(PyObject *m, PyObject *unused) { return PyLong_FromLongLong(mmu_autograd_nodes_run()); }
static PyObject *py_grads_computed(PyObject *m, PyObject *unused) {
    return PyLong_FromLongLong(mmu_autograd_grads_computed());
}

/* ------------------------------------------------ post-accumulate-grad hooks
 * Tensor.register_post_accumulate_grad_hook (mmu/autograd.py) keeps a leaf's
 * hooks in t->grad_hooks: a grad_hooks record holding a weak reference to the
 * Python Tensor that registered them (the hooks get that object, as torch's get
 * the parameter) and a dict {key: fn} in registration order. The engine calls
 * run_grad_hooks with the GIL released; it takes the GIL for the calls. An
 * exception of a hook stops the backward and is re-raised by Tensor.backward
 * as it was (mmu_grad_hook_error). */
typedef struct {
    PyObject *owner;  /* weakref to the registering Tensor */
    PyObject *fns;    /* dict {int key: callable} */
    long next_key;
} grad_hooks;

/* the exception a hook raised in this thread's backward (PyErr_Fetch's three parts: Python 3.11 has no
 * PyErr_GetRaisedException) */
static _Thread_local PyObject *g_hook_exc, *g_hook_val, *g_hook_tb;

static void free_grad_hooks(void *p) {
    grad_hooks *h = p;
    PyGILState_STATE gs = PyGILState_Ensure();
    Py_XDECREF(h->owner);
    Py_XDECREF(h->fns);
    PyGILState_Release(gs);
    free(h);
}

static mmu_status run_grad_hooks(mmu_tensor *leaf) {
    mmu_status st = MMU_OK;
    PyGILState_STATE gs = PyGILState_Ensure();
    grad_hooks *h = leaf->grad_hooks;
    PyObject *fns = NULL, *obj = NULL;
    if (!h || !(fns = PyDict_Values(h->fns))) goto fail; /* values copied: a hook may remove itself */
    obj = PyWeakref_GetObject(h->owner);
    if (obj && obj != Py_None) Py_INCREF(obj);
    else {
        mmu_tensor_incref(leaf);
        obj = mmu_wrap(leaf);
    }
    if (!obj) goto fail;
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(fns); i++) {
        PyObject *r = PyObject_CallOneArg(PyList_GET_ITEM(fns, i), obj);
        if (!r) goto fail;
        if (r != Py_None) {
            Py_DECREF(r);
            PyErr_Format(PyExc_RuntimeError, "backward: a post-accumulate-grad hook must return None, got %s",
                         Py_TYPE(r)->tp_name);
            goto fail;
        }
        Py_DECREF(r);
    }
    goto done;
fail:
    if (PyErr_Occurred()) {
        Py_CLEAR(g_hook_exc);
        Py_CLEAR(g_hook_val);
        Py_CLEAR(g_hook_tb);
        PyErr_Fetch(&g_hook_exc, &g_hook_val, &g_hook_tb);
        st = mmu_fail(MMU_ERUNTIME, "backward: a post-accumulate-grad hook raised an exception");
    }
done:
    Py_XDECREF(fns);
    Py_XDECREF(obj);
    PyGILState_Release(gs);
    return st;
}

int mmu_grad_hook_error(void) {
    if (!g_hook_exc) return 0;
    PyErr_Restore(g_hook_exc, g_hook_val, g_hook_tb);
    g_hook_exc = g_hook_val = g_hook_tb = NULL;
    return 1;
}

/* _add_post_accumulate_grad_hook(tensor, fn) -> key */
static PyObject *py_add_grad_hook(PyObject *self, PyObject *args) {
    PyObject *to, *fn;
    if (!PyArg_ParseTuple(args, "OO", &to, &fn)) return NULL;
    if (!PyTensor_Check(to))
        return PyErr_Format(PyExc_TypeError, "register_post_accumulate_grad_hook: expected a Tensor, got %s",
                            Py_TYPE(to)->tp_name);
    if (!PyCallable_Check(fn))
        return PyErr_Format(PyExc_TypeError, "register_post_accumulate_grad_hook: hook must be callable, got %s",
                            Py_TYPE(fn)->tp_name);
    mmu_tensor *t = ((PyTensor *)to)->t;
    if (t->grad_fn || !t->requires_grad)
        return PyErr_Format(PyExc_RuntimeError, "register_post_accumulate_grad_hook: post accumulate grad hooks "
                            "cannot be registered on %s (shape %s); only leaf tensors that require grad",
                            t->grad_fn ? "non-leaf tensors" : "a tensor that does not require grad",
                            mmu_shape_str(t));
    mmu_grad_hooks_run = run_grad_hooks;
    mmu_grad_hooks_free = free_grad_hooks;
    grad_hooks *h = t->grad_hooks;
    if (!h) {
        if (!(h = calloc(1, sizeof *h))) return PyErr_NoMemory();
        h->owner = PyWeakref_NewRef(to, NULL);
        h->fns = PyDict_New();
        if (!h->owner || !h->fns) {
            Py_XDECREF(h->owner);
            Py_XDECREF(h->fns);
            free(h);
            return NULL;
        }
        t->grad_hooks = h;
    }
    PyObject *key = PyLong_FromLong(h->next_key++);
    if (!key || PyDict_SetItem(h->fns, key, fn) < 0) {
        Py_XDECREF(key);
        return NULL;
    }
    return key;
}

/* _remove_post_accumulate_grad_hook(tensor, key) -> bool (False: already removed) */
static PyObject *py_remove_grad_hook(PyObject *self, PyObject *args) {
    PyObject *to, *key;
    if (!PyArg_ParseTuple(args, "OO", &to, &key)) return NULL;
    if (!PyTensor_Check(to)) return PyErr_Format(PyExc_TypeError, "expected a Tensor, got %s", Py_TYPE(to)->tp_name);
    mmu_tensor *t = ((PyTensor *)to)->t;
    grad_hooks *h = t->grad_hooks;
    if (!h) Py_RETURN_FALSE;
    int has = PyDict_Contains(h->fns, key);
    if (has < 0) return NULL;
    if (!has) Py_RETURN_FALSE;
    if (PyDict_DelItem(h->fns, key) < 0) return NULL;
    if (PyDict_GET_SIZE(h->fns) == 0) { /* no hooks left: the engine skips this leaf again */
        t->grad_hooks = NULL;
        free_grad_hooks(h);
    }
    Py_RETURN_TRUE;
}

PyMethodDef mmu_autograd_methods[] = {
    {"_add_post_accumulate_grad_hook", py_add_grad_hook, METH_VARARGS,
     "_add_post_accumulate_grad_hook(leaf, fn) -> key (Tensor.register_post_accumulate_grad_hook)."},
    {"_remove_post_accumulate_grad_hook", py_remove_grad_hook, METH_VARARGS,
     "_remove_post_accumulate_grad_hook(leaf, key) -> bool."},
    {"grad", py_grad, METH_VARARGS,
     "grad(outputs, grad_outputs, inputs, retain_graph, allow_unused) -> tuple: gradients of chosen inputs."},
    {"graph_node", py_graph_node, METH_O, "graph_node(tensor) -> (Node or None, tensor id)."},
    {"autograd_nodes_run", py_nodes_run, METH_NOARGS, "Backward functions run so far (pruning tests)."},
    {"autograd_grads_computed", py_grads_computed, METH_NOARGS,
     "Input gradients the backward functions have produced so far (pruning tests)."},
    {NULL, NULL, 0, NULL},
};

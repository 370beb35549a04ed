/* mmu._C entry points: fused optimizer updates (csrc/optim). mmu/optim/
 * decides which parameters take part (those with a .grad) and owns the
 * state tensors; these take parallel lists of Tensors, read each parameter's
 * gradient here (under the core's leaf lock), and run one C call per list
 * with the GIL released. Every tensor is held by a reference of our own for
 * the duration of the call, so another thread rebinding .grad or the lists
 * cannot free memory under the kernel. */
#include "binding.h"

#include "../ops/ops.h"

typedef struct {
    Py_ssize_t n;
    mmu_tensor **t; /* n new references (entries may be NULL) */
} tlist;

static void tlist_free(tlist *l) {
    if (!l->t) return;
    for (Py_ssize_t i = 0; i < l->n; i++) mmu_tensor_decref(l->t[i]);
    PyMem_Free(l->t);
    l->t = NULL;
}

static int tlist_alloc(tlist *l, Py_ssize_t n) {
    l->n = n;
    l->t = PyMem_Calloc(n ? (size_t)n : 1, sizeof *l->t);
    if (!l->t) {
        PyErr_NoMemory();
        return -1;
    }
    return 0;
}

/* A list/tuple of n Tensors (n < 0: any length) -> l. */
static int tlist_from(tlist *l, PyObject *seq, Py_ssize_t n, const char *op, const char *what) {
    PyObject *fast = PySequence_Fast(seq, "");
    if (!fast) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a list of Tensors, got %s", op, what, Py_TYPE(seq)->tp_name);
        return -1;
    }
    Py_ssize_t len = PySequence_Fast_GET_SIZE(fast);
    if (n >= 0 && len != n) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "%s: %s has %zd entries, expected %zd", op, what, len, n);
        return -1;
    }
    if (len > INT32_MAX / 2 || tlist_alloc(l, len)) {
        Py_DECREF(fast);
        if (!PyErr_Occurred()) PyErr_Format(PyExc_ValueError, "%s: too many tensors", op);
        return -1;
    }
    for (Py_ssize_t i = 0; i < len; i++) {
        PyObject *o = PySequence_Fast_GET_ITEM(fast, i);
        if (!PyTensor_Check(o)) {
            Py_DECREF(fast);
            tlist_free(l);
            PyErr_Format(PyExc_TypeError, "%s: %s[%zd] must be a Tensor, got %s", op, what, i, Py_TYPE(o)->tp_name);
            return -1;
        }
        l->t[i] = ((PyTensor *)o)->t;
        mmu_tensor_incref(l->t[i]);
    }
    Py_DECREF(fast);
    return 0;
}

/* The .grad of every parameter in p (each must have one). */
static int grads_of(tlist *g, const tlist *p, const char *op) {
    if (tlist_alloc(g, p->n)) return -1;
    for (Py_ssize_t i = 0; i < p->n; i++) {
        g->t[i] = mmu_get_grad(p->t[i]);
        if (!g->t[i]) {
            tlist_free(g);
            PyErr_Format(PyExc_ValueError, "%s: parameter %zd has no .grad", op, i);
            return -1;
        }
    }
    return 0;
}

/* A list of n ints -> int64 array (PyMem). */
static int64_t *int_list(PyObject *seq, Py_ssize_t n, const char *op, const char *what) {
    PyObject *fast = PySequence_Fast(seq, "");
    if (!fast) {
        PyErr_Format(PyExc_TypeError, "%s: %s must be a list of ints", op, what);
        return NULL;
    }
    if (PySequence_Fast_GET_SIZE(fast) != n) {
        Py_DECREF(fast);
        PyErr_Format(PyExc_ValueError, "%s: %s has %zd entries, expected %zd", op, what,
                     PySequence_Fast_GET_SIZE(fast), n);
        return NULL;
    }
    int64_t *v = PyMem_Malloc((n ? (size_t)n : 1) * sizeof *v);
    if (!v) {
        Py_DECREF(fast);
        PyErr_NoMemory();
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        v[i] = PyLong_AsLongLong(PySequence_Fast_GET_ITEM(fast, i));
        if (v[i] == -1 && PyErr_Occurred()) {
            Py_DECREF(fast);
            PyMem_Free(v);
            return NULL;
        }
    }
    Py_DECREF(fast);
    return v;
}

/* adam_step(params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs | None, steps, lr, beta1, beta2, eps,
 *           weight_decay, decoupled, amsgrad, maximize) */
static PyObject *py_adam_step(PyObject *m, PyObject *args) {
    PyObject *po, *mo, *vo, *xo, *so;
    mmu_adam_hparams h = {0};
    if (!PyArg_ParseTuple(args, "OOOOOdddddppp", &po, &mo, &vo, &xo, &so, &h.lr, &h.beta1, &h.beta2, &h.eps,
                          &h.weight_decay, &h.decoupled, &h.amsgrad, &h.maximize))
        return NULL;
    const char *op = h.decoupled ? "adamw" : "adam";
    tlist p = {0}, g = {0}, ea = {0}, eq = {0}, mx = {0};
    int64_t *steps = NULL;
    PyObject *ret = NULL;
    if (tlist_from(&p, po, -1, op, "params") || tlist_from(&ea, mo, p.n, op, "exp_avgs") ||
        tlist_from(&eq, vo, p.n, op, "exp_avg_sqs"))
        goto done;
    if (h.amsgrad && tlist_from(&mx, xo, p.n, op, "max_exp_avg_sqs")) goto done;
    if (!(steps = int_list(so, p.n, op, "steps")) || grads_of(&g, &p, op)) goto done;
    mmu_status st;
    MMU_NOGIL(st, mmu_adam_step((int)p.n, p.t, g.t, ea.t, eq.t, h.amsgrad ? mx.t : NULL, steps, &h));
    if (st) mmu_raise(st);
    else ret = Py_NewRef(Py_None);
done:
    tlist_free(&p), tlist_free(&g), tlist_free(&ea), tlist_free(&eq), tlist_free(&mx);
    PyMem_Free(steps);
    return ret;
}

/* sgd_step(params, momentum_buffers | None, firsts | None, lr, momentum, dampening, weight_decay,
 *          nesterov, maximize) */
static PyObject *py_sgd_step(PyObject *m, PyObject *args) {
    PyObject *po, *bo, *fo;
    mmu_sgd_hparams h = {0};
    if (!PyArg_ParseTuple(args, "OOOddddpp", &po, &bo, &fo, &h.lr, &h.momentum, &h.dampening, &h.weight_decay,
                          &h.nesterov, &h.maximize))
        return NULL;
    const char *op = "sgd";
    tlist p = {0}, g = {0}, b = {0};
    int64_t *first = NULL;
    uint8_t *first8 = NULL;
    PyObject *ret = NULL;
    if (tlist_from(&p, po, -1, op, "params")) goto done;
    if (h.momentum != 0.0) {
        if (tlist_from(&b, bo, p.n, op, "momentum_buffers") || !(first = int_list(fo, p.n, op, "firsts"))) goto done;
        if (!(first8 = PyMem_Malloc(p.n ? (size_t)p.n : 1))) {
            PyErr_NoMemory();
            goto done;
        }
        for (Py_ssize_t i = 0; i < p.n; i++) first8[i] = first[i] != 0;
    }
    if (grads_of(&g, &p, op)) goto done;
    mmu_status st;
    MMU_NOGIL(st, mmu_sgd_step((int)p.n, p.t, g.t, b.t, first8, &h));
    if (st) mmu_raise(st);
    else ret = Py_NewRef(Py_None);
done:
    tlist_free(&p), tlist_free(&g), tlist_free(&b);
    PyMem_Free(first);
    PyMem_Free(first8);
    return ret;
}

/* grad_norm(params, norm_type) -> float: the norm of all the params' grads together */
static PyObject *py_grad_norm(PyObject *m, PyObject *args) {
    PyObject *po;
    double p_norm, out = 0.0;
    if (!PyArg_ParseTuple(args, "Od", &po, &p_norm)) return NULL;
    tlist p = {0}, g = {0};
    PyObject *ret = NULL;
    if (tlist_from(&p, po, -1, "clip_grad_norm_", "parameters") || grads_of(&g, &p, "clip_grad_norm_")) goto done;
    mmu_status st;
    MMU_NOGIL(st, mmu_multi_norm(&out, (int)g.n, g.t, p_norm));
    if (st) mmu_raise(st);
    else ret = PyFloat_FromDouble(out);
done:
    tlist_free(&p), tlist_free(&g);
    return ret;
}

/* grad_scale_(params, coef): every param's grad *= coef, in place. A gradient
 * buffer the backward engine handed to several leaves (e.g. both inputs of an
 * add) or that is a view of other memory is first replaced by a private copy,
 * so each parameter's gradient is scaled exactly once, as with torch's
 * distinct .grad tensors. */
static PyObject *py_grad_scale(PyObject *m, PyObject *args) {
    PyObject *po;
    double c;
    if (!PyArg_ParseTuple(args, "Od", &po, &c)) return NULL;
    tlist p = {0}, g = {0};
    PyObject *ret = NULL;
    mmu_status st = MMU_OK;
    if (tlist_from(&p, po, -1, "clip_grad_norm_", "parameters") || grads_of(&g, &p, "clip_grad_norm_")) goto done;
    for (Py_ssize_t i = 0; i < g.n && !st; i++) {
        int shared = __atomic_load_n(&g.t[i]->storage->refcount, __ATOMIC_ACQUIRE) > 1;
        for (Py_ssize_t j = 0; j < i && !shared; j++) shared = g.t[j]->storage == g.t[i]->storage;
        if (!shared) continue;
        mmu_tensor *copy = NULL;
        if ((st = mmu_tensor_clone(&copy, g.t[i]))) break;
        mmu_set_grad(p.t[i], copy);
        mmu_tensor_decref(g.t[i]);
        g.t[i] = copy; /* our reference; .grad holds its own */
    }
    if (!st) MMU_NOGIL(st, mmu_multi_scale_((int)g.n, g.t, (float)c));
    if (st) mmu_raise(st);
    else ret = Py_NewRef(Py_None);
done:
    tlist_free(&p), tlist_free(&g);
    return ret;
}

/* multi_lerp_(shadows, sources, weight): shadow = lerp(shadow, source, weight) for every pair */
static PyObject *py_multi_lerp(PyObject *m, PyObject *args) {
    PyObject *so, *xo;
    double w;
    if (!PyArg_ParseTuple(args, "OOd", &so, &xo, &w)) return NULL;
    tlist s = {0}, x = {0};
    PyObject *ret = NULL;
    if (tlist_from(&s, so, -1, "ema_update", "shadow") || tlist_from(&x, xo, s.n, "ema_update", "params")) goto done;
    mmu_status st;
    MMU_NOGIL(st, mmu_multi_lerp_((int)s.n, s.t, x.t, w));
    if (st) mmu_raise(st);
    else ret = Py_NewRef(Py_None);
done:
    tlist_free(&s), tlist_free(&x);
    return ret;
}

PyMethodDef mmu_optim_methods[] = {
    {"adam_step", py_adam_step, METH_VARARGS,
     "adam_step(params, exp_avgs, exp_avg_sqs, max_exp_avg_sqs, steps, lr, beta1, beta2, eps, weight_decay, "
     "decoupled, amsgrad, maximize): one fused Adam/AdamW update of every param (in place)."},
    {"sgd_step", py_sgd_step, METH_VARARGS,
     "sgd_step(params, momentum_buffers, firsts, lr, momentum, dampening, weight_decay, nesterov, maximize)."},
    {"grad_norm", py_grad_norm, METH_VARARGS, "grad_norm(params, norm_type) -> float (double precision)."},
    {"grad_scale_", py_grad_scale, METH_VARARGS, "grad_scale_(params, coef): scale every param's .grad in place."},
    {"multi_lerp_", py_multi_lerp, METH_VARARGS, "multi_lerp_(shadows, sources, weight): fused lerp_ in place."},
    {NULL, NULL, 0, NULL},
};

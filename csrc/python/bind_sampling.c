/* mmu._C entry points: the Generator type and the samplers (csrc/ops/sampling.c). */
#include "binding.h"

#include "../ops/ops.h"

/* ------------------------------------------------------------- Generator */
typedef struct {
    PyObject_HEAD
    mmu_generator *g; /* heap-allocated: its mutex must not move */
} PyGenerator;

static PyTypeObject *generator_type;

/* An int (or anything with __index__, not bool-only objects like float) -> its low 64 bits,
 * as mmu.manual_seed takes a seed (negative seeds wrap, like torch's). */
static int parse_seed(PyObject *obj, uint64_t *seed, const char *op) {
    if (!PyIndex_Check(obj)) {
        PyErr_Format(PyExc_TypeError, "%s: seed must be an int, got %s", op, Py_TYPE(obj)->tp_name);
        return -1;
    }
    PyObject *i = PyNumber_Index(obj);
    if (!i) return -1;
    unsigned long long v = PyLong_AsUnsignedLongLongMask(i);
    Py_DECREF(i);
    if (v == (unsigned long long)-1 && PyErr_Occurred()) return -1;
    *seed = v;
    return 0;
}

static PyObject *generator_new(PyTypeObject *type, PyObject *args, PyObject *kwargs) {
    static char *kwlist[] = {"seed", NULL};
    PyObject *seed_obj = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "|O:Generator", kwlist, &seed_obj)) return NULL;
    uint64_t seed = mmu_generator_default_seed();
    if (seed_obj != Py_None && parse_seed(seed_obj, &seed, "Generator") < 0) return NULL;
    PyGenerator *self = (PyGenerator *)type->tp_alloc(type, 0);
    if (!self) return NULL;
    if (!(self->g = malloc(sizeof *self->g))) {
        Py_DECREF(self);
        return PyErr_NoMemory();
    }
    mmu_generator_init(self->g, seed);
    return (PyObject *)self;
}

static void generator_dealloc(PyGenerator *self) {
    PyTypeObject *tp = Py_TYPE(self);
    if (self->g) {
        mmu_generator_destroy(self->g);
        free(self->g);
    }
    tp->tp_free((PyObject *)self);
    Py_DECREF(tp);
}

static PyObject *generator_manual_seed(PyGenerator *self, PyObject *arg) {
    uint64_t seed;
    if (parse_seed(arg, &seed, "Generator.manual_seed") < 0) return NULL;
    mmu_generator_set_state(self->g, seed, 0);
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *generator_initial_seed(PyGenerator *self, PyObject *unused) {
    uint64_t seed, offset;
    mmu_generator_get_state(self->g, &seed, &offset);
    return PyLong_FromUnsignedLongLong(seed);
}

static PyObject *generator_get_state(PyGenerator *self, PyObject *unused) {
    uint64_t seed, offset;
    mmu_generator_get_state(self->g, &seed, &offset);
    return Py_BuildValue("(KK)", (unsigned long long)seed, (unsigned long long)offset);
}

static PyObject *generator_set_state(PyGenerator *self, PyObject *state) {
    const char *op = "Generator.set_state";
    if (!PyTuple_Check(state) || PyTuple_GET_SIZE(state) != 2 || !PyLong_Check(PyTuple_GET_ITEM(state, 0)) ||
        !PyLong_Check(PyTuple_GET_ITEM(state, 1))) {
        PyErr_Format(PyExc_TypeError, "%s: state must be a (seed, offset) tuple of two ints as get_state() returns, "
                     "got %s", op, Py_TYPE(state)->tp_name);
        return NULL;
    }
    unsigned long long seed = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(state, 0)), offset = 0;
    if (!PyErr_Occurred()) offset = PyLong_AsUnsignedLongLong(PyTuple_GET_ITEM(state, 1));
    if (PyErr_Occurred()) {
        PyErr_Clear();
        PyErr_Format(PyExc_ValueError, "%s: seed and offset must be in [0, 2**64)", op);
        return NULL;
    }
    mmu_generator_set_state(self->g, seed, offset);
    Py_INCREF(self);
    return (PyObject *)self;
}

static PyObject *generator_repr(PyGenerator *self) {
    uint64_t seed, offset;
    mmu_generator_get_state(self->g, &seed, &offset);
    return PyUnicode_FromFormat("mmu.Generator(seed=%llu, offset=%llu)", (unsigned long long)seed,
                                (unsigned long long)offset);
}

static PyMethodDef generator_methods[] = {
    {"manual_seed", (PyCFunction)generator_manual_seed, METH_O,
     "manual_seed(seed) -> self: restart this generator's stream at seed (its low 64 bits), offset 0."},
    {"initial_seed", (PyCFunction)generator_initial_seed, METH_NOARGS,
     "initial_seed() -> int: the seed of this generator's stream (the Philox key)."},
    {"get_state", (PyCFunction)generator_get_state, METH_NOARGS,
     "get_state() -> (seed, offset): the whole state (key and counter, in 128-bit blocks); set_state restores it."},
    {"set_state", (PyCFunction)generator_set_state, METH_O,
     "set_state((seed, offset)) -> self: restore a state from get_state(); the next draws repeat the ones made "
     "after it was taken."},
    {NULL, NULL, 0, NULL},
};

static PyType_Slot generator_slots[] = {
    {Py_tp_new, generator_new},
    {Py_tp_dealloc, generator_dealloc},
    {Py_tp_repr, generator_repr},
    {Py_tp_methods, generator_methods},
    {Py_tp_doc,
     "Generator(seed=None): a random stream of its own for mmu.rand, mmu.randn, mmu.multinomial and the samplers "
     "of mmu.generate (generator=...).\n\n"
     "The same counter-based Philox4x32-10 stream as the global one (mmu.manual_seed): Generator(s) draws the "
     "numbers mmu.manual_seed(s) would, without touching the global stream. Its state is (seed, offset); any "
     "thread count gives the same numbers. seed=None: the global stream's default seed."},
    {0, NULL},
};

static PyType_Spec generator_spec = {"mmu.Generator", sizeof(PyGenerator), 0, Py_TPFLAGS_DEFAULT, generator_slots};

int mmu_sampling_add_types(PyObject *m) {
    generator_type = (PyTypeObject *)PyType_FromSpec(&generator_spec);
    if (!generator_type) return -1;
    Py_INCREF(generator_type);
    if (PyModule_AddObject(m, "Generator", (PyObject *)generator_type) < 0) {
        Py_DECREF(generator_type);
        return -1;
    }
    return 0;
}

int mmu_parse_generator(PyObject *obj, mmu_generator **g, const char *op) {
    *g = NULL;
    if (obj == Py_None) return 0;
    if (!PyObject_TypeCheck(obj, generator_type)) {
        PyErr_Format(PyExc_TypeError, "%s: generator must be an mmu.Generator or None, got %s", op,
                     Py_TYPE(obj)->tp_name);
        return -1;
    }
    *g = ((PyGenerator *)obj)->g;
    return 0;
}

/* ---------------------------------------------------------------- samplers */

/* multinomial(probs, num_samples, replacement, generator) */
static PyObject *py_multinomial(PyObject *m, PyObject *args) {
    const char *op = "multinomial";
    PyObject *po, *no, *go;
    int replacement;
    int64_t n;
    mmu_generator *g;
    tensor_args ta = {0};
    mmu_tensor *p, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOpO", &po, &no, &replacement, &go)) return NULL;
    if (mmu_parse_int64(no, &n, op, "num_samples", 0) < 0 || mmu_parse_generator(go, &g, op) < 0) return NULL;
    if (!(p = arg(&ta, po, MMU_FLOAT32, op, "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_multinomial(&out, p, n, replacement, g));
    return finish(&ta, st, out);
}

/* sample_logits(logits, temperature, top_k (0 = off), top_p (1 = off), greedy, generator) -> (ids, logprobs) */
static PyObject *py_sample_logits(PyObject *m, PyObject *args) {
    const char *op = "sample_logits";
    PyObject *lo, *ko, *go;
    double temperature, top_p;
    int greedy;
    int64_t top_k;
    mmu_generator *g;
    tensor_args ta = {0};
    mmu_tensor *logits, *ids = NULL, *logprobs = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OdOdpO", &lo, &temperature, &ko, &top_p, &greedy, &go)) return NULL;
    if (mmu_parse_int64(ko, &top_k, op, "top_k", 0) < 0 || mmu_parse_generator(go, &g, op) < 0) return NULL;
    if (!(logits = arg(&ta, lo, MMU_FLOAT32, op, "logits"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_sample_logits(&ids, &logprobs, logits, temperature, top_k, top_p, greedy, g));
    PyObject *id_obj = finish(&ta, st, ids);
    if (!id_obj) return NULL;
    PyObject *lp_obj = mmu_wrap(logprobs);
    if (!lp_obj) {
        Py_DECREF(id_obj);
        return NULL;
    }
    return Py_BuildValue("(NN)", id_obj, lp_obj);
}

PyMethodDef mmu_sampling_methods[] = {
    {"multinomial", py_multinomial, METH_VARARGS, "multinomial(probs, num_samples, replacement, generator)"},
    {"sample_logits", py_sample_logits, METH_VARARGS,
     "sample_logits(logits, temperature, top_k, top_p, greedy, generator) -> (ids, logprobs)"},
    {NULL, NULL, 0, NULL},
};

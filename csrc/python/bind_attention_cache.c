/* mmu._C entry point: attention of a block against a cached prefix (csrc/ops/attention_cache.c). */
#include <math.h>

#include "binding.h"

#include "../ops/ops.h"

/* attention_cached(heads, num_heads, num_kv_heads, k_cache, v_cache, prefix_start, prefix_len, query_rows or None,
 *                  scale or None) */
static PyObject *py_attention_cached(PyObject *m, PyObject *args) {
    const char *op = "attention_cached";
    PyObject *zo, *ko, *vo, *po, *ro, *so;
    long long hq, hkv, plen;
    tensor_args ta = {0};
    mmu_tensor *z, *k, *v, *start, *rows = NULL, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OLLOOOLOO", &zo, &hq, &hkv, &ko, &vo, &po, &plen, &ro, &so)) return NULL;
    if (!(z = arg(&ta, zo, MMU_FLOAT32, op, "heads")) || !(k = arg(&ta, ko, MMU_FLOAT32, op, "k_cache")) ||
        !(v = arg(&ta, vo, MMU_FLOAT32, op, "v_cache")) || !(start = arg(&ta, po, MMU_INT64, op, "prefix_start")) ||
        (ro != Py_None && !(rows = arg(&ta, ro, MMU_INT64, op, "query_rows"))))
        return finish(&ta, MMU_OK, NULL);
    double scale = 0.0;
    if (so != Py_None && (scale = PyFloat_AsDouble(so)) == -1.0 && PyErr_Occurred()) return finish(&ta, MMU_OK, NULL);
    if (so == Py_None) scale = z->ndim == 4 && z->shape[3] > 0 ? 1.0 / sqrt((double)z->shape[3]) : 1.0;
    MMU_NOGIL(st, mmu_attention_cached(&out, z, hq, hkv, k, v, start, plen, rows, scale));
    return finish(&ta, st, out);
}

PyMethodDef mmu_attention_cache_methods[] = {
    {"attention_cached", py_attention_cached, METH_VARARGS,
     "attention_cached(heads, num_heads, num_kv_heads, k_cache, v_cache, prefix_start, prefix_len, query_rows, scale)"},
    {NULL},
};

/* mmu._C entry points: layer, group (+ fused SiLU) and RMS norm, normalize (csrc/ops/norm.c). */
#include "binding.h"

#include "../ops/ops.h"

static PyObject *py_layer_norm(PyObject *m, PyObject *args) {
    PyObject *xo, *so, *wo, *bo;
    double eps;
    tensor_args ta = {0};
    mmu_tensor *x, *w = NULL, *b = NULL, *out = NULL;
    mmu_status st;
    int nd;
    int64_t shape[MMU_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "OOOOd", &xo, &so, &wo, &bo, &eps)) return NULL;
    if (mmu_parse_shape(so, &nd, shape, "layer_norm", "normalized_shape") < 0) return NULL;
    if (!(x = arg(&ta, xo, -1, "layer_norm", "input")) ||
        (wo != Py_None && !(w = arg(&ta, wo, -1, "layer_norm", "weight"))) ||
        (bo != Py_None && !(b = arg(&ta, bo, -1, "layer_norm", "bias"))))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_layer_norm(&out, x, nd, shape, w, b, eps));
    return finish(&ta, st, out);
}

/* group_norm / group_norm_silu (x, num_groups, weight, bias, eps): act is MMU_GN_ACT_NONE or _SILU */
static PyObject *group_norm_act(PyObject *args, int act) {
    const char *name = act == MMU_GN_ACT_SILU ? "group_norm_silu" : "group_norm";
    PyObject *xo, *wo, *bo, *go;
    int64_t groups;
    double eps;
    tensor_args ta = {0};
    mmu_tensor *x, *w = NULL, *b = NULL, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOOOd", &xo, &go, &wo, &bo, &eps)) return NULL;
    if (mmu_parse_int64(go, &groups, name, "num_groups", 0) < 0) return NULL;
    if (!(x = arg(&ta, xo, -1, name, "input")) || (wo != Py_None && !(w = arg(&ta, wo, -1, name, "weight"))) ||
        (bo != Py_None && !(b = arg(&ta, bo, -1, name, "bias"))))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_group_norm_act(&out, x, groups, w, b, eps, act));
    return finish(&ta, st, out);
}

static PyObject *py_group_norm(PyObject *m, PyObject *args) { return group_norm_act(args, MMU_GN_ACT_NONE); }

static PyObject *py_group_norm_silu(PyObject *m, PyObject *args) { return group_norm_act(args, MMU_GN_ACT_SILU); }

static PyObject *py_rms_norm(PyObject *m, PyObject *args) {
    PyObject *xo, *so, *wo;
    double eps;
    tensor_args ta = {0};
    mmu_tensor *x, *w = NULL, *out = NULL;
    mmu_status st;
    int nd;
    int64_t shape[MMU_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "OOOd", &xo, &so, &wo, &eps)) return NULL;
    if (mmu_parse_shape(so, &nd, shape, "rms_norm", "normalized_shape") < 0) return NULL;
    if (!(x = arg(&ta, xo, -1, "rms_norm", "input")) || (wo != Py_None && !(w = arg(&ta, wo, -1, "rms_norm", "weight"))))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_rms_norm(&out, x, nd, shape, w, eps));
    return finish(&ta, st, out);
}

static PyObject *py_normalize(PyObject *m, PyObject *args) {
    PyObject *xo, *dim_obj;
    double p, eps;
    int64_t dim;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OdOd", &xo, &p, &dim_obj, &eps)) return NULL;
    if (mmu_parse_int64(dim_obj, &dim, "normalize", "dim", 1) < 0) return NULL;
    if (!(x = arg(&ta, xo, -1, "normalize", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_normalize(&out, x, p, dim, eps));
    return finish(&ta, st, out);
}

PyMethodDef mmu_norm_methods[] = {
    {"layer_norm", py_layer_norm, METH_VARARGS, "layer_norm(x, normalized_shape, weight, bias, eps)"},
    {"group_norm", py_group_norm, METH_VARARGS, "group_norm(x, num_groups, weight, bias, eps)"},
    {"group_norm_silu", py_group_norm_silu, METH_VARARGS, "group_norm_silu(x, num_groups, weight, bias, eps)"},
    {"rms_norm", py_rms_norm, METH_VARARGS, "rms_norm(x, normalized_shape, weight, eps)"},
    {"normalize", py_normalize, METH_VARARGS, "normalize(x, p, dim, eps)"},
    {NULL, NULL, 0, NULL},
};

/* mmu._C entry points: group/rms norm, normalize, dropout, pad, pooling, interpolation, pixel shuffle. */
#include "binding.h"

#include "../ops/ops.h"

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

static PyObject *py_dropout(PyObject *m, PyObject *args) {
    return mmu_call_x_double(args, "dropout", -1, mmu_dropout);
}

static PyObject *py_leaky_relu(PyObject *m, PyObject *args) {
    return mmu_call_x_double(args, "leaky_relu", -1, mmu_leaky_relu);
}

static PyObject *py_pad(PyObject *m, PyObject *args) {
    PyObject *xo, *loo, *hio;
    int mode;
    double value;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    int nlo, nhi;
    int64_t lo[MMU_MAX_DIMS], hi[MMU_MAX_DIMS];
    if (!PyArg_ParseTuple(args, "OOOid", &xo, &loo, &hio, &mode, &value)) return NULL;
    if (mmu_parse_shape(loo, &nlo, lo, "pad", "pad") < 0 || mmu_parse_shape(hio, &nhi, hi, "pad", "pad") < 0)
        return NULL;
    if (!(x = arg(&ta, xo, -1, "pad", "input"))) return finish(&ta, MMU_OK, NULL);
    if (nlo != x->ndim || nhi != x->ndim) {
        finish(&ta, MMU_OK, NULL);
        return PyErr_Format(PyExc_ValueError, "pad: internal error: %d/%d pads for a %d-D input", nlo, nhi, x->ndim);
    }
    MMU_NOGIL(st, mmu_pad(&out, x, lo, hi, mode, value));
    return finish(&ta, st, out);
}

static PyObject *py_avg_pool2d(PyObject *m, PyObject *args) {
    PyObject *xo, *ko, *so, *po, *dvo;
    int ceil_mode, include_pad;
    int64_t divisor;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    int64_t k[2], s[2], p[2];
    if (!PyArg_ParseTuple(args, "OOOOppO", &xo, &ko, &so, &po, &ceil_mode, &include_pad, &dvo)) return NULL;
    if (mmu_parse_int64(dvo, &divisor, "avg_pool2d", "divisor_override", 0) < 0) return NULL;
    if (mmu_parse_ints(ko, 2, k, "avg_pool2d", "kernel_size") < 0 ||
        mmu_parse_ints(so, 2, s, "avg_pool2d", "stride") < 0 || mmu_parse_ints(po, 2, p, "avg_pool2d", "padding") < 0)
        return NULL;
    if (!(x = arg(&ta, xo, -1, "avg_pool2d", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_avg_pool2d(&out, x, k, s, p, ceil_mode, include_pad, divisor));
    return finish(&ta, st, out);
}

static PyObject *py_upsample_nearest(PyObject *m, PyObject *args) {
    PyObject *xo, *so, *sco;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    int nd;
    int64_t size[MMU_MAX_DIMS];
    double scales[3] = {0, 0, 0};
    if (!PyArg_ParseTuple(args, "OOO", &xo, &so, &sco)) return NULL;
    if (mmu_parse_shape(so, &nd, size, "interpolate", "size") < 0) return NULL;
    if (nd < 1 || nd > 3) return PyErr_Format(PyExc_ValueError, "interpolate: 1 to 3 spatial sizes, got %d", nd);
    if (sco != Py_None) {
        if (!PyTuple_Check(sco) || PyTuple_GET_SIZE(sco) != nd)
            return PyErr_Format(PyExc_ValueError, "interpolate: internal error: scales must be a tuple of %d floats", nd);
        for (int i = 0; i < nd; i++) {
            PyObject *v = PyTuple_GET_ITEM(sco, i);
            scales[i] = v == Py_None ? 0.0 : PyFloat_AsDouble(v);
            if (PyErr_Occurred()) return NULL;
        }
    }
    if (!(x = arg(&ta, xo, -1, "interpolate", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_upsample_nearest(&out, x, nd, size, scales));
    return finish(&ta, st, out);
}

static PyObject *py_upsample_bilinear2d(PyObject *m, PyObject *args) {
    PyObject *xo, *oho, *owo;
    int64_t oh, ow;
    int align;
    double sh, sw;
    tensor_args ta = {0};
    mmu_tensor *x, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOOpdd", &xo, &oho, &owo, &align, &sh, &sw)) return NULL;
    if (mmu_parse_int64(oho, &oh, "interpolate", "size", 0) < 0 || mmu_parse_int64(owo, &ow, "interpolate", "size", 0) < 0)
        return NULL;
    if (!(x = arg(&ta, xo, -1, "interpolate", "input"))) return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_upsample_bilinear2d(&out, x, oh, ow, align, sh, sw));
    return finish(&ta, st, out);
}

PyMethodDef mmu_spatial_methods[] = {
    {"group_norm", py_group_norm, METH_VARARGS, "group_norm(x, num_groups, weight, bias, eps)"},
    {"group_norm_silu", py_group_norm_silu, METH_VARARGS, "group_norm_silu(x, num_groups, weight, bias, eps)"},
    {"rms_norm", py_rms_norm, METH_VARARGS, "rms_norm(x, normalized_shape, weight, eps)"},
    {"normalize", py_normalize, METH_VARARGS, "normalize(x, p, dim, eps)"},
    {"dropout", py_dropout, METH_VARARGS, "dropout(x, p): always drops (the caller handles eval / p == 0)"},
    {"leaky_relu", py_leaky_relu, METH_VARARGS, "leaky_relu(x, negative_slope)"},
    {"pad", py_pad, METH_VARARGS, "pad(x, lo, hi, mode, value): lo/hi per dim, first dim first"},
    {"avg_pool2d", py_avg_pool2d, METH_VARARGS,
     "avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_or_0)"},
    {"upsample_nearest", py_upsample_nearest, METH_VARARGS, "upsample_nearest(x, size, scales_or_None)"},
    {"upsample_bilinear2d", py_upsample_bilinear2d, METH_VARARGS,
     "upsample_bilinear2d(x, oh, ow, align_corners, scale_h_or_0, scale_w_or_0)"},
    {NULL, NULL, 0, NULL},
};

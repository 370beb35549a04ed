/* mmu._C entry points: pad and interpolation (csrc/ops/spatial.c). */
#include "binding.h"

#include "../ops/ops.h"

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

int mmu_spatial_add_constants(PyObject *m) {
    static const mmu_code pad_modes[] = {{"constant", MMU_PAD_CONSTANT}, {"reflect", MMU_PAD_REFLECT},
                                         {"replicate", MMU_PAD_REPLICATE}, {"circular", MMU_PAD_CIRCULAR}};
    return mmu_add_codes(m, "PAD_MODES", pad_modes, (int)(sizeof pad_modes / sizeof *pad_modes));
}

PyMethodDef mmu_spatial_methods[] = {
    {"pad", py_pad, METH_VARARGS, "pad(x, lo, hi, mode, value): lo/hi per dim, first dim first"},
    {"upsample_nearest", py_upsample_nearest, METH_VARARGS, "upsample_nearest(x, size, scales_or_None)"},
    {"upsample_bilinear2d", py_upsample_bilinear2d, METH_VARARGS,
     "upsample_bilinear2d(x, oh, ow, align_corners, scale_h_or_0, scale_w_or_0)"},
    {NULL, NULL, 0, NULL},
};

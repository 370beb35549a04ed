/* mmu._C entry points: convolutions and transposed convolutions (csrc/ops/conv.c).
 * mmu/_fn_conv.py normalises the arguments (ints -> tuples of sp entries,
 * 'same'/'valid' -> per-side padding); these take them positionally. */
#include "binding.h"

#include "../ops/ops.h"

static const char *names[2][3] = {{"conv1d", "conv2d", "conv3d"},
                                  {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}};

/* conv(sp, input, weight, bias|None, stride, pad_l, pad_r, dilation, groups) */
static PyObject *py_conv(PyObject *m, PyObject *args) {
    int sp;
    int64_t groups;
    PyObject *xo, *wo, *bo, *so, *plo, *pro, *dlo, *go;
    tensor_args ta = {0};
    mmu_tensor *x, *w, *b = NULL, *out = NULL;
    int64_t stride[3], pl[3], pr[3], dil[3];
    mmu_status st;
    if (!PyArg_ParseTuple(args, "iOOOOOOOO", &sp, &xo, &wo, &bo, &so, &plo, &pro, &dlo, &go)) return NULL;
    if (sp < 1 || sp > 3) return PyErr_Format(PyExc_ValueError, "conv: bad spatial rank %d", sp);
    const char *op = names[0][sp - 1];
    if (mmu_parse_int64(go, &groups, op, "groups", 0) < 0) return NULL;
    if (mmu_parse_ints(so, sp, stride, op, "stride") || mmu_parse_ints(plo, sp, pl, op, "padding") ||
        mmu_parse_ints(pro, sp, pr, op, "padding") || mmu_parse_ints(dlo, sp, dil, op, "dilation"))
        return NULL;
    if (!(x = arg(&ta, xo, MMU_FLOAT32, op, "input")) || !(w = arg(&ta, wo, MMU_FLOAT32, op, "weight")) ||
        (bo != Py_None && !(b = arg(&ta, bo, MMU_FLOAT32, op, "bias"))))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_conv(&out, sp, x, w, b, stride, pl, pr, dil, (int64_t)groups));
    return finish(&ta, st, out);
}

/* conv_transpose(sp, input, weight, bias|None, stride, padding, output_padding, groups, dilation) */
static PyObject *py_conv_transpose(PyObject *m, PyObject *args) {
    int sp;
    int64_t groups;
    PyObject *xo, *wo, *bo, *so, *po, *opo, *dlo, *go;
    tensor_args ta = {0};
    mmu_tensor *x, *w, *b = NULL, *out = NULL;
    int64_t stride[3], pad[3], opad[3], dil[3];
    mmu_status st;
    if (!PyArg_ParseTuple(args, "iOOOOOOOO", &sp, &xo, &wo, &bo, &so, &po, &opo, &go, &dlo)) return NULL;
    if (sp < 1 || sp > 3) return PyErr_Format(PyExc_ValueError, "conv_transpose: bad spatial rank %d", sp);
    const char *op = names[1][sp - 1];
    if (mmu_parse_int64(go, &groups, op, "groups", 0) < 0) return NULL;
    if (mmu_parse_ints(so, sp, stride, op, "stride") || mmu_parse_ints(po, sp, pad, op, "padding") ||
        mmu_parse_ints(opo, sp, opad, op, "output_padding") || mmu_parse_ints(dlo, sp, dil, op, "dilation"))
        return NULL;
    if (!(x = arg(&ta, xo, MMU_FLOAT32, op, "input")) || !(w = arg(&ta, wo, MMU_FLOAT32, op, "weight")) ||
        (bo != Py_None && !(b = arg(&ta, bo, MMU_FLOAT32, op, "bias"))))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_conv_transpose(&out, sp, x, w, b, stride, pad, opad, (int64_t)groups, dil));
    return finish(&ta, st, out);
}

PyMethodDef mmu_conv_methods[] = {
    {"conv", py_conv, METH_VARARGS, "conv(sp, input, weight, bias, stride, pad_l, pad_r, dilation, groups)"},
    {"conv_transpose", py_conv_transpose, METH_VARARGS,
     "conv_transpose(sp, input, weight, bias, stride, padding, output_padding, groups, dilation)"},
    {NULL, NULL, 0, NULL},
};

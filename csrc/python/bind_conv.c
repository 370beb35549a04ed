/* mmu._C entry points: convolutions and transposed convolutions (csrc/ops/conv.c).
 * mmu/_fn_conv.py normalises the arguments (ints -> tuples of sp entries,
 * 'same'/'valid' -> per-side padding); these take them positionally. */
#include "binding.h"

#include "../ops/ops.h"

/* Reads a tuple of exactly sp ints. -1 with an exception on error. */
static int parse_sp(PyObject *obj, int sp, int64_t *v, const char *op, const char *arg) {
    int n;
    int64_t tmp[MMU_MAX_DIMS];
    if (mmu_parse_shape(obj, &n, tmp, op, arg) < 0) return -1;
    if (n != sp) {
        PyErr_Format(PyExc_ValueError, "%s: %s must have %d entries, got %d", op, arg, sp, n);
        return -1;
    }
    memcpy(v, tmp, sp * sizeof(int64_t));
    return 0;
}

static const char *names[2][3] = {{"conv1d", "conv2d", "conv3d"},
                                  {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}};

/* conv(sp, input, weight, bias|None, stride, pad_l, pad_r, dilation, groups) */
static PyObject *py_conv(PyObject *m, PyObject *args) {
    int sp;
    long long groups;
    PyObject *xo, *wo, *bo, *so, *plo, *pro, *dlo;
    tensor_args ta = {0};
    mmu_tensor *x, *w, *b = NULL, *out = NULL;
    int64_t stride[3], pl[3], pr[3], dil[3];
    mmu_status st;
    if (!PyArg_ParseTuple(args, "iOOOOOOOL", &sp, &xo, &wo, &bo, &so, &plo, &pro, &dlo, &groups)) return NULL;
    if (sp < 1 || sp > 3) return PyErr_Format(PyExc_ValueError, "conv: bad spatial rank %d", sp);
    const char *op = names[0][sp - 1];
    if (parse_sp(so, sp, stride, op, "stride") || parse_sp(plo, sp, pl, op, "padding") ||
        parse_sp(pro, sp, pr, op, "padding") || parse_sp(dlo, sp, dil, op, "dilation"))
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
    long long groups;
    PyObject *xo, *wo, *bo, *so, *po, *opo, *dlo;
    tensor_args ta = {0};
    mmu_tensor *x, *w, *b = NULL, *out = NULL;
    int64_t stride[3], pad[3], opad[3], dil[3];
    mmu_status st;
    if (!PyArg_ParseTuple(args, "iOOOOOOLO", &sp, &xo, &wo, &bo, &so, &po, &opo, &groups, &dlo)) return NULL;
    if (sp < 1 || sp > 3) return PyErr_Format(PyExc_ValueError, "conv_transpose: bad spatial rank %d", sp);
    const char *op = names[1][sp - 1];
    if (parse_sp(so, sp, stride, op, "stride") || parse_sp(po, sp, pad, op, "padding") ||
        parse_sp(opo, sp, opad, op, "output_padding") || parse_sp(dlo, sp, dil, op, "dilation"))
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

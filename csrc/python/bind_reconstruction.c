/* mmu._C entry points: fused reconstruction losses (csrc/loss/reconstruction.c): MSE, L1, smooth L1,
 * Huber, logit-Laplace. */
#include "binding.h"

#include "../ops/ops.h"

/* smooth_l1_loss / huber_loss (input, target, reduction, beta or delta) */
static PyObject *robust_loss(PyObject *args, int huber) {
    PyObject *io, *to;
    int red;
    double p;
    tensor_args ta = {0};
    mmu_tensor *in, *target, *out = NULL;
    mmu_status st;
    const char *name = huber ? "huber_loss" : "smooth_l1_loss";
    if (!PyArg_ParseTuple(args, "OOid", &io, &to, &red, &p)) return NULL;
    if (!(in = arg(&ta, io, MMU_FLOAT32, name, "input")) || !(target = arg(&ta, to, MMU_FLOAT32, name, "target")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, huber ? mmu_huber_loss(&out, in, target, (mmu_reduction)red, p)
                        : mmu_smooth_l1_loss(&out, in, target, (mmu_reduction)red, p));
    return finish(&ta, st, out);
}

static PyObject *py_smooth_l1_loss(PyObject *m, PyObject *args) { return robust_loss(args, 0); }
static PyObject *py_huber_loss(PyObject *m, PyObject *args) { return robust_loss(args, 1); }

/* logit_laplace_loss(x, mu, log_b, eps, reduction) */
static PyObject *py_logit_laplace_loss(PyObject *m, PyObject *args) {
    PyObject *xo, *mo, *bo;
    double eps;
    int red;
    tensor_args ta = {0};
    mmu_tensor *x, *mu, *lb, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOOdi", &xo, &mo, &bo, &eps, &red)) return NULL;
    if (!(x = arg(&ta, xo, MMU_FLOAT32, "logit_laplace_loss", "x")) ||
        !(mu = arg(&ta, mo, MMU_FLOAT32, "logit_laplace_loss", "mu")) ||
        !(lb = arg(&ta, bo, MMU_FLOAT32, "logit_laplace_loss", "log_b")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_logit_laplace_loss(&out, x, mu, lb, eps, (mmu_reduction)red));
    return finish(&ta, st, out);
}

/* mse_loss / l1_loss (input, target, reduction) */
static PyObject *regression_loss(PyObject *args, int l1) {
    PyObject *io, *to;
    int red;
    tensor_args ta = {0};
    mmu_tensor *in, *target, *out = NULL;
    mmu_status st;
    const char *name = l1 ? "l1_loss" : "mse_loss";
    if (!PyArg_ParseTuple(args, "OOi", &io, &to, &red)) return NULL;
    if (!(in = arg(&ta, io, MMU_FLOAT32, name, "input")) || !(target = arg(&ta, to, MMU_FLOAT32, name, "target")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, l1 ? mmu_l1_loss(&out, in, target, (mmu_reduction)red)
                     : mmu_mse_loss(&out, in, target, (mmu_reduction)red));
    return finish(&ta, st, out);
}
static PyObject *py_mse_loss(PyObject *m, PyObject *args) { return regression_loss(args, 0); }
static PyObject *py_l1_loss(PyObject *m, PyObject *args) { return regression_loss(args, 1); }

PyMethodDef mmu_reconstruction_methods[] = {
    {"smooth_l1_loss", py_smooth_l1_loss, METH_VARARGS, "smooth_l1_loss(input, target, red, beta)"},
    {"huber_loss", py_huber_loss, METH_VARARGS, "huber_loss(input, target, red, delta)"},
    {"logit_laplace_loss", py_logit_laplace_loss, METH_VARARGS, "logit_laplace_loss(x, mu, log_b, eps, red)"},
    {"mse_loss", py_mse_loss, METH_VARARGS, "mse_loss(input, target, red)"},
    {"l1_loss", py_l1_loss, METH_VARARGS, "l1_loss(input, target, red)"},
    {NULL, NULL, 0, NULL},
};

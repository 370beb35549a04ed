/* mmu._C entry points: fused image-text contrastive losses (csrc/loss/contrastive.c). */
#include "binding.h"

#include "../ops/ops.h"

/* clip_loss(image_emb, text_emb, logit_scale) */
static PyObject *py_clip_loss(PyObject *m, PyObject *args) {
    PyObject *io, *to, *so;
    tensor_args ta = {0};
    mmu_tensor *img, *txt, *ls, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOO", &io, &to, &so)) return NULL;
    if (!(img = arg(&ta, io, MMU_FLOAT32, "clip_loss", "image_emb")) ||
        !(txt = arg(&ta, to, MMU_FLOAT32, "clip_loss", "text_emb")) ||
        !(ls = arg(&ta, so, MMU_FLOAT32, "clip_loss", "logit_scale")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_clip_loss(&out, img, txt, ls));
    return finish(&ta, st, out);
}

/* siglip_loss(image_emb, text_emb, t, b) */
static PyObject *py_siglip_loss(PyObject *m, PyObject *args) {
    PyObject *io, *to, *tto, *bo;
    tensor_args ta = {0};
    mmu_tensor *img, *txt, *t, *b, *out = NULL;
    mmu_status st;
    if (!PyArg_ParseTuple(args, "OOOO", &io, &to, &tto, &bo)) return NULL;
    if (!(img = arg(&ta, io, MMU_FLOAT32, "siglip_loss", "image_emb")) ||
        !(txt = arg(&ta, to, MMU_FLOAT32, "siglip_loss", "text_emb")) ||
        !(t = arg(&ta, tto, MMU_FLOAT32, "siglip_loss", "t")) || !(b = arg(&ta, bo, MMU_FLOAT32, "siglip_loss", "b")))
        return finish(&ta, MMU_OK, NULL);
    MMU_NOGIL(st, mmu_siglip_loss(&out, img, txt, t, b));
    return finish(&ta, st, out);
}

PyMethodDef mmu_contrastive_methods[] = {
    {"clip_loss", py_clip_loss, METH_VARARGS, "clip_loss(image_emb, text_emb, logit_scale)"},
    {"siglip_loss", py_siglip_loss, METH_VARARGS, "siglip_loss(image_emb, text_emb, t, b)"},
    {NULL, NULL, 0, NULL},
};

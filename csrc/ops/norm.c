/* layer_norm on oneDNN's layer normalization primitives.
 *
 * x (..., *normalized_shape) is seen as (rows, cols) with cols the product of
 * the normalised dims: each row is normalised on its own. The forward keeps
 * the per-row mean and variance so the backward does not recompute them.
 * weight and bias are optional independently; they map to oneDNN's use_scale
 * and use_shift flags, and the backward primitive writes a diff buffer for
 * every flag that is set, so those buffers exist whenever the arg does. */
#include <string.h>

#include "ops.h"
#include "../dnnl/mmu_dnnl.h"

enum { SAVED_X, SAVED_W, SAVED_MEAN, SAVED_VAR };

static mmu_status check_param(mmu_tensor *p, const char *arg, mmu_tensor *x, int nd, const int64_t *ns) {
    mmu_status st = mmu_check_dtype(p, MMU_FLOAT32, "layer_norm", arg);
    if (st) return st;
    if (p->ndim != nd || memcmp(p->shape, ns, nd * sizeof(int64_t)))
        return mmu_fail(MMU_EVALUE, "layer_norm: %s has shape %s but normalized_shape is %s (input %s)", arg,
                        mmu_shape_str(p), mmu_dims_str(nd, ns), mmu_shape_str(x));
    return MMU_OK;
}

// x (..., *S), weight (*S) or NULL, bias (*S) or NULL -> out (x's shape)
mmu_status mmu_layer_norm(mmu_tensor **out, mmu_tensor *x, int norm_ndim, const int64_t *norm_shape,
                          mmu_tensor *weight, mmu_tensor *bias, double eps) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "layer_norm", "input");
    if (st) return st;
    if (norm_ndim < 1)
        return mmu_fail(MMU_EVALUE, "layer_norm: normalized_shape must have at least one dim, got %s (input %s)",
                        mmu_dims_str(norm_ndim, norm_shape), mmu_shape_str(x));
    int lead = x->ndim - norm_ndim;
    if (lead < 0 || memcmp(x->shape + lead, norm_shape, norm_ndim * sizeof(int64_t)))
        return mmu_fail(MMU_EVALUE, "layer_norm: normalized_shape %s does not match the trailing dims of the "
                        "input of shape %s", mmu_dims_str(norm_ndim, norm_shape),
                        mmu_shape_str(x));
    if (weight && (st = check_param(weight, "weight", x, norm_ndim, norm_shape))) return st;
    if (bias && (st = check_param(bias, "bias", x, norm_ndim, norm_shape))) return st;
    int64_t cols = 1, rows = 1;
    for (int d = 0; d < norm_ndim; d++) cols *= norm_shape[d];
    for (int d = 0; d < lead; d++) rows *= x->shape[d];

    mmu_tensor *mean = NULL, *var = NULL;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, x->shape)) ||
        (st = mmu_tensor_empty(&mean, MMU_FLOAT32, 1, &rows)) || (st = mmu_tensor_empty(&var, MMU_FLOAT32, 1, &rows)))
        goto done;
    if ((st = mmu_dnnl_layer_norm_fwd(mmu_f32(x), mmu_f32(*out), mmu_f32(mean), mmu_f32(var),
                                      weight ? mmu_f32(weight) : NULL, bias ? mmu_f32(bias) : NULL, rows, cols,
                                      (float)eps)))
        goto done;
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_LAYER_NORM, 3, (mmu_tensor *[]){x, weight, bias}))) goto done;
    if (n) {
        n->ctx.i[0] = weight != NULL;
        n->ctx.i[1] = bias != NULL;
        n->ctx.i[2] = rows;
        n->ctx.i[3] = cols;
        n->ctx.f[0] = eps;
        mmu_save(n, SAVED_X, x);
        if (weight) mmu_save(n, SAVED_W, weight);
        mmu_save(n, SAVED_MEAN, mean);
        mmu_save(n, SAVED_VAR, var);
    }
done:
    if (st) MMU_CLEAR(*out);
    mmu_tensor_decref(mean);
    mmu_tensor_decref(var);
    return st;
}

// g (x's shape) -> dx (x's shape), dweight (*S), dbias (*S)
mmu_status mmu_layer_norm_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int has_w = (int)n->ctx.i[0], has_b = (int)n->ctx.i[1];
    int64_t rows = n->ctx.i[2], cols = n->ctx.i[3];
    const mmu_edge *ex = &n->inputs[0];
    /* the primitive always writes diff_src and one diff per flag; buffers
     * for grads nobody wants are scratch (dropped below) */
    mmu_tensor *dx = NULL, *dw = NULL, *db = NULL;
    mmu_status st = mmu_tensor_empty(&dx, MMU_FLOAT32, ex->ndim, ex->shape);
    if (!st && has_w) st = mmu_tensor_empty(&dw, MMU_FLOAT32, n->inputs[1].ndim, n->inputs[1].shape);
    if (!st && has_b) st = mmu_tensor_empty(&db, MMU_FLOAT32, n->inputs[2].ndim, n->inputs[2].shape);
    if (!st && rows * cols == 0) { /* an empty sum over rows */
        if (dw) memset(mmu_f32(dw), 0, dw->numel * sizeof(float));
        if (db) memset(mmu_f32(db), 0, db->numel * sizeof(float));
    }
    if (!st)
        st = mmu_dnnl_layer_norm_bwd(mmu_f32(n->saved[SAVED_X]), mmu_f32(g), mmu_f32(n->saved[SAVED_MEAN]),
                                     mmu_f32(n->saved[SAVED_VAR]), has_w ? mmu_f32(n->saved[SAVED_W]) : NULL,
                                     mmu_f32(dx), dw ? mmu_f32(dw) : NULL, db ? mmu_f32(db) : NULL, rows, cols,
                                     (float)n->ctx.f[0], has_b);
    if (!st) {
        if (ex->needs_grad) gin[0] = dx, dx = NULL;
        if (has_w && n->inputs[1].needs_grad) gin[1] = dw, dw = NULL;
        if (has_b && n->inputs[2].needs_grad) gin[2] = db, db = NULL;
    }
    mmu_tensor_decref(dx);
    mmu_tensor_decref(dw);
    mmu_tensor_decref(db);
    return st;
}

/* Shape ops: views (reshape), copies (permute, slice, expand, cat) and
 * indexing (gather, index_select, masked_select, masked_fill).
 * All tensors are contiguous (see core/mmu.h): reshape shares storage,
 * everything else writes a new contiguous tensor. */
#include <string.h>

#include "ops.h"

/* x (...) -> out (shape); one -1 in shape is inferred */
mmu_status mmu_reshape(mmu_tensor **out, mmu_tensor *x, int ndim, const int64_t *shape_in) {
    int64_t shape[MMU_MAX_DIMS], known = 1;
    int infer = -1;
    if (ndim > MMU_MAX_DIMS) return mmu_fail(MMU_EVALUE, "reshape: at most %d dims, got %d", MMU_MAX_DIMS, ndim);
    for (int d = 0; d < ndim; d++) {
        shape[d] = shape_in[d];
        if (shape[d] == -1) {
            if (infer >= 0) return mmu_fail(MMU_EVALUE, "reshape: only one dimension can be -1, got %s",
                                            mmu_dims_str(ndim, shape_in));
            infer = d;
        } else if (shape[d] < 0) {
            return mmu_fail(MMU_EVALUE, "reshape: invalid shape %s", mmu_dims_str(ndim, shape_in));
        } else {
            known *= shape[d];
        }
    }
    if (infer >= 0) {
        if (known == 0 || x->numel % known)
            return mmu_fail(MMU_EVALUE, "reshape: shape %s is invalid for input of shape %s (%lld elements)",
                            mmu_dims_str(ndim, shape_in), mmu_shape_str(x), (long long)x->numel);
        shape[infer] = x->numel / known;
    }
    mmu_status st = mmu_tensor_view(out, x, ndim, shape);
    if (st) return mmu_fail(MMU_EVALUE, "reshape: shape %s is invalid for input of shape %s (%lld elements)",
                            mmu_dims_str(ndim, shape_in), mmu_shape_str(x), (long long)x->numel);
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_RESHAPE, 1, &x))) MMU_CLEAR(*out);
    return st;
}

mmu_status mmu_reshape_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    if (!n->inputs[0].needs_grad) return MMU_OK;
    return mmu_tensor_view(&gin[0], g, n->inputs[0].ndim, n->inputs[0].shape);
}

/* x broadcast to shape (NumPy rules; -1 keeps the dim) -> a contiguous copy */
mmu_status mmu_expand(mmu_tensor **out, mmu_tensor *x, int ndim, const int64_t *shape_in) {
    int64_t shape[MMU_MAX_DIMS], xs[MMU_MAX_DIMS];
    if (ndim < x->ndim)
        return mmu_fail(MMU_EVALUE, "expand: the number of sizes (%d) must be at least the tensor's dims, "
                        "shape %s", ndim, mmu_shape_str(x));
    int lead = ndim - x->ndim;
    for (int d = 0; d < ndim; d++) {
        int64_t have = d >= lead ? x->shape[d - lead] : 1;
        shape[d] = shape_in[d] == -1 && d >= lead ? have : shape_in[d];
        if (shape[d] < 0 || (have != 1 && have != shape[d]))
            return mmu_fail(MMU_EVALUE, "expand: cannot expand shape %s to %s", mmu_shape_str(x),
                            mmu_dims_str(ndim, shape_in));
        xs[d] = have;
    }
    mmu_status st = mmu_tensor_empty(out, x->dtype, ndim, shape);
    if (st) return st;
    /* source strides (0 on broadcast dims) */
    int64_t ss[MMU_MAX_DIMS], s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        ss[d] = xs[d] == 1 ? 0 : s;
        s *= xs[d];
    }
    size_t es = mmu_dtype_size(x->dtype);
    int64_t total = (*out)->numel;
    int64_t cols = ndim ? shape[ndim - 1] : 1, rows = cols ? total / cols : 0;
    const char *src = mmu_data(x);
    char *dst = mmu_data(*out);
#pragma omp parallel for schedule(static) if (total > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t rem = r, off = 0;
        for (int d = ndim - 2; d >= 0; d--) {
            off += (rem % shape[d]) * ss[d];
            rem /= shape[d];
        }
        char *o = dst + r * cols * es;
        if (ndim && ss[ndim - 1]) {
            memcpy(o, src + off * es, cols * es);
        } else if (es == 4) {
            float v;
            memcpy(&v, src + off * es, 4);
            for (int64_t c = 0; c < cols; c++) ((float *)o)[c] = v;
        } else {
            for (int64_t c = 0; c < cols; c++) memcpy(o + c * es, src + off * es, es);
        }
    }
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_EXPAND, 1, &x))) MMU_CLEAR(*out);
    return st;
}

mmu_status mmu_expand_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    if (!n->inputs[0].needs_grad) return MMU_OK;
    return mmu_reduce_to_shape(&gin[0], g, n->inputs[0].ndim, n->inputs[0].shape);
}

/* ---- STUBS below: to be implemented ---- */
mmu_status mmu_permute(mmu_tensor **out, mmu_tensor *x, const int64_t *perm) {
    return mmu_fail(MMU_ERUNTIME, "permute: not implemented yet");
}
mmu_status mmu_slice(mmu_tensor **out, mmu_tensor *x, const int64_t *start, const int64_t *step, const int64_t *length) {
    return mmu_fail(MMU_ERUNTIME, "slice: not implemented yet");
}
mmu_status mmu_cat(mmu_tensor **out, int n, mmu_tensor *const *xs, int64_t dim) {
    return mmu_fail(MMU_ERUNTIME, "cat: not implemented yet");
}
mmu_status mmu_gather(mmu_tensor **out, mmu_tensor *x, int64_t dim, mmu_tensor *index) {
    return mmu_fail(MMU_ERUNTIME, "gather: not implemented yet");
}
mmu_status mmu_index_select(mmu_tensor **out, mmu_tensor *x, int64_t dim, mmu_tensor *index) {
    return mmu_fail(MMU_ERUNTIME, "index_select: not implemented yet");
}
mmu_status mmu_masked_select(mmu_tensor **out, mmu_tensor *x, mmu_tensor *mask) {
    return mmu_fail(MMU_ERUNTIME, "masked_select: not implemented yet");
}
mmu_status mmu_masked_fill(mmu_tensor **out, mmu_tensor *x, mmu_tensor *mask, double value) {
    return mmu_fail(MMU_ERUNTIME, "masked_fill: not implemented yet");
}
mmu_status mmu_permute_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_permute_backward: not implemented yet");
}
mmu_status mmu_slice_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_slice_backward: not implemented yet");
}
mmu_status mmu_cat_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_cat_backward: not implemented yet");
}
mmu_status mmu_gather_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_gather_backward: not implemented yet");
}
mmu_status mmu_index_select_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_index_select_backward: not implemented yet");
}
mmu_status mmu_masked_select_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_masked_select_backward: not implemented yet");
}
mmu_status mmu_masked_fill_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    return mmu_fail(MMU_ERUNTIME, "mmu_masked_fill_backward: not implemented yet");
}

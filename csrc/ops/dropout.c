/* dropout on mmu's counter-based Philox stream.
 *
 * dropout draws one Philox block (4 x 32 bits) per 4 elements from the global
 * stream; element i is kept when the top 24 bits of word i%4 of block i/4 are
 * below (1-p)·2^24, so the mask depends on (seed, stream offset, i) only, not on
 * the thread count. The mask is not stored: the node keeps the stream's key and
 * first counter and the backward regenerates it (the core's vectorised Philox
 * costs ~2 ns per 4 elements; a stored mask would hold memory from the forward
 * to the backward of every dropout in the model). */
#include <math.h>

#include "ops.h"

#define DROP_BLOCKS 256 /* Philox blocks per chunk of the parallel loop */

// x (n), keep threshold, key/counter of the stream -> y (n) = keep ? x·scale : 0
static void dropout_apply(float *restrict y, const float *restrict x, int64_t n, uint64_t key, uint64_t base,
                          uint32_t thresh, float scale) {
    int64_t nblocks = (n + 3) / 4, nchunks = (nblocks + DROP_BLOCKS - 1) / DROP_BLOCKS;
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t ch = 0; ch < nchunks; ch++) {
        int64_t b0 = ch * DROP_BLOCKS, b1 = b0 + DROP_BLOCKS < nblocks ? b0 + DROP_BLOCKS : nblocks;
        for (int64_t b = b0; b < b1; b += MMU_PHILOX_LANES) {
            uint32_t r[4][MMU_PHILOX_LANES];
            mmu_philox_lanes(key, base + (uint64_t)b, r);
            int64_t e0 = 4 * b, e1 = 4 * (b + MMU_PHILOX_LANES) < n ? 4 * (b + MMU_PHILOX_LANES) : n;
            if (b + MMU_PHILOX_LANES > b1) e1 = 4 * b1 < n ? 4 * b1 : n; /* the chunk's last, partial batch */
            /* the factors first (no branch on a random bit), then one vector multiply,
             * x·0 as torch's x·mask (NaN stays NaN) */
            float m[4 * MMU_PHILOX_LANES];
            for (int l = 0; l < MMU_PHILOX_LANES; l++)
                for (int k = 0; k < 4; k++) m[4 * l + k] = (r[k][l] >> 8) < thresh ? scale : 0.0f;
            for (int64_t e = e0; e < e1; e++) y[e] = x[e] * m[e - e0];
        }
    }
}

// x (any shape), 0 <= p <= 1 -> out (x's shape); the caller returns x itself for p == 0 / eval mode
mmu_status mmu_dropout(mmu_tensor **out, mmu_tensor *x, double p) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "dropout", "input");
    if (st) return st;
    if (!(p >= 0.0 && p <= 1.0))
        return mmu_fail(MMU_EVALUE, "dropout: probability has to be between 0 and 1, but got %g", p);
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, x->shape))) return st;
    int64_t n = x->numel;
    uint64_t key, base;
    mmu_rng_reserve((uint64_t)((n + 3) / 4), &key, &base);
    /* p == 1 keeps nothing: threshold 0 and scale 0 (1/(1-p) would make 0·inf) */
    uint32_t thresh = (uint32_t)llround((1.0 - p) * 16777216.0);
    float scale = p < 1.0 ? (float)(1.0 / (1.0 - p)) : 0.0f;
    dropout_apply(mmu_f32(*out), mmu_f32(x), n, key, base, thresh, scale);
    mmu_node *node = NULL;
    if ((st = mmu_record(&node, *out, MMU_OP_DROPOUT, 1, (mmu_tensor *[]){x}))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (node) {
        node->ctx.i[0] = (int64_t)key;
        node->ctx.i[1] = (int64_t)base;
        node->ctx.i[2] = thresh;
        node->ctx.f[0] = scale;
    }
    return MMU_OK;
}

// g (x's shape) -> dx = g·mask·scale, the mask regenerated from the stream
mmu_status mmu_dropout_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mmu_status st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, n->inputs[0].ndim, n->inputs[0].shape);
    if (st) return st;
    dropout_apply(mmu_f32(gin[0]), mmu_f32(g), g->numel, (uint64_t)n->ctx.i[0], (uint64_t)n->ctx.i[1],
                  (uint32_t)n->ctx.i[2], (float)n->ctx.f[0]);
    return MMU_OK;
}

/* Embedding lookup: rows of a (V, D) table picked by int64 indices.
 *
 * The forward is a row copy per index. The backward is an index-add of the
 * output gradient into a dense (V, D) gradient; mmu_index_add_rows (index.c,
 * shared with index_select) buckets the positions of each row first, so every
 * gradient row is summed by one thread in a fixed order: deterministic with
 * repeated indices and free of atomics. */
#include <string.h>

#include "ops.h"

/* idx int64 (...), weight (V, D) float32 -> out (..., D) */
mmu_status mmu_embedding(mmu_tensor **out, mmu_tensor *idx, mmu_tensor *weight) {
    mmu_status st;
    if ((st = mmu_check_dtype(idx, MMU_INT64, "embedding", "input"))) return st;
    if ((st = mmu_check_dtype(weight, MMU_FLOAT32, "embedding", "weight"))) return st;
    if (weight->ndim != 2)
        return mmu_fail(MMU_EVALUE, "embedding: weight must be 2-D (num_embeddings, embedding_dim), got shape %s",
                        mmu_shape_str(weight));
    if (idx->ndim + 1 > MMU_MAX_DIMS)
        return mmu_fail(MMU_EVALUE, "embedding: input of shape %s has too many dims (the output would have %d, "
                        "at most %d)", mmu_shape_str(idx), idx->ndim + 1, MMU_MAX_DIMS);
    int64_t V = weight->shape[0], D = weight->shape[1], K = idx->numel;
    const int64_t *pi = mmu_i64(idx);
    int64_t bad = mmu_first_bad_index(pi, K, V);
    if (bad >= 0)
        return mmu_fail(MMU_EINDEX, "embedding: index %lld is out of range for %lld embeddings (input %s, weight %s)",
                        (long long)pi[bad], (long long)V, mmu_shape_str(idx), mmu_shape_str(weight));
    int64_t shape[MMU_MAX_DIMS];
    memcpy(shape, idx->shape, idx->ndim * sizeof(int64_t));
    shape[idx->ndim] = D;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, idx->ndim + 1, shape))) return st;
    const float *pw = mmu_f32(weight);
    float *po = mmu_f32(*out);
#pragma omp parallel for schedule(static) if (K * D > MMU_PAR_GRAIN)
    for (int64_t k = 0; k < K; k++) memcpy(po + k * D, pw + pi[k] * D, D * sizeof(float));
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_EMBEDDING, 2, (mmu_tensor *[]){idx, weight}))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n) mmu_save(n, 0, idx);
    return MMU_OK;
}

/* g (..., D) -> dense gradient of weight (V, D): row v is the sum of the
 * rows of g whose index is v (zero if none) */
mmu_status mmu_embedding_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mmu_edge *w = &n->inputs[1];
    if (!w->needs_grad) return MMU_OK;
    mmu_tensor *idx = n->saved[0];
    mmu_status st = mmu_tensor_empty(&gin[1], MMU_FLOAT32, 2, w->shape);
    if (!st) st = mmu_index_add_rows(mmu_f32(gin[1]), mmu_f32(g), mmu_i64(idx), idx->numel, w->shape[0], 1, w->shape[1]);
    if (st) MMU_CLEAR(gin[1]);
    return st;
}

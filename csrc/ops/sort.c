/* Sorting along one dim: sort (every element, stable) and topk (the k best, a
 * partial selection), both with torch's order and both differentiable: the
 * gradient of values[j] goes to input[indices[j]] (a scatter of distinct
 * positions, so no two writes meet).
 *
 * Order. torch's: NaN is larger than every number (ascending: NaNs last;
 * descending / largest: NaNs first), -0.0 equals +0.0, and equal values keep
 * their index order. Each float becomes an unsigned 32-bit key whose unsigned
 * order is that order:
 *   NaN -> 0xFFFFFFFF, +-0 -> 0x80000000, v < 0 -> ~bits(v), v > 0 -> bits(v) | 0x80000000
 * and descending (largest) uses ~key. A key with its index below it,
 * (key << 32) | index, is then unique per row, and ordering those 64-bit
 * words ascending is the sort with ties broken by index (stable).
 *
 * sort: a least-significant-digit radix sort of those words on the key's 32
 * bits (3 passes of 11 bits; a pass whose digit is the same for the whole row
 * is skipped), O(n) per row, stable because every pass is; rows of at most
 * 32 elements use insertion sort.
 *
 * topk: a max-heap of the k best words seen so far. The scan visits indices
 * in increasing order, so an element beats the heap's worst iff its key is
 * strictly smaller (a tie has the larger index and loses); a block of 16 keys
 * is first tested against that threshold at once (vectorised), and only a
 * block holding a winner goes through the heap. On random logits a row of
 * 60k with k = 50 makes a few hundred heap insertions. The k winners are
 * then sorted (sorted=False returns them sorted too). When k is a large part
 * of the row (4k >= n) the whole row is radix-sorted instead.
 *
 * Layout: x is seen as (outer, n, inner), dim of size n. A row is one
 * (outer, inner) line; when inner > 1 its keys are gathered (strided) into
 * the thread's scratch. Rows are split among OpenMP threads; the result
 * does not depend on the thread count (each row is computed alone). */
#include <stdlib.h>
#include <string.h>

#include "ops.h"

#define SORT_RADIX_BITS 11
#define SORT_RADIX (1 << SORT_RADIX_BITS)
#define SORT_SMALL 32 /* rows up to this size: insertion sort */
#define TOPK_BLOCK 16

static inline uint32_t sort_key(float v) {
    uint32_t b;
    memcpy(&b, &v, sizeof b);
    if (v != v) return 0xFFFFFFFFu;    /* every NaN (any sign, any payload) above +inf */
    if (v == 0.0f) return 0x80000000u; /* -0 == +0 */
    return (b & 0x80000000u) ? ~b : b | 0x80000000u;
}

/* the row's words (key << 32 | index) in index order; descending flips the key */
static void row_words(uint64_t *w, const float *x, int64_t n, int64_t inner, int descending) {
    uint32_t flip = descending ? 0xFFFFFFFFu : 0u;
    for (int64_t i = 0; i < n; i++) w[i] = ((uint64_t)(sort_key(x[i * inner]) ^ flip) << 32) | (uint64_t)i;
}

/* Sorts the n words of w ascending (all distinct); tmp is scratch of n words.
 * Returns the array that holds the result (w or tmp). */
static uint64_t *sort_words(uint64_t *w, uint64_t *tmp, int64_t n) {
    if (n <= SORT_SMALL) {
        for (int64_t i = 1; i < n; i++) {
            uint64_t v = w[i];
            int64_t j = i - 1;
            for (; j >= 0 && w[j] > v; j--) w[j + 1] = w[j];
            w[j + 1] = v;
        }
        return w;
    }
    uint32_t count[SORT_RADIX];
    for (int shift = 32; shift < 64; shift += SORT_RADIX_BITS) {
        memset(count, 0, sizeof count);
        for (int64_t i = 0; i < n; i++) count[(w[i] >> shift) & (SORT_RADIX - 1)]++;
        if (count[(w[0] >> shift) & (SORT_RADIX - 1)] == (uint32_t)n) continue; /* one digit: nothing moves */
        uint32_t sum = 0;
        for (int d = 0; d < SORT_RADIX; d++) {
            uint32_t c = count[d];
            count[d] = sum;
            sum += c;
        }
        for (int64_t i = 0; i < n; i++) tmp[count[(w[i] >> shift) & (SORT_RADIX - 1)]++] = w[i];
        uint64_t *t = w;
        w = tmp;
        tmp = t;
    }
    return w;
}

/* max-heap of k words: restore the heap below the root after it was replaced */
static inline void heap_sift_down(uint64_t *h, int64_t k) {
    int64_t i = 0;
    uint64_t v = h[0];
    for (;;) {
        int64_t c = 2 * i + 1;
        if (c >= k) break;
        if (c + 1 < k && h[c + 1] > h[c]) c++;
        if (h[c] <= v) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = v;
}

static int cmp_u64(const void *a, const void *b) {
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x > y) - (x < y);
}

/* The k smallest words of the row (keys flipped for largest), sorted, into h (k words). */
static void topk_heap(uint64_t *h, const float *x, int64_t n, int64_t inner, int64_t k, int largest) {
    uint32_t flip = largest ? 0xFFFFFFFFu : 0u;
    for (int64_t i = 0; i < k; i++) h[i] = ((uint64_t)(sort_key(x[i * inner]) ^ flip) << 32) | (uint64_t)i;
    for (int64_t i = k / 2 - 1; i >= 0; i--) { /* heapify: sift each parent down */
        int64_t p = i;
        uint64_t v = h[p];
        for (;;) {
            int64_t c = 2 * p + 1;
            if (c >= k) break;
            if (c + 1 < k && h[c + 1] > h[c]) c++;
            if (h[c] <= v) break;
            h[p] = h[c];
            p = c;
        }
        h[p] = v;
    }
    uint32_t thr = (uint32_t)(h[0] >> 32);
    int64_t i = k;
    if (inner == 1) {
        for (; i + TOPK_BLOCK <= n; i += TOPK_BLOCK) {
            uint32_t key[TOPK_BLOCK];
            int any = 0;
            for (int l = 0; l < TOPK_BLOCK; l++) {
                key[l] = sort_key(x[i + l]) ^ flip;
                any |= key[l] < thr;
            }
            if (!any) continue;
            for (int l = 0; l < TOPK_BLOCK; l++)
                if (key[l] < thr) {
                    h[0] = ((uint64_t)key[l] << 32) | (uint64_t)(i + l);
                    heap_sift_down(h, k);
                    thr = (uint32_t)(h[0] >> 32);
                }
        }
    }
    for (; i < n; i++) {
        uint32_t key = sort_key(x[i * inner]) ^ flip;
        if (key < thr) {
            h[0] = ((uint64_t)key << 32) | (uint64_t)i;
            heap_sift_down(h, k);
            thr = (uint32_t)(h[0] >> 32);
        }
    }
    qsort(h, (size_t)k, sizeof *h, cmp_u64);
}

/* x (outer, n, inner) -> values, indices (outer, k, inner): the first k words
 * of each row in the order above (k == n: the full sort). */
static mmu_status sort_rows(float *vals, int64_t *idx, const float *x, int64_t outer, int64_t n, int64_t inner,
                            int64_t k, int descending, int partial, const char *op) {
    int64_t rows = outer * inner;
    int use_heap = partial && 4 * k < n;
    int64_t scratch = use_heap ? k : 2 * n; /* words per thread */
    int failed = 0;
    mmu_sync_threads();
#pragma omp parallel if (rows * n > MMU_PAR_GRAIN && rows > 1)
    {
        uint64_t *buf = mmu_alloc((size_t)scratch * sizeof(uint64_t));
        if (!buf) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            if (!buf) continue;
            int64_t o = r / inner, in = r % inner;
            const float *row = x + o * n * inner + in;
            const uint64_t *w;
            if (use_heap) {
                topk_heap(buf, row, n, inner, k, descending);
                w = buf;
            } else {
                row_words(buf, row, n, inner, descending);
                w = sort_words(buf, buf + n, n);
            }
            float *vo = vals + o * k * inner + in;
            int64_t *io = idx + o * k * inner + in;
            for (int64_t j = 0; j < k; j++) {
                int64_t at = (int64_t)(w[j] & 0xFFFFFFFFu);
                vo[j * inner] = row[at * inner];
                io[j * inner] = at;
            }
        }
        if (buf) mmu_free(buf, (size_t)scratch * sizeof(uint64_t));
    }
    if (failed) return mmu_fail(MMU_ENOMEM, "%s: out of memory for %lld words of sort scratch", op, (long long)scratch);
    return MMU_OK;
}

/* shared by sort and topk: checks, (outer, n, inner), outputs, the kernel, the node */
static mmu_status sort_op(mmu_tensor **values, mmu_tensor **indices, mmu_tensor *x, int64_t k, int64_t dim_in,
                          int descending, int partial, const char *op) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, op, "input");
    if (st) return st;
    int dim;
    if ((st = mmu_wrap_dim(&dim, dim_in, x->ndim, op))) return st;
    int64_t outer = 1, n = x->ndim ? x->shape[dim] : 1, inner = 1;
    for (int d = 0; d < dim && d < x->ndim; d++) outer *= x->shape[d];
    for (int d = dim + 1; d < x->ndim; d++) inner *= x->shape[d];
    if (!partial) k = n;
    if (k < 0 || k > n)
        return mmu_fail(MMU_EINDEX, "%s: k = %lld is out of range for dim %lld of size %lld (input shape %s); "
                        "expected 0 <= k <= %lld", op, (long long)k, (long long)dim_in, (long long)n,
                        mmu_shape_str(x), (long long)n);
    if (x->ndim == 0) k = 1; /* a 0-d tensor is its own top-1 whatever k in [0, 1] (torch) */
    if (n > 0x7FFFFFFF)
        return mmu_fail(MMU_EVALUE, "%s: dim %lld has %lld elements (input shape %s); at most 2^31 - 1 can be sorted",
                        op, (long long)dim_in, (long long)n, mmu_shape_str(x));
    int64_t shape[MMU_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    if (x->ndim) shape[dim] = k;
    if ((st = mmu_tensor_empty(values, MMU_FLOAT32, x->ndim, shape))) return st;
    if ((st = mmu_tensor_empty(indices, MMU_INT64, x->ndim, shape))) goto fail;
    if (outer * inner * k > 0 &&
        (st = sort_rows(mmu_f32(*values), mmu_i64(*indices), mmu_f32(x), outer, n, inner, k, descending, partial, op)))
        goto fail;
    mmu_node *node = NULL;
    if ((st = mmu_record(&node, *values, partial ? MMU_OP_TOPK : MMU_OP_SORT, 1, &x))) goto fail;
    if (node) {
        mmu_save(node, 0, *indices);
        node->ctx.i[0] = dim;
    }
    return MMU_OK;
fail:
    MMU_CLEAR(*values);
    MMU_CLEAR(*indices);
    return st;
}

// x (..., n, ...) float32, dim -> values, indices int64 (x's shape): sorted along dim, ties in index order
mmu_status mmu_sort(mmu_tensor **values, mmu_tensor **indices, mmu_tensor *x, int64_t dim, int descending) {
    return sort_op(values, indices, x, 0, dim, descending, 0, "sort");
}

// x (..., n, ...) float32, 0 <= k <= n -> values, indices int64 (..., k, ...): the k largest (smallest), sorted
mmu_status mmu_topk(mmu_tensor **values, mmu_tensor **indices, mmu_tensor *x, int64_t k, int64_t dim, int largest) {
    return sort_op(values, indices, x, k, dim, largest, 1, "topk");
}

// g (..., k, ...) -> gin[0] (x's shape): g[j] added at indices[j] along dim, zeros elsewhere
mmu_status mmu_sort_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    if (!n->inputs[0].needs_grad) return MMU_OK;
    mmu_edge *in = &n->inputs[0];
    mmu_tensor *idx = n->saved[0];
    int dim = (int)n->ctx.i[0];
    int64_t outer = 1, len = in->ndim ? in->shape[dim] : 1, inner = 1;
    for (int d = 0; d < dim && d < in->ndim; d++) outer *= in->shape[d];
    for (int d = dim + 1; d < in->ndim; d++) inner *= in->shape[d];
    int64_t k = in->ndim ? idx->shape[dim] : 1;
    mmu_status st = mmu_tensor_zeros(&gin[0], MMU_FLOAT32, in->ndim, in->shape);
    if (st) return st;
    float *gx = mmu_f32(gin[0]);
    const float *pg = mmu_f32(g);
    const int64_t *pi = mmu_i64(idx);
    mmu_sync_threads();
    /* the indices of one row are distinct: each (outer, inner) line writes its own elements */
#pragma omp parallel for schedule(static) if (outer * inner * k > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < outer * inner; r++) {
        int64_t o = r / inner, i = r % inner;
        const float *gr = pg + o * k * inner + i;
        const int64_t *ir = pi + o * k * inner + i;
        float *xr = gx + o * len * inner + i;
        for (int64_t j = 0; j < k; j++) xr[ir[j * inner] * inner] = gr[j * inner];
    }
    return MMU_OK;
}

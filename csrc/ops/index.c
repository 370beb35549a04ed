/* Indexing ops: gather, index_select, masked_select, masked_fill, and the
 * index helpers embedding.c shares (mmu_first_bad_index, mmu_index_add_rows).
 * All tensors are contiguous (see core/mmu.h): every op writes a new
 * contiguous tensor. */
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* Position of the first index outside [0, size), or -1. The parallel pass
 * only says whether there is one; the serial rescan (on failure only) finds
 * the first, so the error message does not depend on the thread count. */
int64_t mmu_first_bad_index(const int64_t *idx, int64_t n, int64_t size) {
    int64_t bad = 0;
#pragma omp parallel for schedule(static) reduction(| : bad) if (n > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < n; i++) bad |= (uint64_t)idx[i] >= (uint64_t)size;
    if (!bad) return -1;
    for (int64_t i = 0; i < n; i++)
        if ((uint64_t)idx[i] >= (uint64_t)size) return i;
    return -1;
}

/* ------------------------------------------------------------------ gather */
/* The walk shared by gather and its backward. Index positions that differ in
 * a coordinate other than dim read (or write) different elements of x. A
 * "group" is one value of the coordinates other than dim and the last dim;
 * a task is a run of consecutive groups (times a chunk of the last dim when
 * dim is not the last one) and walks its positions along dim in order. That
 * makes the backward's scatter-add race-free and bit-reproducible. Within a
 * task the group offsets advance incrementally (no division per row). */
typedef struct {
    int n, dim, ng;             /* effective ndim (>= 1), gathered dim, number of group dims */
    int gd[MMU_MAX_DIMS];       /* the group dims, outermost first */
    int64_t ishape[MMU_MAX_DIMS], ist[MMU_MAX_DIMS], xst[MMU_MAX_DIMS];
    int64_t groups, per_task, nchunks, chunk;
} gather_plan;

#define GATHER_CHUNK 512

static void gather_plan_init(gather_plan *p, int dim, int n, const int64_t *ishape, const int64_t *xshape) {
    p->n = n;
    p->dim = dim;
    memcpy(p->ishape, ishape, n * sizeof(int64_t));
    mmu_contig_strides(p->ist, n, ishape);
    mmu_contig_strides(p->xst, n, xshape);
    int L = n - 1;
    p->groups = 1;
    p->ng = 0;
    for (int d = 0; d < L; d++)
        if (d != dim) {
            p->gd[p->ng++] = d;
            p->groups *= ishape[d];
        }
    int64_t work; /* positions per group (and chunk) */
    if (dim != L) {
        p->chunk = GATHER_CHUNK;
        p->nchunks = (ishape[L] + GATHER_CHUNK - 1) / GATHER_CHUNK;
        work = ishape[dim] * (ishape[L] < GATHER_CHUNK ? ishape[L] : GATHER_CHUNK);
    } else {
        p->chunk = ishape[L];
        p->nchunks = 1;
        work = ishape[L];
    }
    p->per_task = work >= 1024 ? 1 : 1024 / (work ? work : 1);
}

/* coordinates and offsets (index, x) of group g */
static inline void gather_group(const gather_plan *p, int64_t g, int64_t *c, int64_t *io, int64_t *xo) {
    int64_t a = 0, b = 0;
    for (int k = p->ng - 1; k >= 0; k--) {
        int d = p->gd[k];
        c[k] = g % p->ishape[d];
        g /= p->ishape[d];
        a += c[k] * p->ist[d];
        b += c[k] * p->xst[d];
    }
    *io = a;
    *xo = b;
}

static inline void gather_next(const gather_plan *p, int64_t *c, int64_t *io, int64_t *xo) {
    for (int k = p->ng - 1; k >= 0; k--) {
        int d = p->gd[k];
        *io += p->ist[d];
        *xo += p->xst[d];
        if (++c[k] < p->ishape[d]) return;
        c[k] = 0;
        *io -= p->ishape[d] * p->ist[d];
        *xo -= p->ishape[d] * p->xst[d];
    }
}

/* FWD: 1 = out[i] = x[..], 0 = gx[..] += g[i] (float only). The plan's fields
 * are copied to locals and the data pointers are restrict so that the stores
 * do not force reloads of the plan (int64 stores could alias it). Random
 * reads are latency-bound, so threads pay off from a smaller size than for
 * streaming kernels (GRAIN / 8). */
#define GATHER_WALK(T, FWD, dst, src, idx, p, total)                                                     \
    do {                                                                                                 \
        const int L = (p)->n - 1, dm = (p)->dim;                                                         \
        const int64_t nblk = ((p)->groups + (p)->per_task - 1) / (p)->per_task;                          \
        const int64_t ntask = nblk * (p)->nchunks;                                                       \
        _Pragma("omp parallel for schedule(static) if ((total) > MMU_PAR_GRAIN / 8)")                    \
        for (int64_t t = 0; t < ntask; t++) {                                                            \
            T *restrict D = (T *)(dst);                                                                  \
            const T *restrict S = (const T *)(src);                                                      \
            const int64_t *restrict IX = (idx);                                                          \
            const int64_t nchunks = (p)->nchunks, chunk = (p)->chunk, per = (p)->per_task;               \
            const int64_t IL = (p)->ishape[L], Idm = (p)->ishape[dm], istd = (p)->ist[dm];               \
            const int64_t xsd = (p)->xst[dm];                                                            \
            const int ng = (p)->ng, gl = ng ? (p)->gd[ng - 1] : 0;                                       \
            const int64_t nlast = (p)->ishape[gl], islast = (p)->ist[gl], xslast = (p)->xst[gl];         \
            int64_t c[MMU_MAX_DIMS], io, xo;                                                             \
            int64_t g0 = (t / nchunks) * per;                                                            \
            int64_t g1 = g0 + per < (p)->groups ? g0 + per : (p)->groups;                                \
            int64_t j0 = (t % nchunks) * chunk, j1 = j0 + chunk < IL ? j0 + chunk : IL;                  \
            gather_group(p, g0, c, &io, &xo);                                                            \
            for (int64_t gi = g0; gi < g1; gi++) {                                                       \
                if (dm == L) {                                                                           \
                    for (int64_t j = j0; j < j1; j++) {                                                  \
                        if (FWD) D[io + j] = S[xo + IX[io + j]];                                         \
                        else D[xo + IX[io + j]] += S[io + j];                                            \
                    }                                                                                    \
                } else {                                                                                 \
                    for (int64_t m = 0; m < Idm; m++) {                                                  \
                        const int64_t r = io + m * istd;                                                 \
                        for (int64_t j = j0; j < j1; j++) {                                              \
                            if (FWD) D[r + j] = S[xo + IX[r + j] * xsd + j];                             \
                            else D[xo + IX[r + j] * xsd + j] += S[r + j];                                \
                        }                                                                                \
                    }                                                                                    \
                }                                                                                        \
                if (gi + 1 == g1) break;                                                                 \
                if (ng && c[ng - 1] + 1 < nlast) { /* the common step, kept in registers */              \
                    c[ng - 1]++;                                                                         \
                    io += islast;                                                                        \
                    xo += xslast;                                                                        \
                } else {                                                                                 \
                    gather_next(p, c, &io, &xo);                                                         \
                }                                                                                        \
            }                                                                                            \
        }                                                                                                \
    } while (0)

/* gather and index_select record the same way: the input, the index and the dim */
static mmu_status record_indexed(mmu_tensor **out, mmu_op op, mmu_tensor *x, mmu_tensor *index, int dim) {
    mmu_node *node = NULL;
    mmu_status st = mmu_record(&node, *out, op, 1, &x);
    if (st) {
        MMU_CLEAR(*out);
        return st;
    }
    if (node) {
        mmu_save(node, 0, index);
        node->ctx.i[0] = dim;
    }
    return MMU_OK;
}

/* x (d0..dn), index int64 with x's ndim, index.size(d) <= x.size(d) for d != dim
 * -> out (index's shape), out[i][j][k] = x[index[i][j][k]][j][k] for dim 0 */
mmu_status mmu_gather(mmu_tensor **out, mmu_tensor *x, int64_t dim_in, mmu_tensor *index) {
    mmu_status st = mmu_check_dtype(index, MMU_INT64, "gather", "index");
    if (st) return st;
    /* a 0-d tensor counts as 1-D of size 1 (torch does the same) */
    int n = x->ndim ? x->ndim : 1, dim;
    if ((index->ndim ? index->ndim : 1) != n)
        return mmu_fail(MMU_EVALUE, "gather: index must have as many dims as the input, got index %s and input %s",
                        mmu_shape_str(index), mmu_shape_str(x));
    if ((st = mmu_wrap_dim(&dim, dim_in, x->ndim, "gather"))) return st;
    int64_t xs[MMU_MAX_DIMS] = {1}, is[MMU_MAX_DIMS] = {1};
    if (x->ndim) memcpy(xs, x->shape, n * sizeof(int64_t));
    if (index->ndim) memcpy(is, index->shape, n * sizeof(int64_t));
    if (index->numel)
        for (int d = 0; d < n; d++)
            if (d != dim && is[d] > xs[d])
                return mmu_fail(MMU_EVALUE, "gather: index %s is larger than input %s at dim %d "
                                "(only dim %d may be larger)", mmu_shape_str(index), mmu_shape_str(x), d, dim);
    const int64_t *pi = mmu_i64(index);
    int64_t bad = mmu_first_bad_index(pi, index->numel, xs[dim]);
    if (bad >= 0)
        return mmu_fail(MMU_EINDEX, "gather: index %lld is out of bounds for dim %d with size %lld "
                        "(input %s, index %s)", (long long)pi[bad], dim, (long long)xs[dim],
                        mmu_shape_str(x), mmu_shape_str(index));
    if ((st = mmu_tensor_empty(out, x->dtype, index->ndim, index->shape))) return st;
    if (index->numel) {
        gather_plan p;
        gather_plan_init(&p, dim, n, is, xs);
        int64_t total = index->numel;
        switch (mmu_dtype_size(x->dtype)) {
        case 1: GATHER_WALK(uint8_t, 1, mmu_data(*out), mmu_data(x), pi, &p, total); break;
        case 8: GATHER_WALK(uint64_t, 1, mmu_data(*out), mmu_data(x), pi, &p, total); break;
        default: GATHER_WALK(uint32_t, 1, mmu_data(*out), mmu_data(x), pi, &p, total); break;
        }
    }
    return record_indexed(out, MMU_OP_GATHER, x, index, dim);
}

/* scatter-add of g into zeros of x's shape */
mmu_status mmu_gather_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mmu_edge *in = &n->inputs[0];
    if (!in->needs_grad) return MMU_OK;
    mmu_status st = mmu_tensor_zeros(&gin[0], MMU_FLOAT32, in->ndim, in->shape);
    mmu_tensor *index = n->saved[0];
    if (st || !index->numel) return st;
    int nd = in->ndim ? in->ndim : 1;
    int64_t xs[MMU_MAX_DIMS] = {1}, is[MMU_MAX_DIMS] = {1};
    if (in->ndim) memcpy(xs, in->shape, nd * sizeof(int64_t));
    if (index->ndim) memcpy(is, index->shape, nd * sizeof(int64_t));
    gather_plan p;
    gather_plan_init(&p, (int)n->ctx.i[0], nd, is, xs);
    int64_t total = index->numel;
    if (mmu_first_bad_index(mmu_i64(index), total, xs[p.dim]) >= 0) { /* changed in place since the forward */
        MMU_CLEAR(gin[0]);
        return mmu_fail(MMU_EINDEX, "gather backward: the index tensor %s was modified after the forward",
                        mmu_shape_str(index));
    }
    GATHER_WALK(float, 0, mmu_f32(gin[0]), mmu_f32(g), mmu_i64(index), &p, total);
    return MMU_OK;
}

/* ------------------------------------------------------------ index_select */
/* gx (outer, V, inner) = sum over k with idx[k] == v of g (outer, K, inner).
 * The positions of each v are bucketed (a counting sort, stable in k), then
 * every output row is built by one thread: the rows nobody selected are
 * zeroed, the others summed in k order. No atomics, no separate zero fill,
 * and the result is the same for any thread count. Shared with embedding.c. */
mmu_status mmu_index_add_rows(float *gx, const float *g, const int64_t *idx, int64_t K, int64_t V,
                              int64_t outer, int64_t inner) {
    if (!V || !outer || !inner) return MMU_OK;
    size_t nb = (size_t)(V + 1 + K) * sizeof(int64_t);
    int64_t *start = mmu_alloc(nb);
    if (!start) return mmu_fail(MMU_ENOMEM, "index_add: out of memory for %lld indices", (long long)K);
    int64_t *order = start + V + 1;
    memset(start, 0, (V + 1) * sizeof(int64_t));
    for (int64_t k = 0; k < K; k++) {
        if ((uint64_t)idx[k] >= (uint64_t)V) { /* the saved index was changed in place since the forward */
            mmu_free(start, nb);
            return mmu_fail(MMU_EINDEX, "index_add: index %lld is out of range for size %lld (was the index "
                            "tensor modified after the forward?)", (long long)idx[k], (long long)V);
        }
        start[idx[k] + 1]++;
    }
    for (int64_t v = 0; v < V; v++) start[v + 1] += start[v];
    for (int64_t k = 0; k < K; k++) order[start[idx[k]]++] = k;
    for (int64_t v = V; v > 0; v--) start[v] = start[v - 1]; /* back to bucket starts */
    start[0] = 0;
    int64_t rows = outer * V;
#pragma omp parallel for schedule(static) if (rows * inner + outer * K * inner > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t o = r / V, v = r % V, lo = start[v], hi = start[v + 1];
        float *dst = gx + r * inner;
        const float *src = g + o * K * inner;
        if (lo == hi) {
            memset(dst, 0, inner * sizeof(float));
            continue;
        }
        memcpy(dst, src + order[lo] * inner, inner * sizeof(float));
        for (int64_t q = lo + 1; q < hi; q++) {
            const float *row = src + order[q] * inner;
            for (int64_t i = 0; i < inner; i++) dst[i] += row[i];
        }
    }
    mmu_free(start, nb);
    return MMU_OK;
}

/* x (..., V, ...), index int64 (K) or 0-d -> out (..., K, ...) with index's
 * entries of dim `dim` */
mmu_status mmu_index_select(mmu_tensor **out, mmu_tensor *x, int64_t dim_in, mmu_tensor *index) {
    mmu_status st = mmu_check_dtype(index, MMU_INT64, "index_select", "index");
    if (st) return st;
    if (index->ndim > 1)
        return mmu_fail(MMU_EVALUE, "index_select: index must be 1-D (or 0-d), got shape %s (input %s)",
                        mmu_shape_str(index), mmu_shape_str(x));
    int dim;
    if ((st = mmu_wrap_dim(&dim, dim_in, x->ndim, "index_select"))) return st;
    int64_t K = index->numel, shape[MMU_MAX_DIMS];
    if (x->ndim == 0 && K != 1)
        return mmu_fail(MMU_EVALUE, "index_select: a 0-d input takes exactly one index, got index %s",
                        mmu_shape_str(index));
    int64_t V = x->ndim ? x->shape[dim] : 1, outer = 1, inner = 1;
    for (int d = 0; d < x->ndim; d++) {
        shape[d] = d == dim ? K : x->shape[d];
        if (d < dim) outer *= x->shape[d];
        if (d > dim) inner *= x->shape[d];
    }
    const int64_t *pi = mmu_i64(index);
    int64_t bad = mmu_first_bad_index(pi, K, V);
    if (bad >= 0)
        return mmu_fail(MMU_EINDEX, "index_select: index %lld is out of range for dim %d with size %lld "
                        "(input %s)", (long long)pi[bad], dim, (long long)V, mmu_shape_str(x));
    if ((st = mmu_tensor_empty(out, x->dtype, x->ndim, shape))) return st;
    size_t rb = (size_t)inner * mmu_dtype_size(x->dtype); /* bytes per selected row */
    const char *px = mmu_data(x);
    char *po = mmu_data(*out);
    int64_t rows = outer * K;
#pragma omp parallel for schedule(static) if (rows * inner > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t o = r / (K ? K : 1), k = r % (K ? K : 1);
        const char *src = px + (o * V + pi[k]) * rb;
        char *dst = po + r * rb;
        /* constant sizes become single (unaligned) moves; a row of 2 floats is only 4-aligned */
        if (rb == 4) memcpy(dst, src, 4);
        else if (rb == 8) memcpy(dst, src, 8);
        else memcpy(dst, src, rb);
    }
    return record_indexed(out, MMU_OP_INDEX_SELECT, x, index, dim);
}

/* index-add of g into zeros of x's shape (repeated indices sum) */
mmu_status mmu_index_select_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mmu_edge *in = &n->inputs[0];
    if (!in->needs_grad) return MMU_OK;
    int dim = (int)n->ctx.i[0];
    mmu_tensor *index = n->saved[0];
    int64_t V = in->ndim ? in->shape[dim] : 1, outer = 1, inner = 1;
    for (int d = 0; d < in->ndim; d++) {
        if (d < dim) outer *= in->shape[d];
        if (d > dim) inner *= in->shape[d];
    }
    mmu_status st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, in->ndim, in->shape);
    if (!st) st = mmu_index_add_rows(mmu_f32(gin[0]), mmu_f32(g), mmu_i64(index), index->numel, V, outer, inner);
    if (st) MMU_CLEAR(gin[0]);
    return st;
}

/* ----------------------------------------------------------- masked_select */
/* The mask is cut into fixed chunks; pos[c] is where chunk c's selected
 * values start in the output (pos[nchunks] = total). */
#define MASK_CHUNK 65536

static int64_t *mask_positions(const uint8_t *m, int64_t n, int64_t *nchunks_out, size_t *nbytes) {
    int64_t nchunks = (n + MASK_CHUNK - 1) / MASK_CHUNK;
    *nbytes = (size_t)(nchunks + 1) * sizeof(int64_t);
    int64_t *pos = mmu_alloc(*nbytes);
    if (!pos) return NULL;
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t c = 0; c < nchunks; c++) {
        int64_t lo = c * MASK_CHUNK, hi = lo + MASK_CHUNK < n ? lo + MASK_CHUNK : n, cnt = 0;
        for (int64_t i = lo; i < hi; i++) cnt += m[i] != 0;
        pos[c + 1] = cnt;
    }
    pos[0] = 0;
    for (int64_t c = 0; c < nchunks; c++) pos[c + 1] += pos[c];
    *nchunks_out = nchunks;
    return pos;
}

/* x (...) and mask bool (broadcastable together) -> out (number of True) */
mmu_status mmu_masked_select(mmu_tensor **out, mmu_tensor *x, mmu_tensor *mask) {
    mmu_status st = mmu_check_dtype(mask, MMU_BOOL, "masked_select", "mask");
    if (st) return st;
    if (!mmu_same_shape(x, mask)) {
        /* broadcast both (torch does); expanding x records its own node, so
         * the gradient is summed back to x's shape by expand's backward */
        int nd;
        int64_t shape[MMU_MAX_DIMS];
        mmu_tensor *xb = NULL, *mb = NULL;
        if ((st = mmu_broadcast_shape(&nd, shape, x->ndim, x->shape, mask->ndim, mask->shape, "masked_select")))
            return st;
        st = mmu_expand(&xb, x, nd, shape);
        if (!st) st = mmu_expand(&mb, mask, nd, shape);
        if (!st) st = mmu_masked_select(out, xb, mb);
        mmu_tensor_decref(xb);
        mmu_tensor_decref(mb);
        return st;
    }
    int64_t n = x->numel, nchunks;
    size_t nb;
    const uint8_t *pm = mmu_bool(mask);
    int64_t *pos = mask_positions(pm, n, &nchunks, &nb);
    if (!pos) return mmu_fail(MMU_ENOMEM, "masked_select: out of memory");
    int64_t count = pos[nchunks];
    st = mmu_tensor_empty(out, x->dtype, 1, &count);
    if (!st) {
        size_t es = mmu_dtype_size(x->dtype);
        const char *px = mmu_data(x);
        char *po = mmu_data(*out);
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t lo = c * MASK_CHUNK, hi = lo + MASK_CHUNK < n ? lo + MASK_CHUNK : n, p = pos[c];
            if (es == 4) {
                for (int64_t i = lo; i < hi; i++)
                    if (pm[i]) ((uint32_t *)po)[p++] = ((const uint32_t *)px)[i];
            } else if (es == 8) {
                for (int64_t i = lo; i < hi; i++)
                    if (pm[i]) ((uint64_t *)po)[p++] = ((const uint64_t *)px)[i];
            } else {
                for (int64_t i = lo; i < hi; i++)
                    if (pm[i]) po[p++] = px[i];
            }
        }
    }
    mmu_free(pos, nb);
    if (st) return st;
    mmu_node *node = NULL;
    if ((st = mmu_record(&node, *out, MMU_OP_MASKED_SELECT, 1, &x))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (node) mmu_save(node, 0, mask);
    return MMU_OK;
}

/* g (count) scattered back to the True positions of zeros of x's shape */
mmu_status mmu_masked_select_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mmu_edge *in = &n->inputs[0];
    if (!in->needs_grad) return MMU_OK;
    mmu_tensor *mask = n->saved[0];
    int64_t nel = mask->numel, nchunks;
    size_t nb;
    const uint8_t *pm = mmu_bool(mask);
    int64_t *pos = mask_positions(pm, nel, &nchunks, &nb);
    if (!pos) return mmu_fail(MMU_ENOMEM, "masked_select backward: out of memory");
    if (pos[nchunks] != g->numel) {
        mmu_free(pos, nb);
        return mmu_fail(MMU_ERUNTIME, "masked_select backward: the mask %s was modified after the forward "
                        "(%lld set now, %lld selected then)", mmu_shape_str(mask), (long long)pos[nchunks],
                        (long long)g->numel);
    }
    mmu_status st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, in->ndim, in->shape);
    if (!st) {
        const float *pg = mmu_f32(g);
        float *po = mmu_f32(gin[0]);
#pragma omp parallel for schedule(static) if (nel > MMU_PAR_GRAIN)
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t lo = c * MASK_CHUNK, hi = lo + MASK_CHUNK < nel ? lo + MASK_CHUNK : nel, p = pos[c];
            for (int64_t i = lo; i < hi; i++) po[i] = pm[i] ? pg[p++] : 0.0f;
        }
    }
    mmu_free(pos, nb);
    return st;
}

/* ------------------------------------------------------------- masked_fill */
/* Element strides of the mask seen with x's shape (0 where it broadcasts);
 * fails unless the mask broadcasts to exactly x's shape. */
static mmu_status mask_strides(int64_t *ms, const mmu_tensor *x, const mmu_tensor *mask, const char *op) {
    int lead = x->ndim - mask->ndim, ok = lead >= 0;
    for (int d = 0; ok && d < mask->ndim; d++)
        ok = mask->shape[d] == 1 || mask->shape[d] == x->shape[d + lead];
    if (!ok)
        return mmu_fail(MMU_EVALUE, "%s: mask of shape %s cannot be broadcast to the input's shape %s", op,
                        mmu_shape_str(mask), mmu_shape_str(x));
    int64_t s = 1;
    for (int d = x->ndim - 1; d >= 0; d--) {
        int md = d - lead;
        if (md < 0 || mask->shape[md] == 1) ms[d] = 0;
        else { ms[d] = s; s *= mask->shape[md]; }
    }
    return MMU_OK;
}

/* out[i] = mask[i] ? fill : x[i] (T-typed), walked row by row over the last dim */
#define MASKED_FILL_KERNEL(T, po, px, pm, fill, nd, shape, ms, total)                   \
    do {                                                                                \
        int64_t cols = (nd) ? (shape)[(nd) - 1] : 1, rows = cols ? (total) / cols : 0;   \
        int64_t mc = (nd) ? (ms)[(nd) - 1] : 0;                                          \
        _Pragma("omp parallel for schedule(static) if ((total) > MMU_PAR_GRAIN)")        \
        for (int64_t r = 0; r < rows; r++) {                                             \
            int64_t rem = r, mo = 0;                                                     \
            for (int d = (nd) - 2; d >= 0; d--) {                                        \
                mo += (rem % (shape)[d]) * (ms)[d];                                      \
                rem /= (shape)[d];                                                       \
            }                                                                            \
            T *o = (T *)(po) + r * cols;                                                 \
            const T *xi = (const T *)(px) + r * cols;                                    \
            const uint8_t *m = (pm) + mo;                                                \
            if (mc) for (int64_t c = 0; c < cols; c++) o[c] = m[c] ? (fill) : xi[c];     \
            else if (m[0]) for (int64_t c = 0; c < cols; c++) o[c] = (fill);             \
            else memcpy(o, xi, cols * sizeof(T));                                        \
        }                                                                                \
    } while (0)

/* x float32/int64/bool, mask bool broadcastable to x -> out (x's shape) */
mmu_status mmu_masked_fill(mmu_tensor **out, mmu_tensor *x, mmu_tensor *mask, double value) {
    mmu_status st = mmu_check_dtype(mask, MMU_BOOL, "masked_fill", "mask");
    if (st) return st;
    int64_t ms[MMU_MAX_DIMS];
    if ((st = mask_strides(ms, x, mask, "masked_fill"))) return st;
    if (x->dtype == MMU_INT64 && !(value >= -9223372036854775808.0 && value < 9223372036854775808.0))
        return mmu_fail(MMU_EVALUE, "masked_fill: value %g cannot be converted to int64 (input %s)", value,
                        mmu_shape_str(x));
    if ((st = mmu_tensor_empty_like(out, x))) return st;
    int64_t total = x->numel;
    const uint8_t *pm = mmu_bool(mask);
    if (x->dtype == MMU_FLOAT32) {
        float f = (float)value;
        MASKED_FILL_KERNEL(float, mmu_data(*out), mmu_data(x), pm, f, x->ndim, x->shape, ms, total);
    } else if (x->dtype == MMU_INT64) {
        int64_t f = (int64_t)value;
        MASKED_FILL_KERNEL(int64_t, mmu_data(*out), mmu_data(x), pm, f, x->ndim, x->shape, ms, total);
    } else {
        uint8_t f = value != 0.0;
        MASKED_FILL_KERNEL(uint8_t, mmu_data(*out), mmu_data(x), pm, f, x->ndim, x->shape, ms, total);
    }
    mmu_node *node = NULL;
    if ((st = mmu_record(&node, *out, MMU_OP_MASKED_FILL, 1, &x))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (node) mmu_save(node, 0, mask);
    return MMU_OK;
}

/* g with zeros where the mask is set */
mmu_status mmu_masked_fill_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    if (!n->inputs[0].needs_grad) return MMU_OK;
    mmu_tensor *mask = n->saved[0];
    int64_t ms[MMU_MAX_DIMS];
    mmu_status st = mask_strides(ms, g, mask, "masked_fill backward");
    if (!st) st = mmu_tensor_empty_like(&gin[0], g);
    if (st) return st;
    int64_t total = g->numel;
    MASKED_FILL_KERNEL(float, mmu_data(gin[0]), mmu_data(g), mmu_bool(mask), 0.0f, g->ndim, g->shape, ms, total);
    return MMU_OK;
}

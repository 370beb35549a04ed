/* Shape ops: views (reshape) and copies (permute, slice, expand, cat);
 * indexing (gather, index_select, masked_*) is in index.c. All tensors are contiguous (see core/mmu.h): reshape shares storage,
 * everything else writes a new contiguous tensor. */
#include <stdlib.h>
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

/* ============================================================ strided copy
 * permute, slice (and its backward) and cat (and its backward) are all one
 * operation: copy a box of `shape` elements from src to dst, each side with
 * its own element strides. The plan below drops size-1 dims and merges dims
 * that are adjacent on both sides, then absorbs the innermost run that is
 * contiguous on both sides into a single "element" of es bytes. What is left
 * is one of three loops:
 *   - nothing: one contiguous block (split into chunks for the threads);
 *   - a transpose: one dim is contiguous in dst and another in src (2-D
 *     transpose, NCHW <-> NHWC): copied tile by tile so that both the reads
 *     and the writes of a tile stay in L1;
 *   - otherwise a walk over dst order with a strided innermost loop, each
 *     element a typed move (es <= 16) or a memcpy of a whole contiguous run
 *     ((B, T, H, D) -> (B, H, T, D) copies rows of D). */

typedef struct { uint64_t lo, hi; } b16; /* 16-byte element: one move */

typedef struct {
    int nd;
    size_t es;                                                   /* bytes per element */
    int64_t n[MMU_MAX_DIMS], ds[MMU_MAX_DIMS], ss[MMU_MAX_DIMS]; /* strides in bytes  */
} copy_plan;

void mmu_contig_strides(int64_t *st, int ndim, const int64_t *shape) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        st[d] = s;
        s *= shape[d];
    }
}

/* Returns 0 if there is nothing to copy (an empty box). */
static int plan_copy(copy_plan *p, int ndim, const int64_t *shape, const int64_t *ds, const int64_t *ss, size_t es) {
    p->nd = 0;
    for (int d = 0; d < ndim; d++)
        if (shape[d] == 0) return 0;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] == 1) continue;
        int64_t dsb = ds[d] * (int64_t)es, ssb = ss[d] * (int64_t)es;
        int k = p->nd;
        if (k && p->ds[k - 1] == dsb * shape[d] && p->ss[k - 1] == ssb * shape[d]) {
            p->n[k - 1] *= shape[d];
            p->ds[k - 1] = dsb;
            p->ss[k - 1] = ssb;
        } else {
            p->n[k] = shape[d];
            p->ds[k] = dsb;
            p->ss[k] = ssb;
            p->nd++;
        }
    }
    p->es = es;
    if (p->nd && p->ds[p->nd - 1] == (int64_t)es && p->ss[p->nd - 1] == (int64_t)es) {
        p->es = es * p->n[p->nd - 1];
        p->nd--;
    }
    return 1;
}

/* cnt elements of es bytes, dst stride dl, src stride sl (bytes). An element of 8 or 16 bytes
 * may be 2 or 4 merged floats (or 2 merged bools for es 2) aligned only to the dtype, so it is
 * moved by a memcpy of constant size, which GCC emits as one unaligned move: dereferencing a
 * uint64_t * there is undefined (UBSan: misaligned store) and lets the compiler assume alignment. */
static inline void copy_run(char *dst, const char *src, int64_t cnt, int64_t dl, int64_t sl, size_t es) {
#define RUN(T) for (int64_t k = 0; k < cnt; k++) memcpy(dst + k * dl, src + k * sl, sizeof(T))
    switch (es) {
    case 1: RUN(uint8_t); break;
    case 2: RUN(uint16_t); break;
    case 4: RUN(uint32_t); break;
    case 8: RUN(uint64_t); break;
    case 16: RUN(b16); break;
    default: for (int64_t k = 0; k < cnt; k++) memcpy(dst + k * dl, src + k * sl, es);
    }
#undef RUN
}

/* Elements [lo, hi) of the box in dst order (p->nd >= 1). */
static void copy_range(const copy_plan *p, char *dst, const char *src, int64_t lo, int64_t hi) {
    int L = p->nd - 1;
    int64_t idx[MMU_MAX_DIMS], od = 0, os = 0, r = lo;
    for (int d = L; d >= 0; d--) {
        idx[d] = r % p->n[d];
        r /= p->n[d];
        od += idx[d] * p->ds[d];
        os += idx[d] * p->ss[d];
    }
    const int64_t nL = p->n[L], dL = p->ds[L], sL = p->ss[L];
    for (int64_t i = lo; i < hi;) {
        int64_t cnt = nL - idx[L] < hi - i ? nL - idx[L] : hi - i;
        copy_run(dst + od, src + os, cnt, dL, sL, p->es);
        i += cnt;
        idx[L] += cnt;
        od += cnt * dL;
        os += cnt * sL;
        if (idx[L] < nL) break; /* only the last run of a range can stop short */
        idx[L] = 0;
        od -= nL * dL;
        os -= nL * sL;
        for (int d = L - 1; d >= 0; d--) { /* carry */
            od += p->ds[d];
            os += p->ss[d];
            if (++idx[d] < p->n[d]) break;
            idx[d] = 0;
            od -= p->n[d] * p->ds[d];
            os -= p->n[d] * p->ss[d];
        }
    }
}

/* One tile of a transpose: w is the dim contiguous in dst, r the one
 * contiguous in src; the inner loop writes contiguously. Elements move by
 * constant-size memcpy: merged elements are aligned only to the dtype (copy_run). */
#define TILE_KERNEL(NAME, T)                                                                       \
    static void NAME(char *dst, const char *src, int64_t nw, int64_t nr, int64_t dsr, int64_t ssw) { \
        for (int64_t ir = 0; ir < nr; ir++) {                                                      \
            char *d = dst + ir * dsr;                                                              \
            const char *s = src + ir * (int64_t)sizeof(T);                                         \
            for (int64_t iw = 0; iw < nw; iw++)                                                    \
                memcpy(d + iw * (int64_t)sizeof(T), s + iw * ssw, sizeof(T));                      \
        }                                                                                          \
    }
TILE_KERNEL(tile_1, uint8_t)
TILE_KERNEL(tile_2, uint16_t)
TILE_KERNEL(tile_4, uint32_t)
TILE_KERNEL(tile_8, uint64_t)
TILE_KERNEL(tile_16, b16)

typedef void (*tile_fn)(char *, const char *, int64_t, int64_t, int64_t, int64_t);

static void copy_tiled(const copy_plan *p, int w, int r, char *dst, const char *src, int par) {
    tile_fn fn = p->es == 1 ? tile_1 : p->es == 2 ? tile_2 : p->es == 4 ? tile_4 : p->es == 8 ? tile_8 : tile_16;
    /* a tile is about 4 KB of each side: 32 x 32 floats */
    int64_t T = p->es >= 16 ? 16 : p->es >= 4 ? 32 : 64;
    int64_t ntw = (p->n[w] + T - 1) / T, ntr = (p->n[r] + T - 1) / T, per = ntw * ntr;
    int64_t batch = 1, total = 1;
    for (int d = 0; d < p->nd; d++) {
        total *= p->n[d];
        if (d != w && d != r) batch *= p->n[d];
    }
    int64_t tasks = batch * per;
#pragma omp parallel for schedule(static) if (par && total * (int64_t)p->es > 4 * MMU_PAR_GRAIN)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t b = t / per, tw = (t % per) % ntw, tr = (t % per) / ntw;
        int64_t od = 0, os = 0;
        for (int d = p->nd - 1; d >= 0; d--) {
            if (d == w || d == r) continue;
            int64_t i = b % p->n[d];
            b /= p->n[d];
            od += i * p->ds[d];
            os += i * p->ss[d];
        }
        int64_t w0 = tw * T, r0 = tr * T;
        int64_t nw = p->n[w] - w0 < T ? p->n[w] - w0 : T, nr = p->n[r] - r0 < T ? p->n[r] - r0 : T;
        od += w0 * p->ds[w] + r0 * p->ds[r];
        os += w0 * p->ss[w] + r0 * p->ss[r];
        fn(dst + od, src + os, nw, nr, p->ds[r], p->ss[w]);
    }
}

/* dst[i * ds] = src[i * ss] for every multi-index i < shape (strides in elements).
 * par = 0 keeps it on the calling thread (the caller is already parallel). */
static void strided_copy(char *dst, const int64_t *ds, const char *src, const int64_t *ss, int ndim,
                         const int64_t *shape, size_t es, int par) {
    copy_plan p;
    if (!plan_copy(&p, ndim, shape, ds, ss, es)) return;
    if (p.nd == 0) { /* one contiguous block */
        int64_t chunk = 1 << 16, nchunks = ((int64_t)p.es + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (par && (int64_t)p.es > 4 * MMU_PAR_GRAIN)
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t lo = c * chunk, len = (int64_t)p.es - lo < chunk ? (int64_t)p.es - lo : chunk;
            memcpy(dst + lo, src + lo, len);
        }
        return;
    }
    int64_t total = 1;
    for (int d = 0; d < p.nd; d++) total *= p.n[d];
    if (p.es == 1 || p.es == 2 || p.es == 4 || p.es == 8 || p.es == 16) {
        int L = p.nd - 1, other = -1;
        int64_t e = (int64_t)p.es;
        for (int d = 0; d < L; d++)
            if ((p.ds[L] == e && p.ss[d] == e) || (p.ss[L] == e && p.ds[d] == e)) other = d;
        if (other >= 0 && p.n[L] >= 8 && p.n[other] >= 8) {
            int w = p.ds[L] == e ? L : other, r = w == L ? other : L;
            copy_tiled(&p, w, r, dst, src, par);
            return;
        }
    }
    /* about 64 KB per task */
    int64_t per = (int64_t)(65536 / p.es) + 1, tasks = (total + per - 1) / per;
#pragma omp parallel for schedule(static) if (par && total * (int64_t)p.es > 4 * MMU_PAR_GRAIN)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t lo = t * per, hi = lo + per < total ? lo + per : total;
        copy_range(&p, dst, src, lo, hi);
    }
}

/* ================================================================= permute */
/* x (d0..dn) -> out (d_perm[0] .. d_perm[n]); perm may hold negative dims */
mmu_status mmu_permute(mmu_tensor **out, mmu_tensor *x, const int64_t *perm_in) {
    int nd = x->ndim, perm[MMU_MAX_DIMS], seen[MMU_MAX_DIMS] = {0};
    int64_t shape[MMU_MAX_DIMS], xst[MMU_MAX_DIMS], ss[MMU_MAX_DIMS], ds[MMU_MAX_DIMS];
    mmu_status st;
    for (int d = 0; d < nd; d++) {
        if ((st = mmu_wrap_dim(&perm[d], perm_in[d], nd, "permute"))) return st;
        if (seen[perm[d]]++)
            return mmu_fail(MMU_EVALUE, "permute: dims %s are not a permutation (dim %d repeats) for a tensor of shape %s",
                            mmu_dims_str(nd, perm_in), perm[d], mmu_shape_str(x));
        shape[d] = x->shape[perm[d]];
    }
    if ((st = mmu_tensor_empty(out, x->dtype, nd, shape))) return st;
    mmu_contig_strides(xst, nd, x->shape);
    mmu_contig_strides(ds, nd, shape);
    for (int d = 0; d < nd; d++) ss[d] = xst[perm[d]];
    strided_copy(mmu_data(*out), ds, mmu_data(x), ss, nd, shape, mmu_dtype_size(x->dtype), 1);
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_PERMUTE, 1, &x))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n)
        for (int d = 0; d < nd; d++) n->ctx.i[d] = perm[d];
    return MMU_OK;
}

/* the gradient goes back through the inverse permutation */
mmu_status mmu_permute_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    if (!n->inputs[0].needs_grad) return MMU_OK;
    int64_t inv[MMU_MAX_DIMS];
    for (int d = 0; d < n->inputs[0].ndim; d++) inv[n->ctx.i[d]] = d;
    return mmu_permute(&gin[0], g, inv);
}

/* =================================================================== slice */
static mmu_status slice_check(const mmu_tensor *x, const int64_t *start, const int64_t *step, const int64_t *length) {
    for (int d = 0; d < x->ndim; d++) {
        int64_t size = x->shape[d];
        int bad = step[d] <= 0 || length[d] < 0;
        /* start + (length - 1) * step < size, without overflow */
        if (!bad && length[d] > 0)
            bad = start[d] < 0 || start[d] >= size || (length[d] - 1) > (size - 1 - start[d]) / step[d];
        if (bad)
            return mmu_fail(step[d] <= 0 || length[d] < 0 ? MMU_EVALUE : MMU_EINDEX,
                            "slice: dim %d: start %lld, step %lld, length %lld is out of range for size %lld "
                            "(input shape %s; step must be > 0)", d, (long long)start[d], (long long)step[d],
                            (long long)length[d], (long long)size, mmu_shape_str(x));
    }
    return MMU_OK;
}

/* Strides (elements) and base offset of the sliced box inside x. */
static int64_t slice_layout(int64_t *ss, int ndim, const int64_t *xshape, const int64_t *start, const int64_t *step) {
    int64_t xst[MMU_MAX_DIMS], base = 0;
    mmu_contig_strides(xst, ndim, xshape);
    for (int d = 0; d < ndim; d++) {
        ss[d] = step[d] * xst[d];
        base += start[d] * xst[d];
    }
    return base;
}

/* x (d0..dn), per dim start, step > 0, length -> out (length0 .. lengthn) */
mmu_status mmu_slice(mmu_tensor **out, mmu_tensor *x, const int64_t *start, const int64_t *step, const int64_t *length) {
    mmu_status st = slice_check(x, start, step, length);
    if (st) return st;
    int nd = x->ndim;
    if ((st = mmu_tensor_empty(out, x->dtype, nd, length))) return st;
    size_t es = mmu_dtype_size(x->dtype);
    if ((*out)->numel) {
        int64_t ss[MMU_MAX_DIMS], ds[MMU_MAX_DIMS];
        int64_t base = slice_layout(ss, nd, x->shape, start, step);
        mmu_contig_strides(ds, nd, length);
        strided_copy(mmu_data(*out), ds, (const char *)mmu_data(x) + base * (int64_t)es, ss, nd, length, es, 1);
    }
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_SLICE, 1, &x))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n && nd) {
        if (!(n->extra = malloc(2 * nd * sizeof(int64_t)))) {
            MMU_CLEAR(*out);
            return mmu_fail(MMU_ENOMEM, "slice: out of memory");
        }
        memcpy(n->extra, start, nd * sizeof(int64_t));
        memcpy(n->extra + nd, step, nd * sizeof(int64_t));
    }
    return MMU_OK;
}

/* g (length...) scattered into zeros of x's shape */
mmu_status mmu_slice_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    if (!n->inputs[0].needs_grad) return MMU_OK;
    mmu_edge *in = &n->inputs[0];
    mmu_status st = mmu_tensor_zeros(&gin[0], MMU_FLOAT32, in->ndim, in->shape);
    if (st || !g->numel) return st;
    int64_t ss[MMU_MAX_DIMS], gs[MMU_MAX_DIMS];
    int64_t base = slice_layout(ss, in->ndim, in->shape, n->extra, n->extra + in->ndim);
    mmu_contig_strides(gs, g->ndim, g->shape);
    strided_copy((char *)mmu_f32(gin[0]) + base * 4, ss, mmu_data(g), gs, g->ndim, g->shape, 4, 1);
    return MMU_OK;
}

/* ===================================================================== cat */
/* torch still skips 1-D empty tensors of any other shape (legacy behaviour) */
static int cat_skipped(const mmu_tensor *t) { return t->ndim == 1 && t->shape[0] == 0; }

/* n tensors, same dtype and shape except along dim -> out */
mmu_status mmu_cat(mmu_tensor **out, int n, mmu_tensor *const *xs, int64_t dim_in) {
    if (n <= 0) return mmu_fail(MMU_EVALUE, "cat: expected a non-empty list of tensors");
    const mmu_tensor *ref = NULL;
    int ref_i = 0;
    for (int i = 0; i < n; i++) {
        if (xs[i]->ndim == 0)
            return mmu_fail(MMU_EVALUE, "cat: zero-dimensional tensor (at position %d) cannot be concatenated", i);
        if (xs[i]->dtype != xs[0]->dtype)
            return mmu_fail(MMU_ETYPE, "cat: all tensors must have the same dtype, got %s (tensor 0, shape %s) "
                            "and %s (tensor %d, shape %s)", mmu_dtype_name(xs[0]->dtype), mmu_shape_str(xs[0]),
                            mmu_dtype_name(xs[i]->dtype), i, mmu_shape_str(xs[i]));
        if (!ref && !cat_skipped(xs[i])) {
            ref = xs[i];
            ref_i = i;
        }
    }
    if (!ref) ref = xs[0]; /* all 1-D empty: the result is too */
    int dim, nd = ref->ndim;
    mmu_status st = mmu_wrap_dim(&dim, dim_in, nd, "cat");
    if (st) return st;
    int64_t shape[MMU_MAX_DIMS];
    memcpy(shape, ref->shape, sizeof shape);
    shape[dim] = 0;
    for (int i = 0; i < n; i++) {
        const mmu_tensor *t = xs[i];
        if (cat_skipped(t) && t != ref) continue;
        if (t->ndim != nd)
            return mmu_fail(MMU_EVALUE, "cat: tensors must have the same number of dims, got %s (tensor %d) and "
                            "%s (tensor %d)", mmu_shape_str(ref), ref_i, mmu_shape_str(t), i);
        for (int d = 0; d < nd; d++)
            if (d != dim && t->shape[d] != ref->shape[d])
                return mmu_fail(MMU_EVALUE, "cat: sizes must match except along dim %d, got %s (tensor %d) and "
                                "%s (tensor %d)", dim, mmu_shape_str(ref), ref_i, mmu_shape_str(t), i);
        shape[dim] += t->shape[dim];
    }
    if ((st = mmu_tensor_empty(out, ref->dtype, nd, shape))) return st;
    size_t es = mmu_dtype_size(ref->dtype);
    int64_t ds[MMU_MAX_DIMS], total = (*out)->numel, biggest = 0;
    mmu_contig_strides(ds, nd, shape);
    for (int i = 0; i < n; i++) biggest = xs[i]->numel > biggest ? xs[i]->numel : biggest;
    /* many small inputs (stack of rows): one thread per input; else each copy is parallel */
    int per_input = biggest <= MMU_PAR_GRAIN && total > MMU_PAR_GRAIN;
    int64_t *offs = mmu_alloc(n * sizeof(int64_t)); /* where input i starts along dim */
    if (!offs) {
        MMU_CLEAR(*out);
        return mmu_fail(MMU_ENOMEM, "cat: out of memory");
    }
    int64_t off = 0;
    for (int i = 0; i < n; i++) {
        int skip = cat_skipped(xs[i]) && xs[i] != ref;
        offs[i] = skip ? -1 : off;
        off += skip ? 0 : xs[i]->shape[dim];
    }
    char *po = mmu_data(*out);
#pragma omp parallel for schedule(static) if (per_input)
    for (int i = 0; i < n; i++) {
        const mmu_tensor *t = xs[i];
        if (offs[i] < 0 || !t->numel) continue;
        int64_t ts[MMU_MAX_DIMS];
        mmu_contig_strides(ts, nd, t->shape);
        strided_copy(po + offs[i] * ds[dim] * (int64_t)es, ds, mmu_data(t), ts, nd, t->shape, es, !per_input);
    }
    mmu_free(offs, n * sizeof(int64_t));
    mmu_node *node = NULL;
    if ((st = mmu_record(&node, *out, MMU_OP_CAT, n, xs))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (node) {
        /* per input: its size along dim, or -1 if it was skipped */
        if (!(node->extra = malloc(n * sizeof(int64_t)))) {
            MMU_CLEAR(*out);
            return mmu_fail(MMU_ENOMEM, "cat: out of memory");
        }
        for (int i = 0; i < n; i++) node->extra[i] = cat_skipped(xs[i]) && xs[i] != ref ? -1 : xs[i]->shape[dim];
        node->ctx.i[0] = dim;
    }
    return MMU_OK;
}

/* each input that needs a gradient gets its block of g along dim */
mmu_status mmu_cat_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int dim = (int)n->ctx.i[0];
    int64_t gs[MMU_MAX_DIMS], off = 0;
    mmu_contig_strides(gs, g->ndim, g->shape);
    for (int i = 0; i < n->n_inputs; i++) {
        mmu_edge *in = &n->inputs[i];
        int64_t size = n->extra[i];
        if (in->needs_grad) {
            mmu_status st = size < 0 ? mmu_tensor_zeros(&gin[i], MMU_FLOAT32, in->ndim, in->shape)
                                     : mmu_tensor_empty(&gin[i], MMU_FLOAT32, in->ndim, in->shape);
            if (st) return st;
            if (size > 0) {
                int64_t ds[MMU_MAX_DIMS];
                mmu_contig_strides(ds, in->ndim, in->shape);
                strided_copy(mmu_data(gin[i]), ds, (const char *)mmu_f32(g) + off * gs[dim] * 4, gs, in->ndim,
                             in->shape, 4, 1);
            }
        }
        if (size > 0) off += size;
    }
    return MMU_OK;
}

/* Shape ops: views (reshape), copies (permute, slice, expand, cat) and
 * indexing (gather, index_select, masked_select, masked_fill).
 * All tensors are contiguous (see core/mmu.h): reshape shares storage,
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

static void contig_strides(int64_t *st, int ndim, const int64_t *shape) {
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
    contig_strides(xst, nd, x->shape);
    contig_strides(ds, nd, shape);
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
    contig_strides(xst, ndim, xshape);
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
        contig_strides(ds, nd, length);
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
    contig_strides(gs, g->ndim, g->shape);
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
    contig_strides(ds, nd, shape);
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
        contig_strides(ts, nd, t->shape);
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
    contig_strides(gs, g->ndim, g->shape);
    for (int i = 0; i < n->n_inputs; i++) {
        mmu_edge *in = &n->inputs[i];
        int64_t size = n->extra[i];
        if (in->needs_grad) {
            mmu_status st = size < 0 ? mmu_tensor_zeros(&gin[i], MMU_FLOAT32, in->ndim, in->shape)
                                     : mmu_tensor_empty(&gin[i], MMU_FLOAT32, in->ndim, in->shape);
            if (st) return st;
            if (size > 0) {
                int64_t ds[MMU_MAX_DIMS];
                contig_strides(ds, in->ndim, in->shape);
                strided_copy(mmu_data(gin[i]), ds, (const char *)mmu_f32(g) + off * gs[dim] * 4, gs, in->ndim,
                             in->shape, 4, 1);
            }
        }
        if (size > 0) off += size;
    }
    return MMU_OK;
}

/* ================================================================ indexing */
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
    contig_strides(p->ist, n, ishape);
    contig_strides(p->xst, n, xshape);
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

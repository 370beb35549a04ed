/* 2-D pooling, forward and backward: max_pool2d (torch's max pooling: kernel,
 * stride, padding, dilation, ceil_mode) and avg_pool2d (below, after max).
 *
 * The forward keeps, per output, the position of its maximum inside its
 * window as one byte (kh*kw < 255: every practical kernel; 255 marks a window
 * with no input in it) or, for larger kernels, torch's int64 plane index.
 * That is 1/4 of the output's bytes instead of torch's 2x: the backward
 * never looks at the input again. Nothing is kept when no gradient is needed.
 *
 * Backward: each plane belongs to one thread and is scattered in a fixed
 * order, so overlapping windows (AlexNet's 3x3 / stride 2) add up the same
 * way every run without atomics. When the windows tile the input exactly
 * (VGG's 2x2 / stride 2) every input cell is written once, zeros included,
 * and the zero fill of the gradient is skipped.
 *
 * Forward: in each output row, the outputs whose windows lie wholly inside
 * the input run with the window cells as the outer loops and the outputs as
 * the inner, vectorised one (stride 1 and 2 known at compile time); only the
 * padded / clipped edge outputs take the scalar per-window scan.
 *
 * NaN: a NaN wins its window (the last NaN, as in torch's `val > max ||
 * isnan(val)` scan in window order); ties keep the first maximum. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

#define POOL_EMPTY 255 /* a byte index: the window holds no input cell */

typedef struct {
    int64_t kh, kw, sh, sw, ph, pw, dh, dw, H, W, OH, OW;
} maxpool_geom;

/* torch's pooling_output_shape; 0 or less means "too small" */
static int64_t maxpool_out(int64_t in, int64_t k, int64_t s, int64_t p, int64_t d, int ceil_mode) {
    /* in 128 bits: huge kernels or dilations give "too small", not a wrapped size */
    __int128 num = (__int128)in + 2 * (__int128)p - (__int128)d * (k - 1) - 1 + (ceil_mode ? s - 1 : 0);
    if (num < 0) return 0; /* torch's div_rtn rounds down: any negative numerator gives <= 0 */
    int64_t o = (int64_t)(num / s) + 1;
    /* the last window must start inside the input or the left padding */
    if (ceil_mode && (o - 1) * s >= in + p) o--;
    return o;
}

/* First input row/column of window o and the end (exclusive) along one axis,
 * with torch's step over the cells that fall in the padding. */
static inline void win_axis(int64_t o, int64_t s, int64_t p, int64_t d, int64_t k, int64_t I, int64_t *a,
                            int64_t *b) {
    int64_t start = o * s - p, end = start + (k - 1) * d + 1;
    while (start < 0) start += d;
    *a = start;
    *b = end < I ? end : I;
}

// one output (oh, ow) of a plane, any geometry: torch's scan of the window in (h, w) order
static inline void maxpool_one(const maxpool_geom *q, const float *x, float *y, uint8_t *ib, int64_t *il, int64_t oh,
                               int64_t ow, int64_t ha, int64_t hb) {
    int64_t wa, wb;
    win_axis(ow, q->sw, q->pw, q->dw, q->kw, q->W, &wa, &wb);
    float m = -INFINITY;
    int64_t best = ha * q->W + wa; /* torch's index for a window with no input */
    int found = 0;
    for (int64_t h = ha; h < hb; h += q->dh)
        for (int64_t w = wa; w < wb; w += q->dw) {
            float v = x[h * q->W + w];
            found = 1;
            if (v > m || isnan(v)) m = v, best = h * q->W + w;
        }
    y[oh * q->OW + ow] = m;
    if (ib) {
        if (!found) {
            ib[oh * q->OW + ow] = POOL_EMPTY;
        } else { /* back to the window's own coordinates */
            int64_t bh = best / q->W, bw = best % q->W;
            int64_t i = (bh - (oh * q->sh - q->ph)) / q->dh, j = (bw - (ow * q->sw - q->pw)) / q->dw;
            ib[oh * q->OW + ow] = (uint8_t)(i * q->kw + j);
        }
    }
    if (il) il[oh * q->OW + ow] = best;
}

#define POOL_SPAN 256
/* the inner loop over outputs with a compile-time stride where it is 1 or 2 (contiguous or
 * even/odd loads instead of gathers) */
#define POOL_SPAN_LOOP(SW)                                   \
    for (int64_t t = 0; t < nb; t++) {                       \
        float v = src[t * (SW)];                             \
        int take = v > mv[t] || v != v;                      \
        mv[t] = take ? v : mv[t];                            \
        kv[t] = take ? kk : kv[t];                           \
    }

// outputs [lo, hi) of row oh whose windows lie inside the input: the window cells are the outer
// loops and the outputs the inner (vectorised) one, which keeps torch's scan order per output
static void maxpool_span(const maxpool_geom *q, const float *x, float *y, uint8_t *ib, int64_t *il, int64_t oh,
                         int64_t ha, int64_t lo, int64_t hi) {
    for (int64_t s0 = lo; s0 < hi; s0 += POOL_SPAN) {
        int64_t nb = hi - s0 < POOL_SPAN ? hi - s0 : POOL_SPAN, sw = q->sw;
        float mv[POOL_SPAN];
        int32_t kv[POOL_SPAN];
        for (int64_t t = 0; t < nb; t++) mv[t] = -INFINITY, kv[t] = 0;
        for (int64_t i = 0; i < q->kh; i++) {
            const float *row = x + (ha + i * q->dh) * q->W + s0 * sw - q->pw;
            for (int64_t j = 0; j < q->kw; j++) {
                const float *src = row + j * q->dw;
                int32_t kk = (int32_t)(i * q->kw + j);
                if (sw == 2) {
#pragma omp simd
                    POOL_SPAN_LOOP(2)
                } else if (sw == 1) {
#pragma omp simd
                    POOL_SPAN_LOOP(1)
                } else {
#pragma omp simd
                    POOL_SPAN_LOOP(sw)
                }
            }
        }
        memcpy(y + oh * q->OW + s0, mv, nb * sizeof(float));
        if (ib)
            for (int64_t t = 0; t < nb; t++) ib[oh * q->OW + s0 + t] = (uint8_t)kv[t];
        if (il)
            for (int64_t t = 0; t < nb; t++)
                il[oh * q->OW + s0 + t] = (ha + (kv[t] / q->kw) * q->dh) * q->W + (s0 + t) * sw - q->pw +
                                          (kv[t] % q->kw) * q->dw;
    }
}

// one plane x (H, W) -> y (OH, OW), window-local argmax (byte or int64 plane index, either may be NULL)
static void maxpool_plane(const maxpool_geom *q, const float *x, float *y, uint8_t *ib, int64_t *il) {
    /* outputs [lo, hi) of a row have their whole window inside the input along w */
    int64_t lo = (q->pw + q->sw - 1) / q->sw, hi = (q->W - 1 - (q->kw - 1) * q->dw + q->pw);
    hi = hi < 0 ? 0 : hi / q->sw + 1;
    if (hi > q->OW) hi = q->OW;
    if (lo > hi) lo = hi;
    int vec = q->kh * q->kw < POOL_EMPTY;
    for (int64_t oh = 0; oh < q->OH; oh++) {
        int64_t ha, hb;
        win_axis(oh, q->sh, q->ph, q->dh, q->kh, q->H, &ha, &hb);
        int inside = vec && ha == oh * q->sh - q->ph && hb - ha == (q->kh - 1) * q->dh + 1;
        for (int64_t ow = 0; ow < q->OW; ow++) {
            if (inside && ow == lo && hi > lo) {
                maxpool_span(q, x, y, ib, il, oh, ha, lo, hi);
                ow = hi - 1;
                continue;
            }
            maxpool_one(q, x, y, ib, il, oh, ow, ha, hb);
        }
    }
}

// x (N, C, H, W) or (C, H, W) -> out (N, C, OH, OW) or (C, OH, OW), indices (same, int64) if asked
mmu_status mmu_max_pool2d(mmu_tensor **out, mmu_tensor **indices, mmu_tensor *x, const int64_t *kernel,
                          const int64_t *stride, const int64_t *padding, const int64_t *dilation, int ceil_mode) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "max_pool2d", "input");
    if (st) return st;
    /* torch: only the batch dim may be 0 */
    int64_t batch = x->ndim == 4 ? x->shape[0] : 1;
    if ((x->ndim != 3 && x->ndim != 4) || (batch > 0 && x->numel == 0) ||
        (batch == 0 && x->shape[1] * x->shape[2] * x->shape[3] == 0))
        return mmu_fail(MMU_EVALUE, "max_pool2d: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input with only the "
                        "batch dim possibly 0, got %s", mmu_shape_str(x));
    maxpool_geom q = {kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], dilation[0], dilation[1],
                      x->shape[x->ndim - 2], x->shape[x->ndim - 1], 0, 0};
    if (q.kh <= 0 || q.kw <= 0 || q.sh <= 0 || q.sw <= 0 || q.dh <= 0 || q.dw <= 0)
        return mmu_fail(MMU_EVALUE, "max_pool2d: kernel_size (%lld, %lld), stride (%lld, %lld) and dilation (%lld, "
                        "%lld) must be positive", (long long)q.kh, (long long)q.kw, (long long)q.sh, (long long)q.sw,
                        (long long)q.dh, (long long)q.dw);
    if (q.kh > (1 << 30) || q.kw > (1 << 30) || q.dh > (1 << 30) || q.dw > (1 << 30))
        return mmu_fail(MMU_EVALUE, "max_pool2d: kernel_size (%lld, %lld) or dilation (%lld, %lld) is too large",
                        (long long)q.kh, (long long)q.kw, (long long)q.dh, (long long)q.dw);
    /* torch: the padding is at most half of the kernel (whatever the dilation) */
    if (q.ph < 0 || q.pw < 0 || q.ph > q.kh / 2 || q.pw > q.kw / 2)
        return mmu_fail(MMU_EVALUE, "max_pool2d: pad should be at most half of kernel size, but got "
                        "padding (%lld, %lld), kernel_size (%lld, %lld) and dilation (%lld, %lld)", (long long)q.ph,
                        (long long)q.pw, (long long)q.kh, (long long)q.kw, (long long)q.dh, (long long)q.dw);
    q.OH = maxpool_out(q.H, q.kh, q.sh, q.ph, q.dh, ceil_mode);
    q.OW = maxpool_out(q.W, q.kw, q.sw, q.pw, q.dw, ceil_mode);
    if (q.OH < 1 || q.OW < 1)
        return mmu_fail(MMU_EVALUE, "max_pool2d: given input %s, the calculated output size (%lld, %lld) is too "
                        "small (kernel_size (%lld, %lld), stride (%lld, %lld), padding (%lld, %lld), dilation "
                        "(%lld, %lld))", mmu_shape_str(x), (long long)q.OH, (long long)q.OW, (long long)q.kh,
                        (long long)q.kw, (long long)q.sh, (long long)q.sw, (long long)q.ph, (long long)q.pw,
                        (long long)q.dh, (long long)q.dw);
    int64_t oshape[4];
    memcpy(oshape, x->shape, sizeof(int64_t) * x->ndim);
    oshape[x->ndim - 2] = q.OH, oshape[x->ndim - 1] = q.OW;
    int need = mmu_grad_enabled() && x->requires_grad;
    int byte_idx = q.kh * q.kw < POOL_EMPTY;
    mmu_tensor *ib = NULL, *il = NULL;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, oshape))) return st;
    /* bytes ride in a bool tensor: the caching allocator and the node's saved slot for free */
    if (need && byte_idx && (st = mmu_tensor_empty(&ib, MMU_BOOL, x->ndim, oshape))) goto fail;
    if ((indices || (need && !byte_idx)) && (st = mmu_tensor_empty(&il, MMU_INT64, x->ndim, oshape))) goto fail;
    int64_t planes = x->numel / (q.H * q.W), po = q.OH * q.OW;
    const float *px = mmu_f32(x);
    float *py = mmu_f32(*out);
    uint8_t *pb = ib ? mmu_bool(ib) : NULL;
    int64_t *pl = il ? mmu_i64(il) : NULL;
#pragma omp parallel for schedule(static) if ((*out)->numel * q.kh * q.kw > MMU_PAR_GRAIN)
    for (int64_t p = 0; p < planes; p++)
        maxpool_plane(&q, px + p * q.H * q.W, py + p * po, pb ? pb + p * po : NULL, pl ? pl + p * po : NULL);
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_MAX_POOL2D, 1, (mmu_tensor *[]){x}))) goto fail;
    if (n) {
        int64_t v[8] = {q.kh, q.kw, q.sh, q.sw, q.ph, q.pw, q.dh, q.dw};
        memcpy(n->ctx.i, v, sizeof v);
        mmu_save(n, 0, byte_idx ? ib : il);
    }
    mmu_tensor_decref(ib);
    if (indices)
        *indices = il;
    else
        mmu_tensor_decref(il);
    return MMU_OK;
fail:
    mmu_tensor_decref(ib);
    mmu_tensor_decref(il);
    MMU_CLEAR(*out);
    return st;
}

// g (N, C, OH, OW) -> dx (N, C, H, W): each output's gradient to its argmax
mmu_status mmu_max_pool2d_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int nd = n->inputs[0].ndim;
    const int64_t *v = n->ctx.i;
    maxpool_geom q = {v[0], v[1], v[2], v[3], v[4], v[5], v[6], v[7], n->inputs[0].shape[nd - 2],
                      n->inputs[0].shape[nd - 1], g->shape[nd - 2], g->shape[nd - 1]};
    mmu_tensor *idx = n->saved[0];
    int byte_idx = idx->dtype == MMU_BOOL;
    /* windows that tile the input exactly write every cell once: no zero fill needed */
    int tiles = byte_idx && q.sh == q.kh && q.sw == q.kw && q.ph == 0 && q.pw == 0 && q.dh == 1 && q.dw == 1 &&
                q.OH * q.kh == q.H && q.OW * q.kw == q.W;
    mmu_status st = tiles ? mmu_tensor_empty(&gin[0], MMU_FLOAT32, nd, n->inputs[0].shape)
                          : mmu_tensor_zeros(&gin[0], MMU_FLOAT32, nd, n->inputs[0].shape);
    if (st) return st;
    int64_t planes = gin[0]->numel / (q.H * q.W), po = q.OH * q.OW, pi = q.H * q.W;
    const float *pg = mmu_f32(g);
    float *pd = mmu_f32(gin[0]);
    const uint8_t *pb = byte_idx ? mmu_bool(idx) : NULL;
    const int64_t *pl = byte_idx ? NULL : mmu_i64(idx);
    if (tiles) {
        int64_t rows = planes * q.OH;
#pragma omp parallel for schedule(static) if (gin[0]->numel > MMU_PAR_GRAIN)
        for (int64_t r = 0; r < rows; r++) {
            float *dr = pd + r * q.kh * q.W; /* the kh input rows of output row r */
            const float *gr = pg + r * q.OW;
            const uint8_t *br = pb + r * q.OW;
            if (q.kh == 2 && q.kw == 2) {
                for (int64_t ow = 0; ow < q.OW; ow++) {
                    float gv = gr[ow];
                    int k = br[ow];
                    dr[2 * ow] = k == 0 ? gv : 0.0f;
                    dr[2 * ow + 1] = k == 1 ? gv : 0.0f;
                    dr[q.W + 2 * ow] = k == 2 ? gv : 0.0f;
                    dr[q.W + 2 * ow + 1] = k == 3 ? gv : 0.0f;
                }
            } else {
                for (int64_t i = 0; i < q.kh; i++)
                    for (int64_t ow = 0; ow < q.OW; ow++)
                        for (int64_t j = 0; j < q.kw; j++)
                            dr[i * q.W + ow * q.kw + j] = br[ow] == i * q.kw + j ? gr[ow] : 0.0f;
            }
        }
        return MMU_OK;
    }
    /* a window cell's offset from the window's top-left corner in the plane */
    int64_t off[POOL_EMPTY];
    if (byte_idx)
        for (int64_t k = 0; k < q.kh * q.kw; k++) off[k] = (k / q.kw) * q.dh * q.W + (k % q.kw) * q.dw;
    /* overlapping or padded windows: one thread owns a plane, outputs in order */
#pragma omp parallel for schedule(static) if (g->numel * 4 > MMU_PAR_GRAIN)
    for (int64_t p = 0; p < planes; p++) {
        float *dp = pd + p * pi;
        const float *gp = pg + p * po;
        if (pl) {
            const int64_t *lp = pl + p * po;
            for (int64_t o = 0; o < po; o++)
                if (lp[o] >= 0 && lp[o] < pi) dp[lp[o]] += gp[o]; /* an empty window's index is outside */
            continue;
        }
        const uint8_t *bp = pb + p * po;
        for (int64_t oh = 0; oh < q.OH; oh++) {
            int64_t base = (oh * q.sh - q.ph) * q.W - q.pw;
            for (int64_t ow = 0; ow < q.OW; ow++) {
                int k = bp[oh * q.OW + ow];
                if (k == POOL_EMPTY) continue;
                dp[base + ow * q.sw + off[k]] += gp[oh * q.OW + ow];
            }
        }
    }
    return MMU_OK;
}

/* ============================================================= avg_pool2d */
/* Separable windows through small index tables; the backward is a scatter whose
 * target plane is owned by one thread and visited in a fixed order. */

/* torch's pooling output size (dilation 1) */
static int64_t pool_out_size(int64_t in, int64_t k, int64_t s, int64_t p, int ceil_mode) {
    /* in 128 bits: a kernel or padding near 2**63 must give "too small", not wrap around */
    __int128 num = (__int128)in + 2 * (__int128)p - k + (ceil_mode ? s - 1 : 0);
    if (num < 0) return 0;
    int64_t o = (int64_t)(num / s) + 1;
    if (ceil_mode && (o - 1) * s >= in + p) o--;
    return o;
}

/* Windows are separable: per output row and per output column, the clamped
 * input range [s, e) and the extent counted with the padding (torch's
 * pool_size), built once per call. */
typedef struct {
    int64_t kh, kw, sh, sw, ph, pw, H, W, OH, OW, divisor;
    int count_include_pad;
    int64_t *hs, *he, *hx, *ws, *we, *wx; /* OH or OW entries each */
    int64_t *buf;
    size_t nbytes;
} pool_geom;

static void pool_axis(int64_t *s, int64_t *e, int64_t *ext, int64_t O, int64_t I, int64_t k, int64_t st, int64_t p) {
    for (int64_t o = 0; o < O; o++) {
        int64_t a = o * st - p, b = a + k < I + p ? a + k : I + p;
        ext[o] = b - a;
        s[o] = a > 0 ? a : 0;
        e[o] = b < I ? b : I;
    }
}

static mmu_status pool_tables(pool_geom *q) {
    q->nbytes = (size_t)3 * (q->OH + q->OW) * sizeof(int64_t);
    if (!(q->buf = mmu_alloc(q->nbytes))) return mmu_fail(MMU_ENOMEM, "avg_pool2d: out of memory");
    q->hs = q->buf, q->he = q->hs + q->OH, q->hx = q->he + q->OH;
    q->ws = q->hx + q->OH, q->we = q->ws + q->OW, q->wx = q->we + q->OW;
    pool_axis(q->hs, q->he, q->hx, q->OH, q->H, q->kh, q->sh, q->ph);
    pool_axis(q->ws, q->we, q->wx, q->OW, q->W, q->kw, q->sw, q->pw);
    return MMU_OK;
}

/* torch's divide_factor of output (oh, ow); 0 for a window with no input in it */
static inline int64_t pool_div(const pool_geom *q, int64_t oh, int64_t ow) {
    int64_t ch = q->he[oh] - q->hs[oh], cw = q->we[ow] - q->ws[ow];
    if (ch <= 0 || cw <= 0) return 0;
    return q->divisor ? q->divisor : q->count_include_pad ? q->hx[oh] * q->wx[ow] : ch * cw;
}

// x (N, C, H, W) or (C, H, W) -> out (N, C, OH, OW) or (C, OH, OW)
mmu_status mmu_avg_pool2d(mmu_tensor **out, mmu_tensor *x, const int64_t *kernel, const int64_t *stride,
                          const int64_t *padding, int ceil_mode, int count_include_pad, int64_t divisor) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "avg_pool2d", "input");
    if (st) return st;
    if (x->ndim != 3 && x->ndim != 4)
        return mmu_fail(MMU_EVALUE, "avg_pool2d: expected a 3-D (C, H, W) or 4-D (N, C, H, W) input, got %s",
                        mmu_shape_str(x));
    pool_geom q = {kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], x->shape[x->ndim - 2],
                   x->shape[x->ndim - 1], 0, 0, divisor, count_include_pad};
    if (q.kh <= 0 || q.kw <= 0 || q.sh <= 0 || q.sw <= 0)
        return mmu_fail(MMU_EVALUE, "avg_pool2d: kernel_size (%lld, %lld) and stride (%lld, %lld) must be positive",
                        (long long)q.kh, (long long)q.kw, (long long)q.sh, (long long)q.sw);
    if (q.ph < 0 || q.pw < 0 || q.ph > q.kh / 2 || q.pw > q.kw / 2)
        return mmu_fail(MMU_EVALUE, "avg_pool2d: padding (%lld, %lld) must be >= 0 and at most half of the kernel "
                        "size (%lld, %lld)", (long long)q.ph, (long long)q.pw, (long long)q.kh, (long long)q.kw);
    if (divisor < 0)
        return mmu_fail(MMU_EVALUE, "avg_pool2d: divisor_override must be positive, got %lld", (long long)divisor);
    q.OH = pool_out_size(q.H, q.kh, q.sh, q.ph, ceil_mode);
    q.OW = pool_out_size(q.W, q.kw, q.sw, q.pw, ceil_mode);
    if (q.OH < 1 || q.OW < 1)
        return mmu_fail(MMU_EVALUE, "avg_pool2d: the output size (%lld, %lld) is too small for input %s, kernel "
                        "(%lld, %lld), padding (%lld, %lld)", (long long)q.OH, (long long)q.OW, mmu_shape_str(x),
                        (long long)q.kh, (long long)q.kw, (long long)q.ph, (long long)q.pw);
    int64_t oshape[4];
    memcpy(oshape, x->shape, sizeof(int64_t) * x->ndim);
    oshape[x->ndim - 2] = q.OH, oshape[x->ndim - 1] = q.OW;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, oshape))) return st;
    if ((st = pool_tables(&q))) {
        MMU_CLEAR(*out);
        return st;
    }
    int64_t planes = q.H * q.W > 0 ? x->numel / (q.H * q.W) : 0;
    int pair_w = q.kw == 2 && q.sw == 2 && q.pw == 0 && 2 * q.OW <= q.W;
    const float *px = mmu_f32(x);
    float *py = mmu_f32(*out);
#pragma omp parallel for schedule(static) if ((*out)->numel * q.kh * q.kw > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < planes * q.OH; r++) {
        int64_t p = r / q.OH, oh = r % q.OH;
        const float *xp = px + p * q.H * q.W;
        float *yr = py + r * q.OW;
        for (int64_t ow = 0; ow < q.OW; ow++) yr[ow] = 0.0f;
        for (int64_t h = q.hs[oh]; h < q.he[oh]; h++) { /* h outer, w inner: torch's order of the sum */
            const float *xr = xp + h * q.W;
            if (pair_w) /* the 2x2 / stride-2 downsampling: vectorisable */
                for (int64_t ow = 0; ow < q.OW; ow++) yr[ow] += xr[2 * ow] + xr[2 * ow + 1];
            else
                for (int64_t ow = 0; ow < q.OW; ow++)
                    for (int64_t w = q.ws[ow]; w < q.we[ow]; w++) yr[ow] += xr[w];
        }
        for (int64_t ow = 0; ow < q.OW; ow++) {
            int64_t d = pool_div(&q, oh, ow);
            yr[ow] = d ? yr[ow] / (float)d : 0.0f;
        }
    }
    mmu_free(q.buf, q.nbytes);
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_AVG_POOL2D, 1, (mmu_tensor *[]){x}))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n) {
        int64_t v[8] = {q.kh, q.kw, q.sh, q.sw, q.ph, q.pw, divisor, count_include_pad};
        memcpy(n->ctx.i, v, sizeof v);
    }
    return MMU_OK;
}

mmu_status mmu_avg_pool2d_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int nd = n->inputs[0].ndim;
    const int64_t *v = n->ctx.i;
    pool_geom q = {v[0], v[1], v[2], v[3], v[4], v[5], n->inputs[0].shape[nd - 2], n->inputs[0].shape[nd - 1],
                   g->shape[nd - 2], g->shape[nd - 1], v[6], (int)v[7]};
    mmu_status st = mmu_tensor_zeros(&gin[0], MMU_FLOAT32, nd, n->inputs[0].shape);
    if (st || gin[0]->numel == 0) return st;
    if ((st = pool_tables(&q))) return st;
    int64_t planes = gin[0]->numel / (q.H * q.W);
    int pair_w = q.kw == 2 && q.sw == 2 && q.pw == 0 && 2 * q.OW <= q.W;
    const float *pg = mmu_f32(g);
    float *pd = mmu_f32(gin[0]);
    /* windows overlap when stride < kernel: one thread owns a whole plane */
#pragma omp parallel for schedule(static) if (g->numel * q.kh * q.kw > MMU_PAR_GRAIN)
    for (int64_t p = 0; p < planes; p++) {
        float *dp = pd + p * q.H * q.W;
        const float *gp = pg + p * q.OH * q.OW;
        for (int64_t oh = 0; oh < q.OH; oh++)
            for (int64_t h = q.hs[oh]; h < q.he[oh]; h++) {
                float *dr = dp + h * q.W;
                for (int64_t ow = 0; ow < q.OW; ow++) {
                    int64_t d = pool_div(&q, oh, ow);
                    float gv = d ? gp[oh * q.OW + ow] / (float)d : 0.0f;
                    if (pair_w) {
                        dr[2 * ow] += gv;
                        dr[2 * ow + 1] += gv;
                    } else {
                        for (int64_t w = q.ws[ow]; w < q.we[ow]; w++) dr[w] += gv;
                    }
                }
            }
    }
    mmu_free(q.buf, q.nbytes);
    return MMU_OK;
}


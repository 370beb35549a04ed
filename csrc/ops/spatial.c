/* pad and interpolation (nearest 1-3-D, bilinear 2-D), forward and backward
 * (avg_pool2d is with max_pool2d in pool.c).
 *
 * Every kernel maps output positions to input positions through small index
 * tables, one per dim, built once per call. Backwards are deterministic:
 * either a gather (each input element sums its own, fixed-order list of
 * outputs: constant pad, nearest) or a scatter whose target plane is owned by
 * one thread and visited in a fixed order (reflect/replicate pad, bilinear). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* ==================================================================== pad */

/* Per-dim source index of every output position: table[o] in [0, size) or -1
 * (a constant-filled position). */
static void pad_table(int64_t *t, int64_t size, int64_t lo, int64_t hi, int64_t osize, int mode) {
    for (int64_t o = 0; o < osize; o++) {
        int64_t j = o - lo;
        if (j >= 0 && j < size) {
            t[o] = j;
            continue;
        }
        switch (mode) {
        case MMU_PAD_REFLECT:
            if (j < 0) j = -j;
            if (j >= size) j = 2 * (size - 1) - j;
            break;
        case MMU_PAD_REPLICATE: j = j < 0 ? 0 : size - 1; break;
        case MMU_PAD_CIRCULAR: { /* torch wraps around the part that negative pads leave */
            int64_t c0 = lo < 0 ? -lo : 0, len = size - c0 - (hi < 0 ? -hi : 0);
            j = c0 + (((j - c0) % len) + len) % len;
            break;
        }
        default: j = -1;
        }
        t[o] = j;
    }
}

typedef struct {
    int ndim;
    int64_t in[MMU_MAX_DIMS], out[MMU_MAX_DIMS], lo[MMU_MAX_DIMS];
    int64_t *tab[MMU_MAX_DIMS];
    int64_t *buf;
    size_t nbytes;
} pad_plan;

static mmu_status pad_plan_make(pad_plan *pp, int ndim, const int64_t *in, const int64_t *lo, const int64_t *hi,
                                int mode) {
    int64_t tot = 0;
    pp->ndim = ndim;
    for (int d = 0; d < ndim; d++) {
        pp->in[d] = in[d];
        pp->lo[d] = lo[d];
        pp->out[d] = in[d] + lo[d] + hi[d];
        tot += pp->out[d];
    }
    pp->nbytes = (size_t)(tot + 1) * sizeof(int64_t);
    if (!(pp->buf = mmu_alloc(pp->nbytes))) return mmu_fail(MMU_ENOMEM, "pad: out of memory for the index tables");
    int64_t off = 0;
    for (int d = 0; d < ndim; d++) {
        pp->tab[d] = pp->buf + off;
        pad_table(pp->tab[d], in[d], lo[d], hi[d], pp->out[d], mode);
        off += pp->out[d];
    }
    return MMU_OK;
}

// x (in), plan -> y (out): rows of the last dim, the middle part copied whole
static void pad_forward(float *y, const float *x, const pad_plan *pp, float value) {
    int nd = pp->ndim;
    int64_t W = pp->out[nd - 1], Win = pp->in[nd - 1], rows = 1;
    for (int d = 0; d < nd - 1; d++) rows *= pp->out[d];
    /* [a, b): the output columns read straight from the input row (within [0, W]: a pad
     * may be wider than the output when the other side crops) */
    int64_t a = pp->lo[nd - 1] > 0 ? pp->lo[nd - 1] : 0, b = pp->lo[nd - 1] + Win < W ? pp->lo[nd - 1] + Win : W;
    if (a > W) a = W;
    if (b < a) b = a;
    const int64_t *tw = pp->tab[nd - 1];
#pragma omp parallel for schedule(static) if (rows * W > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        float *yr = y + r * W;
        int64_t rem = r, src = 0, stride = Win;
        for (int d = nd - 2; d >= 0; d--) {
            int64_t i = pp->tab[d][rem % pp->out[d]];
            rem /= pp->out[d];
            if (i < 0) {
                src = -1;
                break;
            }
            src += i * stride;
            stride *= pp->in[d];
        }
        if (src < 0) {
            for (int64_t j = 0; j < W; j++) yr[j] = value;
            continue;
        }
        const float *xr = x + src;
        for (int64_t j = 0; j < a; j++) yr[j] = tw[j] < 0 ? value : xr[tw[j]];
        if (b > a) memcpy(yr + a, xr + (a - pp->lo[nd - 1]), (size_t)(b - a) * sizeof(float));
        for (int64_t j = b; j < W; j++) yr[j] = tw[j] < 0 ? value : xr[tw[j]];
    }
}

// x (d0, ..., dn-1), pads per dim (lo[d], hi[d]) -> out (d + lo + hi)
mmu_status mmu_pad(mmu_tensor **out, mmu_tensor *x, const int64_t *lo, const int64_t *hi, int mode, double value) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "pad", "input");
    if (st) return st;
    if (x->ndim < 1) return mmu_fail(MMU_EVALUE, "pad: cannot pad a 0-d tensor");
    if (mode < MMU_PAD_CONSTANT || mode > MMU_PAD_CIRCULAR) return mmu_fail(MMU_EVALUE, "pad: unknown mode %d", mode);
    int64_t oshape[MMU_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++) {
        int64_t s = x->shape[d];
        oshape[d] = s + lo[d] + hi[d];
        if (oshape[d] < 0)
            return mmu_fail(MMU_EVALUE, "pad: the input size %lld of dim %d, plus padding %lld and %lld, gives a "
                            "negative output size (input %s)", (long long)s, d, (long long)lo[d], (long long)hi[d],
                            mmu_shape_str(x));
        /* constant and circular crop by the negative pads first (torch narrows, then pads);
         * reflect and replicate map every output position straight to the input */
        int64_t kept = s + (lo[d] < 0 ? lo[d] : 0) + (hi[d] < 0 ? hi[d] : 0);
        if (kept < 0 && (mode == MMU_PAD_CONSTANT || mode == MMU_PAD_CIRCULAR))
            return mmu_fail(MMU_EVALUE, "pad: the negative padding (%lld, %lld) of dim %d crops more than its size "
                            "%lld (input %s)", (long long)lo[d], (long long)hi[d], d, (long long)s, mmu_shape_str(x));
        if (mode == MMU_PAD_CONSTANT || (lo[d] == 0 && hi[d] == 0)) continue;
        /* one reflection at most: every output position lands in [-(s-1), 2(s-1)] before it */
        if (mode == MMU_PAD_REFLECT && (lo[d] >= s || hi[d] >= s || lo[d] < -2 * (s - 1) || hi[d] < -2 * (s - 1)))
            return mmu_fail(MMU_EVALUE, "pad: reflect padding (%lld, %lld) of dim %d must be less than the input size "
                            "%lld (input %s)", (long long)lo[d], (long long)hi[d], d, (long long)s, mmu_shape_str(x));
        /* circular wraps around what the negative pads leave: at most once around it */
        if (mode == MMU_PAD_CIRCULAR && (lo[d] > kept || hi[d] > kept))
            return mmu_fail(MMU_EVALUE, "pad: circular padding (%lld, %lld) of dim %d would wrap around more than "
                            "once: each pad must be at most the %lld elements left of the size %lld (input %s)",
                            (long long)lo[d], (long long)hi[d], d, (long long)(kept > 0 ? kept : 0), (long long)s,
                            mmu_shape_str(x));
        if (s == 0)
            return mmu_fail(MMU_EVALUE, "pad: cannot pad an empty dim %d in non-constant mode (input %s)", d,
                            mmu_shape_str(x));
    }
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, oshape))) return st;
    if ((*out)->numel > 0) {
        pad_plan pp;
        if ((st = pad_plan_make(&pp, x->ndim, x->shape, lo, hi, mode))) {
            MMU_CLEAR(*out);
            return st;
        }
        pad_forward(mmu_f32(*out), mmu_f32(x), &pp, (float)value);
        mmu_free(pp.buf, pp.nbytes);
    }
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_PAD, 1, (mmu_tensor *[]){x}))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n) { /* lo and hi of up to 6 dims: lo in ctx.i, hi in extra */
        if (!(n->extra = malloc(MMU_MAX_DIMS * sizeof(int64_t)))) { /* freed with the node */
            MMU_CLEAR(*out);
            return mmu_fail(MMU_ENOMEM, "pad: out of memory");
        }
        for (int d = 0; d < MMU_MAX_DIMS; d++) {
            n->ctx.i[d] = d < x->ndim ? lo[d] : 0;
            n->extra[d] = d < x->ndim ? hi[d] : 0;
        }
        n->ctx.i[6] = mode;
    }
    return MMU_OK;
}

mmu_status mmu_pad_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int nd = n->inputs[0].ndim, mode = (int)n->ctx.i[6];
    const int64_t *in = n->inputs[0].shape;
    int64_t lo[MMU_MAX_DIMS], hi[MMU_MAX_DIMS];
    for (int d = 0; d < nd; d++) lo[d] = n->ctx.i[d], hi[d] = n->extra[d];
    mmu_status st;
    if (mode == MMU_PAD_CONSTANT) { /* each input element has one output: crop g back (a pad by -lo, -hi) */
        int64_t nlo[MMU_MAX_DIMS], nhi[MMU_MAX_DIMS];
        for (int d = 0; d < nd; d++) nlo[d] = -lo[d], nhi[d] = -hi[d];
        if ((st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, nd, in))) return st;
        if (gin[0]->numel == 0) return MMU_OK;
        pad_plan pp;
        if ((st = pad_plan_make(&pp, nd, g->shape, nlo, nhi, MMU_PAD_CONSTANT))) return st;
        pad_forward(mmu_f32(gin[0]), mmu_f32(g), &pp, 0.0f);
        mmu_free(pp.buf, pp.nbytes);
        return MMU_OK;
    }
    /* reflect / replicate / circular: several outputs share an input. The
     * unpadded leading dims make independent planes; one thread sums a plane in
     * output order. */
    if ((st = mmu_tensor_zeros(&gin[0], MMU_FLOAT32, nd, in))) return st;
    if (gin[0]->numel == 0 || g->numel == 0) return MMU_OK;
    pad_plan pp;
    if ((st = pad_plan_make(&pp, nd, in, lo, hi, mode))) return st;
    int lead = 0;
    while (lead < nd - 1 && lo[lead] == 0 && hi[lead] == 0) lead++;
    int64_t planes = 1, iplane = 1, oplane = 1, orows = 1, W = pp.out[nd - 1], Win = in[nd - 1];
    for (int d = 0; d < lead; d++) planes *= in[d];
    for (int d = lead; d < nd; d++) iplane *= in[d], oplane *= pp.out[d];
    for (int d = lead; d < nd - 1; d++) orows *= pp.out[d];
    const float *pg = mmu_f32(g);
    float *pd = mmu_f32(gin[0]);
    const int64_t *tw = pp.tab[nd - 1];
#pragma omp parallel for schedule(static) if (g->numel > MMU_PAR_GRAIN)
    for (int64_t p = 0; p < planes; p++) {
        const float *gp = pg + p * oplane;
        float *dp = pd + p * iplane;
        for (int64_t r = 0; r < orows; r++) {
            int64_t rem = r, src = 0, stride = Win;
            for (int d = nd - 2; d >= lead; d--) {
                src += pp.tab[d][rem % pp.out[d]] * stride;
                rem /= pp.out[d];
                stride *= in[d];
            }
            const float *gr = gp + r * W;
            float *dr = dp + src;
            for (int64_t j = 0; j < W; j++) dr[tw[j]] += gr[j];
        }
    }
    mmu_free(pp.buf, pp.nbytes);
    return MMU_OK;
}

/* ======================================================== interpolation */

/* torch's nearest source index: floor(dst·scale) in float, scale = 1/scale_factor
 * when one was given (even if the size does not change), else in/out. torch's
 * 2-D kernel (only it) first takes two shortcuts that ignore the scale factor:
 * an unchanged size is a copy, a doubled one takes dst/2; `shortcuts` selects
 * them so that mmu gives torch's result for 1, 2 and 3 spatial dims. */
static int64_t nearest_src(int64_t o, int64_t in, int64_t out, double sf, int shortcuts) {
    if (shortcuts && out == in) return o;
    if (shortcuts && out == 2 * in) return o >> 1;
    float scale = sf > 0 ? (float)(1.0 / sf) : (float)in / (float)out;
    int64_t s = (int64_t)floorf((float)o * scale);
    return s < in - 1 ? s : in - 1;
}

/* x seen as (P, D, H, W) (missing spatial dims are 1) */
typedef struct {
    int64_t P, in[3], out[3];
} grid3;

static void grid_of(grid3 *gr, int ndim, const int64_t *ishape, const int64_t *oshape, int nsp) {
    gr->P = 1;
    for (int d = 0; d < ndim - nsp; d++) gr->P *= ishape[d];
    for (int k = 0; k < 3; k++) {
        int d = ndim - 3 + k;
        int sp = k >= 3 - nsp;
        gr->in[k] = sp ? ishape[d] : 1;
        gr->out[k] = sp ? oshape[d] : 1;
    }
}

// x (P, *in) with 1-3 spatial dims, out_size (nsp), scales (nsp, <= 0: none) -> out (P, *out_size)
mmu_status mmu_upsample_nearest(mmu_tensor **out, mmu_tensor *x, int nsp, const int64_t *osize, const double *scales) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "interpolate", "input");
    if (st) return st;
    if (nsp < 1 || nsp > 3 || x->ndim != nsp + 2)
        return mmu_fail(MMU_EVALUE, "interpolate: 'nearest' with %d spatial dims expects a %d-D input, got %s", nsp,
                        nsp + 2, mmu_shape_str(x));
    int64_t oshape[MMU_MAX_DIMS];
    memcpy(oshape, x->shape, sizeof(int64_t) * x->ndim);
    for (int k = 0; k < nsp; k++) {
        if (osize[k] <= 0 || x->shape[2 + k] <= 0)
            return mmu_fail(MMU_EVALUE, "interpolate: input and output sizes should be greater than 0, but got input "
                            "%s and output size %s", mmu_shape_str(x), mmu_dims_str(nsp, osize));
        oshape[2 + k] = osize[k];
    }
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, oshape))) return st;
    grid3 gr;
    grid_of(&gr, x->ndim, x->shape, oshape, nsp);
    double sf[3] = {0, 0, 0};
    for (int k = 0; k < nsp; k++) sf[3 - nsp + k] = scales[k];
    int64_t ttot = gr.out[0] + gr.out[1] + gr.out[2];
    size_t tb = (size_t)ttot * sizeof(int64_t);
    int64_t *tab = mmu_alloc(tb);
    if (!tab) {
        MMU_CLEAR(*out);
        return mmu_fail(MMU_ENOMEM, "interpolate: out of memory");
    }
    int64_t *td = tab, *th = tab + gr.out[0], *tw = th + gr.out[1];
    int sc = nsp == 2;
    for (int64_t o = 0; o < gr.out[0]; o++) td[o] = nearest_src(o, gr.in[0], gr.out[0], sf[0], sc);
    for (int64_t o = 0; o < gr.out[1]; o++) th[o] = nearest_src(o, gr.in[1], gr.out[1], sf[1], sc);
    for (int64_t o = 0; o < gr.out[2]; o++) tw[o] = nearest_src(o, gr.in[2], gr.out[2], sf[2], sc);
    int64_t OW = gr.out[2], W = gr.in[2], rows = gr.P * gr.out[0] * gr.out[1];
    int twice = OW == 2 * W;
    const float *px = mmu_f32(x);
    float *py = mmu_f32(*out);
#pragma omp parallel for schedule(static) if ((*out)->numel > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t oh = r % gr.out[1], od = (r / gr.out[1]) % gr.out[0], p = r / (gr.out[1] * gr.out[0]);
        const float *xr = px + ((p * gr.in[0] + td[od]) * gr.in[1] + th[oh]) * W;
        float *yr = py + r * OW;
        if (twice)
            for (int64_t j = 0; j < W; j++) yr[2 * j] = yr[2 * j + 1] = xr[j];
        else
            for (int64_t j = 0; j < OW; j++) yr[j] = xr[tw[j]];
    }
    mmu_free(tab, tb);
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_UPSAMPLE_NEAREST, 1, (mmu_tensor *[]){x}))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n) {
        n->ctx.i[0] = nsp;
        for (int k = 0; k < 3; k++) n->ctx.f[k] = sf[k];
    }
    return MMU_OK;
}

/* the output range [lo[i], hi[i]) that reads input i (the map is monotone) */
static void nearest_ranges(int64_t *lo, int64_t *hi, int64_t in, int64_t out, double sf, int shortcuts) {
    for (int64_t i = 0; i < in; i++) lo[i] = hi[i] = 0;
    for (int64_t o = 0; o < out; o++) {
        int64_t s = nearest_src(o, in, out, sf, shortcuts);
        if (hi[s] == 0) lo[s] = o;
        hi[s] = o + 1;
    }
}

// g (P, *out) -> dx (P, *in): each input sums its own output ranges (a gather)
mmu_status mmu_upsample_nearest_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int nd = n->inputs[0].ndim, nsp = (int)n->ctx.i[0];
    mmu_status st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, nd, n->inputs[0].shape);
    if (st || gin[0]->numel == 0) return st;
    grid3 gr;
    grid_of(&gr, nd, n->inputs[0].shape, g->shape, nsp);
    int64_t itot = gr.in[0] + gr.in[1] + gr.in[2];
    size_t tb = (size_t)itot * 2 * sizeof(int64_t);
    int64_t *tab = mmu_alloc(tb);
    if (!tab) return mmu_fail(MMU_ENOMEM, "interpolate backward: out of memory");
    int64_t *ld = tab, *hd = ld + gr.in[0], *lh = hd + gr.in[0], *hh = lh + gr.in[1], *lw = hh + gr.in[1],
            *hw = lw + gr.in[2];
    int sc = nsp == 2;
    nearest_ranges(ld, hd, gr.in[0], gr.out[0], n->ctx.f[0], sc);
    nearest_ranges(lh, hh, gr.in[1], gr.out[1], n->ctx.f[1], sc);
    nearest_ranges(lw, hw, gr.in[2], gr.out[2], n->ctx.f[2], sc);
    int64_t W = gr.in[2], OW = gr.out[2], rows = gr.P * gr.in[0] * gr.in[1];
    int twice = OW == 2 * W;
    const float *pg = mmu_f32(g);
    float *pd = mmu_f32(gin[0]);
#pragma omp parallel for schedule(static) if (g->numel > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t ih = r % gr.in[1], id = (r / gr.in[1]) % gr.in[0], p = r / (gr.in[1] * gr.in[0]);
        float *dr = pd + r * W;
        for (int64_t j = 0; j < W; j++) dr[j] = 0.0f;
        for (int64_t od = ld[id]; od < hd[id]; od++)
            for (int64_t oh = lh[ih]; oh < hh[ih]; oh++) {
                const float *gr_ = pg + ((p * gr.out[0] + od) * gr.out[1] + oh) * OW;
                if (twice)
                    for (int64_t j = 0; j < W; j++) dr[j] += gr_[2 * j] + gr_[2 * j + 1];
                else
                    for (int64_t j = 0; j < W; j++)
                        for (int64_t ow = lw[j]; ow < hw[j]; ow++) dr[j] += gr_[ow];
            }
    }
    mmu_free(tab, tb);
    return MMU_OK;
}

/* torch's linear source index and weights (float arithmetic, as its CPU kernel);
 * an axis whose size does not change is copied whatever the scale factor, as torch does */
static void linear_taps(int64_t *i0, int64_t *i1, float *l0, float *l1, int64_t in, int64_t out, int align, double sf) {
    if (in == out) {
        for (int64_t o = 0; o < out; o++) i0[o] = i1[o] = o, l0[o] = 1.0f, l1[o] = 0.0f;
        return;
    }
    float scale = align ? (out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f)
                        : (sf > 0 ? (float)(1.0 / sf) : (float)in / (float)out);
    for (int64_t o = 0; o < out; o++) {
        float src = align ? scale * (float)o : scale * ((float)o + 0.5f) - 0.5f;
        if (!align && src < 0) src = 0;
        int64_t s = (int64_t)floorf(src);
        if (s > in - 1) s = in - 1;
        float lam = src - (float)s;
        lam = lam < 0 ? 0 : lam > 1 ? 1 : lam;
        i0[o] = s;
        i1[o] = s + (s < in - 1 ? 1 : 0);
        l0[o] = 1.0f - lam;
        l1[o] = lam;
    }
}

typedef struct {
    int64_t *h0, *h1, *w0, *w1;
    float *lh0, *lh1, *lw0, *lw1;
    void *buf;
    size_t nbytes;
} bilinear_taps;

static mmu_status bilinear_make(bilinear_taps *t, int64_t H, int64_t W, int64_t OH, int64_t OW, int align,
                                double sh, double sw) {
    t->nbytes = (size_t)(OH + OW) * 2 * (sizeof(int64_t) + sizeof(float));
    if (!(t->buf = mmu_alloc(t->nbytes))) return mmu_fail(MMU_ENOMEM, "interpolate: out of memory");
    t->h0 = t->buf, t->h1 = t->h0 + OH, t->w0 = t->h1 + OH, t->w1 = t->w0 + OW;
    t->lh0 = (float *)(t->w1 + OW), t->lh1 = t->lh0 + OH, t->lw0 = t->lh1 + OH, t->lw1 = t->lw0 + OW;
    linear_taps(t->h0, t->h1, t->lh0, t->lh1, H, OH, align, sh);
    linear_taps(t->w0, t->w1, t->lw0, t->lw1, W, OW, align, sw);
    return MMU_OK;
}

// x (N, C, H, W) -> out (N, C, OH, OW)
mmu_status mmu_upsample_bilinear2d(mmu_tensor **out, mmu_tensor *x, int64_t OH, int64_t OW, int align_corners,
                                   double scale_h, double scale_w) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "interpolate", "input");
    if (st) return st;
    if (x->ndim != 4)
        return mmu_fail(MMU_EVALUE, "interpolate: 'bilinear' expects a 4-D input, got %s", mmu_shape_str(x));
    int64_t H = x->shape[2], W = x->shape[3];
    if (OH <= 0 || OW <= 0 || H <= 0 || W <= 0)
        return mmu_fail(MMU_EVALUE, "interpolate: input and output sizes should be greater than 0, but got input %s "
                        "and output size (%lld, %lld)", mmu_shape_str(x), (long long)OH, (long long)OW);
    int64_t oshape[4] = {x->shape[0], x->shape[1], OH, OW};
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, 4, oshape))) return st;
    bilinear_taps t;
    if ((st = bilinear_make(&t, H, W, OH, OW, align_corners, scale_h, scale_w))) {
        MMU_CLEAR(*out);
        return st;
    }
    int64_t rows = x->shape[0] * x->shape[1] * OH;
    const float *px = mmu_f32(x);
    float *py = mmu_f32(*out);
#pragma omp parallel for schedule(static) if ((*out)->numel > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t p = r / OH, oh = r % OH;
        const float *x0 = px + (p * H + t.h0[oh]) * W, *x1 = px + (p * H + t.h1[oh]) * W;
        float a0 = t.lh0[oh], a1 = t.lh1[oh], *yr = py + r * OW;
        for (int64_t ow = 0; ow < OW; ow++) {
            int64_t w0 = t.w0[ow], w1 = t.w1[ow];
            float b0 = t.lw0[ow], b1 = t.lw1[ow];
            yr[ow] = a0 * (b0 * x0[w0] + b1 * x0[w1]) + a1 * (b0 * x1[w0] + b1 * x1[w1]);
        }
    }
    mmu_free(t.buf, t.nbytes);
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_UPSAMPLE_BILINEAR, 1, (mmu_tensor *[]){x}))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n) {
        n->ctx.i[0] = align_corners;
        n->ctx.f[0] = scale_h;
        n->ctx.f[1] = scale_w;
    }
    return MMU_OK;
}

// g (N, C, OH, OW) -> dx (N, C, H, W): scatter of each output to its 4 taps, one plane per thread
mmu_status mmu_upsample_bilinear_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    const int64_t *is = n->inputs[0].shape;
    int64_t H = is[2], W = is[3], OH = g->shape[2], OW = g->shape[3], planes = is[0] * is[1];
    mmu_status st = mmu_tensor_zeros(&gin[0], MMU_FLOAT32, 4, is);
    if (st || gin[0]->numel == 0) return st;
    bilinear_taps t;
    if ((st = bilinear_make(&t, H, W, OH, OW, (int)n->ctx.i[0], n->ctx.f[0], n->ctx.f[1]))) return st;
    const float *pg = mmu_f32(g);
    float *pd = mmu_f32(gin[0]);
#pragma omp parallel for schedule(static) if (g->numel > MMU_PAR_GRAIN)
    for (int64_t p = 0; p < planes; p++)
        for (int64_t oh = 0; oh < OH; oh++) {
            float *d0 = pd + (p * H + t.h0[oh]) * W, *d1 = pd + (p * H + t.h1[oh]) * W;
            const float *gr = pg + (p * OH + oh) * OW;
            float a0 = t.lh0[oh], a1 = t.lh1[oh];
            for (int64_t ow = 0; ow < OW; ow++) {
                float v = gr[ow], b0 = t.lw0[ow], b1 = t.lw1[ow];
                d0[t.w0[ow]] += a0 * b0 * v;
                d0[t.w1[ow]] += a0 * b1 * v;
                d1[t.w0[ow]] += a1 * b0 * v;
                d1[t.w1[ow]] += a1 * b1 * v;
            }
        }
    mmu_free(t.buf, t.nbytes);
    return MMU_OK;
}

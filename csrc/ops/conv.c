/* Convolutions: torch's conv1d/2d/3d and conv_transpose1d/2d/3d, forward and
 * backward, on oneDNN.
 *
 * Four ways through, picked from the geometry alone:
 * - non-overlapping windows (stride == kernel, no padding/dilation/groups: a
 *   ViT patch embedding, any 1x1 conv) are batched matmuls over the patches,
 *   which NCHW holds as they are (1x1) or after one gather;
 * - a depthwise 3-D conv (groups == in_channels) runs direct OpenMP kernels
 *   (oneDNN has no depthwise 3-D kernel and falls back to im2col + gemm);
 * - everything else is one oneDNN convolution / deconvolution per pass
 *   (dnnl/dnnl_conv.c does the layout work: blocked formats and cached
 *   reorders; the bias add is fused into the forward, the bias gradient into
 *   the weight-gradient primitive, one reordered diff_dst serves both
 *   gradients, and a stride-1 data gradient runs as a forward conv);
 * - a transposed conv whose output_padding reaches past stride + padding
 *   computes its reachable box and embeds it (oneDNN refuses the geometry).
 *
 * Unbatched inputs (C, *sp) run as a batch of one: tensors are contiguous,
 * so that is the same memory, and only the shapes differ.
 *
 * padding='same' with an even kernel pads more on the right (torch's rule),
 * which oneDNN takes directly as padding_r != padding_l; output_padding of a
 * transposed conv is a smaller (possibly negative) padding_r of the
 * deconvolution. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "../dnnl/mmu_dnnl.h"

/* A node keeps its geometry as an int64 array that graph introspection decodes by
 * the names in op_table.h (MMU_CONV_GEOM_FIELDS): 6 scalars and 7 arrays of 3. */
_Static_assert(sizeof(mmu_conv_geom) == (6 + 7 * 3) * sizeof(int64_t), "mmu_conv_geom must stay all-int64");

static const char *conv_name(int transposed, int sp) {
    static const char *names[2][3] = {{"conv1d", "conv2d", "conv3d"},
                                      {"conv_transpose1d", "conv_transpose2d", "conv_transpose3d"}};
    return names[transposed][sp - 1];
}

/* Sizes past this are refused up front (products of them must not overflow int64). */
#define MMU_CONV_MAX_EXTENT ((__int128)1 << 48)

/* Checks shared by both directions: dtypes, ranks, groups, channels, bias,
 * stride/dilation/padding ranges. Fills g's channel and size fields (not
 * out/pad_r, which differ by direction). */
static mmu_status conv_check(mmu_conv_geom *g, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b, int transposed, int sp,
                             const int64_t *stride, const int64_t *padding, const int64_t *dilation,
                             int64_t groups) {
    const char *op = conv_name(transposed, sp);
    mmu_status st;
    if ((st = mmu_check_dtype(x, MMU_FLOAT32, op, "input"))) return st;
    if ((st = mmu_check_dtype(w, MMU_FLOAT32, op, "weight"))) return st;
    if (b && (st = mmu_check_dtype(b, MMU_FLOAT32, op, "bias"))) return st;
    if (x->ndim != sp + 1 && x->ndim != sp + 2)
        return mmu_fail(MMU_EVALUE, "%s: expected %dD (unbatched) or %dD (batched) input, but got input of shape %s",
                        op, sp + 1, sp + 2, mmu_shape_str(x));
    if (w->ndim != sp + 2)
        return mmu_fail(MMU_EVALUE, "%s: expected %dD weight (%s, %s/groups, *kernel_size), but got weight of "
                        "shape %s", op, sp + 2, transposed ? "in_channels" : "out_channels",
                        transposed ? "out_channels" : "in_channels", mmu_shape_str(w));
    if (groups <= 0)
        return mmu_fail(MMU_EVALUE, "%s: groups must be positive, got %lld", op, (long long)groups);
    /* torch's check_shape_forward: each group owns at least one row of the weight
     * (a weight with 0 rows would otherwise give an empty output silently) */
    if (w->shape[0] < groups)
        return mmu_fail(MMU_EVALUE, "%s: groups=%lld expects weight to be at least %lld at dimension 0, but got "
                        "weight of shape %s", op, (long long)groups, (long long)groups, mmu_shape_str(w));
    for (int d = 0; d < sp; d++) {
        if (stride[d] <= 0)
            return mmu_fail(MMU_EVALUE, "%s: stride must be positive, got %s", op, mmu_dims_str(sp, stride));
        if (dilation[d] <= 0)
            return mmu_fail(MMU_EVALUE, "%s: dilation must be positive, got %s", op, mmu_dims_str(sp, dilation));
        if (padding[d] < 0)
            return mmu_fail(MMU_EVALUE, "%s: negative padding %s is not supported (crop with pad() instead)", op,
                            mmu_dims_str(sp, padding));
        if (w->shape[2 + d] <= 0)
            return mmu_fail(MMU_EVALUE, "%s: weight of shape %s has an empty kernel", op, mmu_shape_str(w));
    }
    int batched = x->ndim == sp + 2;
    g->transposed = transposed;
    g->sp = sp;
    g->N = batched ? x->shape[0] : 1;
    g->IC = x->shape[batched];
    g->G = groups;
    for (int d = 0; d < sp; d++) {
        g->in[d] = x->shape[batched + 1 + d];
        g->k[d] = w->shape[2 + d];
        g->stride[d] = stride[d];
        g->dilation[d] = dilation[d];
        g->pad_l[d] = padding[d];
    }
    if (!transposed) {
        if (w->shape[0] % groups)
            return mmu_fail(MMU_EVALUE, "%s: groups=%lld must divide out_channels, but weight has shape %s", op,
                            (long long)groups, mmu_shape_str(w));
        if (g->IC != w->shape[1] * groups)
            return mmu_fail(MMU_EVALUE, "%s: groups=%lld, weight of shape %s expects input with %lld channels, "
                            "but got input of shape %s (%lld channels)", op, (long long)groups, mmu_shape_str(w),
                            (long long)(w->shape[1] * groups), mmu_shape_str(x), (long long)g->IC);
        g->OC = w->shape[0];
    } else {
        if (g->IC % groups)
            return mmu_fail(MMU_EVALUE, "%s: groups=%lld must divide in_channels, but input has shape %s", op,
                            (long long)groups, mmu_shape_str(x));
        if (w->shape[0] != g->IC)
            return mmu_fail(MMU_EVALUE, "%s: weight of shape %s expects input with %lld channels, but got input "
                            "of shape %s (%lld channels)", op, mmu_shape_str(w), (long long)w->shape[0],
                            mmu_shape_str(x), (long long)g->IC);
        g->OC = w->shape[1] * groups;
        /* torch refuses these rather than returning zeros: a deconvolution with no
         * output channels, and a non-empty batch with an empty spatial dim (only
         * zero batch or zero channel inputs are supported) */
        if (w->shape[1] == 0)
            return mmu_fail(MMU_EVALUE, "%s: weight of shape %s has 0 output channels", op, mmu_shape_str(w));
        for (int d = 0; d < sp; d++)
            if (g->N > 0 && g->in[d] == 0)
                return mmu_fail(MMU_EVALUE, "%s: only zero batch or zero channel inputs are supported, but got "
                                "input of shape %s", op, mmu_shape_str(x));
    }
    if (b && (b->ndim != 1 || b->shape[0] != g->OC))
        return mmu_fail(MMU_EVALUE, "%s: weight of shape %s expects a bias of shape (%lld,), but got bias of "
                        "shape %s", op, mmu_shape_str(w), (long long)g->OC, mmu_shape_str(b));
    return MMU_OK;
}

/* -------------------------------------------- unreachable output cells */
/* A transposed conv whose output_padding reaches past stride + padding
 * (allowed when dilation > output_padding) has trailing output cells that no
 * input touches: they hold the bias alone. oneDNN's deconvolution refuses
 * that geometry (it needs padding_r > -stride), so the primitive computes the
 * reachable box `in` (padding_r 0) and the op embeds it. Returns whether a
 * cut was needed. */
static int reachable_box(mmu_conv_geom *in, const mmu_conv_geom *g) {
    *in = *g;
    int cut = 0;
    for (int d = 0; d < g->sp && g->transposed; d++)
        if (g->pad_r[d] + g->stride[d] <= 0) {
            in->out[d] += g->pad_r[d];
            in->pad_r[d] = 0;
            cut = 1;
        }
    return cut;
}

// big (R, *bd), small (R, *sd) with sd <= bd: copies the leading sd box of
// every row from big to small (crop) or from small into big (embed).
static void box_copy(float *big, float *small, int64_t R, int sp, const int64_t *bd, const int64_t *sd, int crop) {
    int64_t bn = 1, sn = 1;
    for (int d = 0; d < sp; d++) bn *= bd[d], sn *= sd[d];
    int64_t len = sd[sp - 1], lines = sn / len;
#pragma omp parallel for schedule(static) if (R * sn > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < R; r++)
        for (int64_t l = 0; l < lines; l++) {
            /* line l of the small box -> its offset in the big one */
            int64_t rest = l, off = 0, stride = bd[sp - 1];
            for (int d = sp - 2; d >= 0; d--) {
                off += (rest % sd[d]) * stride;
                rest /= sd[d];
                stride *= bd[d];
            }
            float *pb = big + r * bn + off, *ps = small + r * sn + l * len;
            if (crop) memcpy(ps, pb, len * sizeof(float));
            else memcpy(pb, ps, len * sizeof(float));
        }
}

// g (N, OC, inner) -> db (OC) = sums over N and inner (double per channel, a fixed order)
static void bias_grad(float *db, const float *g, int64_t N, int64_t OC, int64_t inner) {
#pragma omp parallel for schedule(static) if (N * OC * inner > MMU_PAR_GRAIN)
    for (int64_t c = 0; c < OC; c++) {
        double s = 0;
        for (int64_t i = 0; i < N; i++)
            for (int64_t j = 0; j < inner; j++) s += g[(i * OC + c) * inner + j];
        db[c] = (float)s;
    }
}

static int64_t box_numel(const mmu_conv_geom *g) {
    int64_t n = 1;
    for (int d = 0; d < g->sp; d++) n *= g->out[d];
    return n;
}

/* ------------------------------------------------ non-overlapping patches */
/* stride == kernel with no padding, dilation or groups (a ViT patch embedding,
 * and every 1x1 conv): the windows do not overlap, so the conv is one batched
 * matmul per direction over the patches P_n (C*kvol, out cells) of each
 * image, gathered by a pure permutation of x (no copy at all for a stride-1
 * 1x1 conv, where P_n is x_n itself):
 *   y_n = W (OC, C*kvol) @ P_n + b,   dP_n = Wᵀ @ dy_n,   dW = Σ_n dy_n @ P_nᵀ.
 * oneDNN's conv kernels are tuned for overlapping windows and needs its
 * blocked layouts (reorders in and out); the matmul reads and writes NCHW
 * as it is. */
static int is_patchify(const mmu_conv_geom *g) {
    if (g->transposed || g->G != 1) return 0;
    for (int d = 0; d < g->sp; d++)
        if (g->stride[d] != g->k[d] || g->pad_l[d] || g->pad_r[d] || (g->dilation[d] != 1 && g->k[d] != 1))
            return 0;
    return 1;
}

/* Sizes padded to 3 spatial dims (leading 1s), and whether P_n is x_n itself. */
typedef struct { int64_t in[3], k[3], out[3], kvol, pvol, ivol; int identity; } patch_dims;

static void patch_dims_of(patch_dims *p, const mmu_conv_geom *g) {
    p->kvol = p->pvol = p->ivol = 1;
    p->identity = 1;
    for (int d = 0; d < 3; d++) {
        int s = d - (3 - g->sp);
        p->in[d] = s < 0 ? 1 : g->in[s];
        p->k[d] = s < 0 ? 1 : g->k[s];
        p->out[d] = s < 0 ? 1 : g->out[s];
        p->kvol *= p->k[d], p->pvol *= p->out[d], p->ivol *= p->in[d];
        if (p->k[d] != 1 || p->in[d] != p->out[d]) p->identity = 0;
    }
}

// x (N*C, *in) <-> P (N*C, *k, *out): gather (to_patches) or scatter back. Each x cell is in at
// most one patch; cells past the last whole patch are left alone (the caller zeroes them).
static void patch_copy(float *P, float *x, int64_t NC, const patch_dims *p, int to_patches) {
    int64_t rows = NC * p->kvol * p->out[0] * p->out[1], len = p->out[2];
#pragma omp parallel for schedule(static) if (rows * len > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t t = r, oh = t % p->out[1];
        t /= p->out[1];
        int64_t od = t % p->out[0];
        t /= p->out[0];
        int64_t kw = t % p->k[2];
        t /= p->k[2];
        int64_t kh = t % p->k[1];
        t /= p->k[1];
        int64_t kd = t % p->k[0], nc = t / p->k[0];
        float *xs = x + nc * p->ivol + ((od * p->k[0] + kd) * p->in[1] + oh * p->k[1] + kh) * p->in[2] + kw;
        float *ps = P + r * len;
        int64_t st = p->k[2];
        if (to_patches)
            for (int64_t i = 0; i < len; i++) ps[i] = xs[i * st];
        else
            for (int64_t i = 0; i < len; i++) xs[i * st] = ps[i];
    }
}

// x (N, C, *in), w (OC, C, *k), b (OC) or NULL -> y (N, OC, *out)
static mmu_status patch_fwd(const mmu_conv_geom *g, const float *x, const float *w, const float *b, float *y) {
    patch_dims p;
    patch_dims_of(&p, g);
    int64_t N = g->N, K = g->IC * p.kvol, P = p.pvol;
    size_t bytes = p.identity ? 0 : (size_t)(N * K * P) * sizeof(float);
    float *pat = p.identity ? (float *)x : mmu_alloc(bytes);
    if (!pat) return mmu_fail(MMU_ENOMEM, "%s: out of memory for %zu bytes of patches", conv_name(0, g->sp), bytes);
    if (!p.identity) patch_copy(pat, (float *)x, N * g->IC, &p, 1);
    mmu_md ma, mb, mc;
    mmu_md_contig(&ma, 3, (int64_t[]){1, g->OC, K});
    mmu_md_contig(&mb, 3, (int64_t[]){N, K, P});
    mmu_md_contig(&mc, 3, (int64_t[]){N, g->OC, P});
    /* the bias is per row of y_n: oneDNN 3.2's fast matmul takes only per-column
     * biases (a (1, OC, 1) bias runs its reference kernel, 100x slower), so it is
     * added after, in one pass over y */
    mmu_status st = mmu_dnnl_matmul(&ma, w, &mb, pat, NULL, NULL, &mc, y);
    if (!st && b) {
#pragma omp parallel for schedule(static) if (N * g->OC * P > MMU_PAR_GRAIN)
        for (int64_t r = 0; r < N * g->OC; r++) {
            float v = b[r % g->OC], *row = y + r * P;
            for (int64_t i = 0; i < P; i++) row[i] += v;
        }
    }
    if (!p.identity) mmu_free(pat, bytes);
    return st;
}

// dy (N, OC, *out) -> dx (N, C, *in), dw (OC, C, *k); either may be NULL
static mmu_status patch_bwd(const mmu_conv_geom *g, const float *x, const float *w, const float *dy, float *dx,
                            float *dw) {
    patch_dims p;
    patch_dims_of(&p, g);
    int64_t N = g->N, OC = g->OC, K = g->IC * p.kvol, P = p.pvol;
    size_t pbytes = p.identity ? 0 : (size_t)(N * K * P) * sizeof(float);
    size_t wbytes = N > 1 ? (size_t)(N * OC * K) * sizeof(float) : 0;
    float *pat = NULL, *part = NULL;
    mmu_status st = MMU_OK;
    if ((pbytes && !(pat = mmu_alloc(pbytes))) || (dw && wbytes && !(part = mmu_alloc(wbytes)))) {
        st = mmu_fail(MMU_ENOMEM, "%s backward: out of memory", conv_name(0, g->sp));
        goto done;
    }
    mmu_md mdy;
    mmu_md_contig(&mdy, 3, (int64_t[]){N, OC, P});
    if (dx) { /* dP_n = Wᵀ (K, OC) @ dy_n, Wᵀ by strides */
        mmu_md mwt = {3, {1, K, OC}, {OC * K, 1, K}}, mdp;
        mmu_md_contig(&mdp, 3, (int64_t[]){N, K, P});
        if ((st = mmu_dnnl_matmul(&mwt, w, &mdy, dy, NULL, NULL, &mdp, p.identity ? dx : pat))) goto done;
        if (!p.identity) {
            int covered = 1;
            for (int d = 0; d < 3; d++) covered &= p.out[d] * p.k[d] == p.in[d];
            if (!covered) memset(dx, 0, (size_t)(N * g->IC * p.ivol) * sizeof(float));
            patch_copy(pat, dx, N * g->IC, &p, 0);
        }
    }
    if (dw) { /* dW = Σ_n dy_n (OC, P) @ P_nᵀ (P, K), P_nᵀ by strides; the batch summed in order */
        const float *src = x;
        if (!p.identity) {
            patch_copy(pat, (float *)x, N * g->IC, &p, 1);
            src = pat;
        }
        mmu_md mpt = {3, {N, P, K}, {K * P, 1, P}}, mdw;
        mmu_md_contig(&mdw, 3, (int64_t[]){N, OC, K});
        if ((st = mmu_dnnl_matmul(&mdy, dy, &mpt, src, NULL, NULL, &mdw, N > 1 ? part : dw))) goto done;
        if (N > 1) {
            int64_t M = OC * K;
#pragma omp parallel for schedule(static) if (N * M > MMU_PAR_GRAIN)
            for (int64_t i = 0; i < M; i++) {
                float s = part[i];
                for (int64_t n = 1; n < N; n++) s += part[n * M + i];
                dw[i] = s;
            }
        }
    }
done:
    if (pat) mmu_free(pat, pbytes);
    if (part) mmu_free(part, wbytes);
    return st;
}

/* ------------------------------------------------------- depthwise 3-D */
/* groups == in_channels in 3-D (OmniTokenizer's PEG: a depthwise 3x3x3 conv).
 * oneDNN has no direct depthwise kernel for 3-D: it runs gemm:jit, an im2col
 * and a one-channel gemm per group, ~10x torch's time forward at
 * (4, 128, 3, 8, 8). Here each (image, channel) volume is convolved directly;
 * output channel o reads input channel o / M (M = OC / IC, the depth
 * multiplier). Two ways through:
 * - stride 1 (the PEG; padding up to the kernel's reach, any dilation): the
 *   volume is copied into a zero-padded box (Dp, Hp, Wp), and the output is
 *   computed in rows of Wp cells (the last Wp - OW of each row are never read
 *   back), so that a kernel tap (kd, kh, kw) reads one contiguous run of the
 *   box for a whole output plane, y'[od][j] += w_tap · xp[od + kd·dil][j +
 *   kh·dil·Wp + kw·dil], with no bounds inside (the padding supplies zeros);
 *   a vector of outputs sums all the taps in registers. The data gradient is
 *   the same pass over dy with the kernel flipped; the weight gradient is one
 *   dot product per tap of dy (in rows of Wp, zeros in the extra cells) with
 *   the same runs of the padded input;
 * - any other stride: for every tap (kd, kh) and output row it lands inside
 *   the input, a multiply-add of an input row into the output row per kw.
 * dw and db are per output channel, each tap summed over the batch in a fixed
 * order (float lanes within a volume, double across): the same numbers for
 * any thread count. A thread allocates its scratch once per call. */
static int is_depthwise3d(const mmu_conv_geom *g) {
    return !g->transposed && g->sp == 3 && g->G > 1 && g->IC == g->G;
}

// the output cells o in [*lo, *hi) (of on) whose input cell o*s + off lies in [0, n)
static void dw_span(int64_t *lo, int64_t *hi, int64_t off, int64_t s, int64_t n, int64_t on) {
    int64_t a = off >= 0 ? 0 : (-off + s - 1) / s;
    int64_t b = n - off <= 0 ? 0 : (n - off + s - 1) / s;
    *lo = a;
    *hi = b < on ? b : on;
}

/* Runs the statements (the variadic argument) for every (output row, input
 * row, kernel row) triple of one volume that the geometry connects: yrow, xrow
 * and trow index the rows of OW, W and KW cells. */
#define DW3_ROWS(g, ...)                                                                                    \
    for (int64_t kd = 0; kd < (g)->k[0]; kd++) {                                                           \
        int64_t d0, d1, offd = kd * (g)->dilation[0] - (g)->pad_l[0];                                      \
        dw_span(&d0, &d1, offd, (g)->stride[0], (g)->in[0], (g)->out[0]);                                  \
        for (int64_t kh = 0; kh < (g)->k[1]; kh++) {                                                       \
            int64_t h0, h1, offh = kh * (g)->dilation[1] - (g)->pad_l[1];                                  \
            dw_span(&h0, &h1, offh, (g)->stride[1], (g)->in[1], (g)->out[1]);                              \
            for (int64_t od = d0; od < d1; od++)                                                           \
                for (int64_t oh = h0; oh < h1; oh++) {                                                     \
                    int64_t yrow = od * (g)->out[1] + oh;                                                  \
                    int64_t xrow = (od * (g)->stride[0] + offd) * (g)->in[1] + oh * (g)->stride[1] + offh; \
                    int64_t trow = kd * (g)->k[1] + kh;                                                    \
                    __VA_ARGS__;                                                                           \
                }                                                                                          \
        }                                                                                                  \
    }

// src (D, H, W) -> dst (D + l0 + r0, H + l1 + r1, W + l2 + r2) with zeros around: src at offset (l0, l1, l2)
static void pad_box(float *restrict dst, const float *restrict src, const int64_t *in, const int64_t *l,
                    const int64_t *pd) {
    memset(dst, 0, (size_t)(pd[0] * pd[1] * pd[2]) * sizeof(float));
    for (int64_t d = 0; d < in[0]; d++)
        for (int64_t h = 0; h < in[1]; h++) {
            /* rows of a few cells: a loop, not a call to memcpy */
            float *a = dst + ((d + l[0]) * pd[1] + h + l[1]) * pd[2] + l[2];
            const float *b = src + (d * in[1] + h) * in[2];
            for (int64_t i = 0; i < in[2]; i++) a[i] = b[i];
        }
}

/* One pass of the stride-1 path: a depthwise correlation of an (in) volume,
 * zero-padded by pl (left) into a box pd, with a k kernel (dilation dil),
 * flipped in every dim or not, into an (out) volume computed in rows of pd[2]
 * cells, its planes ysp cells apart. L: the cells of an output plane that are
 * computed, rounded up to a whole vector (<= ysp; the padded box carries
 * DW3_SLACK zeros past its end for it).
 * The forward is one pass; the data gradient is the pass of dy with the
 * flipped kernel and padding (k - 1)·dil - pad (>= 0, or the row path runs). */
#define DW3_SLACK 16

typedef struct {
    int64_t in[3], pl[3], pd[3], out[3], k[3], dil[3];
    int64_t pvol, ysp, yvol, L, plane, kvol;
    int flip;
} dw3_pass;

static void dw3_pass_of(dw3_pass *q, const mmu_conv_geom *g, int data_grad) {
    q->kvol = 1;
    for (int d = 0; d < 3; d++) {
        int64_t span = (g->k[d] - 1) * g->dilation[d];
        q->in[d] = data_grad ? g->out[d] : g->in[d];
        q->out[d] = data_grad ? g->in[d] : g->out[d];
        q->pl[d] = data_grad ? span - g->pad_l[d] : g->pad_l[d];
        q->pd[d] = q->in[d] + q->pl[d] + (data_grad ? span - g->pad_r[d] : g->pad_r[d]);
        q->k[d] = g->k[d];
        q->dil[d] = g->dilation[d];
        q->kvol *= g->k[d];
    }
    q->pvol = q->pd[0] * q->pd[1] * q->pd[2];
    q->plane = q->pd[1] * q->pd[2];
    int64_t L = (q->out[1] - 1) * q->pd[2] + q->out[2];
    q->L = (L + DW3_SLACK - 1) / DW3_SLACK * DW3_SLACK;
    q->ysp = (q->out[1] * q->pd[2] + DW3_SLACK - 1) / DW3_SLACK * DW3_SLACK;
    q->yvol = q->out[0] * q->ysp;
    q->flip = data_grad;
}

/* The stride-1 path, when the padded box of one volume stays a reasonable scratch (2^28 floats; sizes
 * multiplied in double, so a huge padding or dilation cannot wrap): otherwise the row path, which needs none. */
static int is_dw3_stride1(const mmu_conv_geom *g) {
    double box = 1;
    for (int d = 0; d < 3; d++) {
        int64_t span = (g->k[d] - 1) * g->dilation[d];
        if (g->stride[d] != 1 || g->pad_l[d] > span || g->pad_r[d] > span) return 0;
        /* the forward's box (in + pads) or the data gradient's (in + span) */
        double pads = (double)g->pad_l[d] + (double)g->pad_r[d];
        box *= (double)g->in[d] + (pads > (double)span ? pads : (double)span) + DW3_SLACK;
    }
    return box <= (double)(1 << 28);
}

// toff (kvol) <- each tap's offset into the padded box (kd·dil·plane + kh·dil·Wp + kw·dil), by weight index
static void dw3_offsets(int64_t *toff, const dw3_pass *q) {
    for (int64_t kd = 0; kd < q->k[0]; kd++)
        for (int64_t kh = 0; kh < q->k[1]; kh++)
            for (int64_t kw = 0; kw < q->k[2]; kw++) {
                int64_t k = (kd * q->k[1] + kh) * q->k[2] + kw;
                toff[q->flip ? q->kvol - 1 - k : k] =
                    kd * q->dil[0] * q->plane + kh * q->dil[1] * q->pd[2] + kw * q->dil[2];
            }
}

/* xp (the padded box + slack), w (kvol), toff (dw3_offsets) -> yp (out planes ysp apart, rows of Wp) = (or
 * += when accumulate) the pass (cells past out[2]: garbage). A vector of outputs sums every tap in registers
 * before one store: tap-by-tap passes over the plane were bound by the stores and reloads of yp. */
static void dw3_plane(float *restrict yp, const float *restrict xp, const float *w, const int64_t *toff,
                      const dw3_pass *q, int accumulate) {
    /* a GCC vector of DW3_SLACK floats (one zmm, two ymm): left to itself the compiler vectorised
     * the tap loop with gathers instead */
    typedef float vec __attribute__((vector_size(DW3_SLACK * sizeof(float))));
    for (int64_t od = 0; od < q->out[0]; od++) {
        const float *xo = xp + od * q->plane;
        float *yr = yp + od * q->ysp;
        int64_t j = 0;
        /* four vectors at a time: four independent chains of adds (one alone waits on each add's latency) */
        for (; j + 4 * DW3_SLACK <= q->L; j += 4 * DW3_SLACK) {
            vec a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, x0, x1, x2, x3;
            if (accumulate) {
                memcpy(&a0, yr + j, sizeof a0);
                memcpy(&a1, yr + j + DW3_SLACK, sizeof a1);
                memcpy(&a2, yr + j + 2 * DW3_SLACK, sizeof a2);
                memcpy(&a3, yr + j + 3 * DW3_SLACK, sizeof a3);
            }
            for (int64_t k = 0; k < q->kvol; k++) {
                const float *xr = xo + toff[k] + j;
                memcpy(&x0, xr, sizeof x0);
                memcpy(&x1, xr + DW3_SLACK, sizeof x1);
                memcpy(&x2, xr + 2 * DW3_SLACK, sizeof x2);
                memcpy(&x3, xr + 3 * DW3_SLACK, sizeof x3);
                a0 += w[k] * x0;
                a1 += w[k] * x1;
                a2 += w[k] * x2;
                a3 += w[k] * x3;
            }
            memcpy(yr + j, &a0, sizeof a0);
            memcpy(yr + j + DW3_SLACK, &a1, sizeof a1);
            memcpy(yr + j + 2 * DW3_SLACK, &a2, sizeof a2);
            memcpy(yr + j + 3 * DW3_SLACK, &a3, sizeof a3);
        }
        for (; j < q->L; j += DW3_SLACK) {
            vec acc = {0}, x;
            if (accumulate) memcpy(&acc, yr + j, sizeof acc);
            for (int64_t k = 0; k < q->kvol; k++) {
                memcpy(&x, xo + toff[k] + j, sizeof x);
                acc += w[k] * x;
            }
            memcpy(yr + j, &acc, sizeof acc);
        }
    }
}

// gp (out planes ysp apart, rows of Wp) with zeros past out[2] and between the planes, xp (padded box), toff,
// part (kvol vectors of DW3_SLACK floats) -> acc (kvol) += Σ_j gp · xp per tap: the products of one volume
// summed in vector lanes (part), the lanes added in double
static void dw3_plane_weight(double *acc, float *part, const float *restrict gp, const float *restrict xp,
                             const int64_t *toff, const dw3_pass *q) {
    typedef float vec __attribute__((vector_size(DW3_SLACK * sizeof(float))));
    memset(part, 0, (size_t)q->kvol * sizeof(vec));
    for (int64_t od = 0; od < q->out[0]; od++) {
        const float *xo = xp + od * q->plane, *gr = gp + od * q->ysp;
        for (int64_t j = 0; j < q->L; j += DW3_SLACK) {
            vec gv, x, p;
            memcpy(&gv, gr + j, sizeof gv);
            for (int64_t k = 0; k < q->kvol; k++) {
                memcpy(&x, xo + toff[k] + j, sizeof x);
                memcpy(&p, part + k * DW3_SLACK, sizeof p);
                p += gv * x;
                memcpy(part + k * DW3_SLACK, &p, sizeof p);
            }
        }
    }
    for (int64_t k = 0; k < q->kvol; k++) {
        double t = 0;
        for (int l = 0; l < DW3_SLACK; l++) t += part[k * DW3_SLACK + l];
        acc[k] += t;
    }
}

/* A thread's scratch, allocated once per parallel region: a padded box (+ DW3_SLACK floats that stay zero:
 * pad_box writes the box alone) and an output in rows (yvol), all zero at first; or NULL. */
static float *dw3_scratch(const dw3_pass *q) {
    return calloc((size_t)(q->pvol + DW3_SLACK + q->yvol), sizeof(float));
}

// v (out) <-> r (out[0] planes ysp apart, rows of Wp): to_rows zeroes what v does not fill; back to v adds `add`
static void dw3_rows(float *restrict r, float *restrict v, const dw3_pass *q, int to_rows, float add) {
    int64_t Wp = q->pd[2], OW = q->out[2];
    if (to_rows) memset(r, 0, (size_t)q->yvol * sizeof(float));
    for (int64_t d = 0; d < q->out[0]; d++)
        for (int64_t h = 0; h < q->out[1]; h++) {
            float *a = r + d * q->ysp + h * Wp, *b = v + (d * q->out[1] + h) * OW;
            if (to_rows)
                for (int64_t i = 0; i < OW; i++) a[i] = b[i];
            else
                for (int64_t i = 0; i < OW; i++) b[i] = a[i] + add;
        }
}

// x (N, C, *in), w (OC, 1, *k), b (OC) or NULL -> y (N, OC, *out), stride 1
static mmu_status dw3_fwd_stride1(const mmu_conv_geom *g, const float *x, const float *w, const float *bias,
                                  float *y) {
    dw3_pass q;
    dw3_pass_of(&q, g, 0);
    int64_t N = g->N, OC = g->OC, M = OC / g->IC, ivol = g->in[0] * g->in[1] * g->in[2];
    int64_t ovol = g->out[0] * g->out[1] * g->out[2];
    int64_t *toff = malloc((size_t)q.kvol * sizeof(int64_t));
    if (!toff) return mmu_fail(MMU_ENOMEM, "conv3d: out of memory");
    dw3_offsets(toff, &q);
    int failed = 0;
#pragma omp parallel if (N * OC * ovol * q.kvol > MMU_PAR_GRAIN)
    {
        float *xp = dw3_scratch(&q);
        if (!xp) failed = 1;
#pragma omp for schedule(static)
        for (int64_t v = 0; v < N * OC; v++) {
            if (!xp) continue;
            int64_t oc = v % OC;
            pad_box(xp, x + ((v / OC) * g->IC + oc / M) * ivol, q.in, q.pl, q.pd);
            dw3_plane(xp + q.pvol + DW3_SLACK, xp, w + oc * q.kvol, toff, &q, 0);
            dw3_rows(xp + q.pvol + DW3_SLACK, y + v * ovol, &q, 0, bias ? bias[oc] : 0.0f);
        }
        free(xp);
    }
    free(toff);
    return failed ? mmu_fail(MMU_ENOMEM, "conv3d: out of memory for a padded volume") : MMU_OK;
}

// dy (N, OC, *out) -> dx (N, C, *in) or NULL, dw (OC, 1, *k) or NULL, db (OC) or NULL; stride 1
static mmu_status dw3_bwd_stride1(const mmu_conv_geom *g, const float *x, const float *w, const float *dy, float *dx,
                                  float *dw, float *db) {
    dw3_pass qf, qd;
    dw3_pass_of(&qf, g, 0);
    dw3_pass_of(&qd, g, 1);
    int64_t N = g->N, C = g->IC, OC = g->OC, M = OC / C, ivol = g->in[0] * g->in[1] * g->in[2];
    int64_t ovol = g->out[0] * g->out[1] * g->out[2];
    int par = N * OC * ovol * qf.kvol > MMU_PAR_GRAIN, failed = 0;
    int64_t *toff = malloc((size_t)(2 * qf.kvol) * sizeof(int64_t)), *toff_d = toff + qf.kvol;
    if (!toff) return mmu_fail(MMU_ENOMEM, "conv3d backward: out of memory");
    dw3_offsets(toff, &qf);
    dw3_offsets(toff_d, &qd);
    if (dx) {
#pragma omp parallel if (par)
        {
            float *gp = dw3_scratch(&qd);
            if (!gp) failed = 1;
#pragma omp for schedule(static)
            for (int64_t v = 0; v < N * C; v++) {
                if (!gp) continue;
                float *xp = gp + qd.pvol + DW3_SLACK;
                for (int64_t m = 0; m < M; m++) {
                    int64_t oc = (v % C) * M + m;
                    pad_box(gp, dy + ((v / C) * OC + oc) * ovol, qd.in, qd.pl, qd.pd);
                    dw3_plane(xp, gp, w + oc * qd.kvol, toff_d, &qd, m > 0);
                }
                dw3_rows(xp, dx + v * ivol, &qd, 0, 0.0f);
            }
            free(gp);
        }
    }
    if (dw || db) {
#pragma omp parallel if (par)
        {
            /* dy in rows of the forward's Wp (zeros past OW) beside the forward's padded x */
            float *xp = dw3_scratch(&qf), *part = malloc((size_t)(qf.kvol * DW3_SLACK) * sizeof(float));
            double *acc = malloc((size_t)qf.kvol * sizeof(double));
            if (!xp || !part || !acc) failed = 1;
#pragma omp for schedule(static)
            for (int64_t oc = 0; oc < OC; oc++) {
                if (!xp || !part || !acc) continue;
                float *gp = xp + qf.pvol + DW3_SLACK;
                double s = 0;
                for (int64_t k = 0; k < qf.kvol; k++) acc[k] = 0;
                for (int64_t n = 0; n < N; n++) {
                    const float *gv = dy + (n * OC + oc) * ovol;
                    if (db) {
                        float t = 0;
#pragma omp simd reduction(+ : t)
                        for (int64_t i = 0; i < ovol; i++) t += gv[i];
                        s += t;
                    }
                    if (!dw) continue;
                    dw3_rows(gp, (float *)gv, &qf, 1, 0.0f);
                    pad_box(xp, x + (n * C + oc / M) * ivol, qf.in, qf.pl, qf.pd);
                    dw3_plane_weight(acc, part, gp, xp, toff, &qf);
                }
                if (db) db[oc] = (float)s;
                if (dw)
                    for (int64_t k = 0; k < qf.kvol; k++) dw[oc * qf.kvol + k] = (float)acc[k];
            }
            free(xp);
            free(part);
            free(acc);
        }
    }
    free(toff);
    return failed ? mmu_fail(MMU_ENOMEM, "conv3d backward: out of memory for a padded volume") : MMU_OK;
}

// x (N, C, D, H, W), w (OC, 1, kd, kh, kw), b (OC) or NULL -> y (N, OC, OD, OH, OW)
static void dw3_fwd(const mmu_conv_geom *g, const float *x, const float *w, const float *b, float *y) {
    int64_t N = g->N, OC = g->OC, M = OC / g->IC, KW = g->k[2], W = g->in[2], OW = g->out[2], sw = g->stride[2];
    int64_t ivol = g->in[0] * g->in[1] * W, ovol = g->out[0] * g->out[1] * OW, kvol = g->k[0] * g->k[1] * KW;
#pragma omp parallel for schedule(static) if (N * OC * ovol * kvol > MMU_PAR_GRAIN)
    for (int64_t v = 0; v < N * OC; v++) {
        int64_t n = v / OC, oc = v % OC;
        const float *xv = x + (n * g->IC + oc / M) * ivol, *wv = w + oc * kvol;
        float *yv = y + v * ovol, b0 = b ? b[oc] : 0.0f;
        for (int64_t i = 0; i < ovol; i++) yv[i] = b0;
        DW3_ROWS(g, {
            float *restrict yr = yv + yrow * OW;
            const float *restrict xr = xv + xrow * W;
            for (int64_t kw = 0; kw < KW; kw++) {
                int64_t w0, w1, off = kw * g->dilation[2] - g->pad_l[2];
                dw_span(&w0, &w1, off, sw, W, OW);
                float t = wv[trow * KW + kw];
                if (sw == 1)
                    for (int64_t o = w0; o < w1; o++) yr[o] += t * xr[o + off];
                else
                    for (int64_t o = w0; o < w1; o++) yr[o] += t * xr[o * sw + off];
            }
        })
    }
}

// dy (N, OC, *out) -> dx (N, C, *in) (or NULL), dw (OC, 1, *k) and db (OC) (either may be NULL)
static void dw3_bwd(const mmu_conv_geom *g, const float *x, const float *w, const float *dy, float *dx, float *dw,
                    float *db) {
    int64_t N = g->N, C = g->IC, OC = g->OC, M = OC / C, KW = g->k[2], W = g->in[2], OW = g->out[2];
    int64_t sw = g->stride[2];
    int64_t ivol = g->in[0] * g->in[1] * W, ovol = g->out[0] * g->out[1] * OW, kvol = g->k[0] * g->k[1] * KW;
    int par = N * OC * ovol * kvol > MMU_PAR_GRAIN;
    if (dx) {
#pragma omp parallel for schedule(static) if (par)
        for (int64_t v = 0; v < N * C; v++) {
            float *xv = dx + v * ivol;
            memset(xv, 0, (size_t)ivol * sizeof(float));
            for (int64_t m = 0; m < M; m++) {
                int64_t oc = (v % C) * M + m;
                const float *gv = dy + ((v / C) * OC + oc) * ovol, *wv = w + oc * kvol;
                DW3_ROWS(g, {
                    const float *restrict gr = gv + yrow * OW;
                    float *restrict xr = xv + xrow * W;
                    for (int64_t kw = 0; kw < KW; kw++) {
                        int64_t w0, w1, off = kw * g->dilation[2] - g->pad_l[2];
                        dw_span(&w0, &w1, off, sw, W, OW);
                        float t = wv[trow * KW + kw];
                        if (sw == 1)
                            for (int64_t o = w0; o < w1; o++) xr[o + off] += t * gr[o];
                        else
                            for (int64_t o = w0; o < w1; o++) xr[o * sw + off] += t * gr[o];
                    }
                })
            }
        }
    }
    if (!dw && !db) return;
#pragma omp parallel for schedule(static) if (par)
    for (int64_t oc = 0; oc < OC; oc++) {
        if (db) {
            double s = 0;
            for (int64_t n = 0; n < N; n++) {
                const float *gv = dy + (n * OC + oc) * ovol;
                float t = 0;
#pragma omp simd reduction(+ : t)
                for (int64_t i = 0; i < ovol; i++) t += gv[i];
                s += t;
            }
            db[oc] = (float)s;
        }
        if (!dw) continue;
        for (int64_t kd = 0; kd < g->k[0]; kd++) {
            int64_t d0, d1, offd = kd * g->dilation[0] - g->pad_l[0];
            dw_span(&d0, &d1, offd, g->stride[0], g->in[0], g->out[0]);
            for (int64_t kh = 0; kh < g->k[1]; kh++) {
                int64_t h0, h1, offh = kh * g->dilation[1] - g->pad_l[1];
                dw_span(&h0, &h1, offh, g->stride[1], g->in[1], g->out[1]);
                for (int64_t kw = 0; kw < KW; kw++) {
                    /* tap (kd, kh, kw): Σ over the batch and the rows it connects of dy · x */
                    int64_t w0, w1, off = kw * g->dilation[2] - g->pad_l[2];
                    dw_span(&w0, &w1, off, sw, W, OW);
                    double s = 0;
                    for (int64_t n = 0; n < N; n++) {
                        const float *gv = dy + (n * OC + oc) * ovol, *xv = x + (n * C + oc / M) * ivol;
                        for (int64_t od = d0; od < d1; od++)
                            for (int64_t oh = h0; oh < h1; oh++) {
                                const float *gr = gv + (od * g->out[1] + oh) * OW;
                                const float *xr = xv + ((od * g->stride[0] + offd) * g->in[1] + oh * g->stride[1] +
                                                        offh) * W;
                                float t = 0;
                                if (sw == 1) {
#pragma omp simd reduction(+ : t)
                                    for (int64_t o = w0; o < w1; o++) t += gr[o] * xr[o + off];
                                } else {
                                    for (int64_t o = w0; o < w1; o++) t += gr[o] * xr[o * sw + off];
                                }
                                s += t;
                            }
                    }
                    dw[oc * kvol + (kd * g->k[1] + kh) * KW + kw] = (float)s;
                }
            }
        }
    }
}

/* Runs the forward of geometry g and records the node (op CONV or
 * CONV_TRANSPOSE). The output (N, OC, *out), or (OC, *out) unbatched. */
static mmu_status conv_run(mmu_tensor **out, const mmu_conv_geom *g, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b,
                           mmu_op opcode) {
    int sp = g->sp, batched = x->ndim == sp + 2;
    int64_t shape[MMU_MAX_DIMS];
    int nd = 0;
    if (batched) shape[nd++] = g->N;
    shape[nd++] = g->OC;
    for (int d = 0; d < sp; d++) shape[nd++] = g->out[d];
    mmu_status st = mmu_tensor_empty(out, MMU_FLOAT32, nd, shape);
    if (st) return st;
    float *po = mmu_f32(*out);
    if ((*out)->numel == 0) {
        /* nothing to compute */
    } else if (x->numel == 0 || w->numel == 0) {
        /* no input channels: an empty sum, the bias alone */
        int64_t inner = (*out)->numel / (g->N * g->OC);
        for (int64_t i = 0; i < g->N * g->OC; i++)
            for (int64_t j = 0; j < inner; j++) po[i * inner + j] = b ? mmu_f32(b)[i % g->OC] : 0.0f;
    } else {
        mmu_conv_geom in;
        if (is_patchify(g)) {
            st = patch_fwd(g, mmu_f32(x), mmu_f32(w), b ? mmu_f32(b) : NULL, po);
        } else if (is_depthwise3d(g) && is_dw3_stride1(g)) {
            st = dw3_fwd_stride1(g, mmu_f32(x), mmu_f32(w), b ? mmu_f32(b) : NULL, po);
        } else if (is_depthwise3d(g)) {
            dw3_fwd(g, mmu_f32(x), mmu_f32(w), b ? mmu_f32(b) : NULL, po);
        } else if (!reachable_box(&in, g)) {
            st = mmu_dnnl_conv_fwd(g, mmu_f32(x), mmu_f32(w), b ? mmu_f32(b) : NULL, po);
        } else {
            int64_t R = g->N * g->OC, inner = box_numel(g), sn = box_numel(&in);
            size_t bytes = (size_t)(R * sn) * sizeof(float);
            float *tmp = mmu_alloc(bytes);
            if (!tmp) {
                st = mmu_fail(MMU_ENOMEM, "%s: out of memory", conv_name(1, sp));
            } else {
                st = mmu_dnnl_conv_fwd(&in, mmu_f32(x), mmu_f32(w), b ? mmu_f32(b) : NULL, tmp);
#pragma omp parallel for schedule(static) if (R * inner > MMU_PAR_GRAIN)
                for (int64_t i = 0; i < R; i++)
                    for (int64_t j = 0; j < inner; j++) po[i * inner + j] = b ? mmu_f32(b)[i % g->OC] : 0.0f;
                if (!st) box_copy(po, tmp, R, sp, g->out, in.out, 0);
                mmu_free(tmp, bytes);
            }
        }
    }
    mmu_node *n = NULL;
    if (!st) st = mmu_record(&n, *out, opcode, 3, (mmu_tensor *[]){x, w, b});
    if (!st && n) {
        if (!(n->extra = malloc(sizeof(mmu_conv_geom))))
            st = mmu_fail(MMU_ENOMEM, "%s: out of memory", conv_name(g->transposed, sp));
        else
            memcpy(n->extra, g, sizeof *g);
    }
    if (st) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n) { /* dx needs w, dw needs x */
        if (n->inputs[1].needs_grad) mmu_save(n, 0, x);
        if (n->inputs[0].needs_grad) mmu_save(n, 1, w);
    }
    return MMU_OK;
}

// x (N, C, *in) or (C, *in), w (OC, C/groups, *k), b (OC) or NULL -> (N, OC, *out) or (OC, *out),
// out = (in + pad_l + pad_r - dilation*(k-1) - 1) / stride + 1; sp = 1, 2, 3 spatial dims
mmu_status mmu_conv(mmu_tensor **out, int sp, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b, const int64_t *stride,
                    const int64_t *pad_l, const int64_t *pad_r, const int64_t *dilation, int64_t groups) {
    if (sp < 1 || sp > 3) return mmu_fail(MMU_EVALUE, "conv: %d spatial dims (1, 2 or 3 supported)", sp);
    mmu_conv_geom g;
    mmu_status st = conv_check(&g, x, w, b, 0, sp, stride, pad_l, dilation, groups);
    if (st) return st;
    const char *op = conv_name(0, sp);
    int64_t padded[3], ext[3];
    for (int d = 0; d < sp; d++) {
        if (pad_r[d] < 0)
            return mmu_fail(MMU_EVALUE, "%s: negative padding %s is not supported", op, mmu_dims_str(sp, pad_r));
        g.pad_r[d] = pad_r[d];
        /* in 128 bits: a padding or dilation near 2**63 must be a clear error, not a wrapped size */
        __int128 p128 = (__int128)g.in[d] + pad_l[d] + pad_r[d], e128 = (__int128)g.dilation[d] * (g.k[d] - 1) + 1;
        if (p128 > MMU_CONV_MAX_EXTENT || e128 > MMU_CONV_MAX_EXTENT)
            return mmu_fail(MMU_EVALUE, "%s: padding %s or dilation %s with kernel of weight %s is too large", op,
                            mmu_dims_str(sp, pad_l), mmu_dims_str(sp, dilation), mmu_shape_str(w));
        padded[d] = (int64_t)p128;
        ext[d] = (int64_t)e128;
    }
    for (int d = 0; d < sp; d++)
        if (padded[d] < ext[d])
            return mmu_fail(MMU_EVALUE, "%s: padded input size %s is smaller than the (dilated) kernel size %s "
                            "(input %s, weight %s)", op, mmu_dims_str(sp, padded), mmu_dims_str(sp, ext),
                            mmu_shape_str(x), mmu_shape_str(w));
    for (int d = 0; d < sp; d++) {
        g.out[d] = (padded[d] - ext[d]) / g.stride[d] + 1;
        /* a stride past the last window start changes nothing but oneDNN's int32 limits:
         * one output cell either way, so run it with the smallest equivalent stride */
        if (g.out[d] == 1) g.stride[d] = padded[d] - ext[d] + 1;
    }
    return conv_run(out, &g, x, w, b, MMU_OP_CONV);
}

// x (N, IC, *in) or (IC, *in), w (IC, OC/groups, *k), b (OC) or NULL -> (N, OC, *out) or (OC, *out),
// out = (in - 1)*stride - 2*padding + dilation*(k-1) + output_padding + 1
mmu_status mmu_conv_transpose(mmu_tensor **out, int sp, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b,
                              const int64_t *stride, const int64_t *padding, const int64_t *output_padding,
                              int64_t groups, const int64_t *dilation) {
    if (sp < 1 || sp > 3) return mmu_fail(MMU_EVALUE, "conv_transpose: %d spatial dims (1, 2 or 3 supported)", sp);
    mmu_conv_geom g;
    mmu_status st = conv_check(&g, x, w, b, 1, sp, stride, padding, dilation, groups);
    if (st) return st;
    const char *op = conv_name(1, sp);
    for (int d = 0; d < sp; d++) {
        if (output_padding[d] < 0)
            return mmu_fail(MMU_EVALUE, "%s: output_padding must be non-negative, got %s", op,
                            mmu_dims_str(sp, output_padding));
        if (output_padding[d] >= stride[d] && output_padding[d] >= dilation[d])
            return mmu_fail(MMU_EVALUE, "%s: output_padding %s must be smaller than either stride %s or dilation "
                            "%s", op, mmu_dims_str(sp, output_padding), mmu_dims_str(sp, stride),
                            mmu_dims_str(sp, dilation));
    }
    for (int d = 0; d < sp; d++) {
        __int128 o128 = ((__int128)g.in[d] - 1) * g.stride[d] - 2 * (__int128)padding[d] +
                        (__int128)g.dilation[d] * (g.k[d] - 1) + output_padding[d] + 1;
        if (o128 > MMU_CONV_MAX_EXTENT || padding[d] > MMU_CONV_MAX_EXTENT)
            return mmu_fail(MMU_EVALUE, "%s: input of shape %s with weight %s, stride %s, padding %s, dilation %s "
                            "gives an output too large to index", op, mmu_shape_str(x), mmu_shape_str(w),
                            mmu_dims_str(sp, stride), mmu_dims_str(sp, padding), mmu_dims_str(sp, dilation));
        g.out[d] = (int64_t)o128;
        /* the deconvolution's right padding: the output_padding extra cells come off it */
        g.pad_r[d] = padding[d] - output_padding[d];
        /* an output of 0 cells is an empty tensor, as in torch; only a negative size is an error */
        if (g.out[d] < 0 && g.in[d] > 0)
            return mmu_fail(MMU_EVALUE, "%s: input of shape %s with weight %s, stride %s, padding %s gives a "
                            "non-positive output size", op, mmu_shape_str(x), mmu_shape_str(w),
                            mmu_dims_str(sp, stride), mmu_dims_str(sp, padding));
    }
    return conv_run(out, &g, x, w, b, MMU_OP_CONV_TRANSPOSE);
}

// g (N, OC, *out) -> dx (N, C, *in), dw (w's shape), db (OC): one backward call for all three
mmu_status mmu_conv_backward(mmu_node *n, mmu_tensor *gout, mmu_tensor **gin) {
    const mmu_conv_geom *g = (const mmu_conv_geom *)n->extra;
    mmu_status st = MMU_OK;
    for (int i = 0; i < 3; i++)
        if (n->inputs[i].needs_grad &&
            (st = mmu_tensor_empty(&gin[i], MMU_FLOAT32, n->inputs[i].ndim, n->inputs[i].shape)))
            goto fail;
    float *dx = gin[0] ? mmu_f32(gin[0]) : NULL, *dw = gin[1] ? mmu_f32(gin[1]) : NULL;
    float *db = gin[2] ? mmu_f32(gin[2]) : NULL;
    int64_t nx = 1, nw = 1;
    for (int d = 0; d < n->inputs[0].ndim; d++) nx *= n->inputs[0].shape[d];
    for (int d = 0; d < n->inputs[1].ndim; d++) nw *= n->inputs[1].shape[d];
    if (gout->numel == 0 || nx == 0 || nw == 0) {
        /* degenerate sizes: oneDNN takes no empty dims; the sums are zero, db a plain sum */
        for (int i = 0; i < 3; i++)
            if (gin[i]) memset(mmu_f32(gin[i]), 0, gin[i]->numel * sizeof(float));
        if (db) bias_grad(db, mmu_f32(gout), g->N, g->OC, box_numel(g));
        return MMU_OK;
    }
    const float *px = n->saved[0] ? mmu_f32(n->saved[0]) : NULL, *pw = n->saved[1] ? mmu_f32(n->saved[1]) : NULL;
    mmu_conv_geom in;
    if (is_patchify(g)) {
        st = patch_bwd(g, px, pw, mmu_f32(gout), dx, dw);
        if (!st && db) bias_grad(db, mmu_f32(gout), g->N, g->OC, box_numel(g));
    } else if (is_depthwise3d(g) && is_dw3_stride1(g)) {
        st = dw3_bwd_stride1(g, px, pw, mmu_f32(gout), dx, dw, db);
    } else if (is_depthwise3d(g)) {
        dw3_bwd(g, px, pw, mmu_f32(gout), dx, dw, db);
    } else if (!reachable_box(&in, g)) {
        /* the bias gradient rides on the weight-gradient primitive; alone it is a plain sum
         * (the input, which that primitive needs, was not saved) */
        st = mmu_dnnl_conv_bwd(g, px, pw, mmu_f32(gout), dx, dw, dw ? db : NULL);
        if (!st && db && !dw) bias_grad(db, mmu_f32(gout), g->N, g->OC, box_numel(g));
    } else {
        /* the unreachable cells only feed the bias gradient */
        int64_t R = g->N * g->OC, sn = box_numel(&in);
        size_t bytes = (size_t)(R * sn) * sizeof(float);
        float *tmp = mmu_alloc(bytes);
        if (!tmp) {
            st = mmu_fail(MMU_ENOMEM, "%s backward: out of memory", conv_name(1, g->sp));
            goto fail;
        }
        box_copy(mmu_f32(gout), tmp, R, g->sp, g->out, in.out, 1);
        st = dx || dw ? mmu_dnnl_conv_bwd(&in, px, pw, tmp, dx, dw, NULL) : MMU_OK;
        mmu_free(tmp, bytes);
        if (db) bias_grad(db, mmu_f32(gout), g->N, g->OC, box_numel(g));
    }
    if (!st) return MMU_OK;
fail:
    for (int i = 0; i < 3; i++) MMU_CLEAR(gin[i]);
    return st;
}

/* One LPIPS layer term (Zhang et al. 2018, the lpips package's NetLinLayer
 * path), forward and backward, fused:
 *
 *   u = f0 / (|f0|_c + eps),  v = f1 / (|f1|_c + eps)   (norm over channels, per pixel)
 *   d[b] = mean_hw sum_c w_c (u_c - v_c)^2
 *
 * torch runs this as ~10 passes (square, sum, sqrt, add, div twice, sub,
 * square, 1x1 conv, mean) and keeps u, v and their difference for the
 * backward. Here the pixels of one image are cut into chunks whose C
 * channels fit in L1/L2; each chunk is read twice (its norms, then the
 * distance) while it is still in cache, so the features stream from memory
 * once. The only thing saved is the per-pixel norms (1/C of a feature map).
 *
 * Backward, with s = g[b] / HW, e_c = 2 w_c (u_c - v_c), n = |f|:
 *   df0_k =  s r0 (e_k - f0_k T0 / n0),  T0 = sum_c e_c u_c,  r0 = 1 / (n0 + eps)
 *   df1_k = -s r1 (e_k - f1_k T1 / n1),  T1 = sum_c e_c v_c
 *   dw_c  = sum_b g[b] / HW sum_hw (u_c - v_c)^2
 * again two passes per cached chunk. At an all-zero pixel (n = 0) the
 * f T / n term is 0: u = f / eps there, whose derivative is 1 / eps (torch's
 * autograd gives NaN from sqrt's backward at 0).
 *
 * Chunks are independent tasks that write their own partial sums; the sums
 * are combined in a fixed order, so results do not depend on the schedule. */
#include <math.h>
#include <string.h>

#include "../ops/ops.h"

#define LP_CHUNK_MAX 1024

/* pixels per chunk: about 32 KB of each feature map, a multiple of 16 */
static int64_t lp_chunk(int64_t C, int64_t P) {
    int64_t ch = 8192 / (C > 0 ? C : 1);
    ch = ch < 16 ? 16 : ch > LP_CHUNK_MAX ? LP_CHUNK_MAX : ch;
    ch &= ~(int64_t)15;
    return ch < P ? ch : P;
}

// a, b: one chunk (C, stride P, np pixels) -> n0, n1 (np): the channel norms
static void lp_norms(const float *a, const float *b, int64_t C, int64_t P, int64_t np, float *n0, float *n1) {
    for (int64_t p = 0; p < np; p++) n0[p] = n1[p] = 0.0f;
    for (int64_t c = 0; c < C; c++) {
        const float *ac = a + c * P, *bc = b + c * P;
#pragma omp simd
        for (int64_t p = 0; p < np; p++) {
            n0[p] += ac[p] * ac[p];
            n1[p] += bc[p] * bc[p];
        }
    }
    for (int64_t p = 0; p < np; p++) {
        n0[p] = sqrtf(n0[p]);
        n1[p] = sqrtf(n1[p]);
    }
}

// f0, f1 (B, C, H, W), w (C) or (1, C, 1, 1) or NULL (ones) -> out (B, 1, 1, 1)
mmu_status mmu_lpips_distance(mmu_tensor **out, mmu_tensor *f0, mmu_tensor *f1, mmu_tensor *w, double eps) {
    mmu_status st;
    if ((st = mmu_check_dtype(f0, MMU_FLOAT32, "lpips_distance", "f0"))) return st;
    if ((st = mmu_check_dtype(f1, MMU_FLOAT32, "lpips_distance", "f1"))) return st;
    if (w && (st = mmu_check_dtype(w, MMU_FLOAT32, "lpips_distance", "weight"))) return st;
    if (f0->ndim != 4 || f0->numel == 0)
        return mmu_fail(MMU_EVALUE, "lpips_distance: expected non-empty (B, C, H, W) features, got f0 %s",
                        mmu_shape_str(f0));
    if (!mmu_same_shape(f0, f1))
        return mmu_fail(MMU_EVALUE, "lpips_distance: f0 %s and f1 %s must have the same shape", mmu_shape_str(f0),
                        mmu_shape_str(f1));
    int64_t B = f0->shape[0], C = f0->shape[1], P = f0->shape[2] * f0->shape[3];
    if (w && !((w->ndim == 1 && w->shape[0] == C) ||
               (w->ndim == 4 && w->shape[0] == 1 && w->shape[1] == C && w->shape[2] == 1 && w->shape[3] == 1)))
        return mmu_fail(MMU_EVALUE, "lpips_distance: weight must be (C) or (1, C, 1, 1) with C = %lld (features "
                        "%s), got %s", (long long)C, mmu_shape_str(f0), mmu_shape_str(w));
    if (!(eps >= 0.0)) return mmu_fail(MMU_EVALUE, "lpips_distance: eps must be >= 0, got %g", eps);
    int need = mmu_grad_enabled() && (f0->requires_grad || f1->requires_grad || (w && w->requires_grad));
    int64_t ch = lp_chunk(C, P), nch = (P + ch - 1) / ch, tasks = B * nch;
    mmu_tensor *norms = NULL;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, 4, (int64_t[]){B, 1, 1, 1}))) return st;
    if (need && (st = mmu_tensor_empty(&norms, MMU_FLOAT32, 3, (int64_t[]){2, B, P}))) goto fail;
    size_t pbytes = (size_t)tasks * sizeof(double);
    double *part = mmu_alloc(pbytes);
    if (!part) {
        st = mmu_fail(MMU_ENOMEM, "lpips_distance: out of memory");
        goto fail;
    }
    const float *p0 = mmu_f32(f0), *p1 = mmu_f32(f1), *pw = w ? mmu_f32(w) : NULL;
    float *pn = norms ? mmu_f32(norms) : NULL;
    float feps = (float)eps;
#pragma omp parallel for schedule(static) if (f0->numel > MMU_PAR_GRAIN / 4)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t b = t / nch, p0i = (t % nch) * ch, np = P - p0i < ch ? P - p0i : ch;
        const float *a = p0 + b * C * P + p0i, *bb = p1 + b * C * P + p0i;
        float n0[LP_CHUNK_MAX], n1[LP_CHUNK_MAX], acc[LP_CHUNK_MAX];
        lp_norms(a, bb, C, P, np, n0, n1);
        if (pn) {
            memcpy(pn + b * P + p0i, n0, np * sizeof(float));
            memcpy(pn + (B + b) * P + p0i, n1, np * sizeof(float));
        }
        for (int64_t p = 0; p < np; p++) {
            n0[p] = 1.0f / (n0[p] + feps);
            n1[p] = 1.0f / (n1[p] + feps);
            acc[p] = 0.0f;
        }
        for (int64_t c = 0; c < C; c++) {
            const float *ac = a + c * P, *bc = bb + c * P;
            float wc = pw ? pw[c] : 1.0f;
#pragma omp simd
            for (int64_t p = 0; p < np; p++) {
                float dl = ac[p] * n0[p] - bc[p] * n1[p];
                acc[p] += wc * dl * dl;
            }
        }
        double s = 0.0;
        for (int64_t p = 0; p < np; p++) s += acc[p];
        part[t] = s;
    }
    float *po = mmu_f32(*out);
    for (int64_t b = 0; b < B; b++) {
        double s = 0.0;
        for (int64_t j = 0; j < nch; j++) s += part[b * nch + j];
        po[b] = (float)(s / (double)P);
    }
    mmu_free(part, pbytes);
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_LPIPS_DISTANCE, 3, (mmu_tensor *[]){f0, f1, w}))) goto fail;
    if (n) {
        mmu_save(n, 0, f0);
        mmu_save(n, 1, f1);
        if (w) mmu_save(n, 2, w);
        mmu_save(n, 3, norms);
        n->ctx.f[0] = eps;
    }
    mmu_tensor_decref(norms);
    return MMU_OK;
fail:
    mmu_tensor_decref(norms);
    MMU_CLEAR(*out);
    return st;
}

// g (B, 1, 1, 1) -> df0, df1 (B, C, H, W), dw (w's shape)
mmu_status mmu_lpips_distance_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mmu_tensor *f0 = n->saved[0], *f1 = n->saved[1], *w = n->saved[2], *norms = n->saved[3];
    int64_t B = f0->shape[0], C = f0->shape[1], P = f0->shape[2] * f0->shape[3];
    int want0 = n->inputs[0].needs_grad, want1 = n->inputs[1].needs_grad, wantw = w && n->inputs[2].needs_grad;
    mmu_status st = MMU_OK;
    if (want0 && (st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, 4, f0->shape))) goto fail;
    if (want1 && (st = mmu_tensor_empty(&gin[1], MMU_FLOAT32, 4, f1->shape))) goto fail;
    if (wantw && (st = mmu_tensor_empty(&gin[2], MMU_FLOAT32, w->ndim, w->shape))) goto fail;
    int64_t ch = lp_chunk(C, P), nch = (P + ch - 1) / ch, tasks = B * nch;
    size_t wbytes = wantw ? (size_t)tasks * C * sizeof(float) : 0;
    float *wpart = wantw ? mmu_alloc(wbytes) : NULL;
    if (wantw && !wpart) {
        st = mmu_fail(MMU_ENOMEM, "lpips_distance backward: out of memory");
        goto fail;
    }
    const float *p0 = mmu_f32(f0), *p1 = mmu_f32(f1), *pw = w ? mmu_f32(w) : NULL, *pn = mmu_f32(norms);
    const float *pg = mmu_f32(g);
    float *d0 = want0 ? mmu_f32(gin[0]) : NULL, *d1 = want1 ? mmu_f32(gin[1]) : NULL;
    float feps = (float)n->ctx.f[0];
#pragma omp parallel for schedule(static) if (f0->numel > MMU_PAR_GRAIN / 4)
    for (int64_t t = 0; t < tasks; t++) {
        int64_t b = t / nch, p0i = (t % nch) * ch, np = P - p0i < ch ? P - p0i : ch;
        int64_t off = b * C * P + p0i;
        const float *a = p0 + off, *bb = p1 + off;
        const float *n0 = pn + b * P + p0i, *n1 = pn + (B + b) * P + p0i;
        float r0[LP_CHUNK_MAX], r1[LP_CHUNK_MAX], t0[LP_CHUNK_MAX], t1[LP_CHUNK_MAX];
        float s = pg[b] / (float)P;
        for (int64_t p = 0; p < np; p++) {
            r0[p] = 1.0f / (n0[p] + feps);
            r1[p] = 1.0f / (n1[p] + feps);
            t0[p] = t1[p] = 0.0f;
        }
        /* pass 1: T0, T1 per pixel and sum_hw (u - v)^2 per channel */
        for (int64_t c = 0; c < C; c++) {
            const float *ac = a + c * P, *bc = bb + c * P;
            float w2 = 2.0f * (pw ? pw[c] : 1.0f), sq = 0.0f;
#pragma omp simd reduction(+ : sq)
            for (int64_t p = 0; p < np; p++) {
                float u = ac[p] * r0[p], v = bc[p] * r1[p], dl = u - v, e = w2 * dl;
                t0[p] += e * u;
                t1[p] += e * v;
                sq += dl * dl;
            }
            if (wpart) wpart[t * C + c] = sq;
        }
        /* per pixel: s r and T / n (0 at an all-zero pixel) */
        for (int64_t p = 0; p < np; p++) {
            t0[p] = n0[p] > 0.0f ? t0[p] / n0[p] : 0.0f;
            t1[p] = n1[p] > 0.0f ? t1[p] / n1[p] : 0.0f;
        }
        /* pass 2: the feature gradients */
        for (int64_t c = 0; c < C; c++) {
            const float *ac = a + c * P, *bc = bb + c * P;
            float w2 = 2.0f * (pw ? pw[c] : 1.0f);
            if (d0) {
                float *dc = d0 + off + c * P;
#pragma omp simd
                for (int64_t p = 0; p < np; p++) {
                    float e = w2 * (ac[p] * r0[p] - bc[p] * r1[p]);
                    dc[p] = s * r0[p] * (e - ac[p] * t0[p]);
                }
            }
            if (d1) {
                float *dc = d1 + off + c * P;
#pragma omp simd
                for (int64_t p = 0; p < np; p++) {
                    float e = w2 * (ac[p] * r0[p] - bc[p] * r1[p]);
                    dc[p] = -s * r1[p] * (e - bc[p] * t1[p]);
                }
            }
        }
    }
    if (wpart) {
        float *dw = mmu_f32(gin[2]);
        for (int64_t c = 0; c < C; c++) {
            double acc = 0.0;
            for (int64_t b = 0; b < B; b++) {
                double sb = 0.0;
                for (int64_t j = 0; j < nch; j++) sb += wpart[(b * nch + j) * C + c];
                acc += sb * (double)pg[b] / (double)P;
            }
            dw[c] = (float)acc;
        }
        mmu_free(wpart, wbytes);
    }
    return MMU_OK;
fail:
    for (int i = 0; i < 3; i++) MMU_CLEAR(gin[i]);
    return st;
}

/* Per-channel statistics shared by group_norm (norm.c) and batch_norm (batch_norm.c): the
 * numerically careful moments of a contiguous segment, Chan's merge of segment moments, the
 * centred scale-and-shift, and the backward's two sums. Static inline: each kernel file gets its
 * own vectorised copy.
 *
 * 16 floats in a GCC vector (one AVX-512 register; two AVX2 ones); four of them make four
 * independent add chains, so that a reduction over a segment runs at load speed rather than at
 * the latency of one chain of adds. vf16u is the same for unaligned loads (segments start
 * anywhere); no vector crosses a function boundary, so a build without AVX-512 keeps the ABI of
 * its callers. */
#ifndef MMU_MOMENTS_H
#define MMU_MOMENTS_H

#include <stdint.h>

typedef float vf16 __attribute__((vector_size(64)));
typedef float vf16u __attribute__((vector_size(64), aligned(4)));
#define VLOAD(p) (*(const vf16u *)(p))

static inline float vsum4(vf16 a, vf16 b, vf16 c, vf16 d) {
    vf16 t = (a + b) + (c + d);
    float s = 0.0f;
    for (int l = 0; l < 16; l++) s += t[l];
    return s;
}

// x (S) -> mean and sum of squared deviations of the segment
static inline void seg_moments(const float *restrict x, int64_t S, double *mean, double *m2) {
    /* shifted by a sample: a float sum of values far from 0 would lose the digits */
    float k = x[0];
    vf16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int64_t i = 0;
    for (; i + 64 <= S; i += 64) {
        a0 += VLOAD(x + i) - k;
        a1 += VLOAD(x + i + 16) - k;
        a2 += VLOAD(x + i + 32) - k;
        a3 += VLOAD(x + i + 48) - k;
    }
    for (; i + 16 <= S; i += 16) a0 += VLOAD(x + i) - k;
    float t = 0.0f;
    for (int64_t j = i; j < S; j++) t += x[j] - k;
    double mu = (double)k + ((double)vsum4(a0, a1, a2, a3) + t) / (double)S;
    float m = (float)mu;
    vf16 q0 = {0}, q1 = {0}, q2 = {0}, q3 = {0}, d;
    for (i = 0; i + 64 <= S; i += 64) {
        d = VLOAD(x + i) - m, q0 += d * d;
        d = VLOAD(x + i + 16) - m, q1 += d * d;
        d = VLOAD(x + i + 32) - m, q2 += d * d;
        d = VLOAD(x + i + 48) - m, q3 += d * d;
    }
    for (; i + 16 <= S; i += 16) d = VLOAD(x + i) - m, q0 += d * d;
    float qt = 0.0f;
    for (int64_t j = i; j < S; j++) qt += (x[j] - m) * (x[j] - m);
    double dm = mu - (double)m; /* deviations were taken from the rounded mean */
    double q = (double)vsum4(q0, q1, q2, q3) + qt - (double)S * dm * dm;
    *mean = mu;
    *m2 = q > 0 ? q : 0;
}

// per-segment (mean, m2) of n segments of S values, `ld` apart -> the channel's mean and m2 (Chan's merge)
static inline void moments_merge(const double *smean, const double *sm2, int64_t n, int64_t ld, int64_t S, double *mean,
                          double *m2) {
    double cnt = 0, m = 0, q = 0;
    for (int64_t i = 0; i < n; i++) {
        double nb = (double)S, d = smean[i * ld] - m, tot = cnt + nb;
        m += d * nb / tot;
        q += sm2[i * ld] + d * d * cnt * nb / tot;
        cnt = tot;
    }
    *mean = m;
    *m2 = q;
}

// x, y (S): y = ((x - m) - m_lo)·a + b; centred first so that |mean| >> std keeps its digits
static inline void scale_shift(float *restrict y, const float *restrict x, float m, float m_lo, float a, float b, int64_t S) {
#pragma omp simd
    for (int64_t i = 0; i < S; i++) y[i] = ((x[i] - m) - m_lo) * a + b;
}

// g, x (S), the channel's float mean -> Σg, Σg·(x - mean)
static inline void seg_grad_sums(const float *restrict g, const float *restrict x, float mean, int64_t S, double *sg,
                          double *sgx) {
    vf16 a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0}, b0 = {0}, b1 = {0}, b2 = {0}, b3 = {0}, v;
    int64_t i = 0;
    for (; i + 64 <= S; i += 64) {
        v = VLOAD(g + i), a0 += v, b0 += v * (VLOAD(x + i) - mean);
        v = VLOAD(g + i + 16), a1 += v, b1 += v * (VLOAD(x + i + 16) - mean);
        v = VLOAD(g + i + 32), a2 += v, b2 += v * (VLOAD(x + i + 32) - mean);
        v = VLOAD(g + i + 48), a3 += v, b3 += v * (VLOAD(x + i + 48) - mean);
    }
    for (; i + 16 <= S; i += 16) v = VLOAD(g + i), a0 += v, b0 += v * (VLOAD(x + i) - mean);
    float at = 0.0f, bt = 0.0f;
    for (; i < S; i++) at += g[i], bt += g[i] * (x[i] - mean);
    *sg = (double)vsum4(a0, a1, a2, a3) + at;
    *sgx = (double)vsum4(b0, b1, b2, b3) + bt;
}

#endif

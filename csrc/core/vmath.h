/* Vectorisable float math shared by the kernels.
 *
 * glibc's expf is a scalar call that GCC does not vectorise without
 * -ffast-math, and in softmax / cross-entropy it dominated the runtime. This
 * exp is branch-free, so loops that call it become AVX-512 code:
 *   n = round(x·log2 e) (adding 1.5·2^23 leaves n in t's low mantissa bits),
 *   r = x - n·ln 2 in [-ln2/2, ln2/2] (ln 2 split in two: n·ln2_hi is exact),
 *   exp(r) by a degree-6 polynomial fitted for relative error, times 2^n
 *   built in the exponent bits.
 * Max relative error 8.2e-8 on [-87, 88] (checked against double); results
 * below ~1e-38 flush to 0; NaN passes both clamps and stays NaN. */
#ifndef MMU_VMATH_H
#define MMU_VMATH_H

#include <math.h>
#include <stdint.h>
#include <string.h>

/* 2^(x·log2 e) for x already clamped to [-88, 88.5]: the shared body of mmu_exp and mmu_exp_le0 */
static inline float mmu_exp_clamped(float xc) {
    float t = fmaf(xc, 1.44269504f, 12582912.0f);
    float n = t - 12582912.0f;
    float r = fmaf(n, -0.693359375f, xc);
    r = fmaf(n, 2.12194440e-4f, r);
    float p = 0.0013933643931522965f;
    p = fmaf(p, r, 0.008363175205886364f);
    p = fmaf(p, r, 0.04166646674275398f);
    p = fmaf(p, r, 0.16666576266288757f);
    p = fmaf(p, r, 0.5f);
    p = fmaf(p, r, 1.0f);
    p = fmaf(p, r, 1.0f);
    /* bits(t) = bits(1.5·2^23) + n, and bits(1.5·2^23) << 23 vanishes mod 2^32,
     * so this is (n + 127) << 23: the float 2^n (0 for n = -127) */
    union { float f; uint32_t u; } s = {t};
    s.u = (s.u + 127u) << 23;
    return p * s.f;
}

static inline float mmu_exp(float x) {
    float xc = x < -88.0f ? -88.0f : x;
    xc = xc > 88.5f ? 88.5f : xc;
    return mmu_exp_clamped(xc);
}

/* mmu_exp for arguments <= 0 (or a hair above by rounding) or NaN, such as a softmax's s - max:
 * the same bits as mmu_exp there without its clamp at the top, which costs a compare and a blend
 * per vector in the hottest loop after attention's GEMMs (a NaN passes the low clamp and comes out
 * NaN, as from mmu_exp) */
static inline float mmu_exp_le0(float x) {
    return mmu_exp_clamped(x < -88.0f ? -88.0f : x);
}

/* Natural log, branch-free so loops that call it vectorise (glibc's logf does not
 * without -ffast-math). Cephes' logf scheme: x = m·2^e with m in [sqrt(1/2), sqrt(2)),
 * log x = e·ln 2 + log(1 + f), f = m - 1, log(1 + f) = f - f²/2 + f³·P(f) with P of
 * degree 8 (Moshier's coefficients), ln 2 split in two so e·ln2_hi is exact.
 * Denormals are scaled by 2^23 first. log 0 = -inf, log(x < 0) = NaN, log inf = inf,
 * NaN stays NaN. Max relative error 8.0e-8 over the positive normal floats (every
 * 97th one checked against double's log). */
static inline float mmu_log(float x) {
    int sub = x < 1.17549435e-38f;
    /* every float op runs unconditionally (only constants are selected): GCC does not
     * if-convert a conditional FP op that could trap, and the loop would not vectorise */
    union { float f; uint32_t u; } v = {x * (sub ? 8388608.0f : 1.0f)};
    int32_t e = (int32_t)((v.u >> 23) & 0xffu) - 126 - (sub ? 23 : 0);
    v.u = (v.u & 0x007fffffu) | 0x3f000000u; /* m in [0.5, 1) */
    float m = v.f;
    int lo = m < 0.70710678f;
    e -= lo;
    m *= lo ? 2.0f : 1.0f;
    float f = m - 1.0f, z = f * f;
    float p = 7.0376836292e-2f;
    p = fmaf(p, f, -1.1514610310e-1f);
    p = fmaf(p, f, 1.1676998740e-1f);
    p = fmaf(p, f, -1.2420140846e-1f);
    p = fmaf(p, f, 1.4249322787e-1f);
    p = fmaf(p, f, -1.6668057665e-1f);
    p = fmaf(p, f, 2.0000714765e-1f);
    p = fmaf(p, f, -2.4999993993e-1f);
    p = fmaf(p, f, 3.3333331174e-1f);
    float ef = (float)e;
    float y = f * z * p;
    y = fmaf(ef, -2.12194440e-4f, y);
    y = fmaf(z, -0.5f, y);
    float r = fmaf(ef, 0.693359375f, f + y);
    r = x == INFINITY ? x : r;
    r = x == 0.0f ? -INFINITY : r;
    return ((x < 0.0f) | (x != x)) ? NAN : r; /* | not ||: no branch, so it vectorises */
}

/* log(1 + e) for e in [0, 1] (or NaN), vectorisable (glibc's log1pf is not): with
 * u = e / (2 + e) in [0, 1/3], log(1 + e) = 2 atanh(u) = 2 (u + u^3/3 + ... + u^13/13),
 * relative error < 2e-8 (the first dropped term), and exact to float precision as e -> 0
 * where log(1 + e) computed as written would round 1 + e to 1. */
static inline float mmu_log1p_unit(float e) {
    float u = e / (2.0f + e), u2 = u * u;
    float p = 1.0f / 13;
    p = p * u2 + 1.0f / 11;
    p = p * u2 + 1.0f / 9;
    p = p * u2 + 1.0f / 7;
    p = p * u2 + 1.0f / 5;
    p = p * u2 + 1.0f / 3;
    p = p * u2 + 1.0f;
    return 2.0f * u * p;
}

/* softplus(z) = log(1 + exp(z)) = max(z, 0) + log1p(exp(-|z|)): exp never overflows and
 * the small term keeps full relative precision for z << 0 (where softplus(z) ≈ exp(z));
 * NaN stays NaN (the exp and log of a NaN are NaN). */
static inline float mmu_softplusf(float z) {
    return (z > 0.0f ? z : 0.0f) + mmu_log1p_unit(mmu_exp(-fabsf(z)));
}

/* sigmoid(z) = 1 / (1 + exp(-z)) from exp(-|z|), so no exp overflows for any z */
static inline float mmu_sigmoidf(float z) {
    float e = mmu_exp(-fabsf(z));
    return (z >= 0.0f ? 1.0f : e) / (1.0f + e);
}

/* A float's bits as an int32 that orders like the float (negative floats
 * have their magnitude bits flipped). The map is its own inverse. */
static inline int32_t mmu_order_key(int32_t bits) { return bits ^ ((bits >> 31) & 0x7fffffff); }

/* max of a row, as an integer max over order keys: GCC does not vectorise a
 * float `a > b ? a : b` (NaN rules) but does the int32 one. A NaN has a key
 * above +inf (or below -inf when its sign bit is set); either way it reaches
 * the exp pass and makes the row's sum NaN, so the whole row comes out NaN,
 * like torch. */
static inline float mmu_row_max(const float *x, int64_t n) {
    int32_t m[16], r = INT32_MIN;
    for (int l = 0; l < 16; l++) m[l] = INT32_MIN;
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) {
            int32_t b;
            memcpy(&b, &x[i + l], sizeof b);
            b = mmu_order_key(b);
            m[l] = b > m[l] ? b : m[l];
        }
    for (; i < n; i++) {
        int32_t b;
        memcpy(&b, &x[i], sizeof b);
        b = mmu_order_key(b);
        r = b > r ? b : r;
    }
    for (int l = 0; l < 16; l++) r = m[l] > r ? m[l] : r;
    r = mmu_order_key(r);
    float f;
    memcpy(&f, &r, sizeof f);
    return f;
}

#endif

/* Attention of a block of new positions against a cached prefix, both read where they lie
 * (inference only: no autograd node). Show-o's T2I image block [SOI] image [EOI] runs it at every
 * layer of every MaskGIT step (mmu/models/show_o/inference.py, ImageLogits._block_hidden).
 *
 * heads (R, H + 2 Hkv, L, D): the block's [q; k; v] heads as qkv_heads lays them out (QK-norm and
 * RoPE already applied); k_cache, v_cache (R, Hkv, M, D): a KVCache layer's buffers, whose
 * positions prefix_start[r] .. P - 1 hold row r's prefix (the left padding before prefix_start is
 * skipped, never read); query_rows (n,) int64 or NULL (n = L, every position): the block positions
 * whose outputs are wanted. Query i of row r, head h (key/value head g = h / (H / Hkv)) attends to
 * the keys [prefix_start[r] .. P - 1 of the cache; all L block keys]:
 *     out[r, i, h·D .. h·D + D - 1] = softmax(scale · q k^T) v
 * -> out (R, n, H·D): the heads of a position side by side, the layout the output projection takes.
 *
 * Why not mmu_sdpa over the cache: that needs the block's keys copied into the cache first, a mask
 * (R, 1, L, M) hiding the pads, and its output (R, H, L, D) permuted into (R, L, H·D) afterwards;
 * here the two key segments are read in place, the pads cost nothing (the empty prompt of the
 * unconditional rows has 3 real positions of 64) and the output lands in place. The keys and values
 * of each (row, head group), [the prefix's real positions; the block], are first gathered into one
 * contiguous buffer; then one task is (row, head, block of query rows): its scores by one GEMM (oneDNN
 * sgemm, on the task's thread) into the thread's scratch, the softmax along each score row (exact max,
 * then exp and sum), the output by one more GEMM, scaled by 1 / sum. */
#include <math.h>
#include <string.h>

#include "../core/vmath.h"
#include "../dnnl/mmu_dnnl.h"
#include "ops.h"

#define QB 128 /* query rows per task at most */

typedef struct {
    int64_t R, H, Hkv, L, D, M, P, n, qb, nqb;
    float scale;
    const float *heads, *kc, *vc;
    const int64_t *start, *rows;
    float *out;
} cache_geom;

#if defined(__AVX512F__)
#include <immintrin.h>
static float row_max(const float *s, int64_t T) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    int64_t j = 0;
    for (; j + 16 <= T; j += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(s + j));
    if (j < T) m = _mm512_max_ps(m, _mm512_maskz_loadu_ps((__mmask16)((1u << (T - j)) - 1), s + j));
    return _mm512_reduce_max_ps(m);
}
static float row_sum(const float *s, int64_t T) {
    __m512 a = _mm512_setzero_ps();
    int64_t j = 0;
    for (; j + 16 <= T; j += 16) a = _mm512_add_ps(a, _mm512_loadu_ps(s + j));
    if (j < T) a = _mm512_add_ps(a, _mm512_maskz_loadu_ps((__mmask16)((1u << (T - j)) - 1), s + j));
    return _mm512_reduce_add_ps(a);
}
#else
static float row_max(const float *s, int64_t T) {
    float m = -INFINITY;
    for (int64_t j = 0; j < T; j++) m = s[j] > m ? s[j] : m;
    return m;
}
static float row_sum(const float *s, int64_t T) {
    float a[8] = {0};
    int64_t j = 0;
    for (; j + 8 <= T; j += 8)
        for (int l = 0; l < 8; l++) a[l] += s[j + l];
    for (; j < T; j++) a[0] += s[j];
    return ((a[0] + a[1]) + (a[2] + a[3])) + ((a[4] + a[5]) + (a[6] + a[7]));
}
#endif

/* softmax in place along each of ni rows of T scores (ldS apart), unnormalised: exp(s - max);
 * 1 / the row's sum goes to inv (the output is scaled by it, D columns instead of T) */
static void softmax_rows(float *S, int64_t ni, int64_t T, int64_t ldS, float *inv) {
    for (int64_t i = 0; i < ni; i++) {
        float *s = S + i * ldS;
        float m = row_max(s, T);
        for (int64_t j = 0; j < T; j++) s[j] = mmu_exp(s[j] - m); /* mmu_exp is branch-free: this vectorises */
        inv[i] = 1.0f / row_sum(s, T);
    }
}

/* One task: row r, query head h, query rows i0 .. i0 + ni - 1, against kv: row r's keys of head group g
 * then its values, each (T, D) with T = its prefix's real positions + L. S: scratch (qb, T), qg (qb, D). */
static mmu_status cache_task(const cache_geom *g, const float *kv, int64_t r, int64_t h, int64_t i0, int64_t ni,
                             float *S, float *qg, float *inv) {
    int64_t H = g->H, Hkv = g->Hkv, L = g->L, D = g->D, grp = h / (H / Hkv);
    int64_t T = g->P - g->start[r] + L, HD = H * D, Tmax = g->P + L;
    const float *q = g->heads + (r * (H + 2 * Hkv) + h) * L * D;
    const float *k = kv + (r * Hkv + grp) * 2 * Tmax * D, *v = k + Tmax * D;
    float *o = g->out + (r * g->n + i0) * HD + h * D;
    mmu_status st;
    if (g->rows) { /* the wanted query rows, gathered into one (ni, D) block */
        for (int64_t i = 0; i < ni; i++) memcpy(qg + i * D, q + g->rows[i0 + i] * D, (size_t)D * sizeof(float));
        q = qg;
    } else {
        q += i0 * D;
    }
    /* S (ni, T) = scale · q kᵀ;  o (ni, D) = softmax(S) v, rows HD apart */
    if ((st = mmu_dnnl_sgemm('N', 'T', ni, T, D, g->scale, q, D, k, D, 0.0f, S, T))) return st;
    softmax_rows(S, ni, T, T, inv);
    if ((st = mmu_dnnl_sgemm('N', 'N', ni, D, T, 1.0f, S, T, v, D, 0.0f, o, HD))) return st;
    for (int64_t i = 0; i < ni; i++)
        for (int64_t d = 0; d < D; d++) o[i * HD + d] *= inv[i];
    return MMU_OK;
}

/* kv (R, Hkv, 2, P + L, D): for each row and head group its keys [the prefix's real positions; the block]
 * then its values, contiguous, so that a task's scores and output are one GEMM each (two GEMMs a segment
 * cost more than this copy of every key and value once: oneDNN's sgemm has a few microseconds of fixed
 * cost, and the unconditional rows' prefix is 3 keys) */
static void gather_kv(const cache_geom *g, float *kv) {
    int64_t Hkv = g->Hkv, L = g->L, D = g->D, Tmax = g->P + L;
#pragma omp for schedule(static)
    for (int64_t t = 0; t < g->R * Hkv * 2; t++) {
        int64_t r = t / (Hkv * 2), grp = t / 2 % Hkv, is_v = t % 2, np = g->P - g->start[r];
        const float *cache = (is_v ? g->vc : g->kc) + ((r * Hkv + grp) * g->M + g->start[r]) * D;
        const float *block = g->heads + (r * (g->H + 2 * Hkv) + g->H + is_v * Hkv + grp) * L * D;
        float *dst = kv + t * Tmax * D;
        memcpy(dst, cache, (size_t)(np * D) * sizeof(float));
        memcpy(dst + np * D, block, (size_t)(L * D) * sizeof(float));
    }
}

static mmu_status cache_run(const cache_geom *g) {
    int64_t ntask = g->R * g->H * g->nqb, Tmax = g->P + g->L;
    size_t per = (size_t)(g->qb * Tmax + g->qb * g->D + g->qb) * sizeof(float);
    size_t kv_bytes = (size_t)(g->R * g->Hkv * 2 * Tmax * g->D) * sizeof(float);
    float *kv = mmu_alloc(kv_bytes);
    if (!kv) return mmu_fail(MMU_ENOMEM, "attention_cached: out of memory for %zu bytes of keys and values", kv_bytes);
    mmu_status failed = MMU_OK;
    mmu_sync_threads();
    double work = (double)g->R * g->H * g->n * Tmax * g->D;
#pragma omp parallel if (work > MMU_PAR_GRAIN && ntask > 1)
    {
        gather_kv(g, kv); /* its omp for ends on a barrier: every task sees every key */
        float *S = mmu_alloc(per);
        if (!S) {
#pragma omp atomic write
            failed = MMU_ENOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < ntask; t++) {
            if (!S) continue;
            int64_t r = t / (g->H * g->nqb), h = t / g->nqb % g->H, i0 = t % g->nqb * g->qb;
            int64_t ni = g->n - i0 < g->qb ? g->n - i0 : g->qb;
            if (ni <= 0) continue;
            mmu_status st = cache_task(g, kv, r, h, i0, ni, S, S + g->qb * Tmax, S + g->qb * Tmax + g->qb * g->D);
            if (st) {
#pragma omp atomic write
                failed = st;
            }
        }
        if (S) mmu_free(S, per);
    }
    mmu_free(kv, kv_bytes);
    if (failed == MMU_ENOMEM) return mmu_fail(MMU_ENOMEM, "attention_cached: out of memory for scratch");
    return failed; /* a oneDNN failure: its message is recorded by mmu_dnnl_sgemm */
}

mmu_status mmu_attention_cached(mmu_tensor **out, mmu_tensor *heads, int64_t hq, int64_t hkv, mmu_tensor *k_cache,
                                mmu_tensor *v_cache, mmu_tensor *prefix_start, int64_t prefix_len,
                                mmu_tensor *query_rows, double scale) {
    const char *op = "attention_cached";
    mmu_status st;
    *out = NULL;
    if ((st = mmu_check_dtype(heads, MMU_FLOAT32, op, "heads")) || (st = mmu_check_dtype(k_cache, MMU_FLOAT32, op, "k_cache")) ||
        (st = mmu_check_dtype(v_cache, MMU_FLOAT32, op, "v_cache")) ||
        (st = mmu_check_dtype(prefix_start, MMU_INT64, op, "prefix_start")) ||
        (query_rows && (st = mmu_check_dtype(query_rows, MMU_INT64, op, "query_rows"))))
        return st;
    if (hq < 1 || hkv < 1 || hq % hkv)
        return mmu_fail(MMU_EVALUE, "%s: num_heads %lld must be a multiple of num_kv_heads %lld, both >= 1", op,
                        (long long)hq, (long long)hkv);
    if (heads->ndim != 4 || heads->shape[1] != hq + 2 * hkv || heads->shape[0] < 1 || heads->shape[2] < 1 ||
        heads->shape[3] < 1)
        return mmu_fail(MMU_EVALUE, "%s: heads must be (R, num_heads + 2 num_kv_heads = %lld, L, D) with R, L, D >= 1, "
                        "got %s", op, (long long)(hq + 2 * hkv), mmu_shape_str(heads));
    int64_t R = heads->shape[0], L = heads->shape[2], D = heads->shape[3];
    if (k_cache->ndim != 4 || k_cache->shape[0] != R || k_cache->shape[1] != hkv || k_cache->shape[3] != D ||
        !mmu_same_shape(k_cache, v_cache))
        return mmu_fail(MMU_EVALUE, "%s: k_cache and v_cache must both be (R %lld, num_kv_heads %lld, M, D %lld), got "
                        "%s and %s", op, (long long)R, (long long)hkv, (long long)D, mmu_shape_str(k_cache),
                        mmu_shape_str(v_cache));
    int64_t M = k_cache->shape[2];
    if (prefix_len < 0 || prefix_len > M)
        return mmu_fail(MMU_EVALUE, "%s: prefix_len must be in [0, %lld] (the cache's positions), got %lld", op,
                        (long long)M, (long long)prefix_len);
    if (prefix_start->ndim != 1 || prefix_start->shape[0] != R)
        return mmu_fail(MMU_EVALUE, "%s: prefix_start must be (R = %lld,), got %s", op, (long long)R,
                        mmu_shape_str(prefix_start));
    const int64_t *start = mmu_i64(prefix_start);
    for (int64_t r = 0; r < R; r++)
        if (start[r] < 0 || start[r] > prefix_len)
            return mmu_fail(MMU_EVALUE, "%s: prefix_start[%lld] = %lld is outside [0, prefix_len %lld]", op,
                            (long long)r, (long long)start[r], (long long)prefix_len);
    int64_t n = L;
    if (query_rows) {
        if (query_rows->ndim != 1)
            return mmu_fail(MMU_EVALUE, "%s: query_rows must be 1-D (n,), got %s", op, mmu_shape_str(query_rows));
        n = query_rows->shape[0];
        const int64_t *rw = mmu_i64(query_rows);
        for (int64_t i = 0; i < n; i++)
            if (rw[i] < 0 || rw[i] >= L)
                return mmu_fail(MMU_EVALUE, "%s: query_rows[%lld] = %lld is outside [0, L = %lld)", op, (long long)i,
                                (long long)rw[i], (long long)L);
    }
    if (!(scale > 0.0) || !isfinite(scale))
        return mmu_fail(MMU_EVALUE, "%s: scale must be > 0 and finite, got %g", op, scale);
    int64_t oshape[3] = {R, n, hq * D};
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, 3, oshape))) return st;
    if (n == 0) return MMU_OK;
    cache_geom g = {.R = R, .H = hq, .Hkv = hkv, .L = L, .D = D, .M = M, .P = prefix_len, .n = n,
                    .scale = (float)scale, .heads = mmu_f32(heads), .kc = mmu_f32(k_cache), .vc = mmu_f32(v_cache),
                    .start = start, .rows = query_rows ? mmu_i64(query_rows) : NULL, .out = mmu_f32(*out)};
    /* query blocks of at most QB rows, equal sizes; more of them when (row, head) pairs are fewer than
     * twice the threads, so both cores get work */
    int64_t nqb = (n + QB - 1) / QB, pairs = R * hq, want = 2 * (int64_t)mmu_get_num_threads();
    if (pairs * nqb < want) nqb = (want + pairs - 1) / pairs;
    if (nqb > n) nqb = n;
    g.qb = (n + nqb - 1) / nqb;
    g.nqb = (n + g.qb - 1) / g.qb;
    if ((st = cache_run(&g))) MMU_CLEAR(*out);
    return st;
}

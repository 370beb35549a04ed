/* Sampling from categorical distributions on mmu's counter-based Philox stream.
 *
 * multinomial: torch.multinomial's semantics. With replacement each draw is an
 * inverse-CDF lookup of one uniform in the row's cumulative sums (double);
 * without replacement it is the exponential race (Efraimidis & Spirakis): each
 * category gets E_i / p_i with E_i ~ Exp(1), and the categories with the
 * smallest keys, in increasing order, are a draw of sequential sampling
 * without replacement (the first to finish a race of exponential clocks with
 * rates p_i is category i with probability p_i / sum p, and so on).
 *
 * sample_logits: one pass per row of a language model's logits: temperature,
 * top-k (Hugging Face's TopKLogitsWarper: keep the logits >= the k-th largest,
 * ties included), top-p (its TopPLogitsWarper: the tokens sorted by
 * probability, keep the smallest prefix whose mass reaches top_p, at least
 * one), then one draw, and the log-probability of the drawn id under that
 * filtered distribution. Ties in the top-p order are broken by the lower
 * index first, so the kept set is a function of the logits alone.
 *
 * Determinism: row r of a call reads the blocks (base + r·blocks_per_row ...)
 * of the stream reserved for the whole call, so which thread computes a row
 * does not matter: any thread count gives the same bits. A draw's uniform takes
 * two 32-bit words (53 bits, a double in [0, 1)): one Philox block per row for
 * sample_logits, half a block per sample for multinomial with replacement;
 * the race of multinomial without replacement uses one 24-bit uniform per
 * category (4 a block), float32 as torch's exponential_ is. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../core/vmath.h"
#include "ops.h"

/* a double in [0, 1) from two 32-bit words, 53 random bits */
static inline double uniform53(uint32_t hi, uint32_t lo) {
    return (double)(((uint64_t)(hi >> 5) << 26) | (lo >> 6)) * (1.0 / 9007199254740992.0);
}

/* The j-th uniform of a row whose stream starts at block `first`. */
static inline double row_uniform(uint64_t key, uint64_t first, int64_t j) {
    uint32_t x[4];
    mmu_philox(key, first + (uint64_t)(j / 2), x);
    return j % 2 ? uniform53(x[2], x[3]) : uniform53(x[0], x[1]);
}

/* n float uniforms in (0, 1) from the blocks first, first + 1, ... (4 per block, 24 bits each,
 * the middle of their cell so that log never sees 0), MMU_PHILOX_LANES blocks at a time */
static void row_uniforms_f32(float *u, int64_t n, uint64_t key, uint64_t first) {
    for (int64_t b0 = 0; 4 * b0 < n; b0 += MMU_PHILOX_LANES) {
        uint32_t r[4][MMU_PHILOX_LANES];
        mmu_philox_lanes(key, first + (uint64_t)b0, r);
        for (int l = 0; l < MMU_PHILOX_LANES; l++)
            for (int w = 0; w < 4; w++) {
                int64_t i = 4 * (b0 + l) + w;
                if (i < n) u[i] = ((float)(r[w][l] >> 8) + 0.5f) * (1.0f / 16777216.0f);
            }
    }
}

/* (key, index) pairs ordered by key, ties by the lower index first */
typedef struct {
    double key;
    int64_t idx;
} keyed;

static inline int keyed_before(keyed a, keyed b) { return a.key < b.key || (a.key == b.key && a.idx < b.idx); }

static int keyed_cmp(const void *pa, const void *pb) {
    keyed a = *(const keyed *)pa, b = *(const keyed *)pb;
    return keyed_before(a, b) ? -1 : keyed_before(b, a) ? 1 : 0;
}

/* heap[0] is the element that comes LAST in keyed order among those kept */
static void sift_down(keyed *heap, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && keyed_before(heap[m], heap[l])) m = l;
        if (r < n && keyed_before(heap[m], heap[r])) m = r;
        if (m == i) return;
        keyed t = heap[i];
        heap[i] = heap[m], heap[m] = t;
        i = m;
    }
}

/* The n first elements of a[0..m) in keyed order, sorted, into a[0..n):
 * a bounded max-heap over the scan, O(m log n). */
static void first_n_sorted(keyed *a, int64_t m, int64_t n) {
    for (int64_t i = n / 2 - 1; i >= 0; i--) sift_down(a, n, i);
    for (int64_t i = n; i < m; i++)
        if (keyed_before(a[i], a[0])) {
            a[0] = a[i];
            sift_down(a, n, 0);
        }
    qsort(a, (size_t)n, sizeof *a, keyed_cmp);
}

/* Σ e[0..n) in double, in 8 interleaved partial sums (a fixed order, so the same bits every
 * call; GCC vectorises it, where one running sum is a chain of dependent adds). */
static double sum_f64(const float *e, int64_t n) {
    double acc[8] = {0};
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        for (int l = 0; l < 8; l++) acc[l] += e[i + l];
    double s = 0.0;
    for (; i < n; i++) s += e[i];
    for (int l = 0; l < 8; l++) s += acc[l];
    return s;
}

#define DRAW_BLOCK 256 /* the draw skips whole blocks of weights whose sum stays below the target */
#define CDF_BLOCK 32   /* multinomial: cumulated sums of blocks this long, bisected, then a walk inside one */

/* ---------------------------------------------------------- multinomial */

// probs (V) or (R, V) float32, finite, >= 0, rows summing to > 0 -> out (n) or (R, n) int64
mmu_status mmu_multinomial(mmu_tensor **out, mmu_tensor *probs, int64_t num_samples, int replacement,
                           mmu_generator *g) {
    const char *op = "multinomial";
    mmu_status st = mmu_check_dtype(probs, MMU_FLOAT32, op, "input");
    if (st) return st;
    if (probs->ndim != 1 && probs->ndim != 2)
        return mmu_fail(MMU_EVALUE, "%s: input must be 1-D or 2-D (prob_dist must be 1 or 2 dim), got %d-D", op,
                        probs->ndim);
    int64_t R = probs->ndim == 2 ? probs->shape[0] : 1, V = probs->shape[probs->ndim - 1];
    if (V == 0) return mmu_fail(MMU_EVALUE, "%s: input has no categories (last dim is 0)", op);
    if (V > (1 << 24)) return mmu_fail(MMU_EVALUE, "%s: number of categories cannot exceed 2^24, got %lld", op, (long long)V);
    if (num_samples <= 0)
        return mmu_fail(MMU_EVALUE, "%s: cannot sample num_samples <= 0 samples, got %lld", op, (long long)num_samples);
    if (!replacement && num_samples > V)
        return mmu_fail(MMU_EVALUE,
                        "%s: cannot sample num_samples > input.size(-1) samples without replacement (%lld > %lld)",
                        op, (long long)num_samples, (long long)V);
    const float *p = mmu_f32(probs);
    /* every check before the stream is touched: a refused call leaves the generator as it was */
    for (int64_t r = 0; r < R; r++) {
        const float *pr = p + r * V;
        int bad = 0;
        int64_t nonzero = 0;
        for (int64_t i = 0; i < V; i++) /* branch-free: vectorised */
            bad |= !(pr[i] >= 0.0f && pr[i] < INFINITY), nonzero += pr[i] > 0.0f;
        if (bad) {
            int64_t i = 0;
            while (pr[i] >= 0.0f && pr[i] < INFINITY) i++;
            return mmu_fail(MMU_EVALUE, "%s: probability tensor contains either inf, nan or element < 0 "
                                        "(row %lld, category %lld)", op, (long long)r, (long long)i);
        }
        if (!(sum_f64(pr, V) > 0.0))
            return mmu_fail(MMU_EVALUE, "%s: invalid multinomial distribution (sum of probabilities <= 0) in row %lld",
                            op, (long long)r);
        if (!replacement && nonzero < num_samples)
            return mmu_fail(MMU_EVALUE,
                            "%s: invalid multinomial distribution (with replacement=False, not enough non-zero "
                            "categories to sample): row %lld has %lld, num_samples is %lld",
                            op, (long long)r, (long long)nonzero, (long long)num_samples);
    }
    int64_t oshape[2] = {R, num_samples};
    if ((st = probs->ndim == 2 ? mmu_tensor_empty(out, MMU_INT64, 2, oshape)
                               : mmu_tensor_empty(out, MMU_INT64, 1, &num_samples)))
        return st;
    int64_t *ids = mmu_i64(*out);
    /* blocks per row: a 53-bit uniform per sample with replacement (2 a block), a 24-bit one per
     * category without (4 a block, float32 like torch's exponential_) */
    int64_t blocks_per_row = replacement ? (num_samples + 1) / 2 : (V + 3) / 4;
    uint64_t key, base;
    mmu_generator_reserve(g, (uint64_t)(R * blocks_per_row), &key, &base);
    int oom = 0;
#pragma omp parallel for schedule(dynamic, 1) if (R > 1 && R * (V + num_samples) > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < R; r++) {
        const float *pr = p + r * V;
        int64_t *o = ids + r * num_samples;
        uint64_t first = base + (uint64_t)(r * blocks_per_row);
        if (replacement) {
            /* sums of blocks of CDF_BLOCK weights, cumulated: a draw finds its block by bisection,
             * then walks inside it */
            int64_t nb = (V + CDF_BLOCK - 1) / CDF_BLOCK;
            double *cum = malloc((size_t)nb * sizeof *cum);
            if (!cum) {
#pragma omp atomic write
                oom = 1;
                continue;
            }
            double acc = 0.0;
            for (int64_t b = 0; b < nb; b++) {
                int64_t b0 = b * CDF_BLOCK;
                acc += sum_f64(pr + b0, V - b0 < CDF_BLOCK ? V - b0 : CDF_BLOCK);
                cum[b] = acc;
            }
            int64_t last_nonzero = V - 1;
            while (!(pr[last_nonzero] > 0.0f)) last_nonzero--;
            for (int64_t s = 0; s < num_samples; s++) {
                double t = row_uniform(key, first, s) * acc;
                int64_t lo = 0, hi = nb - 1; /* the first block whose cumulated sum passes t */
                while (lo < hi) {
                    int64_t mid = lo + (hi - lo) / 2;
                    if (cum[mid] > t) hi = mid;
                    else lo = mid + 1;
                }
                /* the first category whose running sum passes t (a zero weight never does); rounding
                 * may carry the walk past its block, or leave it short at the end: the last non-zero */
                double run = lo ? cum[lo - 1] : 0.0;
                int64_t id = last_nonzero;
                for (int64_t i = lo * CDF_BLOCK; i < V; i++)
                    if (pr[i] > 0.0f && (run += pr[i]) > t) {
                        id = i;
                        break;
                    }
                o[s] = id;
            }
            free(cum);
        } else {
            keyed *k = malloc((size_t)V * sizeof *k);
            float *race = malloc((size_t)V * sizeof *race);
            if (!k || !race) {
                free(k);
                free(race);
#pragma omp atomic write
                oom = 1;
                continue;
            }
            /* a uniform for every category (row r's use of the stream is fixed), then the finish
             * times E_i / p_i = -log(u_i) / p_i, vectorised */
            row_uniforms_f32(race, V, key, first);
            for (int64_t i = 0; i < V; i++) race[i] = -mmu_log(race[i]) / pr[i];
            int64_t m = 0;
            for (int64_t i = 0; i < V; i++)
                if (pr[i] > 0.0f) k[m++] = (keyed){race[i], i};
            first_n_sorted(k, m, num_samples);
            for (int64_t s = 0; s < num_samples; s++) o[s] = k[s].idx;
            free(k);
            free(race);
        }
    }
    if (oom) {
        MMU_CLEAR(*out);
        return mmu_fail(MMU_ENOMEM, "%s: out of memory for the per-row work buffers (V = %lld)", op, (long long)V);
    }
    return MMU_OK;
}

/* -------------------------------------------------------- sample_logits */

/* The k-th largest of x[0..n) (1 <= k <= n). A small k (a sampler's top-k is tens): a min-heap
 * of the k largest so far in scratch, where most elements cost one compare with its root; a large
 * k: quickselect on a scratch copy. */
static float kth_largest(float *scratch, const float *x, int64_t n, int64_t k) {
    if (k <= 1024) {
        float *heap = scratch;
        for (int64_t i = 0; i < n; i++) {
            int64_t j;
            if (i < k) { /* sift up */
                for (j = i; j > 0 && heap[(j - 1) / 2] > x[i]; j = (j - 1) / 2) heap[j] = heap[(j - 1) / 2];
                heap[j] = x[i];
            } else if (x[i] > heap[0]) { /* replace the root, sift down */
                for (j = 0;;) {
                    int64_t c = 2 * j + 1;
                    if (c >= k) break;
                    if (c + 1 < k && heap[c + 1] < heap[c]) c++;
                    if (heap[c] >= x[i]) break;
                    heap[j] = heap[c];
                    j = c;
                }
                heap[j] = x[i];
            }
        }
        return heap[0];
    }
    memcpy(scratch, x, (size_t)n * sizeof *x);
    int64_t lo = 0, hi = n - 1, want = k - 1; /* index in descending order */
    while (lo < hi) {
        float pivot = scratch[lo + (hi - lo) / 2];
        int64_t i = lo, j = hi;
        while (i <= j) {
            while (scratch[i] > pivot) i++;
            while (scratch[j] < pivot) j--;
            if (i <= j) {
                float t = scratch[i];
                scratch[i] = scratch[j], scratch[j] = t;
                i++, j--;
            }
        }
        if (want <= j) hi = j;
        else if (want >= i) lo = i;
        else break;
    }
    return scratch[want];
}


typedef struct {
    double inv_temperature, top_p;
    int64_t top_k;
    int greedy;
    uint64_t key, base;
} sample_args;

#define TOP_P_BUCKETS 48 /* weights below 2^-47 share the last bucket */

/* The bucket of a kept logit: floor of log2 of 1 / its weight exp(x·T - m), clamped. */
static inline int top_p_bucket(float x, float T, float m) {
    float j = (m - x * T) * 1.44269504f; /* >= 0: x·T <= m */
    return j < (float)(TOP_P_BUCKETS - 1) ? (int)j : TOP_P_BUCKETS - 1;
}

/* One row. e (V floats of scratch) ends up holding exp(x_i/T - max/T) for the kept tokens and 0
 * for the others; the kept set is {i : x_i >= kthr, x_i > -inf} cut by top-p to
 * {x_i > cut_x or (x_i == cut_x and i <= cut_i)} (h: V pairs of scratch for top-p). */
static void sample_row(int64_t *id_out, float *logprob_out, const float *x, float *e, keyed *h, int64_t V,
                       int64_t row, const sample_args *a) {
    float xmax = -INFINITY;
    for (int64_t i = 0; i < V; i++) xmax = x[i] > xmax ? x[i] : xmax; /* no NaN here: checked */
    int64_t argmax = 0;
    while (x[argmax] != xmax) argmax++; /* the first maximum, as torch.argmax */
    /* top-k: Hugging Face keeps every logit >= the k-th largest (ties at the threshold stay) */
    float kthr = -INFINITY;
    if (a->top_k > 0 && a->top_k < V) kthr = kth_largest(e, x, V, a->top_k);
    const float T = (float)a->inv_temperature, m = xmax * T;
    /* one exp per token (vmath's, vectorised); -inf and the tokens top-k drops weigh 0 */
    for (int64_t i = 0; i < V; i++) {
        float w = mmu_exp(x[i] * T - m);
        e[i] = x[i] >= kthr && x[i] > -INFINITY ? w : 0.0f;
    }
    double z = sum_f64(e, V);
    int64_t n_k = 0;
    for (int64_t i = 0; i < V; i++) n_k += x[i] >= kthr && x[i] > -INFINITY;
    /* top-p: walk the kept tokens in decreasing probability; token r stays while the mass
     * before it is < top_p (the first always stays). Only the head of the order is sorted: the
     * kept tokens fall into buckets by their weight's power of two (from x, so monotone in x:
     * bucket j holds weights in about (2^-(j+1), 2^-j]), and the buckets down to the one where
     * the mass reaches top_p hold every token the walk can reach. Rounding can leave the walk
     * short of top_p at their end; then one more bucket is taken. */
    if (a->top_p < 1.0 && n_k > 1) {
        double mass[TOP_P_BUCKETS] = {0};
        for (int64_t i = 0; i < V; i++)
            if (x[i] >= kthr && x[i] > -INFINITY) mass[top_p_bucket(x[i], T, m)] += e[i];
        const double target = a->top_p * z;
        double reach = 0.0;
        int cut = 0;
        while (cut < TOP_P_BUCKETS - 1 && (reach += mass[cut]) < target) cut++;
        for (;;) {
            int64_t n = 0;
            for (int64_t i = 0; i < V; i++)
                if (x[i] >= kthr && x[i] > -INFINITY && top_p_bucket(x[i], T, m) <= cut)
                    h[n++] = (keyed){-(double)x[i], i}; /* keyed order: decreasing x, lower index first */
            qsort(h, (size_t)n, sizeof *h, keyed_cmp);
            double before = 0.0;
            int64_t r = 0;
            for (; r < n; r++) {
                if (r > 0 && before >= target) break;
                before += e[h[r].idx];
            }
            /* the walk ended inside the candidates, or right after them (their mass reaches
             * top_p), or they are all the kept tokens */
            if (r < n || before >= target || n == n_k || cut == TOP_P_BUCKETS - 1) {
                float cut_x = (float)-h[r - 1].key;
                int64_t cut_i = h[r - 1].idx;
                for (int64_t i = 0; i < V; i++)
                    if (!(x[i] > cut_x || (x[i] == cut_x && i <= cut_i))) e[i] = 0.0f;
                break;
            }
            cut++;
        }
        z = sum_f64(e, V);
    }
    int64_t id = argmax; /* greedy */
    if (!a->greedy) {
        uint32_t w[4];
        mmu_philox(a->key, a->base + (uint64_t)row, w);
        double t = uniform53(w[0], w[1]) * z, acc = 0.0;
        /* found: the first i whose running sum passes t; last: the last positive weight seen, the
         * id when rounding leaves the running sum <= t at the end (the argmax weighs 1, so one is) */
        int64_t found = -1, last = argmax;
        for (int64_t b0 = 0; b0 < V && found < 0; b0 += DRAW_BLOCK) {
            int64_t n = V - b0 < DRAW_BLOCK ? V - b0 : DRAW_BLOCK;
            double block = sum_f64(e + b0, n);
            if (acc + block <= t) { /* the target lies beyond this block */
                acc += block;
                for (int64_t i = b0 + n - 1; i >= b0; i--)
                    if (e[i] > 0.0f) {
                        last = i > last ? i : last;
                        break;
                    }
                continue;
            }
            for (int64_t i = b0; i < b0 + n && found < 0; i++)
                if (e[i] > 0.0f) {
                    acc += e[i];
                    last = i > last ? i : last;
                    if (acc > t) found = i;
                }
        }
        id = found >= 0 ? found : last;
    }
    *id_out = id;
    *logprob_out = (float)(log((double)e[id]) - log(z));
}

// logits (B, V) float32 -> ids (B) int64, logprobs (B) float32
mmu_status mmu_sample_logits(mmu_tensor **ids, mmu_tensor **logprobs, mmu_tensor *logits, double temperature,
                             int64_t top_k, double top_p, int greedy, mmu_generator *g) {
    const char *op = "sample_logits";
    mmu_status st = mmu_check_dtype(logits, MMU_FLOAT32, op, "logits");
    if (st) return st;
    if (logits->ndim != 2)
        return mmu_fail(MMU_EVALUE, "%s: logits must be 2-D (B, V), got %d-D", op, logits->ndim);
    int64_t B = logits->shape[0], V = logits->shape[1];
    if (V == 0) return mmu_fail(MMU_EVALUE, "%s: logits (%lld, 0) have no vocabulary", op, (long long)B);
    if (!(temperature > 0.0) || isinf(temperature))
        return mmu_fail(MMU_EVALUE, "%s: temperature must be a positive finite number, got %g", op, temperature);
    if (top_k < 0) return mmu_fail(MMU_EVALUE, "%s: top_k must be >= 1 (or None), got %lld", op, (long long)top_k);
    if (!(top_p >= 0.0 && top_p <= 1.0))
        return mmu_fail(MMU_EVALUE, "%s: top_p must be in [0, 1], got %g", op, top_p);
    const float *x = mmu_f32(logits);
    for (int64_t r = 0; r < B; r++) {
        int any = 0;
        for (int64_t i = 0; i < V; i++) {
            float v = x[r * V + i];
            if (isnan(v) || v == INFINITY)
                return mmu_fail(MMU_EVALUE, "%s: logits row %lld has %s at index %lld", op, (long long)r,
                                isnan(v) ? "NaN" : "+inf", (long long)i);
            any |= v > -INFINITY;
        }
        if (!any) return mmu_fail(MMU_EVALUE, "%s: logits row %lld is all -inf (nothing can be sampled)", op, (long long)r);
    }
    if ((st = mmu_tensor_empty(ids, MMU_INT64, 1, &B))) return st;
    if ((st = mmu_tensor_empty(logprobs, MMU_FLOAT32, 1, &B))) {
        MMU_CLEAR(*ids);
        return st;
    }
    sample_args a = {1.0 / temperature, top_p, top_k, greedy, 0, 0};
    if (!greedy) mmu_generator_reserve(g, (uint64_t)B, &a.key, &a.base); /* one block per row */
    int64_t *id = mmu_i64(*ids);
    float *lp = mmu_f32(*logprobs);
    int oom = 0;
#pragma omp parallel if (B > 1 && B * V > MMU_PAR_GRAIN)
    {
        /* one row's weights and top-p candidates, per thread */
        float *e = malloc((size_t)V * sizeof *e);
        keyed *h = top_p < 1.0 ? malloc((size_t)V * sizeof *h) : NULL;
        int ok = e && (h || top_p >= 1.0);
        if (!ok) {
#pragma omp atomic write
            oom = 1;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t r = 0; r < B; r++)
            if (ok) sample_row(&id[r], &lp[r], x + r * V, e, h, V, r, &a);
        free(e);
        free(h);
    }
    if (oom) {
        MMU_CLEAR(*ids);
        MMU_CLEAR(*logprobs);
        return mmu_fail(MMU_ENOMEM, "%s: out of memory for the per-row work buffers (V = %lld)", op, (long long)V);
    }
    return MMU_OK;
}

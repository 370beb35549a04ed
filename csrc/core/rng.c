/* Counter-based RNG: Philox4x32-10 (Salmon et al., "Parallel random numbers:
 * as easy as 1, 2, 3", SC'11). A draw of n values reserves ceil(n/4) counters
 * from a global offset; value i comes from counter (base + i/4), so it does
 * not matter which thread computes it: results are reproducible for a seed
 * whatever the thread count. */
#include <math.h>
#include <pthread.h>

#include "mmu.h"

/* The global generator (mmu.manual_seed) and every mmu.Generator are the same
 * thing: a key (the seed) and a counter (the offset, in 128-bit blocks),
 * guarded by a lock so two threads drawing from one generator never get
 * the same blocks. g == NULL below means the global one. */
static mmu_generator g_global = {PTHREAD_MUTEX_INITIALIZER, 0x853c49e6748fea9bULL, 0};

static mmu_generator *resolve(mmu_generator *g) { return g ? g : &g_global; }

void mmu_generator_init(mmu_generator *g, uint64_t seed) {
    pthread_mutex_init(&g->lock, NULL);
    g->seed = seed;
    g->offset = 0;
}

void mmu_generator_destroy(mmu_generator *g) { pthread_mutex_destroy(&g->lock); }

uint64_t mmu_generator_default_seed(void) { return 0x853c49e6748fea9bULL; }

void mmu_generator_get_state(mmu_generator *g, uint64_t *seed, uint64_t *offset) {
    g = resolve(g);
    pthread_mutex_lock(&g->lock);
    *seed = g->seed;
    *offset = g->offset;
    pthread_mutex_unlock(&g->lock);
}

void mmu_generator_set_state(mmu_generator *g, uint64_t seed, uint64_t offset) {
    g = resolve(g);
    pthread_mutex_lock(&g->lock);
    g->seed = seed;
    g->offset = offset;
    pthread_mutex_unlock(&g->lock);
}

void mmu_generator_reserve(mmu_generator *g, uint64_t nblocks, uint64_t *key, uint64_t *counter) {
    g = resolve(g);
    pthread_mutex_lock(&g->lock);
    *key = g->seed;
    *counter = g->offset;
    g->offset += nblocks;
    pthread_mutex_unlock(&g->lock);
}

void mmu_manual_seed(uint64_t seed) { mmu_generator_set_state(NULL, seed, 0); }

/* The whole generator state is (seed, offset): a checkpoint saves it and a resumed run
 * restores it, so the draws after the resume are the ones the uninterrupted run made. */
void mmu_get_rng_state(uint64_t *seed, uint64_t *offset) { mmu_generator_get_state(NULL, seed, offset); }

void mmu_set_rng_state(uint64_t seed, uint64_t offset) { mmu_generator_set_state(NULL, seed, offset); }

void mmu_rng_reserve(uint64_t nblocks, uint64_t *key, uint64_t *counter) {
    mmu_generator_reserve(NULL, nblocks, key, counter);
}

static inline uint32_t mulhilo(uint32_t a, uint32_t b, uint32_t *hi) {
    uint64_t p = (uint64_t)a * b;
    *hi = (uint32_t)(p >> 32);
    return (uint32_t)p;
}

void mmu_philox(uint64_t key, uint64_t counter, uint32_t out[4]) {
    uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
    uint32_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int r = 0; r < 10; r++) {
        uint32_t hi0, hi1;
        uint32_t lo0 = mulhilo(0xD2511F53u, c0, &hi0);
        uint32_t lo1 = mulhilo(0xCD9E8D57u, c2, &hi1);
        uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
        c0 = n0; c1 = lo1; c2 = n2; c3 = lo0;
        k0 += 0x9E3779B9u;
        k1 += 0xBB67AE85u;
    }
    out[0] = c0; out[1] = c1; out[2] = c2; out[3] = c3;
}

/* MMU_PHILOX_LANES consecutive blocks at once, the same bits as
 * mmu_philox(key, base + l), in GCC vector types: each 32-bit word sits in a
 * 64-bit lane so that one vector multiply gives the 32x32->64 product (a
 * scalar block costs ~25 ns, this ~2). No vector crosses the function
 * boundary, so callers built for any ISA share it. */
typedef uint64_t philox_vec __attribute__((vector_size(MMU_PHILOX_LANES * 8)));

void mmu_philox_lanes(uint64_t key, uint64_t base, uint32_t out[4][MMU_PHILOX_LANES]) {
    philox_vec c0, c1, c2 = {0}, c3 = {0};
    const uint64_t M = 0xFFFFFFFFu;
    for (int l = 0; l < MMU_PHILOX_LANES; l++) {
        uint64_t c = base + (uint64_t)l;
        c0[l] = c & M, c1[l] = c >> 32;
    }
    uint64_t k0 = (uint32_t)key, k1 = (uint32_t)(key >> 32);
    for (int r = 0; r < 10; r++) {
        philox_vec p0 = c0 * 0xD2511F53u, p1 = c2 * 0xCD9E8D57u;
        c0 = (p1 >> 32) ^ c1 ^ k0;
        c2 = (p0 >> 32) ^ c3 ^ k1;
        c1 = p1 & M;
        c3 = p0 & M;
        k0 = (k0 + 0x9E3779B9u) & M;
        k1 = (k1 + 0xBB67AE85u) & M;
    }
    for (int l = 0; l < MMU_PHILOX_LANES; l++)
        out[0][l] = (uint32_t)c0[l], out[1][l] = (uint32_t)c1[l], out[2][l] = (uint32_t)c2[l],
        out[3][l] = (uint32_t)c3[l];
}

/* Box-Muller on two pairs of 32-bit draws: 4 standard normals per block */
static void normal_block(const uint32_t x[4], float out[4]) {
    for (int h = 0; h < 2; h++) {
        double u1 = ((double)x[2 * h] + 1.0) * (1.0 / 4294967296.0); /* (0, 1] */
        double u2 = (double)x[2 * h + 1] * (1.0 / 4294967296.0);      /* [0, 1) */
        double r = sqrt(-2.0 * log(u1));
        out[2 * h] = (float)(r * cos(2.0 * M_PI * u2));
        out[2 * h + 1] = (float)(r * sin(2.0 * M_PI * u2));
    }
}

/* the top 24 bits: exactly representable in float32, uniform on [0, 1) */
static void uniform_block(const uint32_t x[4], float out[4]) {
    for (int k = 0; k < 4; k++) out[k] = (float)(x[k] >> 8) * (1.0f / 16777216.0f);
}

/* A new float32 tensor filled from the stream, 4 values per Philox block,
 * MMU_PHILOX_LANES blocks per step. */
static mmu_status draw(mmu_tensor **out, int ndim, const int64_t *shape, mmu_generator *g,
                       void (*block)(const uint32_t x[4], float out[4])) {
    mmu_status st = mmu_tensor_empty(out, MMU_FLOAT32, ndim, shape);
    if (st) return st;
    int64_t n = (*out)->numel, nblocks = (n + 3) / 4, nsteps = (nblocks + MMU_PHILOX_LANES - 1) / MMU_PHILOX_LANES;
    uint64_t key, base;
    mmu_generator_reserve(g, (uint64_t)nblocks, &key, &base);
    float *p = mmu_f32(*out);
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t s = 0; s < nsteps; s++) {
        uint32_t r[4][MMU_PHILOX_LANES];
        int64_t b0 = s * MMU_PHILOX_LANES;
        mmu_philox_lanes(key, base + (uint64_t)b0, r);
        for (int l = 0; l < MMU_PHILOX_LANES && b0 + l < nblocks; l++) {
            int64_t b = b0 + l;
            uint32_t x[4] = {r[0][l], r[1][l], r[2][l], r[3][l]};
            float v[4];
            block(x, v);
            for (int k = 0; k < 4 && 4 * b + k < n; k++) p[4 * b + k] = v[k];
        }
    }
    return MMU_OK;
}

mmu_status mmu_randn(mmu_tensor **out, int ndim, const int64_t *shape, mmu_generator *g) {
    return draw(out, ndim, shape, g, normal_block);
}

mmu_status mmu_rand(mmu_tensor **out, int ndim, const int64_t *shape, mmu_generator *g) {
    return draw(out, ndim, shape, g, uniform_block);
}

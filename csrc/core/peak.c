/* A measurement of this CPU's fp32 FMA peak, for the benchmarks' "fraction of
 * peak" column. Nominal clocks lie on VMs and under boost, so we time what the
 * cores actually sustain: each thread runs 12 independent chains of vector
 * FMAs (enough in flight to cover the FMA latency on two pipes), on
 * registers only, for about `seconds`. FLOPs = chains x lanes x 2 per FMA. */
#include <omp.h>
#include <time.h>

#include "mmu.h"

#if defined(__AVX512F__)
#include <immintrin.h>
#define LANES 16
typedef __m512 vec;
#define VSET(x) _mm512_set1_ps(x)
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VSUM(v) _mm512_reduce_add_ps(v)
#elif defined(__AVX2__) && defined(__FMA__)
#include <immintrin.h>
#define LANES 8
typedef __m256 vec;
#define VSET(x) _mm256_set1_ps(x)
#define VFMA(a, b, c) _mm256_fmadd_ps(a, b, c)
static float VSUM(__m256 v) {
    float t[8];
    _mm256_storeu_ps(t, v);
    return t[0] + t[1] + t[2] + t[3] + t[4] + t[5] + t[6] + t[7];
}
#else
#define LANES 1
typedef float vec;
#define VSET(x) (x)
#define VFMA(a, b, c) ((a) * (b) + (c))
#define VSUM(v) (v)
#endif

#define CHAINS 12

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + 1e-9 * ts.tv_nsec;
}

double mmu_measure_peak_gflops(double seconds) {
    mmu_sync_threads();
    /* Peak = cores x one core's rate. Each thread times short slices of FMAs
     * and keeps its best slice: another process can only slow a slice down,
     * so the best one is the core's own rate even on a busy machine (timing
     * the whole team at once read half the peak when one core was taken). */
    const long inner = 1 << 12;
    double best_core = 0;
    int team = 1;
    volatile float sink = 0;
#pragma omp parallel
    {
        vec acc[CHAINS];
        vec a = VSET(0.999999f), b = VSET(1e-7f);
        for (int c = 0; c < CHAINS; c++) acc[c] = VSET((float)c);
        double best = 0, start = now();
        do {
            double t0 = now();
            long reps = 0;
            do { /* a slice of ~5 ms */
                for (long i = 0; i < inner; i++)
                    for (int c = 0; c < CHAINS; c++) acc[c] = VFMA(acc[c], a, b);
                reps++;
            } while (now() - t0 < 5e-3);
            double rate = (double)reps * inner * CHAINS * LANES * 2.0 / (now() - t0);
            if (rate > best) best = rate;
        } while (now() - start < seconds);
        float s = 0;
        for (int c = 0; c < CHAINS; c++) s += VSUM(acc[c]);
#pragma omp critical
        {
            sink += s;
            if (best > best_core) best_core = best;
            team = omp_get_num_threads();
        }
    }
    (void)sink;
    return best_core * team / 1e9;
}

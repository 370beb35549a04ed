/* One OpenMP runtime (libgomp) serves oneDNN (the gomp build) and our kernels,
 * so one setting controls both. OpenMP's team size is a per-thread setting;
 * ops call mmu_sync_threads() so that a Python thread other than the one that
 * called set_num_threads still uses the chosen count. */
#include <omp.h>

#include "mmu.h"

static int g_num_threads; /* 0 = not set: OpenMP's default */

void mmu_set_num_threads(int n) {
    if (n < 1) n = 1;
    __atomic_store_n(&g_num_threads, n, __ATOMIC_RELAXED);
    omp_set_num_threads(n);
}

int mmu_get_num_threads(void) {
    int n = __atomic_load_n(&g_num_threads, __ATOMIC_RELAXED);
    return n ? n : omp_get_max_threads();
}

void mmu_sync_threads(void) {
    int n = __atomic_load_n(&g_num_threads, __ATOMIC_RELAXED);
    if (n && omp_get_max_threads() != n) omp_set_num_threads(n);
}

/* oneDNN's plain sgemm (declared in mmu_dnnl.h): no primitive, no cache, nothing to create, so a
 * kernel can call it on many small matrices of varying sizes. Called inside an OpenMP parallel
 * region it runs on the calling thread alone (oneDNN counts omp_in_parallel() as one thread). */
#include "dnnl_internal.h"

mmu_status mmu_dnnl_sgemm(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                          int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc) {
    dnnl_status_t s = dnnl_sgemm(transa, transb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    if (s != dnnl_success)
        return mmu_fail(MMU_ERUNTIME, "oneDNN sgemm (%c%c, M %lld, N %lld, K %lld) failed with status %d", transa,
                        transb, (long long)M, (long long)N, (long long)K, (int)s);
    return MMU_OK;
}

/* The oneDNN layer. csrc/dnnl/ is the only place that includes dnnl.h; op
 * families call these typed functions with raw pointers and shapes, so a
 * change of oneDNN version (v3 wheels <-> Debian's v2) touches one folder.
 *
 * Every function looks its primitive up in a cache keyed by (kind, shapes,
 * strides, attributes, thread count) and creates it only on a miss: creating
 * a primitive inside a training loop is a bug, and mmu_dnnl_stats() counts
 * creations so a test can prove it doesn't happen. Scratchpads come from the
 * caching allocator (user scratchpad mode). */
#ifndef MMU_DNNL_H
#define MMU_DNNL_H

#include "../core/mmu.h"

/* A plain (strided) float32 array description. */
typedef struct {
    int ndim;
    int64_t dims[12]; /* DNNL_MAX_NDIMS: oneDNN reads dnnl_dims_t-sized arrays */
    int64_t strides[12];
} mmu_md;

/* Row-major contiguous description of dims. */
void mmu_md_contig(mmu_md *md, int ndim, const int64_t *dims);

/* c = a @ b (+ bias): a (..., M, K), b (..., K, N), c (..., M, N), all with
 * the same ndim; batch dims of a/b may be 1 (broadcast). Strides express
 * transposes without copies. bias (1.., N) or NULL. */
mmu_status mmu_dnnl_matmul(const mmu_md *a, const float *pa, const mmu_md *b, const float *pb,
                           const mmu_md *bias, const float *pbias, const mmu_md *c, float *pc);

typedef enum {
    MMU_ELT_GELU_ERF, MMU_ELT_GELU_TANH, MMU_ELT_SILU, MMU_ELT_TANH, MMU_ELT_SIGMOID,
    MMU_ELT_LOG, MMU_ELT_SQRT, MMU_ELT_ABS,
    MMU_ELT_POW, /* alpha * x^beta */
    MMU_ELT_COUNT
} mmu_eltwise_alg;

/* dst = f(src), n elements. */
mmu_status mmu_dnnl_eltwise_fwd(mmu_eltwise_alg alg, float alpha, float beta, const float *src,
                                float *dst, int64_t n);
/* diff_src = f'(.) * diff_dst. `data` is the forward's dst when use_dst is
 * set (tanh, sigmoid, sqrt: cheaper, and src need not be kept),
 * else the forward's src. */
mmu_status mmu_dnnl_eltwise_bwd(mmu_eltwise_alg alg, int use_dst, float alpha, float beta,
                                const float *data, const float *diff_dst, float *diff_src, int64_t n);
/* Whether alg has a use-dst-for-backward variant. */
int mmu_dnnl_eltwise_has_dst_bwd(mmu_eltwise_alg alg);

typedef struct {
    long primitives_created;
    long cache_hits;
    long cache_size;
} mmu_dnnl_counters;
void mmu_dnnl_stats(mmu_dnnl_counters *c);
/* "3.2.0 (git hash ...)" */
const char *mmu_dnnl_version(void);

#endif

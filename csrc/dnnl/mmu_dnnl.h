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
/* c += a @ b (no bias): oneDNN's sum post-op adds the product to what c holds inside
 * the GEMM kernel, so a weight gradient lands in an existing .grad without a
 * temporary the weight's size and a second pass adding it. */
mmu_status mmu_dnnl_matmul_accumulate(const mmu_md *a, const float *pa, const mmu_md *b, const float *pb,
                                      const mmu_md *c, float *pc);

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
/* Row-major C = alpha·op(A)·op(B) + beta·C (op: 'N' or 'T'), oneDNN's dnnl_sgemm (dnnl_gemm.c): for
 * many small GEMMs of varying shapes, e.g. per (row, head) inside a parallel region, where it runs
 * on the calling thread. */
mmu_status mmu_dnnl_sgemm(char transa, char transb, int64_t M, int64_t N, int64_t K, float alpha, const float *A,
                          int64_t lda, const float *B, int64_t ldb, float beta, float *C, int64_t ldc);
/* Inference linear layers with a post-op (dnnl_linear_post.c): x (R, IN), w (OUT, IN), b (OUT) or NULL;
 * MMU_LINEAR_POST_GELU_TANH: out (R, OUT) = gelu_tanh(x wᵀ + b); MMU_LINEAR_POST_ADD: out += x wᵀ + b. */
enum { MMU_LINEAR_POST_GELU_TANH = 1, MMU_LINEAR_POST_ADD = 2 };
mmu_status mmu_dnnl_linear_post(int64_t R, int64_t IN, int64_t OUT, const float *x, const float *w, const float *b,
                                float *out, int mode);
/* "3.2.0 (git hash ...)" */
const char *mmu_dnnl_version(void);

/* ---------------------------------------- convolution / deconvolution (dnnl_conv.c, used by ops/conv.c)
 * One geometry describes a torch conv (transposed = 0) or conv_transpose
 * (transposed = 1) in oneDNN terms: IC/OC are the primitive's channels (for a
 * transposed conv IC is the input's channels), in/out its spatial sizes,
 * dilation torch-style (1 = dense), pad_l/pad_r per side (pad_r may differ
 * from pad_l: padding='same' with an even kernel, output_padding). Buffers
 * are torch's plain layouts: src/dst (N, C, *sp) contiguous, weights
 * (OC, IC/G, *k) for a conv, (IC, OC/G, *k) for a transposed conv. Whether
 * the primitive runs on them directly or on oneDNN's blocked layouts (with
 * cached reorders in and out) is decided inside. */
typedef struct { /* all int64: a node keeps it as its extra array (op_table.h's MMU_CONV_GEOM_FIELDS) */
    int64_t transposed, sp;
    int64_t N, IC, OC, G;
    int64_t in[3], k[3], out[3];
    int64_t stride[3], dilation[3], pad_l[3], pad_r[3];
} mmu_conv_geom;

/* dst = conv(src, w) + bias (bias NULL: none). */
mmu_status mmu_dnnl_conv_fwd(const mmu_conv_geom *g, const float *src, const float *w, const float *bias,
                             float *dst);
/* The gradients wanted (non-NULL outputs) from one diff_dst: diff_src needs w,
 * diff_w / diff_bias need src. diff_dst is brought into the primitives'
 * layout once for both. */
mmu_status mmu_dnnl_conv_bwd(const mmu_conv_geom *g, const float *src, const float *w, const float *diff_dst,
                             float *diff_src, float *diff_w, float *diff_bias);

#endif

/* Forward entry points of every op family (differentiable ones record a node
 * through mmu_record; their backwards are listed in core/op_table.h).
 * Shapes are written above each declaration. Every function validates its
 * arguments and returns MMU_E* with a message naming the op and the shapes. */
#ifndef MMU_OPS_H
#define MMU_OPS_H

#include "../core/mmu.h"

/* Declarations of all backward functions named in the op table. */
#define MMU_DECLARE_BACKWARD(name, backward, ctx_i, ctx_f, extra) \
    mmu_status backward(mmu_node *n, mmu_tensor *gout, mmu_tensor **grad_in);
MMU_OP_LIST(MMU_DECLARE_BACKWARD)
#undef MMU_DECLARE_BACKWARD

/* -------------------------------------------------------------- binary.c */
typedef enum {
    MMU_BIN_ADD, MMU_BIN_SUB, MMU_BIN_MUL, MMU_BIN_DIV, MMU_BIN_MAXIMUM, MMU_BIN_MINIMUM,
    MMU_BIN_LT, MMU_BIN_LE, MMU_BIN_GT, MMU_BIN_GE, MMU_BIN_EQ, MMU_BIN_NE,
    MMU_BIN_AND, MMU_BIN_OR, MMU_BIN_XOR,
    MMU_BIN_COUNT
} mmu_binary_op;
/* a (...), b (...) broadcast NumPy-style -> out (broadcast shape).
 * Arithmetic: float32. Comparisons: float32 or int64 -> bool. Logic: bool. */
mmu_status mmu_binary(mmu_tensor **out, mmu_binary_op op, mmu_tensor *a, mmu_tensor *b);
/* cond bool, a, b float32 (broadcast together) -> out */
mmu_status mmu_where(mmu_tensor **out, mmu_tensor *cond, mmu_tensor *a, mmu_tensor *b);
/* Broadcast shape of two shapes; MMU_EVALUE naming op on mismatch. */
mmu_status mmu_broadcast_shape(int *ndim, int64_t *shape, int na, const int64_t *sa,
                               int nb, const int64_t *sb, const char *op);

/* --------------------------------------------------------------- unary.c */
typedef enum {
    MMU_UN_NEG, MMU_UN_EXP, MMU_UN_LOG, MMU_UN_SQRT, MMU_UN_ABS, MMU_UN_TANH,
    MMU_UN_SIGMOID, MMU_UN_RELU, MMU_UN_GELU, MMU_UN_GELU_TANH, MMU_UN_SILU,
    MMU_UN_COUNT
} mmu_unary_op;
/* x float32 (any shape) -> out (same shape) */
mmu_status mmu_unary(mmu_tensor **out, mmu_unary_op op, mmu_tensor *x);
/* x ** exponent (scalar) */
mmu_status mmu_pow_scalar(mmu_tensor **out, mmu_tensor *x, double exponent);
/* clamp(x, min, max); a bound is ignored when its has_ flag is 0 */
mmu_status mmu_clamp(mmu_tensor **out, mmu_tensor *x, int has_min, double min, int has_max, double max);
/* torch's softplus: log(1 + exp(beta·x)) / beta, or x where beta·x > threshold */
mmu_status mmu_softplus(mmu_tensor **out, mmu_tensor *x, double beta, double threshold);
/* silu(gate)·up in one pass (LLaMA's SwiGLU): gate, up float32 of one shape -> out (that shape) */
mmu_status mmu_swiglu(mmu_tensor **out, mmu_tensor *gate, mmu_tensor *up);
/* ~x for bool */
mmu_status mmu_logical_not(mmu_tensor **out, mmu_tensor *x);
/* dtype conversion (float32 <-> int64 <-> bool); float32 -> float32 keeps the graph */
mmu_status mmu_cast(mmu_tensor **out, mmu_tensor *x, mmu_dtype dt);
/* x (any) -> x > 0 ? x : slope·x */
mmu_status mmu_leaky_relu(mmu_tensor **out, mmu_tensor *x, double slope);

/* -------------------------------------------------------------- reduce.c */
typedef enum { MMU_RED_SUM, MMU_RED_MEAN, MMU_RED_AMAX, MMU_RED_AMIN } mmu_reduce_op;
/* x float32; reduce over dims where dim_mask bit d is set (ndims==0 => all) */
mmu_status mmu_reduce(mmu_tensor **out, mmu_reduce_op op, mmu_tensor *x, unsigned dim_mask, int keepdim);
/* argmax/argmin over one dim (has_dim=0: over the flattened tensor) -> int64; ties -> first */
mmu_status mmu_argreduce(mmu_tensor **out, int is_max, mmu_tensor *x, int has_dim, int64_t dim, int keepdim);
/* Sum g (broadcast result shape) down to `shape` (input shape) — the backward of
 * broadcasting. Returns a new reference (may be g itself, incref'd). */
mmu_status mmu_reduce_to_shape(mmu_tensor **out, mmu_tensor *g, int ndim, const int64_t *shape);
/* x float32 (..., n, ...) -> out (x's shape): running sums along dim, in double; reverse sums from the end */
mmu_status mmu_cumsum(mmu_tensor **out, mmu_tensor *x, int64_t dim, int reverse);

/* ---------------------------------------------------------------- sort.c */
/* torch's order: NaN above every number, -0 == +0, equal values in index order (stable).
 * x float32 (..., n, ...) -> values (x's shape), indices int64 (x's shape), sorted along dim */
mmu_status mmu_sort(mmu_tensor **values, mmu_tensor **indices, mmu_tensor *x, int64_t dim, int descending);
/* x float32 (..., n, ...), 0 <= k <= n -> values, indices int64 (..., k, ...): the k largest (or smallest)
 * along dim, best first; equal values: the lower index first */
mmu_status mmu_topk(mmu_tensor **values, mmu_tensor **indices, mmu_tensor *x, int64_t k, int64_t dim, int largest);

/* --------------------------------------------------------------- shape.c */
/* x (...) -> out (shape), same numel; shares storage */
mmu_status mmu_reshape(mmu_tensor **out, mmu_tensor *x, int ndim, const int64_t *shape);
/* x (d0..dn) -> out (d_perm[0] .. d_perm[n]) (a copy) */
mmu_status mmu_permute(mmu_tensor **out, mmu_tensor *x, const int64_t *perm);
/* per dim: start, step (>0), length -> out (length[0], ..., length[n]) (a copy) */
mmu_status mmu_slice(mmu_tensor **out, mmu_tensor *x, const int64_t *start, const int64_t *step,
                     const int64_t *length);
/* n tensors equal except along dim -> concatenation */
mmu_status mmu_cat(mmu_tensor **out, int n, mmu_tensor *const *xs, int64_t dim);
/* x broadcast to shape (NumPy rules, leading dims may be added) (a copy) */
mmu_status mmu_expand(mmu_tensor **out, mmu_tensor *x, int ndim, const int64_t *shape);
/* Row-major (contiguous) element strides of shape, shared with index.c. */
void mmu_contig_strides(int64_t *st, int ndim, const int64_t *shape);

/* --------------------------------------------------------------- index.c */
/* torch.gather: index int64 with x's ndim; out[i][j][k] = x[index[i][j][k]][j][k] (dim 0) */
mmu_status mmu_gather(mmu_tensor **out, mmu_tensor *x, int64_t dim, mmu_tensor *index);
/* torch.index_select: index int64 1-D */
mmu_status mmu_index_select(mmu_tensor **out, mmu_tensor *x, int64_t dim, mmu_tensor *index);
/* Index helpers shared with embedding.c: the position of the first index
 * outside [0, size) (or -1), and the deterministic index-add of rows of g
 * (outer, K, inner) into gx (outer, V, inner). */
int64_t mmu_first_bad_index(const int64_t *idx, int64_t n, int64_t size);
mmu_status mmu_index_add_rows(float *gx, const float *g, const int64_t *idx, int64_t K, int64_t V,
                              int64_t outer, int64_t inner);
/* x[mask] with mask bool of x's shape -> 1-D */
mmu_status mmu_masked_select(mmu_tensor **out, mmu_tensor *x, mmu_tensor *mask);
/* x float32/int64, mask bool broadcastable to x -> out with value where mask */
mmu_status mmu_masked_fill(mmu_tensor **out, mmu_tensor *x, mmu_tensor *mask, double value);

/* -------------------------------------------------------------- matmul.c */
/* torch.matmul semantics: 1-D, 2-D, batched with broadcast batch dims */
mmu_status mmu_matmul(mmu_tensor **out, mmu_tensor *a, mmu_tensor *b);
/* x (..., in), w (out, in), b (out) or NULL -> (..., out) */
mmu_status mmu_linear(mmu_tensor **out, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b);

/* ------------------------------------------------------------- softmax.c */
/* softmax / log_softmax of x along dim */
mmu_status mmu_softmax(mmu_tensor **out, mmu_tensor *x, int64_t dim, int log);

/* ---------------------------------------------------------------- norm.c */
/* x (..., *normalized_shape) with norm_ndim trailing dims; weight/bias
 * (normalized_shape) or NULL */
mmu_status mmu_layer_norm(mmu_tensor **out, mmu_tensor *x, int norm_ndim, const int64_t *norm_shape,
                          mmu_tensor *weight, mmu_tensor *bias, double eps);
/* x (N, C, *), groups dividing C, weight/bias (C) or NULL -> out (x's shape) */
mmu_status mmu_group_norm(mmu_tensor **out, mmu_tensor *x, int64_t groups, mmu_tensor *weight, mmu_tensor *bias,
                          double eps);
/* group_norm with an activation fused into its normalise + affine pass (and into its backward) */
enum { MMU_GN_ACT_NONE = 0, MMU_GN_ACT_SILU = 1 };
mmu_status mmu_group_norm_act(mmu_tensor **out, mmu_tensor *x, int64_t groups, mmu_tensor *weight,
                              mmu_tensor *bias, double eps, int act);
/* x (..., *normalized_shape), weight (normalized_shape) or NULL -> out (x's shape) */
mmu_status mmu_rms_norm(mmu_tensor **out, mmu_tensor *x, int norm_ndim, const int64_t *norm_shape,
                        mmu_tensor *weight, double eps);
/* qkv (B, L, (hq + 2 hkv) D) -> heads (B, hq + 2 hkv, L, D), QK-norm (norm 0 none, 1 layernorm, 2 rmsnorm;
 * weights / biases (D) or NULL) and rotary cos/sin (L, R) or (B|1, 1, L, R) or NULL on the q and k heads */
mmu_status mmu_qkv_heads(mmu_tensor **out, mmu_tensor *y, int64_t hq, int64_t hkv, int norm, mmu_tensor *qw,
                         mmu_tensor *qb, mmu_tensor *kw, mmu_tensor *kb, double eps, mmu_tensor *cos_t,
                         mmu_tensor *sin_t);
/* x / max(||x||_p, eps) along dim, p > 0 finite -> out (x's shape) */
mmu_status mmu_normalize(mmu_tensor **out, mmu_tensor *x, double p, int64_t dim, double eps);

/* ---------------------------------------------------------- batch_norm.c */
/* x (N, C, *) float32, running_mean/running_var (C) or NULL (updated in place when training: torch's
 * momentum rule, unbiased running var), weight/bias (C) or NULL -> out (x's shape). training: batch
 * statistics over N and the spatial dims; else the running ones (then both are required).
 * momentum is the running-stat factor (momentum=None's cumulative average: the caller passes
 * 1/num_batches_tracked). Records MMU_OP_BATCH_NORM with inputs (x, weight, bias). */
mmu_status mmu_batch_norm(mmu_tensor **out, mmu_tensor *x, mmu_tensor *running_mean, mmu_tensor *running_var,
                          mmu_tensor *weight, mmu_tensor *bias, int training, double momentum, double eps);

/* ----------------------------------------------------------- embedding.c */
/* idx int64 (...), weight (V, D) -> (..., D) */
mmu_status mmu_embedding(mmu_tensor **out, mmu_tensor *idx, mmu_tensor *weight);

/* ---------------------------------------------------------------- conv.c */
/* x (N, C, *in) or unbatched (C, *in), w (OC, C/groups, *k), b (OC) or NULL -> (N, OC, *out);
 * sp = 1, 2, 3 spatial dims; per-side padding (pad_r != pad_l for 'same' with even kernels) */
mmu_status mmu_conv(mmu_tensor **out, int sp, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b, const int64_t *stride,
                    const int64_t *pad_l, const int64_t *pad_r, const int64_t *dilation, int64_t groups);
/* x (N, IC, *in) or (IC, *in), w (IC, OC/groups, *k), b (OC) or NULL -> (N, OC, *out) */
mmu_status mmu_conv_transpose(mmu_tensor **out, int sp, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b,
                              const int64_t *stride, const int64_t *padding, const int64_t *output_padding,
                              int64_t groups, const int64_t *dilation);

/* ---------------------------------------------------------------- pool.c */
/* torch's max_pool2d: kernel/stride/padding/dilation (h, w); indices (optional, may be NULL) gets
 * torch's int64 return_indices tensor (flat h*W + w within each plane). */
mmu_status mmu_max_pool2d(mmu_tensor **out, mmu_tensor **indices, mmu_tensor *x, const int64_t *kernel,
                          const int64_t *stride, const int64_t *padding, const int64_t *dilation, int ceil_mode);
mmu_status mmu_max_pool2d_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin);
/* x (N, C, H, W) or (C, H, W); kernel, stride, padding (2); divisor 0 = none -> (.., OH, OW) */
mmu_status mmu_avg_pool2d(mmu_tensor **out, mmu_tensor *x, const int64_t *kernel, const int64_t *stride,
                          const int64_t *padding, int ceil_mode, int count_include_pad, int64_t divisor);

/* ------------------------------------------------------------- spatial.c */
/* x (d0..dn-1), lo/hi (ndim) pads per dim (negative crops, constant mode) -> (d + lo + hi) */
enum { MMU_PAD_CONSTANT = 0, MMU_PAD_REFLECT = 1, MMU_PAD_REPLICATE = 2, MMU_PAD_CIRCULAR = 3 };
mmu_status mmu_pad(mmu_tensor **out, mmu_tensor *x, const int64_t *lo, const int64_t *hi, int mode, double value);
/* x (N, C, *in) with nsp = 1..3 spatial dims, out_size (nsp), scales (nsp; <= 0 none) */
mmu_status mmu_upsample_nearest(mmu_tensor **out, mmu_tensor *x, int nsp, const int64_t *out_size,
                                const double *scales);
/* x (N, C, H, W) -> (N, C, OH, OW); scales <= 0: none */
mmu_status mmu_upsample_bilinear2d(mmu_tensor **out, mmu_tensor *x, int64_t OH, int64_t OW, int align_corners,
                                   double scale_h, double scale_w);

/* ------------------------------------------------------------- dropout.c */
/* x (any), 0 <= p <= 1 -> out, kept values scaled by 1/(1-p) (Philox stream) */
mmu_status mmu_dropout(mmu_tensor **out, mmu_tensor *x, double p);

/* ------------------------------------------------------------ sampling.c */
/* probs (V) or (R, V) float32, non-negative, rows not necessarily normalised
 * -> out (n) or (R, n) int64 category ids (torch.multinomial); g NULL: global stream */
mmu_status mmu_multinomial(mmu_tensor **out, mmu_tensor *probs, int64_t num_samples, int replacement,
                           mmu_generator *g);
/* logits (B, V) float32 -> ids (B) int64, logprobs (B) float32: temperature, top-k
 * (0 = off), top-p (1 = off), then one draw per row (greedy: the argmax);
 * logprob of the id under the filtered distribution */
mmu_status mmu_sample_logits(mmu_tensor **ids, mmu_tensor **logprobs, mmu_tensor *logits, double temperature,
                             int64_t top_k, double top_p, int greedy, mmu_generator *g);

/* --------------------------------------------------- attention.c, rope.c */
/* q (..., L, E), k (..., Sb, E), v (..., Sb, Ev) (batch dims broadcast) of which
 * the first S = kv_len keys are read in place (kv_len -1: S = Sb), mask NULL or
 * bool (True = attend) / float32 (added) broadcastable to (..., L, S) or
 * (..., L, Sb) -> out (..., L, Ev). scale used when has_scale, else 1/sqrt(E).
 * enable_gqa: key/value heads (dim -3) may divide the query heads (torch's
 * GQA). is_causal: query row i sees keys j <= query_offset + i; it combines
 * with mask. */
mmu_status mmu_sdpa(mmu_tensor **out, mmu_tensor *q, mmu_tensor *k, mmu_tensor *v, mmu_tensor *mask,
                    double dropout_p, int is_causal, int has_scale, double scale, int enable_gqa,
                    int64_t query_offset, int64_t kv_len);
/* z (B, hq + 2 hkv, L, E) heads [q; k; v] (qkv_heads' layout), mask NULL / bool / float32 without grad
 * broadcastable to (B, hq, L, L), the query rows r0 .. r1 (r1 = -1: L; row i at key position i, also for
 * is_causal) -> out (B, hq, r1 - r0, E): mmu_sdpa over them, read in place */
mmu_status mmu_sdpa_packed(mmu_tensor **out, mmu_tensor *z, int64_t hq, int64_t hkv, mmu_tensor *mask, int is_causal,
                           int has_scale, double scale, int64_t r0, int64_t r1);
/* Swin's non-overlapping window attention: q, k (B, H, N, E), v (B, H, N, Ev), N = gh·gw tokens of a
 * row-major grid, windows wh x ww dividing it, bias (H, wh·ww, wh·ww) or NULL added to every window's
 * scores -> out (B, H, N, Ev); the windows are read in place (no partition copy, no N x N mask) */
mmu_status mmu_window_attention(mmu_tensor **out, mmu_tensor *q, mmu_tensor *k, mmu_tensor *v, mmu_tensor *bias,
                                int64_t gh, int64_t gw, int64_t wh, int64_t ww, int has_scale, double scale);
/* attention along time per location: q, k (B, H, T·L, E), v (B, H, T·L, Ev) frame-major (token t·L + l),
 * T = frames; token (t, l) sees (t', l) for t' <= t (every t' when !causal) -> out (B, H, T·L, Ev) */
mmu_status mmu_temporal_attention(mmu_tensor **out, mmu_tensor *q, mmu_tensor *k, mmu_tensor *v, int64_t frames,
                                  int causal, int has_scale, double scale);
/* x (..., L, D), cos, sin (L, D) -> x·cos + rotate_half(x)·sin */
mmu_status mmu_apply_rotary(mmu_tensor **out, mmu_tensor *x, mmu_tensor *cos, mmu_tensor *sin);

/* ------------------------------------------------------------ quant/vq.c */
// x (N, D), codebook (K, D) -> (N,) int64 nearest code (l2, or cosine when cosine != 0); not differentiable
mmu_status mmu_nearest_code(mmu_tensor **out, mmu_tensor *x, mmu_tensor *codebook, int cosine);
// x (N, D), idx (N,), cluster_size (C, K), embed_avg (C, K, D), embed (C, K, D): EMA update of codebook c in place
mmu_status mmu_vq_ema_update(mmu_tensor *x, mmu_tensor *idx, mmu_tensor *cluster_size, mmu_tensor *embed_avg,
                             mmu_tensor *embed, int64_t c, double decay, double eps);

/* ----------------------------------------------------------- quant/lfq.c */
// FSQ: z (..., d), levels (d) -> zhat (..., d) in [-1, 1]; idx (...) int64 code indices (NULL: skip)
mmu_status mmu_fsq(mmu_tensor **out, mmu_tensor **idx, mmu_tensor *z, int nlev, const int64_t *levels);
mmu_status mmu_fsq_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin);
// LFQ entropy: x (N, K, d) -> (2): [mean per-sample entropy, mean over K of the entropy of the batch-mean
// code distribution], softmax(2·τ·s·x·c) over all c ∈ {±1}^d, exact, never materialising N x 2^d;
// chunk: rows per streamed GEMM block (0: automatic, ~4 MiB of Kronecker factors)
mmu_status mmu_lfq_entropy(mmu_tensor **out, mmu_tensor *x, double inv_temperature, double codebook_scale,
                           int64_t chunk);
mmu_status mmu_lfq_entropy_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin);

/* -------------------------------------------------- loss/cross_entropy.c */
typedef enum { MMU_REDUCTION_NONE = 0, MMU_REDUCTION_MEAN = 1, MMU_REDUCTION_SUM = 2 } mmu_reduction;
/* logits (N, C) or (N, C, d1..), target int64 (N) or (N, d1..) */
mmu_status mmu_cross_entropy(mmu_tensor **out, mmu_tensor *logits, mmu_tensor *target,
                             int64_t ignore_index, double label_smoothing, mmu_reduction red);

/* ------------------------------------------------- loss/reconstruction.c */
/* input, target same shape (target broadcast not supported, as torch warns) */
mmu_status mmu_mse_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red);
mmu_status mmu_l1_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red);
/* input, target same shape; beta >= 0 (0 = l1), delta > 0 (torch's smooth_l1_loss / huber_loss) */
mmu_status mmu_smooth_l1_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red,
                              double beta);
mmu_status mmu_huber_loss(mmu_tensor **out, mmu_tensor *input, mmu_tensor *target, mmu_reduction red,
                          double delta);
/* x (pixels in [0, 1]), mu, log_b all the same shape; 0 < eps < 0.5 (DALL-E's logit-Laplace NLL) */
mmu_status mmu_logit_laplace_loss(mmu_tensor **out, mmu_tensor *x, mmu_tensor *mu, mmu_tensor *log_b, double eps,
                                  mmu_reduction red);
mmu_status mmu_logit_laplace_loss_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin);

/* ---------------------------------------------------- loss/contrastive.c */
// image_emb (B, D), text_emb (B, D), logit_scale () -> () symmetric InfoNCE, scale = min(exp(logit_scale), 100)
mmu_status mmu_clip_loss(mmu_tensor **out, mmu_tensor *img, mmu_tensor *txt, mmu_tensor *logit_scale);
mmu_status mmu_clip_loss_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin);
// image_emb (B, D), text_emb (B, D), t (), b () -> () SigLIP sigmoid loss
mmu_status mmu_siglip_loss(mmu_tensor **out, mmu_tensor *img, mmu_tensor *txt, mmu_tensor *t, mmu_tensor *b);
mmu_status mmu_siglip_loss_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin);

/* ---------------------------------------------------------- loss/lpips.c */
/* One LPIPS layer term: f0, f1 (B, C, H, W), w (C) (NULL: all ones) -> (B, 1, 1, 1). */
mmu_status mmu_lpips_distance(mmu_tensor **out, mmu_tensor *f0, mmu_tensor *f1, mmu_tensor *w, double eps);
mmu_status mmu_lpips_distance_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin);

/* --------------------------------------------------------- optim/optim.c */
/* Multi-tensor updates: lists of n float32 tensors, all updated in place in
 * one OpenMP pass (see csrc/optim/optim.c). Hyperparameters as torch.optim. */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    int decoupled; /* AdamW: p *= 1 - lr*wd; else Adam: g += wd*p */
    int amsgrad, maximize;
} mmu_adam_hparams;

typedef struct {
    double lr, momentum, dampening, weight_decay;
    int nesterov, maximize;
} mmu_sgd_hparams;

// p, g, m, v, vmax (amsgrad only, else NULL): n tensors each, shaped like p[i]; steps[i] >= 1
mmu_status mmu_adam_step(int n, mmu_tensor *const *p, mmu_tensor *const *g, mmu_tensor *const *m,
                         mmu_tensor *const *v, mmu_tensor *const *vmax, const int64_t *steps,
                         const mmu_adam_hparams *h);
// p, g, buf (momentum != 0 only): n tensors; first[i]: buf[i] is new (set to the gradient)
mmu_status mmu_sgd_step(int n, mmu_tensor *const *p, mmu_tensor *const *g, mmu_tensor *const *buf,
                        const uint8_t *first, const mmu_sgd_hparams *h);
// the p-norm (p > 0 or inf) of n tensors taken together, summed in double, deterministic
mmu_status mmu_multi_norm(double *out, int n, mmu_tensor *const *ts, double p);
// ts[i] *= c for all n tensors
mmu_status mmu_multi_scale_(int n, mmu_tensor *const *ts, float c);
// shadow[i] = lerp(shadow[i], src[i], weight) for all n tensors (weight 1: exact copy)
mmu_status mmu_multi_lerp_(int n, mmu_tensor *const *shadow, mmu_tensor *const *src, double weight);

#endif

/* Scaled dot-product attention, FlashAttention-2 style, forward and backward.
 *
 *   out = dropout(softmax(q kᵀ·scale + bias)) v,   bias from attn_mask / is_causal
 *
 * Nothing of size L x S is ever materialised. The forward walks blocks of br
 * query rows x bc keys, keeping for each row the running max m, the running
 * sum l of exp(s - m) and an output accumulator that is rescaled when m
 * grows (online softmax); it saves only out and the logsumexp m + log l
 * (one float per query row). The backward recomputes each block's scores from
 * q, k and the logsumexp: P = exp(s - lse), and with D = rowsum(dO ∘ O),
 *   dV += Pᵀ dO,  dP = dO vᵀ,  dS = P ∘ (dP - D),  dK += dSᵀ q·scale,  dQ += dS k·scale.
 * A backward task owns one (batch·head) and a range of key blocks: dK and dV
 * of its keys are its own, and dQ goes to a buffer of its own (the whole
 * head's dQ when one task covers all keys; per-range partial buffers summed
 * in a fixed order otherwise), so there are no atomics and the result is the
 * same bit for bit run to run.
 *
 * Block sizes come from L and S (choose_blocks): up to 256 keys are one key
 * block, so a short sequence's softmax is one pass over whole rows with no
 * online rescaling; longer ones are cut into blocks as even as multiples of 16
 * allow; row blocks are even too, in whole 6-row tiles of the GEMM kernel. An
 * odd length such as TiTok's 129 tokens thus costs 129 keys (144 columns) in
 * row blocks of 48 + 48 + 33, where fixed 64 x 64 blocks made it 64 + 64 + 1
 * both ways and paid whole-block passes (packing, five GEMM calls, the softmax
 * bookkeeping) for one key or one row.
 *
 * Masks are read in place with broadcast strides (a (L, S), (B, 1, L, S) or
 * (B, 1, 1, S) mask is never expanded). Each distinct mask matrix is scanned
 * once per call into a table of its MB x MB (64 x 64) blocks: hidden (all
 * False / -inf: skipped in both passes, like the blocks above a causal
 * diagonal), visible (all True / 0: no masking work) or mixed. A work block
 * covers one or more table blocks; its trailing keys that every row of it
 * has hidden (a causal block's upper right, a Show-o omni mask's image keys
 * for the text rows) are dropped before its GEMMs (block_keys). A Show-o
 * omni-attention, windowed or block-causal mask thus costs about the blocks
 * it keeps. A float
 * mask that requires grad gets dS, which is (..., L, S) by nature: only then
 * does the backward write an L x S buffer (then summed to the mask's shape).
 *
 * Cached attention (a KV cache of capacity Sb holding S = kv_len keys): only
 * the first S rows of each key/value matrix are read, in place (the matrices
 * keep their stride Sb, nothing is sliced or copied), and their gradients past
 * S are 0. Query row i sits at key position qpos + i (query_offset), so the
 * causal mask keeps j <= qpos + i: qpos = S - L aligns a chunk of L new
 * queries bottom-right against the whole cached prefix, qpos = 0 is torch's
 * top-left tril(ones(L, S)). attn_mask may come with is_causal (torch refuses
 * that): a block is hidden if either hides it, visible only if both leave it
 * whole. The mask's last dim is S or Sb (its row stride; columns past S are
 * never read), so a cache's (B, 1, 1, Sb) padding mask is used as it stands.
 *
 * Fully masked rows: torch 2.13 returns 0 for a query row that can see no key
 * (both its math path, which uses a "safe" softmax since 2.5, and the CPU
 * flash kernel), and its gradients are 0. mmu does the same: such a row keeps
 * l = 0 and lse = -inf, its output is 0 and its P is 0 in the backward.
 *
 * Dropout (on the attention weights, after softmax, as torch) uses the
 * counter-based Philox stream: the keep decision of weight (b, i, j) is value
 * (b·L + i)·S + j of a draw reserved by the forward, so the backward
 * regenerates the very same mask from (key, counter) saved in the node.
 *
 * The block products are small GEMMs done by a register-tiled kernel (AVX-512
 * intrinsics, or GCC vector extensions on other targets): a 6-row x 64-column
 * tile of C lives in 24 registers while the k loop broadcasts elements of A
 * and loads rows of B. B is always read along contiguous rows, so kᵀ (and vᵀ
 * for the backward) are packed once per head; A may be read transposed, which
 * gives Pᵀ dO and dSᵀ q without transposing a block. q is packed times scale.
 * Measured single-threaded on Zen 5 (B=8, H=8, L=1024, D=64): ~140 GFLOP/s
 * forward, ~165 backward, against ~75 for torch 2.13's CPU flash kernel.
 *
 * A forward with at most 16 query rows per key/value head (decoding against a
 * cache) takes a matrix-vector path instead: see sdpa_decode below. */
#include <math.h>
#include <string.h>

#include "../core/vmath.h"
#include "ops.h"

#define BR 64 /* query rows per block of window / temporal attention */
#define MB 64 /* query rows and keys per block of the mask table (kinds) */
#define SDPA_BR 64 /* at most this many query rows per work block */
#define SDPA_BC 256 /* at most this many keys per work block */

#if defined(__AVX512F__)
#include <immintrin.h>
typedef __m512 vf;
#define VLOAD(p) _mm512_loadu_ps(p)
#define VSTORE(p, x) _mm512_storeu_ps(p, x)
#define VSET1(x) _mm512_set1_ps(x)
#define VZERO() _mm512_setzero_ps()
#define VFMA(a, b, c) _mm512_fmadd_ps(a, b, c)
#define VHSUM(x) _mm512_reduce_add_ps(x)
/* the four horizontal sums of a0..a3 into t[0..3]: fold 512 -> 128 bits
 * pairwise with block shuffles, then 4 -> 1 lane inside each 128-bit block */
static inline void vhsum4(vf a0, vf a1, vf a2, vf a3, float *t) {
    vf x0 = _mm512_add_ps(_mm512_shuffle_f32x4(a0, a1, 0x44), _mm512_shuffle_f32x4(a0, a1, 0xEE));
    vf x1 = _mm512_add_ps(_mm512_shuffle_f32x4(a2, a3, 0x44), _mm512_shuffle_f32x4(a2, a3, 0xEE));
    vf y = _mm512_add_ps(_mm512_shuffle_f32x4(x0, x1, 0x88), _mm512_shuffle_f32x4(x0, x1, 0xDD));
    y = _mm512_add_ps(y, _mm512_permute_ps(y, 0x4E));
    y = _mm512_add_ps(y, _mm512_permute_ps(y, 0xB1));
    float u[16];
    _mm512_storeu_ps(u, y);
    t[0] = u[0], t[1] = u[4], t[2] = u[8], t[3] = u[12];
}
#else /* portable: GCC vector extensions (x86-64-v3 builds: two ymm per vector) */
typedef float vf __attribute__((vector_size(64)));
typedef float vfu __attribute__((vector_size(64), aligned(4), may_alias));
#define VLOAD(p) ((vf)(*(const vfu *)(p)))
#define VSTORE(p, x) (*(vfu *)(p) = (x))
#define VSET1(x) ((vf){0} + (x))
#define VZERO() ((vf){0})
#define VFMA(a, b, c) ((a) * (b) + (c))
static inline float vhsum(vf x) {
    float t = 0.0f;
    for (int l = 0; l < 16; l++) t += x[l];
    return t;
}
#define VHSUM(x) vhsum(x)
static inline void vhsum4(vf a0, vf a1, vf a2, vf a3, float *t) {
    t[0] = vhsum(a0), t[1] = vhsum(a1), t[2] = vhsum(a2), t[3] = vhsum(a3);
}
#endif

static inline int64_t up16(int64_t n) { return (n + 15) & ~(int64_t)15; }

/* C (MR x 16·NV) (+)= A (MR x K) B (K x 16·NV), with A stored transposed (K x MR,
 * element (m, k) at A[k·lda + m]) when TA. TA, MR <= 6, NV <= 4 are compile-time
 * constants after inlining: the 24 accumulators are named variables (arrays
 * of vectors were left on the stack by GCC), the dead ones fold away. */
#define MK_ACC(r, v) c##r##v
#define MK_INIT(r, v) vf MK_ACC(r, v) = (MR > r && NV > v && acc) ? VLOAD(C + r * ldc + 16 * v) : VZERO();
#define MK_INIT_ROW(r) MK_INIT(r, 0) MK_INIT(r, 1) MK_INIT(r, 2) MK_INIT(r, 3)
#define MK_FMA_ROW(r)                                                   \
    if (MR > r) {                                                       \
        vf a = VSET1(TA ? A[k * lda + r] : A[r * lda + k]);             \
        MK_ACC(r, 0) = VFMA(a, b0, MK_ACC(r, 0));                       \
        if (NV > 1) MK_ACC(r, 1) = VFMA(a, b1, MK_ACC(r, 1));           \
        if (NV > 2) MK_ACC(r, 2) = VFMA(a, b2, MK_ACC(r, 2));           \
        if (NV > 3) MK_ACC(r, 3) = VFMA(a, b3, MK_ACC(r, 3));           \
    }
#define MK_STORE(r, v) \
    if (MR > r && NV > v) VSTORE(C + r * ldc + 16 * v, MK_ACC(r, v));
#define MK_STORE_ROW(r) MK_STORE(r, 0) MK_STORE(r, 1) MK_STORE(r, 2) MK_STORE(r, 3)

static inline __attribute__((always_inline)) void micro(const int TA, const int MR, const int NV, int64_t K, const float *A,
                                                        int64_t lda, const float *B, int64_t ldb, float *C,
                                                        int64_t ldc, int acc) {
    MK_INIT_ROW(0) MK_INIT_ROW(1) MK_INIT_ROW(2) MK_INIT_ROW(3) MK_INIT_ROW(4) MK_INIT_ROW(5)
    for (int64_t k = 0; k < K; k++) {
        const float *b = B + k * ldb;
        vf b0 = VLOAD(b), b1 = NV > 1 ? VLOAD(b + 16) : VZERO(), b2 = NV > 2 ? VLOAD(b + 32) : VZERO(),
           b3 = NV > 3 ? VLOAD(b + 48) : VZERO();
        MK_FMA_ROW(0) MK_FMA_ROW(1) MK_FMA_ROW(2) MK_FMA_ROW(3) MK_FMA_ROW(4) MK_FMA_ROW(5)
    }
    MK_STORE_ROW(0) MK_STORE_ROW(1) MK_STORE_ROW(2) MK_STORE_ROW(3) MK_STORE_ROW(4) MK_STORE_ROW(5)
}

#define MICRO_CASE(ta, mr, nv) \
    case ta * 64 + mr * 8 + nv: micro(ta, mr, nv, K, A, lda, B, ldb, C, ldc, acc); break;
#define MICRO_ROW(ta, mr) MICRO_CASE(ta, mr, 1) MICRO_CASE(ta, mr, 2) MICRO_CASE(ta, mr, 3) MICRO_CASE(ta, mr, 4)
#define MICRO_TA(ta) MICRO_ROW(ta, 1) MICRO_ROW(ta, 2) MICRO_ROW(ta, 3) MICRO_ROW(ta, 4) MICRO_ROW(ta, 5) MICRO_ROW(ta, 6)

static void micro_any(int ta, int mr, int nv, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                      float *C, int64_t ldc, int acc) {
    switch (ta * 64 + mr * 8 + nv) {
        MICRO_TA(0) MICRO_TA(1)
    default: break;
    }
}

/* A (M, K) lda (or, if ta, Aᵀ stored (K, M) lda), B (K, N) ldb, N a multiple of 16
 * -> C (M, N) ldc, accumulated into C if acc */
static void gemm(int ta, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, const float *B, int64_t ldb,
                 float *C, int64_t ldc, int acc) {
    if (K == 0) {
        if (!acc)
            for (int64_t m = 0; m < M; m++) memset(C + m * ldc, 0, N * sizeof(float));
        return;
    }
    int64_t am = ta ? 1 : lda; /* step of A between rows of C */
    for (int64_t n0 = 0; n0 < N; n0 += 64) {
        int nv = (int)((N - n0) / 16 < 4 ? (N - n0) / 16 : 4);
        int64_t m0 = 0;
        if (nv == 4 && ta)
            for (; m0 + 6 <= M; m0 += 6) micro(1, 6, 4, K, A + m0 * am, lda, B + n0, ldb, C + m0 * ldc + n0, ldc, acc);
        else if (nv == 4)
            for (; m0 + 6 <= M; m0 += 6) micro(0, 6, 4, K, A + m0 * am, lda, B + n0, ldb, C + m0 * ldc + n0, ldc, acc);
        for (; m0 < M; m0 += 6) {
            int mr = M - m0 < 6 ? (int)(M - m0) : 6;
            micro_any(ta, mr, nv, K, A + m0 * am, lda, B + n0, ldb, C + m0 * ldc + n0, ldc, acc);
        }
    }
}

/* ------------------------------------------------------------ geometry */

/* Everything a kernel needs to find the operands of one (batch·head). */
typedef struct {
    int64_t NB, L, S, E, Ev;
    int64_t Sb;   /* key/value rows per matrix in memory (the buffer); S <= Sb are read */
    int64_t qpos; /* query_offset: query row i sits at key position qpos + i */
    int64_t dms;  /* row length of the mask gradient buffer: Sb for a mask over the buffer, else S */
    int64_t *qoff, *koff, *voff, *moff; /* element offsets per flattened output batch index */
    const float *q, *k, *v;
    const void *mask; /* NULL, uint8_t (bool) or float */
    int mask_bool;
    int64_t msr, msc; /* mask strides of a query row / a key (0 when broadcast) */
    int64_t mmat, nmat; /* elements per mask matrix, number of distinct mask matrices */
    int64_t kgroup, vgroup; /* query heads per key / value head (enable_gqa), else 1 */
    uint8_t *kinds;   /* (nmat, nqb, nkb) block_kind of every mask block */
    int64_t nqb, nkb; /* the table's MB x MB blocks per matrix: rows, columns */
    size_t kinds_bytes;
    int64_t br, bc; /* query rows and keys per work block (choose_blocks) */
    /* backward: element offsets of head b's dq, dk, dv; NULL: dense (NB, L, E), (NB, Sb, E), (NB, Sb, Ev) */
    const int64_t *dqoff, *dkoff, *dvoff;
    int causal;
    float scale;
    double p_drop;
    uint64_t rkey, rctr; /* Philox key and first counter of the dropout draw */
} sdpa_geom;

/* Offsets, for each index of the broadcast batch shape (nd dims), of the
 * matrices of a tensor whose batch shape is (tn dims) right-aligned to it;
 * mat = elements per matrix. group > 1 (grouped-query attention): index h of
 * the last batch dim (the heads) maps to head h / group of the tensor. */
static void batch_offsets(int64_t *off, int nd, const int64_t *bshape, int tn, const int64_t *tshape, int64_t mat,
                          int64_t group) {
    int64_t stride[MMU_MAX_DIMS] = {0}, s = mat, nb = 1;
    for (int d = nd - 1; d >= 0; d--) {
        int td = d - (nd - tn);
        if (td >= 0 && tshape[td] != 1) {
            stride[d] = s;
            s *= tshape[td];
        }
        nb *= bshape[d];
    }
    for (int64_t b = 0; b < nb; b++) {
        int64_t rem = b, o = 0;
        for (int d = nd - 1; d >= 0; d--) {
            o += (rem % bshape[d]) / (d == nd - 1 ? group : 1) * stride[d];
            rem /= bshape[d];
        }
        off[b] = o;
    }
}

/* What a mask does to one block of one mask matrix: 0 hides every (i, j)
 * (a bool False / float -inf everywhere), 1 changes nothing (True / 0.0
 * everywhere), 2 mixed. */
static uint8_t scan_block(const sdpa_geom *g, int64_t mat, int64_t i0, int64_t nr, int64_t j0, int64_t jn) {
    int64_t nrr = g->msr ? nr : 1, ncc = g->msc ? jn : 1;
    int any = 0, all = 1;
    if (g->mask_bool) {
        const uint8_t *m = (const uint8_t *)g->mask + mat * g->mmat + i0 * g->msr + j0 * g->msc;
        for (int64_t r = 0; r < nrr; r++) {
            const uint8_t *mr = m + r * g->msr;
            int rany = 0, rall = 1;
            for (int64_t c = 0; c < ncc; c++) rany |= mr[c] != 0, rall &= mr[c] != 0;
            any |= rany, all &= rall;
        }
    } else {
        const float *m = (const float *)g->mask + mat * g->mmat + i0 * g->msr + j0 * g->msc;
        for (int64_t r = 0; r < nrr; r++) {
            const float *mr = m + r * g->msr;
            int rany = 0, rall = 1;
            for (int64_t c = 0; c < ncc; c++) rany |= mr[c] != -INFINITY, rall &= mr[c] == 0.0f;
            any |= rany, all &= rall;
        }
    }
    return !any ? 0 : all ? 1 : 2;
}

/* The block table of every distinct mask matrix, computed once per call
 * (not once per head sharing the mask, nor once per pass). A mask broadcast
 * over the query rows (a (B, 1, 1, S) padding mask) has one row of blocks:
 * its scan reads each mask element once, not once per query block. */
static mmu_status build_kinds(sdpa_geom *g) {
    if (!g->mask) return MMU_OK;
    g->nqb = g->msr ? (g->L + MB - 1) / MB : 1, g->nkb = (g->S + MB - 1) / MB;
    int64_t n = g->nmat * g->nqb * g->nkb;
    g->kinds_bytes = n ? (size_t)n : 1;
    if (!(g->kinds = mmu_alloc(g->kinds_bytes)))
        return mmu_fail(MMU_ENOMEM, "scaled_dot_product_attention: out of memory");
    int64_t work = g->nmat * (g->msr ? g->L : 1) * g->S;
#pragma omp parallel for schedule(static) if (work > MMU_PAR_GRAIN)
    for (int64_t x = 0; x < n; x++) {
        int64_t mat = x / (g->nqb * g->nkb), ib = x / g->nkb % g->nqb, jb = x % g->nkb;
        int64_t i0 = ib * MB, j0 = jb * MB;
        g->kinds[x] = scan_block(g, mat, i0, g->L - i0 < MB ? g->L - i0 : MB, j0, g->S - j0 < MB ? g->S - j0 : MB);
    }
    return MMU_OK;
}

/* Causal: the block (rows i0 .. i0+nr, keys j0 ..) lies wholly above the
 * diagonal shifted by qpos, and so does every later key block. */
static int causal_hidden(const sdpa_geom *g, int64_t i0, int64_t nr, int64_t j0) {
    return g->causal && j0 > g->qpos + i0 + nr - 1;
}

/* The mask table's entries for the work block (rows i0 .. i0+nr, keys j0 ..
 * j0+jn), which may cover several MB x MB table blocks: 0 if every one is
 * hidden, 1 if every one is visible, 2 otherwise. */
static int mask_kind(const sdpa_geom *g, int64_t b, int64_t i0, int64_t nr, int64_t j0, int64_t jn) {
    const uint8_t *t = g->kinds + g->moff[b] / g->mmat * g->nqb * g->nkb;
    int64_t ib0 = g->msr ? i0 / MB : 0, ib1 = g->msr ? (i0 + nr - 1) / MB : 0;
    int any = 0, all = 1;
    for (int64_t ib = ib0; ib <= ib1; ib++)
        for (int64_t jb = j0 / MB; jb <= (j0 + jn - 1) / MB; jb++) {
            int k = t[ib * g->nkb + jb];
            any |= k != 0, all &= k == 1;
        }
    return !any ? 0 : all ? 1 : 2;
}

/* 0: the block (rows i0.., keys j0..) is hidden entirely, 1: fully visible,
 * 2: mixed. The causal mask and attn_mask combine: hidden if either hides it,
 * visible only if both leave it whole. */
static int block_kind(const sdpa_geom *g, int64_t b, int64_t i0, int64_t nr, int64_t j0, int64_t jn) {
    int kind = 1;
    if (g->causal) { /* row i sees keys j <= qpos + i */
        if (causal_hidden(g, i0, nr, j0)) return 0;
        if (j0 + jn - 1 > g->qpos + i0) kind = 2;
    }
    if (g->mask) {
        int mk = mask_kind(g, b, i0, nr, j0, jn);
        if (mk != 1) kind = mk;
    }
    return kind;
}

/* How many of the keys j0 .. j0+jn some row of i0 .. i0+nr can see, counted
 * from j0: the keys past the last row's causal diagonal and the trailing
 * MB-wide stretches the mask hides from every row of the block are dropped,
 * so a wide key block computes no scores that could only be -inf (the text
 * rows of a Show-o omni mask against the image keys, a causal block's upper
 * right). Within what remains, hidden keys get -inf from bias_row. */
static int64_t block_keys(const sdpa_geom *g, int64_t b, int64_t i0, int64_t nr, int64_t j0, int64_t jn) {
    if (g->causal) {
        int64_t last = g->qpos + i0 + nr - j0; /* keys j0 .. qpos + i0 + nr - 1 */
        jn = last < 0 ? 0 : last < jn ? last : jn;
    }
    if (g->mask)
        while (jn > 0) {
            int64_t s0 = (j0 + jn - 1) / MB * MB; /* the last table block the range reaches */
            s0 = s0 > j0 ? s0 : j0;
            if (mask_kind(g, b, i0, nr, s0, j0 + jn - s0)) break;
            jn = s0 - j0;
        }
    return jn;
}

/* Dropout keep-scale of weights (b, i, j0 .. j0+n): 1/(1-p) or 0 */
static void dropout_row(float *z, const sdpa_geom *g, int64_t b, int64_t i, int64_t j0, int64_t n) {
    float keep = g->p_drop < 1.0 ? (float)(1.0 / (1.0 - g->p_drop)) : 0.0f;
    uint32_t thresh = g->p_drop >= 1.0 ? 0xffffffffu : (uint32_t)(g->p_drop * 16777216.0);
    uint64_t idx = ((uint64_t)b * g->L + i) * g->S + j0;
    uint32_t x[4];
    int64_t c = 0;
    while (c < n) {
        mmu_philox(g->rkey, g->rctr + idx / 4, x);
        for (int lane = (int)(idx % 4); lane < 4 && c < n; lane++, c++, idx++) {
            /* uniform u = top 24 bits / 2^24 (as rand()); kept when u >= p */
            uint32_t u24 = x[lane] >> 8;
            z[c] = (g->p_drop >= 1.0 || u24 < thresh) ? 0.0f : keep;
        }
    }
}

/* Scores row s (n = up16(jn) entries, already scaled: q is packed times
 * scale) of query i against keys j0..: the mask / causal bias; keys past jn
 * get -inf. */
// the mask of query i over keys j0 .. j0+jn, read element by element, applied to s
static void mask_span(float *s, const sdpa_geom *g, int64_t b, int64_t i, int64_t j0, int64_t jn) {
    if (g->mask_bool) {
        const uint8_t *m = (const uint8_t *)g->mask + g->moff[b] + i * g->msr + j0 * g->msc;
        if (g->msc) /* contiguous: a vectorised select */
            for (int64_t c = 0; c < jn; c++) s[c] = m[c] ? s[c] : -INFINITY;
        else if (!m[0])
            for (int64_t c = 0; c < jn; c++) s[c] = -INFINITY;
    } else {
        const float *m = (const float *)g->mask + g->moff[b] + i * g->msr + j0 * g->msc;
        if (g->msc)
            for (int64_t c = 0; c < jn; c++) s[c] += m[c];
        else
            for (int64_t c = 0; c < jn; c++) s[c] += m[0];
    }
}

static void bias_row(float *s, const sdpa_geom *g, int64_t b, int64_t i, int64_t j0, int64_t jn, int64_t n,
                     int kind) {
    if (kind == 2) {
        if (g->mask && g->kinds && (j0 % MB) + jn > MB) {
            /* a work block wider than the table's: each MB-wide stretch as the table has it (visible:
             * nothing to do, hidden: -inf as if skipped, mixed: element by element) */
            const uint8_t *t = g->kinds + (g->moff[b] / g->mmat * g->nqb + (g->msr ? i / MB : 0)) * g->nkb;
            for (int64_t c0 = 0; c0 < jn;) {
                int64_t jb = (j0 + c0) / MB, c1 = (jb + 1) * MB - j0;
                if (c1 > jn) c1 = jn;
                if (t[jb] == 0)
                    for (int64_t c = c0; c < c1; c++) s[c] = -INFINITY;
                else if (t[jb] == 2)
                    mask_span(s + c0, g, b, i, j0 + c0, c1 - c0);
                c0 = c1;
            }
        } else if (g->mask) {
            mask_span(s, g, b, i, j0, jn);
        }
        if (g->causal)
            for (int64_t c = g->qpos + i - j0 + 1 < 0 ? 0 : g->qpos + i - j0 + 1; c < jn; c++) s[c] = -INFINITY;
    }
    for (int64_t c = jn; c < n; c++) s[c] = -INFINITY;
}

/* ------------------------------------------------------------ packing */

#if defined(__AVX512F__)
/* dst[c·ldd + r] = src[r·lds + c] for a 16 x 16 block: pairs of rows
 * interleaved by 32 then 64 bits, so 128-bit lane l of register u[4g + c]
 * holds rows 4g .. 4g+3 of column 4l + c, then a 4 x 4 transpose of 128-bit
 * lanes across u[c], u[4 + c], u[8 + c], u[12 + c] for each c. */
static inline void transpose16(float *dst, int64_t ldd, const float *src, int64_t lds) {
    __m512 r[16], t[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_loadu_ps(src + i * lds);
    for (int i = 0; i < 16; i += 2) {
        t[i] = _mm512_unpacklo_ps(r[i], r[i + 1]);
        t[i + 1] = _mm512_unpackhi_ps(r[i], r[i + 1]);
    }
    for (int i = 0; i < 16; i += 4) {
        __m512d a = _mm512_castps_pd(t[i]), b = _mm512_castps_pd(t[i + 1]), c = _mm512_castps_pd(t[i + 2]),
                d = _mm512_castps_pd(t[i + 3]);
        r[i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    for (int c = 0; c < 4; c++) {
        __m512 v0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44), v1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE),
               v2 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44), v3 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
        _mm512_storeu_ps(dst + c * ldd, _mm512_shuffle_f32x4(v0, v2, 0x88));
        _mm512_storeu_ps(dst + (4 + c) * ldd, _mm512_shuffle_f32x4(v0, v2, 0xDD));
        _mm512_storeu_ps(dst + (8 + c) * ldd, _mm512_shuffle_f32x4(v1, v3, 0x88));
        _mm512_storeu_ps(dst + (12 + c) * ldd, _mm512_shuffle_f32x4(v1, v3, 0xDD));
    }
}
#define HAVE_TRANSPOSE16 1
#else
#define HAVE_TRANSPOSE16 0
#endif

// src (rows, cols), row stride lds -> dst (cols, ldd): transposed, columns rows..up16(rows) zeroed (ldd >= up16(rows))
static void pack_t(float *dst, int64_t ldd, const float *src, int64_t lds, int64_t rows, int64_t cols) {
    int64_t r0 = 0, c16 = HAVE_TRANSPOSE16 ? cols & ~(int64_t)15 : 0;
#if HAVE_TRANSPOSE16
    for (; r0 + 16 <= rows; r0 += 16)
        for (int64_t c = 0; c < c16; c += 16) transpose16(dst + c * ldd + r0, ldd, src + r0 * lds + c, lds);
#endif
    for (int64_t c = c16; c < cols; c++) /* columns past the last whole 16 */
        for (int64_t r = 0; r < r0; r++) dst[c * ldd + r] = src[r * lds + c];
    for (; r0 < up16(rows); r0 += 16) { /* the last rows, zero-padded to 16 */
        int64_t rn = rows - r0 < 16 ? rows - r0 : 16;
        for (int64_t c = 0; c < cols; c++) {
            float *d = dst + c * ldd + r0;
            for (int64_t r = 0; r < rn; r++) d[r] = src[(r0 + r) * lds + c];
            for (int64_t r = rn; r < 16; r++) d[r] = 0.0f;
        }
    }
}

/* ------------------------------------------------------------ forward */

typedef struct {
    float *kt;   /* (E, Sp): kᵀ of the head, columns padded to 16 */
    float *qs;   /* (br, E): the query block times scale */
    float *vp;   /* (S, Evp) when Ev is not a multiple of 16 */
    float *sblk; /* (br, bc) scores / probabilities */
    float *oacc; /* (br, Evp) */
    float *z;    /* (bc) dropout row */
    float *m, *l; /* running max (br), running sums (br, 16 lanes) */
    size_t bytes;
    void *base;
} fwd_scratch;

// rows [i0, i1) of head b -> out (rows, Ev), lse (rows)
static void fwd_rows(const sdpa_geom *g, fwd_scratch *w, int64_t b, int64_t r0, int64_t r1, float *out, float *lse) {
    int64_t S = g->S, E = g->E, Ev = g->Ev, Sp = up16(S), Evp = up16(Ev), br = g->br, bc = g->bc;
    const float *q = g->q + g->qoff[b], *k = g->k + g->koff[b], *v = g->v + g->voff[b];
    /* kᵀ: pack the keys this row range can see (all but causal's unseen tail) */
    int64_t Svis = S;
    if (g->causal && g->qpos + r1 < S) Svis = g->qpos + r1; /* up to the last row's diagonal */
    pack_t(w->kt, Sp, k, E, Svis, E);
    const float *vb = v;
    int64_t ldv = Ev;
    if (Ev != Evp) {
        for (int64_t s = 0; s < Svis; s++) {
            memcpy(w->vp + s * Evp, v + s * Ev, Ev * sizeof(float));
            memset(w->vp + s * Evp + Ev, 0, (Evp - Ev) * sizeof(float));
        }
        vb = w->vp;
        ldv = Evp;
    }
    for (int64_t i0 = r0; i0 < r1; i0 += br) {
        int64_t nr = r1 - i0 < br ? r1 - i0 : br;
        for (int64_t r = 0; r < nr; r++) w->m[r] = -INFINITY;
        memset(w->l, 0, nr * 16 * sizeof(float));
        memset(w->oacc, 0, nr * Evp * sizeof(float));
        const float sc = g->scale, *qi = q + i0 * E;
        for (int64_t x = 0; x < nr * E; x++) w->qs[x] = qi[x] * sc;
        for (int64_t j0 = 0; j0 < S; j0 += bc) {
            if (causal_hidden(g, i0, nr, j0)) break; /* every later block is hidden too */
            int64_t jn = block_keys(g, b, i0, nr, j0, S - j0 < bc ? S - j0 : bc), nc = up16(jn);
            int kind = jn ? block_kind(g, b, i0, nr, j0, jn) : 0;
            if (!kind) continue;
            gemm(0, nr, nc, E, w->qs, E, w->kt + j0, Sp, w->sblk, bc, 0);
            for (int64_t r = 0; r < nr; r++) {
                float *s = w->sblk + r * bc;
                bias_row(s, g, b, i0 + r, j0, jn, nc, kind);
                /* a NaN score wins (isnan), so the row comes out NaN as in torch */
                float mx = mmu_row_max(s, nc), mnew = (mx > w->m[r] || isnan(mx)) ? mx : w->m[r];
                if (mnew == -INFINITY) { /* nothing visible yet in this row ... */
                    int has_nan = 0;     /* ... unless a NaN with the sign bit set (x86's */
                    for (int64_t t = 0; t < jn; t++) has_nan |= isnan(s[t]); /* default) */
                    if (!has_nan) {      /* sorted below -inf: that row must come out NaN */
                        memset(s, 0, nc * sizeof(float));
                        continue;
                    }
                    mnew = NAN;
                }
                /* the running sum l stays 16 lanes wide until the end of the row */
                float part[16] = {0}, *lv = w->l + r * 16;
                for (int64_t c = 0; c + 16 <= nc; c += 16)
                    for (int t = 0; t < 16; t++) {
                        float e = mmu_exp_le0(s[c + t] - mnew);
                        s[c + t] = e;
                        part[t] += e;
                    }
                float alpha = mmu_exp(w->m[r] - mnew);
                if (alpha != 1.0f) {
                    float *o = w->oacc + r * Evp;
                    for (int64_t e = 0; e < Evp; e++) o[e] *= alpha;
                }
                for (int t = 0; t < 16; t++) lv[t] = lv[t] * alpha + part[t];
                w->m[r] = mnew;
                if (g->p_drop > 0.0) {
                    dropout_row(w->z, g, b, i0 + r, j0, jn);
                    for (int64_t t = 0; t < jn; t++) s[t] *= w->z[t];
                }
            }
            gemm(0, nr, Evp, jn, w->sblk, bc, vb + j0 * ldv, ldv, w->oacc, Evp, 1);
        }
        for (int64_t r = 0; r < nr; r++) {
            float l = 0.0f;
            for (int t = 0; t < 16; t++) l += w->l[r * 16 + t];
            float inv = l > 0.0f ? 1.0f / l : 0.0f;
            const float *o = w->oacc + r * Evp;
            float *d = out + (i0 + r) * Ev;
            for (int64_t e = 0; e < Ev; e++) d[e] = o[e] * inv;
            lse[i0 + r] = l > 0.0f ? w->m[r] + logf(l) : -INFINITY;
        }
    }
}

static void *scratch_carve(char **p, size_t n) {
    void *r = *p;
    *p += (n * sizeof(float) + 63) & ~(size_t)63;
    return r;
}

static int fwd_scratch_init(fwd_scratch *w, const sdpa_geom *g) {
    int64_t Sp = up16(g->S), Evp = up16(g->Ev), br = g->br, bc = g->bc;
    size_t sizes[] = {(size_t)(g->E * Sp), (size_t)(g->Ev != Evp ? g->S * Evp : 0), (size_t)(br * bc),
                      (size_t)(br * Evp), (size_t)bc, (size_t)br, (size_t)(br * 16), (size_t)(br * g->E)};
    w->bytes = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) w->bytes += (sizes[i] * sizeof(float) + 63) & ~(size_t)63;
    w->base = mmu_alloc(w->bytes);
    if (!w->base) return -1;
    char *p = w->base;
    w->kt = scratch_carve(&p, sizes[0]);
    w->vp = scratch_carve(&p, sizes[1]);
    w->sblk = scratch_carve(&p, sizes[2]);
    w->oacc = scratch_carve(&p, sizes[3]);
    w->z = scratch_carve(&p, sizes[4]);
    w->m = scratch_carve(&p, sizes[5]);
    w->l = scratch_carve(&p, sizes[6]);
    w->qs = scratch_carve(&p, sizes[7]);
    return 0;
}

/* Work blocks from L and S (the mask table keeps its MB x MB blocks): key
 * blocks of at most SDPA_BC keys, as even as multiples of 16 allow, and row
 * blocks of at most SDPA_BR rows, even and rounded up to whole 6-row tiles of
 * the GEMM kernel. A short sequence is one key block, so its softmax is done
 * in one pass over whole rows with no online rescaling, and an odd length
 * pays no block for its last few rows or keys: S = L = 129 is one block of
 * 129 keys (144 columns) and row blocks of 48 + 48 + 33, not 64 + 64 + 1 in
 * both, where the last key block cost a whole block's passes for one key.
 * minkb: at least that many key blocks, when the backward splits a head's
 * keys between threads. */
static void choose_blocks(sdpa_geom *g, int64_t minkb) {
    int64_t S = g->S > 0 ? g->S : 1, L = g->L > 0 ? g->L : 1;
    int64_t nkb = (S + SDPA_BC - 1) / SDPA_BC, most = (S + 15) / 16;
    if (nkb < minkb) nkb = minkb < most ? minkb : most;
    g->bc = up16((S + nkb - 1) / nkb);
    int64_t nqb = (L + SDPA_BR - 1) / SDPA_BR, br = (L + nqb - 1) / nqb;
    g->br = (br + 5) / 6 * 6;
    if (g->mask && S > SDPA_BC) {
        /* a long masked sequence (Show-o's 322 tokens under its omni mask): blocks on the mask table's
         * grid, two table blocks of keys wide, so whole hidden table blocks are skipped and visible
         * ones need no masking work (measured: 8.8 -> 7.7 ms forward, 17.3 -> 16.6 backward at
         * B 4, H 8, L 322, D 64, where blocks of 176 keys x 54 rows computed more of the mask's
         * hidden part) */
        g->br = MB;
        g->bc = 2 * MB;
    }
}

/* How many pieces to cut each head's work into so that both cores have work. */
static int64_t split_for(int64_t NB, int64_t nblocks) {
    int64_t T = mmu_get_num_threads();
    if (NB <= 0) return 1;
    int64_t want = NB >= 2 * T ? 1 : (2 * T + NB - 1) / NB;
    return want < nblocks ? want : (nblocks > 0 ? nblocks : 1);
}

static mmu_status sdpa_forward(sdpa_geom *g, float *out, float *lse) {
    choose_blocks(g, 1);
    int64_t nqb = (g->L + g->br - 1) / g->br, pieces = split_for(g->NB, nqb), per = (nqb + pieces - 1) / pieces;
    int64_t ntask = g->NB * pieces;
    int failed = 0;
    mmu_sync_threads();
    double work = (double)g->NB * g->L * g->S * (g->E + g->Ev);
#pragma omp parallel if (work > MMU_PAR_GRAIN)
    {
        fwd_scratch w = {0};
        int ok = fwd_scratch_init(&w, g) == 0;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
        /* static, cyclic: tasks of a causal head differ in cost, dealing them
         * out round-robin evens the load; each task writes its own rows */
#pragma omp for schedule(static, 1)
        for (int64_t t = 0; t < ntask; t++) {
            if (!ok) continue;
            int64_t b = t / pieces, pc = t % pieces, r0 = pc * per * g->br, r1 = (pc + 1) * per * g->br;
            if (r1 > g->L) r1 = g->L;
            if (r0 >= r1) continue;
            fwd_rows(g, &w, b, r0, r1, out + b * g->L * g->Ev, lse + b * g->L);
        }
        if (ok) mmu_free(w.base, w.bytes);
    }
    return failed ? mmu_fail(MMU_ENOMEM, "scaled_dot_product_attention: out of memory for scratch") : MMU_OK;
}

/* ------------------------------------------------------------ decode: a few query rows */

/* Generation asks for L = 1 (or a few) query rows per head against a cache of
 * S keys: matrix-vector work, bound by reading k and v once. The block path
 * would pack kᵀ (all S keys, once more per head) for one row of products;
 * here the scores are dot products along the key rows as they lie in the
 * buffer (contiguous in E), and out = P v is the GEMM kernel reading v in
 * place (Ev a multiple of 16). The R = L·group query rows of a grouped-query
 * group (the query heads sharing one key/value head) form one block, so each
 * key is read once per group, not once per query head. The softmax takes two
 * passes over a row's scores (at most S floats, in scratch) instead of the
 * online rescaling. No mask block table: a mask row is applied as it is read,
 * so a (B, 1, 1, S) padding mask costs its B·S elements and nothing else.
 *
 * When the groups are too few to occupy the threads, each group's keys are cut
 * into pieces; a piece keeps its per-row max m_p, sum l_p and unnormalised
 * output o_p, and the pieces are merged in piece order
 *   M = max m_p,  l = Σ l_p e^(m_p - M),  out = Σ o_p e^(m_p - M) / l,
 * the same bits run to run (for a given thread count, as the backward). */
#define DEC_ROWS 16  /* at most this many query rows (L·group) take the decode path */
#define DEC_CHUNK 128 /* keys per piece at least */

/* s[r·lds + c] = qs_r · k_c for R rows of qs (R, E) and n keys k (n, E):
 * four keys at a time, whose rows stay in L1 while every query row uses them */
static void dec_scores(const float *qs, int64_t R, int64_t E, const float *k, int64_t n, float *s, int64_t lds) {
    int64_t E16 = E & ~(int64_t)15, c = 0;
    for (; c + 4 <= n; c += 4) {
        const float *k0 = k + c * E, *k1 = k0 + E, *k2 = k1 + E, *k3 = k2 + E;
        for (int64_t r = 0; r < R; r++) {
            const float *qr = qs + r * E;
            vf a0 = VZERO(), a1 = VZERO(), a2 = VZERO(), a3 = VZERO();
            for (int64_t e = 0; e < E16; e += 16) {
                vf x = VLOAD(qr + e);
                a0 = VFMA(x, VLOAD(k0 + e), a0);
                a1 = VFMA(x, VLOAD(k1 + e), a1);
                a2 = VFMA(x, VLOAD(k2 + e), a2);
                a3 = VFMA(x, VLOAD(k3 + e), a3);
            }
            float *sr = s + r * lds + c;
            vhsum4(a0, a1, a2, a3, sr);
            for (int64_t e = E16; e < E; e++)
                sr[0] += qr[e] * k0[e], sr[1] += qr[e] * k1[e], sr[2] += qr[e] * k2[e], sr[3] += qr[e] * k3[e];
        }
    }
    for (; c < n; c++) {
        const float *kc = k + c * E;
        for (int64_t r = 0; r < R; r++) {
            const float *qr = qs + r * E;
            vf a = VZERO();
            for (int64_t e = 0; e < E16; e += 16) a = VFMA(VLOAD(qr + e), VLOAD(kc + e), a);
            float t = VHSUM(a);
            for (int64_t e = E16; e < E; e++) t += qr[e] * kc[e];
            s[r * lds + c] = t;
        }
    }
}

/* One piece: rows of group gi against keys [ja, jb) -> o (R, Ev) unnormalised,
 * m (R) maxima and l (R) sums (m = -inf, l = 0, o = 0 for a row that sees none) */
static void dec_piece(const sdpa_geom *g, int64_t grp, float *qs, float *sc, int64_t gi, int64_t ja, int64_t jb,
                      float *o, float *m, float *l) {
    int64_t L = g->L, E = g->E, Ev = g->Ev, R = L * grp, b0 = gi * grp;
    if (g->causal && jb > g->qpos + L) jb = g->qpos + L; /* no row sees past its position */
    int64_t n = jb > ja ? jb - ja : 0, lds = up16(n);
    for (int64_t r = 0; r < R; r++) {
        const float *qr = g->q + g->qoff[b0 + r / L] + (r % L) * E;
        for (int64_t e = 0; e < E; e++) qs[r * E + e] = qr[e] * g->scale;
    }
    /* rows of one group share their keys and values (koff/voff of b0) */
    const float *k = g->k + g->koff[b0] + ja * E, *v = g->v + g->voff[b0] + ja * Ev;
    dec_scores(qs, R, E, k, n, sc, lds);
    for (int64_t r = 0; r < R; r++) {
        float *s = sc + r * lds;
        bias_row(s, g, b0 + r / L, r % L, ja, n, n, 2);
        float mx = n ? mmu_row_max(s, n) : -INFINITY;
        if (mx == -INFINITY) { /* as fwd_rows: nothing visible, unless a NaN sorted below -inf */
            int has_nan = 0;
            for (int64_t c = 0; c < n; c++) has_nan |= isnan(s[c]);
            if (!has_nan) {
                memset(s, 0, n * sizeof(float));
                m[r] = -INFINITY, l[r] = 0.0f;
                continue;
            }
            mx = NAN;
        }
        float part[16] = {0}, tot = 0.0f;
        int64_t c = 0;
        for (; c + 16 <= n; c += 16)
            for (int t = 0; t < 16; t++) {
                float e = mmu_exp_le0(s[c + t] - mx);
                s[c + t] = e;
                part[t] += e;
            }
        for (; c < n; c++) {
            float e = mmu_exp_le0(s[c] - mx);
            s[c] = e;
            tot += e;
        }
        for (int t = 0; t < 16; t++) tot += part[t];
        m[r] = mx, l[r] = tot;
    }
    gemm(0, R, Ev, n, sc, lds, v, Ev, o, Ev, 0);
}

static int decode_ok(const sdpa_geom *g) { return g->p_drop == 0.0 && g->Ev % 16 == 0 && g->L <= DEC_ROWS; }

static mmu_status sdpa_decode(const sdpa_geom *g, float *out, float *lse) {
    int64_t L = g->L, E = g->E, Ev = g->Ev, S = g->S;
    int64_t grp = g->kgroup == g->vgroup && L * g->kgroup <= DEC_ROWS ? g->kgroup : 1, R = L * grp,
            ngrp = g->NB / grp;
    int64_t nch = (S + DEC_CHUNK - 1) / DEC_CHUNK, pieces = split_for(ngrp, nch);
    int64_t per = (nch + pieces - 1) / pieces * DEC_CHUNK, ntask = ngrp * pieces;
    float *part = NULL; /* pieces > 1: (ntask, R, Ev + 2): o_p, m_p, l_p */
    size_t part_bytes = 0;
    if (pieces > 1) {
        part_bytes = (size_t)(ntask * R * (Ev + 2)) * sizeof(float);
        if (!(part = mmu_alloc(part_bytes))) return mmu_fail(MMU_ENOMEM, "scaled_dot_product_attention: out of memory");
    }
    int failed = 0;
    mmu_sync_threads();
    double work = (double)g->NB * L * S * (E + Ev);
#pragma omp parallel if (work > MMU_PAR_GRAIN)
    {
        size_t bytes = (size_t)(R * E + R * up16(S) + 2 * R + 16) * sizeof(float);
        float *w = mmu_alloc(bytes);
        if (!w) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < ntask; t++) {
            if (!w) continue;
            int64_t gi = t / pieces, pc = t % pieces, ja = pc * per < S ? pc * per : S, jb = ja + per < S ? ja + per : S;
            float *qs = w, *sc = w + R * E, *ml = sc + R * up16(S);
            if (pieces > 1) {
                float *po = part + t * R * (Ev + 2);
                dec_piece(g, grp, qs, sc, gi, ja, jb, po, po + R * Ev, po + R * Ev + R);
                continue;
            }
            /* one piece: the rows of group gi are out rows gi·R .. (contiguous) */
            float *o = out + gi * R * Ev, *m = ml, *l = ml + R;
            dec_piece(g, grp, qs, sc, gi, ja, jb, o, m, l);
            for (int64_t r = 0; r < R; r++) {
                float inv = l[r] > 0.0f ? 1.0f / l[r] : 0.0f;
                for (int64_t e = 0; e < Ev; e++) o[r * Ev + e] *= inv;
                lse[gi * R + r] = l[r] > 0.0f ? m[r] + logf(l[r]) : -INFINITY;
            }
        }
        if (w) mmu_free(w, bytes);
    }
    if (pieces > 1) {
        if (!failed) {
            int64_t nrow = ngrp * R;
#pragma omp parallel for schedule(static) if (nrow * pieces * Ev > MMU_PAR_GRAIN)
            for (int64_t x = 0; x < nrow; x++) {
                int64_t gi = x / R, r = x % R;
                const float *p0 = part + gi * pieces * R * (Ev + 2);
                float M = -INFINITY;
                for (int64_t pc = 0; pc < pieces; pc++) {
                    float mp = p0[pc * R * (Ev + 2) + R * Ev + r];
                    M = (mp > M || isnan(mp)) ? mp : M;
                }
                float *o = out + x * Ev, tot = 0.0f;
                memset(o, 0, Ev * sizeof(float));
                if (M != -INFINITY)
                    for (int64_t pc = 0; pc < pieces; pc++) {
                        const float *po = p0 + pc * R * (Ev + 2);
                        float mp = po[R * Ev + r], lp = po[R * Ev + R + r];
                        if (mp == -INFINITY) continue; /* the piece saw nothing */
                        float a = mmu_exp(mp - M);
                        tot += lp * a;
                        for (int64_t e = 0; e < Ev; e++) o[e] += po[r * Ev + e] * a;
                    }
                float inv = tot > 0.0f ? 1.0f / tot : 0.0f;
                for (int64_t e = 0; e < Ev; e++) o[e] *= inv;
                lse[x] = tot > 0.0f ? M + logf(tot) : -INFINITY;
            }
        }
        mmu_free(part, part_bytes);
    }
    return failed ? mmu_fail(MMU_ENOMEM, "scaled_dot_product_attention: out of memory for scratch") : MMU_OK;
}

/* ------------------------------------------------------------ backward */

typedef struct {
    float *kt, *vt;    /* (E, Sp), (Ev, Sp): kᵀ and vᵀ of the head */
    float *qs, *dop;   /* (L, Ep): q·scale, (L, Evp): dO when Ev is not a multiple of 16 */
    float *kp;         /* (S, Ep) likewise */
    float *d;          /* (L): rowsum(dO ∘ O) */
    float *p, *pd, *dp, *z; /* (br, bc) blocks: P, dropped P, dP then dS, dropout scale */
    float *dk, *dv;    /* (bc, Ep), (bc, Evp) accumulators */
    float *dq;         /* (L, Ep) accumulator */
    size_t bytes;
    void *base;
} bwd_scratch;

static int bwd_scratch_init(bwd_scratch *w, const sdpa_geom *g) {
    int64_t L = g->L, S = g->S, E = g->E, Ev = g->Ev, Sp = up16(S), Ep = up16(E), Evp = up16(Ev), bb = g->br * g->bc;
    size_t sizes[] = {(size_t)(E * Sp), (size_t)(Ev * Sp), (size_t)(L * Ep),
                      (size_t)(Ev != Evp ? L * Evp : 0), (size_t)(E != Ep ? S * Ep : 0), (size_t)L,
                      (size_t)bb, (size_t)(g->p_drop > 0.0 ? bb : 0), (size_t)bb, (size_t)(g->p_drop > 0.0 ? bb : 0),
                      (size_t)(g->bc * Ep), (size_t)(g->bc * Evp), (size_t)(L * Ep)};
    w->bytes = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) w->bytes += (sizes[i] * sizeof(float) + 63) & ~(size_t)63;
    w->base = mmu_alloc(w->bytes);
    if (!w->base) return -1;
    char *p = w->base;
    float **dst[] = {&w->kt, &w->vt, &w->qs, &w->dop, &w->kp, &w->d, &w->p, &w->pd, &w->dp, &w->z,
                     &w->dk, &w->dv, &w->dq};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) *dst[i] = scratch_carve(&p, sizes[i]);
    return 0;
}

// src (rows, cols) -> dst (rows, ldd) with zero columns cols..ldd
static void pack_pad(float *dst, int64_t ldd, const float *src, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++) {
        memcpy(dst + r * ldd, src + r * cols, cols * sizeof(float));
        memset(dst + r * ldd + cols, 0, (ldd - cols) * sizeof(float));
    }
}

/* One task: head b, key blocks [kb0, kb1). Writes dk/dv rows of those keys
 * (full broadcast batch layout), and the task's dQ (L, E) into dq_out. Blocks
 * are handled in the forward's row layout (query rows x keys), so masks and
 * exp run along contiguous rows; the products that need Pᵀ or dSᵀ read the
 * block transposed inside the GEMM kernel (ta). */
static void bwd_task(const sdpa_geom *g, bwd_scratch *w, int64_t b, int64_t kb0, int64_t kb1, const float *o,
                     const float *go, const float *lse, float *dq_out, float *dk_out, float *dv_out, float *dmask) {
    int64_t L = g->L, S = g->S, E = g->E, Ev = g->Ev, Sp = up16(S), Ep = up16(E), Evp = up16(Ev), br = g->br,
            bc = g->bc;
    const float *q = g->q + g->qoff[b], *k = g->k + g->koff[b], *v = g->v + g->voff[b];
    const float *dO = go + b * L * Ev, *O = o + b * L * Ev, *ls = lse + b * L;
    float sc = g->scale;
    pack_t(w->kt, Sp, k, E, S, E);
    pack_t(w->vt, Sp, v, Ev, S, Ev);
    const float *dob = dO, *kb = k;
    for (int64_t i = 0; i < L; i++) {
        for (int64_t e = 0; e < E; e++) w->qs[i * Ep + e] = q[i * E + e] * sc;
        for (int64_t e = E; e < Ep; e++) w->qs[i * Ep + e] = 0.0f;
    }
    if (E != Ep) {
        pack_pad(w->kp, Ep, k, S, E);
        kb = w->kp;
    }
    if (Ev != Evp) {
        pack_pad(w->dop, Evp, dO, L, Ev);
        dob = w->dop;
    }
    for (int64_t i = 0; i < L; i++) {
        float s = 0.0f;
        for (int64_t e = 0; e < Ev; e++) s += dO[i * Ev + e] * O[i * Ev + e];
        w->d[i] = s;
    }
    memset(w->dq, 0, L * Ep * sizeof(float));
    int drop = g->p_drop > 0.0;
    for (int64_t jb = kb0; jb < kb1; jb++) {
        int64_t j0 = jb * bc, jn = S - j0 < bc ? S - j0 : bc;
        memset(w->dk, 0, jn * Ep * sizeof(float));
        memset(w->dv, 0, jn * Evp * sizeof(float));
        /* causal: the first row that sees key j0 is j0 - qpos */
        int64_t ifirst = g->causal && j0 - g->qpos > 0 ? j0 - g->qpos : 0;
        for (int64_t i0 = ifirst / br * br; i0 < L; i0 += br) {
            int64_t nr = L - i0 < br ? L - i0 : br;
            /* the keys of the block some row of this query block sees (kn <= jn) */
            int64_t kn = block_keys(g, b, i0, nr, j0, jn), nc = up16(kn);
            int kind = kn ? block_kind(g, b, i0, nr, j0, kn) : 0;
            if (!kind) continue;
            /* P = exp(q kᵀ·scale + bias - lse); a row with lse = -inf sees nothing: P = 0 */
            gemm(0, nr, nc, E, w->qs + i0 * Ep, Ep, w->kt + j0, Sp, w->p, bc, 0);
            for (int64_t r = 0; r < nr; r++) {
                float *p = w->p + r * bc, l = ls[i0 + r];
                bias_row(p, g, b, i0 + r, j0, kn, nc, kind);
                if (l == -INFINITY)
                    memset(p, 0, nc * sizeof(float));
                else
                    for (int64_t c = 0; c < nc; c++) p[c] = mmu_exp_le0(p[c] - l);
                if (drop) {
                    float *z = w->z + r * bc, *pd = w->pd + r * bc;
                    dropout_row(z, g, b, i0 + r, j0, kn);
                    for (int64_t c = 0; c < kn; c++) pd[c] = p[c] * z[c];
                }
            }
            /* dV += P̃ᵀ dO */
            gemm(1, kn, Evp, nr, drop ? w->pd : w->p, bc, dob + i0 * Evp, Evp, w->dv, Evp, 1);
            /* dP = dO vᵀ */
            gemm(0, nr, nc, Ev, dO + i0 * Ev, Ev, w->vt + j0, Sp, w->dp, bc, 0);
            /* dS = P ∘ (dP ∘ Z - D) */
            for (int64_t r = 0; r < nr; r++) {
                float *dp = w->dp + r * bc, dr = w->d[i0 + r];
                const float *p = w->p + r * bc;
                if (drop) {
                    const float *z = w->z + r * bc;
                    for (int64_t c = 0; c < kn; c++) dp[c] = p[c] * (dp[c] * z[c] - dr);
                } else {
                    for (int64_t c = 0; c < kn; c++) dp[c] = p[c] * (dp[c] - dr);
                }
            }
            if (dmask)
                for (int64_t r = 0; r < nr; r++)
                    memcpy(dmask + (b * L + i0 + r) * g->dms + j0, w->dp + r * bc, kn * sizeof(float));
            /* dK += dSᵀ (q·scale) */
            gemm(1, kn, Ep, nr, w->dp, bc, w->qs + i0 * Ep, Ep, w->dk, Ep, 1);
            /* dQ += dS k */
            gemm(0, nr, Ep, kn, w->dp, bc, kb + j0 * Ep, Ep, w->dq + i0 * Ep, Ep, 1);
        }
        float *dkb = dk_out + (g->dkoff ? g->dkoff[b] : b * g->Sb * E),
              *dvb = dv_out + (g->dvoff ? g->dvoff[b] : b * g->Sb * Ev);
        for (int64_t c = 0; c < jn; c++) {
            float *dk = dkb + (j0 + c) * E, *dv = dvb + (j0 + c) * Ev;
            memcpy(dk, w->dk + c * Ep, E * sizeof(float));
            memcpy(dv, w->dv + c * Evp, Ev * sizeof(float));
        }
    }
    for (int64_t i = 0; i < L; i++)
        for (int64_t e = 0; e < E; e++) dq_out[i * E + e] = w->dq[i * Ep + e] * sc;
}

/* dq (NB, L, E), dk (NB, Sb, E), dv (NB, Sb, Ev) (rows S.. untouched; or where g->dqoff .. place
 * each head's), dmask (NB, L, dms) or NULL */
static mmu_status sdpa_backward(sdpa_geom *g, const float *o, const float *go, const float *lse, float *dq,
                                float *dk, float *dv, float *dmask) {
    int64_t T = mmu_get_num_threads();
    choose_blocks(g, g->NB >= 2 * T ? 1 : (2 * T + g->NB - 1) / g->NB);
    int64_t nkb = (g->S + g->bc - 1) / g->bc, pieces = split_for(g->NB, nkb), per = (nkb + pieces - 1) / pieces;
    int64_t ntask = g->NB * pieces, LE = g->L * g->E;
    float *part = NULL;
    size_t part_bytes = 0;
    if (pieces > 1) { /* per-piece partial dQ, summed below in piece order */
        part_bytes = (size_t)(ntask * LE) * sizeof(float);
        if (!(part = mmu_alloc(part_bytes)))
            return mmu_fail(MMU_ENOMEM, "scaled_dot_product_attention backward: out of memory");
    }
    int failed = 0;
    mmu_sync_threads();
    double work = (double)g->NB * g->L * g->S * (g->E + g->Ev);
#pragma omp parallel if (work > MMU_PAR_GRAIN)
    {
        bwd_scratch w = {0};
        int ok = bwd_scratch_init(&w, g) == 0;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static, 1)
        for (int64_t t = 0; t < ntask; t++) {
            if (!ok) continue;
            int64_t b = t / pieces, pc = t % pieces, kb0 = pc * per, kb1 = (pc + 1) * per;
            if (kb1 > nkb) kb1 = nkb;
            float *dqo = pieces > 1 ? part + t * LE : dq + (g->dqoff ? g->dqoff[b] : b * LE);
            if (kb0 >= kb1) {
                memset(dqo, 0, LE * sizeof(float));
                continue;
            }
            bwd_task(g, &w, b, kb0, kb1, o, go, lse, dqo, dk, dv, dmask);
        }
        if (ok) mmu_free(w.base, w.bytes);
    }
    if (pieces > 1) {
        int64_t n = g->NB * LE;
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
        for (int64_t x = 0; x < n; x++) {
            int64_t b = x / LE, r = x % LE;
            float s = 0.0f;
            for (int64_t pc = 0; pc < pieces; pc++) s += part[(b * pieces + pc) * LE + r];
            dq[(g->dqoff ? g->dqoff[b] : b * LE) + r] = s;
        }
        mmu_free(part, part_bytes);
    }
    return failed ? mmu_fail(MMU_ENOMEM, "scaled_dot_product_attention backward: out of memory for scratch")
                  : MMU_OK;
}

/* ------------------------------------------------------------ entry points */

/* Shapes: output batch shape, L, S, E, Ev, mask strides; fills g (offset
 * arrays allocated with mmu_alloc, freed by geom_free). */
static mmu_status geom_init(sdpa_geom *g, int *bnd, int64_t *bshape, const int64_t *qs, int qn, const int64_t *ks,
                            int kn, const int64_t *vs, int vn, const int64_t *ms, int mn, int has_mask,
                            int mask_bool, int gqa, int64_t query_offset, int64_t kv_len) {
    const char *op = "scaled_dot_product_attention";
    memset(g, 0, sizeof *g);
    g->kgroup = g->vgroup = 1;
    mmu_status st;
    int nd;
    int64_t bs[MMU_MAX_DIMS], ks1[MMU_MAX_DIMS], vs1[MMU_MAX_DIMS];
    memcpy(ks1, ks, kn * sizeof(int64_t));
    memcpy(vs1, vs, vn * sizeof(int64_t));
    if (gqa && qn >= 3 && kn >= 3 && vn >= 3) {
        /* torch's enable_gqa: key/value heads (dim -3) divide the query heads,
         * query head h uses key/value head h / (Hq / Hk) (repeat_interleave) */
        int64_t hq = qs[qn - 3], hk = ks[kn - 3], hv = vs[vn - 3];
        if (hk == 0 || hv == 0 || hq % hk || hq % hv)
            return mmu_fail(MMU_EVALUE, "%s: with enable_gqa the number of heads (dim -3) of key %s and value %s must "
                            "divide that of query %s", op, mmu_dims_str(kn, ks), mmu_dims_str(vn, vs),
                            mmu_dims_str(qn, qs));
        g->kgroup = hq / hk, g->vgroup = hq / hv;
        if (g->kgroup > 1) ks1[kn - 3] = 1; /* broadcast like a single head, offsets use the group */
        if (g->vgroup > 1) vs1[vn - 3] = 1;
    }
    if ((st = mmu_broadcast_shape(&nd, bs, qn - 2, qs, kn - 2, ks1, op))) return st;
    if ((st = mmu_broadcast_shape(&nd, bs, nd, bs, vn - 2, vs1, op))) return st;
    g->L = qs[qn - 2], g->E = qs[qn - 1], g->Sb = ks[kn - 2], g->Ev = vs[vn - 1];
    if (query_offset < 0)
        return mmu_fail(MMU_EVALUE, "%s: query_offset must be >= 0, got %lld", op, (long long)query_offset);
    if (kv_len < -1 || kv_len > g->Sb)
        return mmu_fail(MMU_EVALUE, "%s: kv_len must be in [0, %lld] (the key/value length of key %s), got %lld", op,
                        (long long)g->Sb, mmu_dims_str(kn, ks), (long long)kv_len);
    g->S = kv_len < 0 ? g->Sb : kv_len;
    /* an offset >= Sb lets every row see every key, as Sb does; clamped so qpos + i cannot overflow */
    g->qpos = query_offset < g->Sb ? query_offset : g->Sb;
    int64_t NB = 1;
    for (int d = 0; d < nd; d++) NB *= bs[d];
    g->NB = NB;
    if (has_mask) {
        /* the mask as (..., Lm, Sm): a 1-D mask is one row */
        int64_t m2[MMU_MAX_DIMS];
        int m2n = mn < 2 ? 2 : mn;
        for (int d = 0; d < m2n; d++) m2[d] = d < m2n - mn ? 1 : ms[d - (m2n - mn)];
        int64_t Lm = m2[m2n - 2], Sm = m2[m2n - 1];
        /* last dim: the keys read (S) or the whole buffer (Sb, only its first S columns are read) */
        int ok = (Lm == 1 || Lm == g->L) && (Sm == 1 || Sm == g->S || Sm == g->Sb) && m2n - 2 <= nd;
        for (int d = 0; ok && d < m2n - 2; d++) {
            int64_t md = m2[m2n - 3 - d], od = bs[nd - 1 - d];
            ok = md == 1 || md == od;
        }
        if (!ok) {
            int64_t att[MMU_MAX_DIMS + 2];
            memcpy(att, bs, nd * sizeof(int64_t));
            att[nd] = g->L, att[nd + 1] = g->S;
            if (g->S != g->Sb)
                return mmu_fail(MMU_EVALUE, "%s: attn_mask of shape %s is not broadcastable to the attention weights' "
                                "shape %s (its last dim may also be the key buffer's length %lld)", op,
                                mmu_dims_str(mn, ms), mmu_dims_str(nd + 2, att), (long long)g->Sb);
            return mmu_fail(MMU_EVALUE, "%s: attn_mask of shape %s is not broadcastable to the attention weights' shape %s",
                            op, mmu_dims_str(mn, ms), mmu_dims_str(nd + 2, att));
        }
        g->msc = Sm == 1 ? 0 : 1;
        g->msr = Lm == 1 ? 0 : Sm;
        g->dms = Sm == g->Sb ? g->Sb : g->S;
        g->mask_bool = mask_bool;
        (void)ms;
        if (!(g->moff = mmu_alloc(NB * sizeof(int64_t)))) return mmu_fail(MMU_ENOMEM, "%s: out of memory", op);
        batch_offsets(g->moff, nd, bs, m2n - 2, m2, Lm * Sm, 1);
        g->mmat = Lm * Sm;
        g->nmat = 1;
        for (int d = 0; d < m2n - 2; d++) g->nmat *= m2[d];
    }
    size_t ob = NB * sizeof(int64_t);
    g->qoff = mmu_alloc(ob), g->koff = mmu_alloc(ob), g->voff = mmu_alloc(ob);
    if (!g->qoff || !g->koff || !g->voff) return mmu_fail(MMU_ENOMEM, "%s: out of memory", op);
    batch_offsets(g->qoff, nd, bs, qn - 2, qs, g->L * g->E, 1);
    batch_offsets(g->koff, nd, bs, kn - 2, ks, g->Sb * g->E, g->kgroup);
    batch_offsets(g->voff, nd, bs, vn - 2, vs, g->Sb * g->Ev, g->vgroup);
    *bnd = nd;
    memcpy(bshape, bs, nd * sizeof(int64_t));
    return MMU_OK;
}

static void geom_free(sdpa_geom *g) {
    size_t ob = g->NB * sizeof(int64_t);
    if (g->qoff) mmu_free(g->qoff, ob);
    if (g->koff) mmu_free(g->koff, ob);
    if (g->voff) mmu_free(g->voff, ob);
    if (g->moff) mmu_free(g->moff, ob);
    if (g->kinds) mmu_free(g->kinds, g->kinds_bytes);
}

// q (..., L, E), k (..., Sb, E), v (..., Sb, Ev) of which the first S = kv_len (Sb when -1) keys are
// read, mask bool/float broadcastable to (..., L, S) or (..., L, Sb) or NULL -> out (..., L, Ev)
mmu_status mmu_sdpa(mmu_tensor **out, mmu_tensor *q, mmu_tensor *k, mmu_tensor *v, mmu_tensor *mask,
                    double dropout_p, int is_causal, int has_scale, double scale, int enable_gqa,
                    int64_t query_offset, int64_t kv_len) {
    const char *op = "scaled_dot_product_attention";
    mmu_status st;
    mmu_sync_threads();
    if ((st = mmu_check_dtype(q, MMU_FLOAT32, op, "query")) || (st = mmu_check_dtype(k, MMU_FLOAT32, op, "key")) ||
        (st = mmu_check_dtype(v, MMU_FLOAT32, op, "value")))
        return st;
    if (q->ndim < 2 || k->ndim < 2 || v->ndim < 2)
        return mmu_fail(MMU_EVALUE, "%s: query, key and value must be at least 2-D, got %s, %s and %s", op,
                        mmu_shape_str(q), mmu_shape_str(k), mmu_shape_str(v));
    if (q->shape[q->ndim - 1] != k->shape[k->ndim - 1])
        return mmu_fail(MMU_EVALUE, "%s: query %s and key %s must have the same last dim (embedding size)", op,
                        mmu_shape_str(q), mmu_shape_str(k));
    if (k->shape[k->ndim - 2] != v->shape[v->ndim - 2])
        return mmu_fail(MMU_EVALUE, "%s: key %s and value %s must have the same sequence length (dim -2)", op,
                        mmu_shape_str(k), mmu_shape_str(v));
    if (mask && mask->dtype != MMU_BOOL && mask->dtype != MMU_FLOAT32)
        return mmu_fail(MMU_ETYPE, "%s: attn_mask must be bool or float32, got %s", op, mmu_dtype_name(mask->dtype));
    if (!(dropout_p >= 0.0 && dropout_p <= 1.0))
        return mmu_fail(MMU_EVALUE, "%s: dropout_p must be in [0, 1], got %g", op, dropout_p);
    sdpa_geom g;
    int nd;
    int64_t bs[MMU_MAX_DIMS + 2];
    st = geom_init(&g, &nd, bs, q->shape, q->ndim, k->shape, k->ndim, v->shape, v->ndim, mask ? mask->shape : NULL,
                   mask ? mask->ndim : 0, mask != NULL, mask && mask->dtype == MMU_BOOL, enable_gqa, query_offset,
                   kv_len);
    if (st) {
        geom_free(&g);
        return st;
    }
    g.q = mmu_f32(q), g.k = mmu_f32(k), g.v = mmu_f32(v);
    g.mask = mask ? mmu_data(mask) : NULL;
    g.causal = is_causal;
    g.scale = (float)(has_scale ? scale : 1.0 / sqrt((double)g.E));
    g.p_drop = dropout_p;
    int decode = decode_ok(&g);
    if (!decode && (st = build_kinds(&g))) { /* the decode path reads mask rows as they come */
        geom_free(&g);
        return st;
    }
    if (dropout_p > 0.0) mmu_rng_reserve((uint64_t)((g.NB * g.L * g.S + 3) / 4), &g.rkey, &g.rctr);
    bs[nd] = g.L, bs[nd + 1] = g.Ev;
    mmu_tensor *lse = NULL;
    int64_t lshape[2] = {g.NB, g.L};
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, nd + 2, bs)) || (st = mmu_tensor_empty(&lse, MMU_FLOAT32, 2, lshape)))
        goto done;
    if (g.NB * g.L * g.Ev > 0) {
        if (g.S == 0) /* no keys: every row sees nothing */
            memset(mmu_f32(*out), 0, (*out)->numel * sizeof(float));
        else if ((st = decode ? sdpa_decode(&g, mmu_f32(*out), mmu_f32(lse)) : sdpa_forward(&g, mmu_f32(*out), mmu_f32(lse))))
            goto done;
    }
    if (g.S == 0)
        for (int64_t i = 0; i < lse->numel; i++) mmu_f32(lse)[i] = -INFINITY;
    mmu_node *n = NULL;
    mmu_tensor *ins[4] = {q, k, v, mask};
    if ((st = mmu_record(&n, *out, MMU_OP_SDPA, 4, ins))) goto done;
    if (n) {
        mmu_save(n, 0, q);
        mmu_save(n, 1, k);
        mmu_save(n, 2, v);
        if ((st = mmu_save_output(n, 3, *out))) goto done;
        mmu_save(n, 4, lse);
        if (mask) mmu_save(n, 5, mask);
        n->ctx.i[0] = is_causal;
        n->ctx.i[1] = (int64_t)g.rkey;
        n->ctx.i[2] = (int64_t)g.rctr;
        n->ctx.i[3] = enable_gqa;
        n->ctx.i[4] = query_offset;
        n->ctx.i[5] = kv_len;
        n->ctx.f[0] = g.scale;
        n->ctx.f[1] = dropout_p;
    }
done:
    mmu_tensor_decref(lse);
    geom_free(&g);
    if (st) MMU_CLEAR(*out);
    return st;
}

/* enable_gqa: the gradient of a key/value head is the sum over the group of
 * query heads that used it. t (..., H, R, C) -> (..., H / group, R, C) in place
 * of *t; shape (nd + 2 dims) is updated. */
static mmu_status ungroup(mmu_tensor **t, int nd, int64_t *shape, int64_t group) {
    if (group == 1) return MMU_OK;
    int64_t H = shape[nd - 1], mat = shape[nd] * shape[nd + 1];
    shape[nd - 1] = H / group;
    mmu_tensor *r = NULL;
    mmu_status st = mmu_tensor_empty(&r, MMU_FLOAT32, nd + 2, shape);
    if (st) return st;
    const float *src = mmu_f32(*t);
    float *dst = mmu_f32(r);
    int64_t n = r->numel;
#pragma omp parallel for schedule(static) if (n * group > MMU_PAR_GRAIN)
    for (int64_t x = 0; x < n; x++) {
        int64_t p = x / (H / group * mat), h = x / mat % (H / group), e = x % mat;
        float s = 0.0f;
        for (int64_t t2 = 0; t2 < group; t2++) s += src[(p * H + h * group + t2) * mat + e];
        dst[x] = s;
    }
    mmu_tensor_decref(*t);
    *t = r;
    return MMU_OK;
}

// g (..., L, Ev) -> dq, dk, dv (their inputs' shapes, broadcast batch dims summed), dmask
mmu_status mmu_sdpa_backward(mmu_node *n, mmu_tensor *gout, mmu_tensor **gin) {
    mmu_tensor *q = n->saved[0], *k = n->saved[1], *v = n->saved[2], *o = n->saved[3], *lse = n->saved[4],
               *mask = n->saved[5];
    int need_q = n->inputs[0].needs_grad, need_k = n->inputs[1].needs_grad, need_v = n->inputs[2].needs_grad;
    int need_m = n->inputs[3].needs_grad && mask && mask->dtype == MMU_FLOAT32;
    if (!need_q && !need_k && !need_v && !need_m) return MMU_OK;
    sdpa_geom g;
    int nd;
    int64_t bs[MMU_MAX_DIMS + 2];
    mmu_tensor *dq = NULL, *dk = NULL, *dv = NULL, *dm = NULL;
    mmu_status st = geom_init(&g, &nd, bs, q->shape, q->ndim, k->shape, k->ndim, v->shape, v->ndim,
                              mask ? mask->shape : NULL, mask ? mask->ndim : 0, mask != NULL,
                              mask && mask->dtype == MMU_BOOL, (int)n->ctx.i[3], n->ctx.i[4], n->ctx.i[5]);
    if (st) goto done;
    g.q = mmu_f32(q), g.k = mmu_f32(k), g.v = mmu_f32(v);
    g.mask = mask ? mmu_data(mask) : NULL;
    g.causal = (int)n->ctx.i[0];
    if ((st = build_kinds(&g))) goto done;
    g.rkey = (uint64_t)n->ctx.i[1], g.rctr = (uint64_t)n->ctx.i[2];
    g.scale = (float)n->ctx.f[0];
    g.p_drop = n->ctx.f[1];
    int64_t sq[MMU_MAX_DIMS + 2], sk[MMU_MAX_DIMS + 2], sv[MMU_MAX_DIMS + 2], sm[MMU_MAX_DIMS + 2];
    memcpy(sq, bs, nd * sizeof(int64_t));
    memcpy(sk, bs, nd * sizeof(int64_t));
    memcpy(sv, bs, nd * sizeof(int64_t));
    memcpy(sm, bs, nd * sizeof(int64_t));
    sq[nd] = g.L, sq[nd + 1] = g.E, sk[nd] = g.Sb, sk[nd + 1] = g.E, sv[nd] = g.Sb, sv[nd + 1] = g.Ev;
    sm[nd] = g.L, sm[nd + 1] = g.dms;
    if ((st = mmu_tensor_empty(&dq, MMU_FLOAT32, nd + 2, sq)) || (st = mmu_tensor_empty(&dk, MMU_FLOAT32, nd + 2, sk)) ||
        (st = mmu_tensor_empty(&dv, MMU_FLOAT32, nd + 2, sv)))
        goto done;
    if (need_m && (st = mmu_tensor_zeros(&dm, MMU_FLOAT32, nd + 2, sm))) goto done;
    /* keys no query block reaches (causal with S > L, masked blocks, rows past kv_len) keep 0 */
    memset(mmu_f32(dk), 0, dk->numel * sizeof(float));
    memset(mmu_f32(dv), 0, dv->numel * sizeof(float));
    if (g.S == 0 || g.L == 0 || g.NB == 0)
        memset(mmu_f32(dq), 0, dq->numel * sizeof(float));
    else if ((st = sdpa_backward(&g, mmu_f32(o), mmu_f32(gout), mmu_f32(lse), mmu_f32(dq), mmu_f32(dk), mmu_f32(dv),
                                 dm ? mmu_f32(dm) : NULL)))
        goto done;
    if ((st = ungroup(&dk, nd, sk, g.kgroup)) || (st = ungroup(&dv, nd, sv, g.vgroup))) goto done;
    mmu_tensor *full[4] = {dq, dk, dv, dm};
    mmu_tensor *ins[4] = {q, k, v, mask};
    int need[4] = {need_q, need_k, need_v, need_m};
    for (int i = 0; i < 4; i++) {
        if (!need[i]) continue;
        if ((st = mmu_reduce_to_shape(&gin[i], full[i], ins[i]->ndim, ins[i]->shape))) goto done;
    }
done:
    mmu_tensor_decref(dq);
    mmu_tensor_decref(dk);
    mmu_tensor_decref(dv);
    mmu_tensor_decref(dm);
    geom_free(&g);
    return st;
}

/* ------------------------------------------------------------ packed heads */
/* Attention over the heads of one tensor, as qkv_heads (norm.c) lays them out:
 * z (B, hq + 2 hkv, L, E) = [q heads; k heads; v heads]. The kernels read q, k
 * and v in place through the geometry's per-head offsets, so the three slices
 * an attention layer would cut from z (three copies forward, and backward three
 * zero-filled z-sized gradients added together) are never made; the backward
 * writes dq, dk and dv into one dz of z's shape. Self-attention without a cache
 * or dropout (a training step's layer); GQA when hkv < hq, key/value head
 * h / (hq / hkv) for query head h. */

// the sdpa geometry of z's q, k, v for the query rows r0 .. r1 (r1 = -1: all L); mask as mmu_sdpa's over all L rows
static mmu_status packed_geom(sdpa_geom *g, int *nd, int64_t *bs, const mmu_tensor *z, int64_t hq, int64_t hkv,
                              const mmu_tensor *mask, int64_t r0, int64_t r1) {
    const char *op = "attention_of_heads";
    memset(g, 0, sizeof *g);
    if (hq < 1 || hkv < 1 || hq % hkv)
        return mmu_fail(MMU_EVALUE, "%s: num_kv_heads (%lld) must divide num_heads (%lld), both >= 1", op,
                        (long long)hkv, (long long)hq);
    int64_t H = hq + 2 * hkv;
    if (z->ndim != 4 || z->shape[1] != H)
        return mmu_fail(MMU_EVALUE, "%s: the heads must be (B, num_heads + 2 num_kv_heads = %lld, L, E), got %s", op,
                        (long long)H, mmu_shape_str(z));
    int64_t B = z->shape[0], L = z->shape[2], E = z->shape[3];
    if (r1 < 0) r1 = L;
    if (r0 < 0 || r0 >= r1 || r1 > L)
        return mmu_fail(MMU_EVALUE, "%s: query_rows (%lld, %lld) must satisfy 0 <= start < stop <= L = %lld of the heads %s",
                        op, (long long)r0, (long long)r1, (long long)L, mmu_shape_str(z));
    int64_t n = r1 - r0, qs[4] = {B, hq, n, E}, ks[4] = {B, hkv, L, E}, att[4] = {B, hq, L, L};
    int64_t ms[MMU_MAX_DIMS];
    int rowdim = 0; /* the mask has a row dim of L rows, of which rows r0 .. r1 are read */
    if (mask) { /* checked here, so that the error names this op */
        int ok = mask->ndim <= 4;
        for (int d = 0; ok && d < mask->ndim; d++) {
            int64_t md = mask->shape[mask->ndim - 1 - d];
            ok = md == 1 || md == att[3 - d];
        }
        if (!ok)
            return mmu_fail(MMU_EVALUE, "%s: attn_mask of shape %s is not broadcastable to the attention weights' "
                            "shape %s", op, mmu_shape_str(mask), mmu_dims_str(4, att));
        memcpy(ms, mask->shape, mask->ndim * sizeof(int64_t));
        rowdim = mask->ndim >= 2 && ms[mask->ndim - 2] == L && L > 1;
        if (rowdim) ms[mask->ndim - 2] = n;
    }
    mmu_status st = geom_init(g, nd, bs, qs, 4, ks, 4, ks, 4, mask ? ms : NULL, mask ? mask->ndim : 0, mask != NULL,
                              mask && mask->dtype == MMU_BOOL, hkv != hq, r0, -1);
    if (st) return st;
    /* each batch row's heads where they sit in z: q head h of batch b from row r0, its key/value head
     * h / (hq / hkv) (geom_init's offsets were those of separate contiguous q, k, v) */
    for (int64_t i = 0; i < g->NB; i++) {
        int64_t b = i / hq, h = i % hq, kh = h / (hq / hkv);
        g->qoff[i] = ((b * H + h) * L + r0) * E;
        g->koff[i] = (b * H + hq + kh) * L * E;
        g->voff[i] = (b * H + hq + hkv + kh) * L * E;
    }
    g->q = g->k = g->v = mmu_f32(z);
    if (mask) {
        int64_t Sm = mask->ndim ? mask->shape[mask->ndim - 1] : 1; /* a 0-d mask has no key dim */
        if (rowdim && n != L) { /* the matrices keep their L rows in memory: offsets of (L, Sm) matrices */
            for (int64_t i = 0; i < g->NB; i++) g->moff[i] = g->moff[i] / (n * Sm) * (L * Sm);
            g->mmat = L * Sm;
        }
        g->mask = (const char *)mmu_data(mask) + (rowdim ? r0 * Sm : 0) * (mask->dtype == MMU_BOOL ? 1 : 4);
    }
    return MMU_OK;
}

// z (B, hq + 2 hkv, L, E), mask NULL / bool / float32 (no grad) broadcastable to (B, hq, L, L), query rows
// r0 .. r1 (r1 = -1: L) -> out (B, hq, r1 - r0, E)
mmu_status mmu_sdpa_packed(mmu_tensor **out, mmu_tensor *z, int64_t hq, int64_t hkv, mmu_tensor *mask, int is_causal,
                           int has_scale, double scale, int64_t r0, int64_t r1) {
    const char *op = "attention_of_heads";
    mmu_status st;
    mmu_sync_threads();
    if ((st = mmu_check_dtype(z, MMU_FLOAT32, op, "heads"))) return st;
    if (mask && mask->dtype != MMU_BOOL && mask->dtype != MMU_FLOAT32)
        return mmu_fail(MMU_ETYPE, "%s: attn_mask must be bool or float32, got %s", op, mmu_dtype_name(mask->dtype));
    if (mask && mask->requires_grad)
        return mmu_fail(MMU_EVALUE, "%s: attn_mask must not require grad (use scaled_dot_product_attention)", op);
    sdpa_geom g;
    int nd;
    int64_t bs[MMU_MAX_DIMS + 2];
    mmu_tensor *lse = NULL;
    if ((st = packed_geom(&g, &nd, bs, z, hq, hkv, mask, r0, r1))) goto done;
    g.causal = is_causal;
    g.scale = (float)(has_scale ? scale : 1.0 / sqrt((double)g.E));
    if ((st = build_kinds(&g))) goto done;
    bs[nd] = g.L, bs[nd + 1] = g.Ev;
    int64_t lshape[2] = {g.NB, g.L};
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, nd + 2, bs)) || (st = mmu_tensor_empty(&lse, MMU_FLOAT32, 2, lshape)))
        goto done;
    if (g.NB * g.L * g.Ev > 0 && (st = sdpa_forward(&g, mmu_f32(*out), mmu_f32(lse)))) goto done;
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_SDPA_PACKED, 2, (mmu_tensor *[]){z, mask}))) goto done;
    if (n) {
        mmu_save(n, 0, z);
        if ((st = mmu_save_output(n, 1, *out))) goto done;
        mmu_save(n, 2, lse);
        if (mask) mmu_save(n, 3, mask);
        n->ctx.i[0] = is_causal;
        n->ctx.i[1] = hq;
        n->ctx.i[2] = hkv;
        n->ctx.i[3] = g.qpos;
        n->ctx.i[4] = g.qpos + g.L;
        n->ctx.f[0] = g.scale;
    }
done:
    mmu_tensor_decref(lse);
    geom_free(&g);
    if (st) MMU_CLEAR(*out);
    return st;
}

// g (B, hq, L, E) -> dz (B, hq + 2 hkv, L, E): dq, dk, dv in their heads' places
mmu_status mmu_sdpa_packed_backward(mmu_node *n, mmu_tensor *gout, mmu_tensor **gin) {
    mmu_tensor *z = n->saved[0], *o = n->saved[1], *lse = n->saved[2], *mask = n->saved[3];
    if (!n->inputs[0].needs_grad) return MMU_OK;
    int64_t hq = n->ctx.i[1], hkv = n->ctx.i[2], r0 = n->ctx.i[3], r1 = n->ctx.i[4];
    sdpa_geom g;
    int nd;
    int64_t bs[MMU_MAX_DIMS + 2];
    float *dq = NULL, *dkv = NULL;
    size_t qbytes = 0, kvbytes = 0;
    mmu_status st = packed_geom(&g, &nd, bs, z, hq, hkv, mask, r0, r1);
    if (st) goto done;
    g.causal = (int)n->ctx.i[0];
    g.scale = (float)n->ctx.f[0];
    if ((st = build_kinds(&g))) goto done;
    int64_t B = z->shape[0], H = z->shape[1], L = z->shape[2], E = g.E, NB = g.NB, nE = g.L * E, LE = L * E;
    if ((st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, 4, z->shape))) goto done;
    float *dz = mmu_f32(gin[0]);
    if (g.L < L) /* the query rows outside r0 .. r1 took no part: their gradient is 0 */
        for (int64_t x = 0; x < B * hq; x++) {
            float *d = dz + ((x / hq) * H + x % hq) * LE;
            memset(d, 0, r0 * E * sizeof(float));
            memset(d + r1 * E, 0, (L - r1) * E * sizeof(float));
        }
    if (hq == hkv) { /* each head's dq, dk, dv straight into its place in dz (every element is written) */
        g.dqoff = g.qoff, g.dkoff = g.koff, g.dvoff = g.voff;
        if (nE > 0 && NB > 0)
            st = sdpa_backward(&g, mmu_f32(o), mmu_f32(gout), mmu_f32(lse), dz, dz, dz, NULL);
        else
            memset(dz, 0, gin[0]->numel * sizeof(float));
        goto done;
    }
    /* GQA: dq (NB, n, E), and dk, dv per query head (NB, L, E) each, summed over a group when written into dz */
    qbytes = (size_t)(NB * nE) * sizeof(float), kvbytes = (size_t)(2 * NB * LE) * sizeof(float);
    if (!(dq = mmu_alloc(qbytes ? qbytes : 4)) || !(dkv = mmu_alloc(kvbytes ? kvbytes : 4))) {
        st = mmu_fail(MMU_ENOMEM, "attention_of_heads backward: out of memory");
        goto done;
    }
    float *dk = dkv, *dv = dkv + NB * LE;
    /* keys no query block reaches (masked blocks) keep 0 */
    memset(dkv, 0, kvbytes);
    if (nE > 0 && NB > 0 &&
        (st = sdpa_backward(&g, mmu_f32(o), mmu_f32(gout), mmu_f32(lse), dq, dk, dv, NULL)))
        goto done;
    int64_t group = hq / hkv, total = B * H * LE;
#pragma omp parallel for schedule(static) if (total > MMU_PAR_GRAIN)
    for (int64_t x = 0; x < B * H; x++) {
        int64_t b = x / H, j = x % H;
        float *d = dz + x * LE;
        if (j < hq) {
            memcpy(d + r0 * E, dq + (b * hq + j) * nE, nE * sizeof(float));
            continue;
        }
        const float *src = j < hq + hkv ? dk : dv;
        int64_t h0 = (b * hq + (j < hq + hkv ? j - hq : j - hq - hkv) * group) * LE;
        memcpy(d, src + h0, LE * sizeof(float));
        for (int64_t t = 1; t < group; t++) {
            const float *s2 = src + h0 + t * LE;
            for (int64_t e = 0; e < LE; e++) d[e] += s2[e];
        }
    }
done:
    if (dq) mmu_free(dq, qbytes ? qbytes : 4);
    if (dkv) mmu_free(dkv, kvbytes ? kvbytes : 4);
    geom_free(&g);
    return st;
}

/* ------------------------------------------------------------ window and temporal attention */
/* Attention inside fixed groups of tokens of one (B, H, N, d) sequence:
 *
 *   window   (Swin's W-MSA, no shift): N = gh·gw tokens of a row-major grid, a group is one
 *            wh x ww window; row r = (ry, rx) of window (wy, wx) is token
 *            (wy·wh + ry)·gw + wx·ww + rx, and bias (H, n, n) (n = wh·ww, Swin's relative
 *            position bias) is added to every window's scores.
 *   temporal (OmniTokenizer's causal temporal blocks): N = T·L tokens frame-major, a group is
 *            one location l, row t is token t·L + l (stride L·d in memory); causal: row t sees
 *            rows t' <= t. Short sequences share a group: G = 16 / T locations (as L allows)
 *            make one group of G·T rows whose scores outside a location's T x T block are
 *            -inf, since the GEMM pads the key columns to 16 anyway (T = 5: one group of 15
 *            rows for 3 locations instead of three groups of 5).
 *
 * Token (group gi, row r) = base(gi) + rel(r): rel is a table of n offsets made once per
 * call. A group is a small dense attention whose rows are gathered by this index
 * arithmetic straight into the per-thread scratch the GEMM kernel reads anyway (q·scale,
 * kᵀ, v), so neither Swin's window_partition copy nor a (B·L, H, T, d) permuted copy nor an
 * N x N mask exists: the work is B·H·N·n·(d + dv) multiply-adds against N·N for the masked
 * full attention. All n keys of a group fit in one block, so the softmax is two-pass over
 * whole rows of n scores (as sdpa_decode) instead of online, in blocks of BR query rows.
 * The forward saves out and the logsumexp of each row (one float per token); the backward
 * recomputes P = exp(s - lse) per block as the flash backward does and, a group holding
 * all its keys, finishes dQ of a row block at once. Tasks are (batch·head, group): each
 * writes its own tokens of dq, dk, dv. dbias is summed over batch and groups: each of a
 * fixed number of task chunks (the thread count) accumulates its own (H, n, n) buffer, and
 * the buffers are added in chunk order, so the result is the same bits run to run. */

typedef struct {
    int64_t NB, H, N, E, Ev; /* NB = B·H */
    int64_t ngroup, n;       /* groups per head, rows per group */
    int64_t gw, wh, ww, nw;  /* window: grid width, window, windows per grid row */
    int64_t L, T, G;         /* temporal: tokens per frame, frames, locations per group */
    int temporal, causal;
    float scale;
    int64_t *rel; /* (n) token offset of row r from its group's first token */
    const float *q, *k, *v, *bias;
} grp_geom;

static inline int64_t grp_base(const grp_geom *g, int64_t gi) {
    return g->temporal ? gi * g->G : (gi / g->nw) * g->wh * g->gw + (gi % g->nw) * g->ww;
}

// window: gh·gw grid of wh x ww windows; temporal (frames > 0): T = frames; q (B, H, N, E), v (..., Ev)
static mmu_status grp_geom_init(grp_geom *g, const char *op, const mmu_tensor *q, const mmu_tensor *k,
                                const mmu_tensor *v, const mmu_tensor *bias, int64_t gh, int64_t gw, int64_t wh,
                                int64_t ww, int64_t frames) {
    memset(g, 0, sizeof *g);
    if (q->ndim != 4 || k->ndim != 4 || v->ndim != 4 || !mmu_same_shape(q, k) || v->shape[0] != q->shape[0] ||
        v->shape[1] != q->shape[1] || v->shape[2] != q->shape[2])
        return mmu_fail(MMU_EVALUE, "%s: query and key must be (B, H, N, d) of one shape and value (B, H, N, dv), "
                        "got %s, %s and %s", op, mmu_shape_str(q), mmu_shape_str(k), mmu_shape_str(v));
    int64_t B = q->shape[0], H = q->shape[1], N = q->shape[2];
    if (frames > 0) {
        if (N % frames)
            return mmu_fail(MMU_EVALUE, "%s: frames (%lld) must divide the token count N = %lld of query %s", op,
                            (long long)frames, (long long)N, mmu_shape_str(q));
        /* G locations a group, as many as fit in the key columns the GEMM pads to 16 anyway
         * (T = 5: 3 locations, 15 rows): fewer, fuller blocks for short sequences */
        int64_t L = N / frames, G = up16(frames) / frames;
        while (G > 1 && L % G) G--;
        g->temporal = 1, g->L = L, g->T = frames, g->G = G, g->n = G * frames, g->ngroup = L / G;
    } else {
        if (gh < 1 || gw < 1 || wh < 1 || ww < 1 || gh > N || gw > N || gh * gw != N)
            return mmu_fail(MMU_EVALUE, "%s: grid (%lld, %lld) must be positive with gh*gw = N = %lld of query %s",
                            op, (long long)gh, (long long)gw, (long long)N, mmu_shape_str(q));
        if (gh % wh || gw % ww)
            return mmu_fail(MMU_EVALUE, "%s: window (%lld, %lld) must divide grid (%lld, %lld)", op, (long long)wh,
                            (long long)ww, (long long)gh, (long long)gw);
        g->gw = gw, g->wh = wh, g->ww = ww, g->nw = gw / ww, g->n = wh * ww, g->ngroup = (gh / wh) * (gw / ww);
    }
    if (bias) {
        if (bias->dtype != MMU_FLOAT32 || bias->ndim != 3 || bias->shape[0] != H || bias->shape[1] != g->n ||
            bias->shape[2] != g->n)
            return mmu_fail(MMU_EVALUE, "%s: bias must be float32 (H, wh*ww, wh*ww) = (%lld, %lld, %lld), got %s %s",
                            op, (long long)H, (long long)g->n, (long long)g->n, mmu_dtype_name(bias->dtype),
                            mmu_shape_str(bias));
    }
    g->NB = B * H, g->H = H, g->N = N, g->E = q->shape[3], g->Ev = v->shape[3];
    if (!(g->rel = mmu_alloc((size_t)g->n * sizeof(int64_t)))) return mmu_fail(MMU_ENOMEM, "%s: out of memory", op);
    for (int64_t r = 0; r < g->n; r++) g->rel[r] = g->temporal ? (r % g->T) * g->L + r / g->T : (r / g->ww) * g->gw + r % g->ww;
    g->q = mmu_f32(q), g->k = mmu_f32(k), g->v = mmu_f32(v), g->bias = bias ? mmu_f32(bias) : NULL;
    return MMU_OK;
}

static void grp_geom_free(grp_geom *g) {
    if (g->rel) mmu_free(g->rel, (size_t)g->n * sizeof(int64_t));
    g->rel = NULL;
}

/* Scores row s (np = up16(n) entries, q already times scale) of group row i: + bias row;
 * -inf for the keys row i does not see: other locations of a temporal group, later frames
 * when causal, the padding keys n.. */
static void grp_bias_row(float *s, const grp_geom *g, const float *bias_h, int64_t i) {
    int64_t n = g->n, np = up16(n), lo = 0, hi = g->causal ? i + 1 : n;
    if (bias_h)
        for (int64_t c = 0; c < n; c++) s[c] += bias_h[i * n + c];
    if (g->temporal && g->G > 1) { /* row i = frame i % T of location i / T: keys lo.. of its location */
        lo = i / g->T * g->T;
        if (!g->causal) hi = lo + g->T;
    }
    for (int64_t c = 0; c < lo; c++) s[c] = -INFINITY;
    for (int64_t c = hi; c < np; c++) s[c] = -INFINITY;
}

// rows (n, cols) of src at tokens base + rel[r] (row stride cols), times mul -> dst (n, ldd), columns cols.. zeroed
static void grp_gather(float *dst, int64_t ldd, const float *src, int64_t cols, const grp_geom *g, int64_t base,
                       float mul) {
    for (int64_t r = 0; r < g->n; r++) {
        const float *s = src + (base + g->rel[r]) * cols;
        float *d = dst + r * ldd;
        if (mul == 1.0f)
            memcpy(d, s, cols * sizeof(float));
        else
            for (int64_t e = 0; e < cols; e++) d[e] = s[e] * mul;
        for (int64_t e = cols; e < ldd; e++) d[e] = 0.0f;
    }
}

// the group's rows of src (tokens, cols) transposed -> dst (cols, np), columns n..np zeroed
static void grp_gather_t(float *dst, const float *src, int64_t cols, const grp_geom *g, int64_t base) {
    int64_t n = g->n, np = up16(n);
    for (int64_t r0 = 0; r0 < np; r0 += 16) {
        int64_t rn = n - r0 < 16 ? n - r0 : 16;
        const float *rows[16];
        for (int64_t r = 0; r < rn; r++) rows[r] = src + (base + g->rel[r0 + r]) * cols;
        for (int64_t e = 0; e < cols; e++) {
            float *d = dst + e * np + r0;
            for (int64_t r = 0; r < rn; r++) d[r] = rows[r][e];
            for (int64_t r = rn; r < 16; r++) d[r] = 0.0f;
        }
    }
}

typedef struct {
    float *qs, *kt, *vp, *s, *o; /* (BR, E), (E, np), (n, Evp), (BR, np), (BR, Evp) */
    float *dop, *kp, *vt, *d;    /* backward: (n, Evp), (n, Ep), (Ev, np), (n) */
    float *dp, *dk, *dv, *dq;    /* (BR, np), (n, Ep), (n, Evp), (BR, Ep) */
    float *dbias;                /* (H, n, n) of this chunk, or NULL */
    size_t bytes;
    void *base;
} grp_scratch;

static int grp_scratch_init(grp_scratch *w, const grp_geom *g, int backward) {
    int64_t n = g->n, np = up16(n), Ep = up16(g->E), Evp = up16(g->Ev), br = n < BR ? n : BR;
    size_t sizes[] = {(size_t)(backward ? n * Ep : br * g->E), (size_t)(g->E * np), (size_t)(backward ? 0 : n * Evp),
                      (size_t)(br * np), (size_t)(backward ? 0 : br * Evp),
                      (size_t)(backward ? n * Evp : 0), (size_t)(backward ? n * Ep : 0),
                      (size_t)(backward ? g->Ev * np : 0), (size_t)(backward ? n : 0),
                      (size_t)(backward ? br * np : 0), (size_t)(backward ? n * Ep : 0),
                      (size_t)(backward ? n * Evp : 0), (size_t)(backward ? br * Ep : 0)};
    w->bytes = 0;
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) w->bytes += (sizes[i] * sizeof(float) + 63) & ~(size_t)63;
    if (!(w->base = mmu_alloc(w->bytes ? w->bytes : 64))) return -1;
    char *p = w->base;
    float **dst[] = {&w->qs, &w->kt, &w->vp, &w->s, &w->o, &w->dop, &w->kp, &w->vt, &w->d, &w->dp, &w->dk, &w->dv, &w->dq};
    for (size_t i = 0; i < sizeof sizes / sizeof *sizes; i++) *dst[i] = scratch_carve(&p, sizes[i]);
    return 0;
}

static void grp_scratch_free(grp_scratch *w) {
    if (w->base) mmu_free(w->base, w->bytes ? w->bytes : 64);
    w->base = NULL;
}

// one group: rows of head bh -> their tokens of out (NB, N, Ev) and lse (NB, N)
static void grp_fwd_task(const grp_geom *g, grp_scratch *w, int64_t bh, int64_t gi, float *out, float *lse) {
    int64_t n = g->n, np = up16(n), E = g->E, Ev = g->Ev, Evp = up16(Ev), N = g->N, base = grp_base(g, gi);
    const float *q = g->q + bh * N * E, *k = g->k + bh * N * E, *v = g->v + bh * N * Ev;
    const float *bias_h = g->bias ? g->bias + (bh % g->H) * n * n : NULL;
    float *ob = out + bh * N * Ev, *lb = lse + bh * N;
    grp_gather_t(w->kt, k, E, g, base);
    grp_gather(w->vp, Evp, v, Ev, g, base, 1.0f);
    for (int64_t i0 = 0; i0 < n; i0 += BR) {
        int64_t nr = n - i0 < BR ? n - i0 : BR;
        /* causal: no row of the block sees past its last row */
        int64_t nk = g->causal ? i0 + nr : n;
        float inv[BR]; /* 1 / the row's sum: applied to its Ev outputs, not its n weights */
        for (int64_t r = 0; r < nr; r++) {
            const float *qr = q + (base + g->rel[i0 + r]) * E;
            for (int64_t e = 0; e < E; e++) w->qs[r * E + e] = qr[e] * g->scale;
        }
        gemm(0, nr, np, E, w->qs, E, w->kt, np, w->s, np, 0);
        for (int64_t r = 0; r < nr; r++) {
            float *s = w->s + r * np;
            grp_bias_row(s, g, bias_h, i0 + r);
            float mx = mmu_row_max(s, np);
            if (mx == -INFINITY) { /* a -inf bias hid the whole row: 0 out, as sdpa */
                int has_nan = 0;
                for (int64_t c = 0; c < n; c++) has_nan |= isnan(s[c]);
                if (!has_nan) {
                    memset(s, 0, np * sizeof(float));
                    lb[base + g->rel[i0 + r]] = -INFINITY;
                    inv[r] = 0.0f;
                    continue;
                }
                mx = NAN;
            }
            float part[16] = {0};
            for (int64_t c = 0; c < np; c += 16)
                for (int t = 0; t < 16; t++) {
                    float e = mmu_exp_le0(s[c + t] - mx);
                    s[c + t] = e;
                    part[t] += e;
                }
            float l = 0.0f;
            for (int t = 0; t < 16; t++) l += part[t];
            inv[r] = 1.0f / l;
            lb[base + g->rel[i0 + r]] = mx + logf(l);
        }
        gemm(0, nr, Evp, nk, w->s, np, w->vp, Evp, w->o, Evp, 0);
        for (int64_t r = 0; r < nr; r++) {
            float *d = ob + (base + g->rel[i0 + r]) * Ev;
            const float *o = w->o + r * Evp;
            for (int64_t e = 0; e < Ev; e++) d[e] = o[e] * inv[r];
        }
    }
}

// g (NB, N, Ev), out, lse of the forward -> dq, dk (NB, N, E), dv (NB, N, Ev) of this group's tokens, dbias (H, n, n) +=
static void grp_bwd_task(const grp_geom *g, grp_scratch *w, int64_t bh, int64_t gi, const float *out, const float *go,
                         const float *lse, float *dq, float *dk, float *dv) {
    int64_t n = g->n, np = up16(n), E = g->E, Ev = g->Ev, Ep = up16(E), Evp = up16(Ev), N = g->N,
            base = grp_base(g, gi);
    const float *q = g->q + bh * N * E, *k = g->k + bh * N * E, *v = g->v + bh * N * Ev;
    const float *O = out + bh * N * Ev, *dO = go + bh * N * Ev, *lb = lse + bh * N;
    const float *bias_h = g->bias ? g->bias + (bh % g->H) * n * n : NULL;
    float *dbias_h = w->dbias ? w->dbias + (bh % g->H) * n * n : NULL, sc = g->scale;
    grp_gather(w->qs, Ep, q, E, g, base, sc);
    grp_gather(w->kp, Ep, k, E, g, base, 1.0f);
    grp_gather_t(w->kt, k, E, g, base);
    grp_gather_t(w->vt, v, Ev, g, base);
    grp_gather(w->dop, Evp, dO, Ev, g, base, 1.0f);
    for (int64_t r = 0; r < n; r++) { /* D = rowsum(dO ∘ O) */
        const float *o = O + (base + g->rel[r]) * Ev, *d = w->dop + r * Evp;
        float s = 0.0f;
        for (int64_t e = 0; e < Ev; e++) s += d[e] * o[e];
        w->d[r] = s;
    }
    memset(w->dk, 0, n * Ep * sizeof(float));
    memset(w->dv, 0, n * Evp * sizeof(float));
    for (int64_t i0 = 0; i0 < n; i0 += BR) {
        int64_t nr = n - i0 < BR ? n - i0 : BR, nk = g->causal ? i0 + nr : n;
        /* P = exp(q kᵀ·scale + bias - lse) */
        gemm(0, nr, np, E, w->qs + i0 * Ep, Ep, w->kt, np, w->s, np, 0);
        for (int64_t r = 0; r < nr; r++) {
            float *p = w->s + r * np, l = lb[base + g->rel[i0 + r]];
            grp_bias_row(p, g, bias_h, i0 + r);
            if (l == -INFINITY)
                memset(p, 0, np * sizeof(float));
            else
                for (int64_t c = 0; c < np; c++) p[c] = mmu_exp_le0(p[c] - l);
        }
        /* dV += Pᵀ dO (keys nk.. get nothing from this block) */
        gemm(1, nk, Evp, nr, w->s, np, w->dop + i0 * Evp, Evp, w->dv, Evp, 1);
        /* dP = dO vᵀ, dS = P ∘ (dP - D) */
        gemm(0, nr, np, Ev, w->dop + i0 * Evp, Evp, w->vt, np, w->dp, np, 0);
        for (int64_t r = 0; r < nr; r++) {
            float *dp = w->dp + r * np, dr = w->d[i0 + r];
            const float *p = w->s + r * np;
            for (int64_t c = 0; c < n; c++) dp[c] = p[c] * (dp[c] - dr);
            if (dbias_h) {
                float *db = dbias_h + (i0 + r) * n;
                for (int64_t c = 0; c < n; c++) db[c] += dp[c];
            }
        }
        /* dK += dSᵀ (q·scale), dQ = dS k·scale (a group's keys are all here: the block's dQ is whole) */
        gemm(1, nk, Ep, nr, w->dp, np, w->qs + i0 * Ep, Ep, w->dk, Ep, 1);
        gemm(0, nr, Ep, nk, w->dp, np, w->kp, Ep, w->dq, Ep, 0);
        for (int64_t r = 0; r < nr; r++) {
            float *d = dq + (bh * N + base + g->rel[i0 + r]) * E;
            const float *s = w->dq + r * Ep;
            for (int64_t e = 0; e < E; e++) d[e] = s[e] * sc;
        }
    }
    for (int64_t r = 0; r < n; r++) {
        int64_t t = bh * N + base + g->rel[r];
        memcpy(dk + t * E, w->dk + r * Ep, E * sizeof(float));
        memcpy(dv + t * Ev, w->dv + r * Evp, Ev * sizeof(float));
    }
}

/* Tasks (batch·head, group) cut into nchunk contiguous ranges, one per thread: the ranges
 * (not OpenMP's schedule) fix which tasks share a dbias buffer. */
static mmu_status grp_run(const grp_geom *g, int backward, const float *out, const float *go, const float *lse,
                          float *o_or_dq, float *lse_or_dk, float *dv, float *dbias) {
    int64_t ntask = g->NB * g->ngroup, nchunk = mmu_get_num_threads();
    if (nchunk > ntask) nchunk = ntask > 0 ? ntask : 1;
    int64_t per = (ntask + nchunk - 1) / nchunk, hnn = g->H * g->n * g->n;
    float *dbuf = NULL;
    size_t dbytes = 0;
    if (dbias) {
        dbytes = (size_t)(nchunk * hnn) * sizeof(float);
        if (!(dbuf = mmu_alloc(dbytes ? dbytes : 64))) return mmu_fail(MMU_ENOMEM, "window_attention: out of memory");
        memset(dbuf, 0, dbytes);
    }
    int failed = 0;
    mmu_sync_threads();
    double work = (double)g->NB * g->N * g->n * (g->E + g->Ev);
#pragma omp parallel if (work > MMU_PAR_GRAIN && nchunk > 1)
    {
        grp_scratch w = {0};
        int ok = grp_scratch_init(&w, g, backward) == 0;
        if (!ok) {
#pragma omp atomic write
            failed = 1;
        }
#pragma omp for schedule(static, 1)
        for (int64_t c = 0; c < nchunk; c++) {
            if (!ok) continue;
            w.dbias = dbuf ? dbuf + c * hnn : NULL;
            int64_t t1 = (c + 1) * per < ntask ? (c + 1) * per : ntask;
            for (int64_t t = c * per; t < t1; t++) {
                if (backward)
                    grp_bwd_task(g, &w, t / g->ngroup, t % g->ngroup, out, go, lse, o_or_dq, lse_or_dk, dv);
                else
                    grp_fwd_task(g, &w, t / g->ngroup, t % g->ngroup, o_or_dq, lse_or_dk);
            }
        }
        if (ok) grp_scratch_free(&w);
    }
    if (dbuf) {
        if (!failed)
            for (int64_t x = 0; x < hnn; x++) {
                float s = 0.0f;
                for (int64_t c = 0; c < nchunk; c++) s += dbuf[c * hnn + x];
                dbias[x] = s;
            }
        mmu_free(dbuf, dbytes ? dbytes : 64);
    }
    return failed ? mmu_fail(MMU_ENOMEM, "window/temporal attention: out of memory for scratch") : MMU_OK;
}

static mmu_status grp_attention(mmu_tensor **out, const char *op, mmu_op opid, mmu_tensor *q, mmu_tensor *k,
                                mmu_tensor *v, mmu_tensor *bias, int64_t gh, int64_t gw, int64_t wh, int64_t ww,
                                int64_t frames, int causal, int has_scale, double scale) {
    mmu_status st;
    mmu_tensor *lse = NULL;
    grp_geom g;
    memset(&g, 0, sizeof g);
    if ((st = mmu_check_dtype(q, MMU_FLOAT32, op, "query")) || (st = mmu_check_dtype(k, MMU_FLOAT32, op, "key")) ||
        (st = mmu_check_dtype(v, MMU_FLOAT32, op, "value")) || (bias && (st = mmu_check_dtype(bias, MMU_FLOAT32, op, "bias"))))
        return st;
    if ((st = grp_geom_init(&g, op, q, k, v, bias, gh, gw, wh, ww, frames))) goto done;
    g.causal = causal;
    g.scale = (float)(has_scale ? scale : 1.0 / sqrt((double)g.E));
    int64_t oshape[4] = {q->shape[0], q->shape[1], g.N, g.Ev}, lshape[3] = {q->shape[0], q->shape[1], g.N};
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, 4, oshape)) || (st = mmu_tensor_empty(&lse, MMU_FLOAT32, 3, lshape)))
        goto done;
    if ((*out)->numel > 0 && (st = grp_run(&g, 0, NULL, NULL, NULL, mmu_f32(*out), mmu_f32(lse), NULL, NULL)))
        goto done;
    mmu_node *n = NULL;
    mmu_tensor *ins[4] = {q, k, v, bias};
    if ((st = mmu_record(&n, *out, opid, 4, ins))) goto done;
    if (n) {
        mmu_save(n, 0, q);
        mmu_save(n, 1, k);
        mmu_save(n, 2, v);
        if ((st = mmu_save_output(n, 3, *out))) goto done;
        mmu_save(n, 4, lse);
        if (bias) mmu_save(n, 5, bias);
        if (frames > 0) {
            n->ctx.i[0] = frames;
            n->ctx.i[1] = causal;
        } else {
            n->ctx.i[0] = gh, n->ctx.i[1] = gw, n->ctx.i[2] = wh, n->ctx.i[3] = ww;
        }
        n->ctx.f[0] = g.scale;
    }
done:
    mmu_tensor_decref(lse);
    grp_geom_free(&g);
    if (st) MMU_CLEAR(*out);
    return st;
}

// q, k (B, H, N, E), v (B, H, N, Ev), bias (H, wh·ww, wh·ww) or NULL, N = gh·gw -> out (B, H, N, Ev)
mmu_status mmu_window_attention(mmu_tensor **out, mmu_tensor *q, mmu_tensor *k, mmu_tensor *v, mmu_tensor *bias,
                                int64_t gh, int64_t gw, int64_t wh, int64_t ww, int has_scale, double scale) {
    mmu_sync_threads();
    return grp_attention(out, "window_attention", MMU_OP_WINDOW_ATTENTION, q, k, v, bias, gh, gw, wh, ww, 0, 0,
                         has_scale, scale);
}

// q, k (B, H, T·L, E), v (B, H, T·L, Ev), T = frames -> out (B, H, T·L, Ev)
mmu_status mmu_temporal_attention(mmu_tensor **out, mmu_tensor *q, mmu_tensor *k, mmu_tensor *v, int64_t frames,
                                  int causal, int has_scale, double scale) {
    mmu_sync_threads();
    if (frames < 1)
        return mmu_fail(MMU_EVALUE, "temporal_attention: frames must be >= 1, got %lld", (long long)frames);
    return grp_attention(out, "temporal_attention", MMU_OP_TEMPORAL_ATTENTION, q, k, v, NULL, 0, 0, 0, 0, frames,
                         causal, has_scale, scale);
}

static mmu_status grp_attention_backward(mmu_node *n, mmu_tensor *gout, mmu_tensor **gin, int temporal) {
    mmu_tensor *q = n->saved[0], *k = n->saved[1], *v = n->saved[2], *o = n->saved[3], *lse = n->saved[4],
               *bias = n->saved[5];
    int need_b = bias && n->inputs[3].needs_grad;
    if (!n->inputs[0].needs_grad && !n->inputs[1].needs_grad && !n->inputs[2].needs_grad && !need_b) return MMU_OK;
    const char *op = temporal ? "temporal_attention backward" : "window_attention backward";
    mmu_tensor *dq = NULL, *dk = NULL, *dv = NULL, *db = NULL;
    grp_geom g;
    mmu_status st = temporal ? grp_geom_init(&g, op, q, k, v, NULL, 0, 0, 0, 0, n->ctx.i[0])
                             : grp_geom_init(&g, op, q, k, v, bias, n->ctx.i[0], n->ctx.i[1], n->ctx.i[2],
                                             n->ctx.i[3], 0);
    if (st) goto done;
    g.causal = temporal ? (int)n->ctx.i[1] : 0;
    g.scale = (float)n->ctx.f[0];
    if ((st = mmu_tensor_empty(&dq, MMU_FLOAT32, 4, q->shape)) || (st = mmu_tensor_empty(&dk, MMU_FLOAT32, 4, k->shape)) ||
        (st = mmu_tensor_empty(&dv, MMU_FLOAT32, 4, v->shape)) ||
        (need_b && (st = mmu_tensor_empty(&db, MMU_FLOAT32, 3, bias->shape))))
        goto done;
    if (g.NB * g.N == 0 || g.Ev == 0) { /* an empty output (and no lse was computed): zero gradients */
        memset(mmu_f32(dq), 0, dq->numel * sizeof(float));
        memset(mmu_f32(dk), 0, dk->numel * sizeof(float));
        memset(mmu_f32(dv), 0, dv->numel * sizeof(float));
        if (db) memset(mmu_f32(db), 0, db->numel * sizeof(float));
    } else if ((st = grp_run(&g, 1, mmu_f32(o), mmu_f32(gout), mmu_f32(lse), mmu_f32(dq), mmu_f32(dk), mmu_f32(dv),
                             db ? mmu_f32(db) : NULL)))
        goto done;
    mmu_tensor *full[4] = {dq, dk, dv, db};
    for (int i = 0; i < 4; i++)
        if (n->inputs[i].needs_grad && full[i]) {
            gin[i] = full[i];
            full[i] = NULL;
        }
    dq = full[0], dk = full[1], dv = full[2], db = full[3];
done:
    mmu_tensor_decref(dq);
    mmu_tensor_decref(dk);
    mmu_tensor_decref(dv);
    mmu_tensor_decref(db);
    grp_geom_free(&g);
    return st;
}

// g (B, H, N, Ev) -> dq, dk, dv, dbias
mmu_status mmu_window_attention_backward(mmu_node *n, mmu_tensor *gout, mmu_tensor **gin) {
    return grp_attention_backward(n, gout, gin, 0);
}

// g (B, H, T·L, Ev) -> dq, dk, dv
mmu_status mmu_temporal_attention_backward(mmu_node *n, mmu_tensor *gout, mmu_tensor **gin) {
    return grp_attention_backward(n, gout, gin, 1);
}

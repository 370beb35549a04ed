/* Matrix products on oneDNN's matmul primitive: torch.matmul and linear.
 *
 * Every product is one oneDNN call on plain row-major buffers. Transposes
 * (wᵀ in linear, Bᵀ and Aᵀ in the backwards) are written as strides in the
 * memory descriptors, never as copies; oneDNN's brgemm kernels pack their
 * operands into blocks anyway, so a transposed operand costs the same packing
 * (measured for linear 4096x768 -> 3072 on one thread: wᵀ by strides 99 ms vs
 * 105 ms with a pre-transposed copy of w; gᵀ by strides for dw 94 ms vs 105 ms;
 * ~200 GFLOP/s, all on brg:avx512_core). Broadcast batch dims are oneDNN batch
 * dims of size 1 (no expand). */
#include <string.h>

#include "ops.h"
#include "../dnnl/mmu_dnnl.h"

/* ----------------------------------------------------------- helpers */
static int64_t prod(const int64_t *d, int n) {
    int64_t p = 1;
    for (int i = 0; i < n; i++) p *= d[i];
    return p;
}

/* The descriptor of contiguous dims with its last two dims swapped: the
 * transpose of a row-major (..., R, C) array, seen as (..., C, R). */
static void md_transposed(mmu_md *md, int nd, const int64_t *dims) {
    mmu_md_contig(md, nd, dims);
    int64_t t = md->dims[nd - 1];
    md->dims[nd - 1] = md->dims[nd - 2];
    md->dims[nd - 2] = t;
    t = md->strides[nd - 1];
    md->strides[nd - 1] = md->strides[nd - 2];
    md->strides[nd - 2] = t;
}

/* ------------------------------------------------------------ matmul */
/* How a torch.matmul call maps onto one oneDNN matmul of nd dims:
 * A (ad) @ B (bd) -> C (cd), each (batch..., rows, cols) with a's and b's
 * batch dims padded with 1 (oneDNN broadcasts those). */
typedef struct {
    int nd;
    int64_t ad[MMU_MAX_DIMS], bd[MMU_MAX_DIMS], cd[MMU_MAX_DIMS];
    int64_t K;
    int out_ndim;
    int64_t out_shape[MMU_MAX_DIMS];
} mm_plan;

/* a (..., M, K) or (K), b (..., K, N) or (K) -> the plan, or a ValueError. */
static mmu_status mm_plan_make(mm_plan *p, int na, const int64_t *sa, int nb, const int64_t *sb) {
    if (na == 0 || nb == 0)
        return mmu_fail(MMU_EVALUE, "matmul: both arguments need to be at least 1-D, got shapes %s and %s",
                        mmu_dims_str(na, sa), mmu_dims_str(nb, sb));
    /* a 1-D a is a row (1, K), a 1-D b a column (K, 1); the dim is dropped from the result */
    int64_t M = na == 1 ? 1 : sa[na - 2], K = sa[na - 1];
    int64_t Kb = nb == 1 ? sb[0] : sb[nb - 2], N = nb == 1 ? 1 : sb[nb - 1];
    if (K != Kb)
        return mmu_fail(MMU_EVALUE, "matmul: shapes %s and %s cannot be multiplied (%lld vs %lld in the "
                        "contracted dim)", mmu_dims_str(na, sa), mmu_dims_str(nb, sb), (long long)K, (long long)Kb);
    int bna = na > 2 ? na - 2 : 0, bnb = nb > 2 ? nb - 2 : 0, bn;
    int64_t batch[MMU_MAX_DIMS];
    if (mmu_broadcast_shape(&bn, batch, bna, sa, bnb, sb, "matmul"))
        return mmu_fail(MMU_EVALUE, "matmul: shapes %s and %s have batch dims %s and %s that cannot be "
                        "broadcast together", mmu_dims_str(na, sa), mmu_dims_str(nb, sb), mmu_dims_str(bna, sa),
                        mmu_dims_str(bnb, sb));
    p->K = K;
    p->out_ndim = 0;
    for (int d = 0; d < bn; d++) p->out_shape[p->out_ndim++] = batch[d];
    if (na > 1) p->out_shape[p->out_ndim++] = M;
    if (nb > 1) p->out_shape[p->out_ndim++] = N;
    if (prod(sb, bnb) == 1) {
        /* b is one matrix: a's batch folds into its rows, giving one plain
         * 2-D product (no batch loop; dB needs no reduction either) */
        p->nd = 2;
        p->ad[0] = prod(sa, bna) * M, p->ad[1] = K;
        p->bd[0] = K, p->bd[1] = N;
        p->cd[0] = p->ad[0], p->cd[1] = N;
        return MMU_OK;
    }
    p->nd = bn + 2;
    for (int d = 0; d < bn; d++) {
        p->ad[d] = d >= bn - bna ? sa[d - (bn - bna)] : 1;
        p->bd[d] = d >= bn - bnb ? sb[d - (bn - bnb)] : 1;
        p->cd[d] = batch[d];
    }
    p->ad[bn] = M, p->ad[bn + 1] = K;
    p->bd[bn] = K, p->bd[bn + 1] = N;
    p->cd[bn] = M, p->cd[bn + 1] = N;
    return MMU_OK;
}

// a (..., M, K), b (..., K, N) with broadcast batch dims -> out (broadcast..., M, N);
// a 1-D a or b gets a unit dim prepended/appended which is dropped from out.
mmu_status mmu_matmul(mmu_tensor **out, mmu_tensor *a, mmu_tensor *b) {
    mmu_status st;
    if ((st = mmu_check_dtype(a, MMU_FLOAT32, "matmul", "input"))) return st;
    if ((st = mmu_check_dtype(b, MMU_FLOAT32, "matmul", "other"))) return st;
    mm_plan p;
    if ((st = mm_plan_make(&p, a->ndim, a->shape, b->ndim, b->shape))) return st;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, p.out_ndim, p.out_shape))) return st;
    if ((*out)->numel > 0) {
        if (p.K == 0) {
            memset(mmu_f32(*out), 0, (*out)->numel * sizeof(float));
        } else {
            mmu_md ma, mb, mc;
            mmu_md_contig(&ma, p.nd, p.ad);
            mmu_md_contig(&mb, p.nd, p.bd);
            mmu_md_contig(&mc, p.nd, p.cd);
            st = mmu_dnnl_matmul(&ma, mmu_f32(a), &mb, mmu_f32(b), NULL, NULL, &mc, mmu_f32(*out));
        }
    }
    mmu_node *n = NULL;
    if (!st) st = mmu_record(&n, *out, MMU_OP_MATMUL, 2, (mmu_tensor *[]){a, b});
    if (st) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n) { /* dA needs b, dB needs a */
        if (n->inputs[1].needs_grad) mmu_save(n, 0, a);
        if (n->inputs[0].needs_grad) mmu_save(n, 1, b);
    }
    return MMU_OK;
}

/* One side's gradient: full (C's batch, rows, cols) = lhs @ rhs, where lhs and
 * rhs are given by descriptors; then summed over the batch dims the input
 * broadcast (want: the input's padded dims) and viewed as the input's shape. */
static mmu_status mm_grad(mmu_tensor **gin, const mmu_edge *in, int nd, const int64_t *full_dims,
                          const int64_t *want, const mmu_md *ml, const float *pl, const mmu_md *mr,
                          const float *pr, int64_t contracted) {
    mmu_tensor *full = NULL, *red = NULL;
    mmu_status st = mmu_tensor_empty(&full, MMU_FLOAT32, nd, full_dims);
    if (st) return st;
    if (full->numel > 0) {
        if (contracted == 0) {
            memset(mmu_f32(full), 0, full->numel * sizeof(float));
        } else {
            mmu_md mo;
            mmu_md_contig(&mo, nd, full_dims);
            st = mmu_dnnl_matmul(ml, pl, mr, pr, NULL, NULL, &mo, mmu_f32(full));
        }
    }
    if (!st) st = mmu_reduce_to_shape(&red, full, nd, want);
    if (!st) st = mmu_tensor_view(gin, red, in->ndim, in->shape);
    mmu_tensor_decref(full);
    mmu_tensor_decref(red);
    return st;
}

// g (out) -> dA = g @ Bᵀ, dB = Aᵀ @ g (summed over broadcast batch dims)
mmu_status mmu_matmul_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mm_plan p;
    mmu_status st = mm_plan_make(&p, n->inputs[0].ndim, n->inputs[0].shape, n->inputs[1].ndim, n->inputs[1].shape);
    if (st) return st;
    int nd = p.nd, bn = nd - 2;
    mmu_md mg;
    mmu_md_contig(&mg, nd, p.cd);
    int64_t full[MMU_MAX_DIMS];
    memcpy(full, p.cd, bn * sizeof(int64_t));
    if (n->inputs[0].needs_grad) {
        mmu_md mbt;
        md_transposed(&mbt, nd, p.bd); /* (.., N, K) */
        full[bn] = p.cd[bn], full[bn + 1] = p.ad[bn + 1];
        st = mm_grad(&gin[0], &n->inputs[0], nd, full, p.ad, &mg, mmu_f32(g), &mbt, mmu_f32(n->saved[1]),
                     p.cd[bn + 1]);
        if (st) return st;
    }
    if (n->inputs[1].needs_grad) {
        mmu_md mat;
        md_transposed(&mat, nd, p.ad); /* (.., K, M) */
        full[bn] = p.bd[bn], full[bn + 1] = p.cd[bn + 1];
        st = mm_grad(&gin[1], &n->inputs[1], nd, full, p.bd, &mat, mmu_f32(n->saved[0]), &mg, mmu_f32(g),
                     p.cd[bn]);
    }
    return st;
}

/* ------------------------------------------------------------ linear */
// x (..., IN), w (OUT, IN), b (OUT) or NULL -> out (..., OUT) = x @ wᵀ + b
#if defined(__AVX512F__)
#include <immintrin.h>
/* linear of ONE input row, y (OUT) = w (OUT, IN) · x (IN) + b: a token's step in decoding.
 * Each output is the dot product of one weight row with x, so w is streamed once,
 * row after row, at memory bandwidth, with x held in L1; the rows are split over
 * the threads. oneDNN's brgemm packs wᵀ into blocks on every call instead, which
 * at M = 1 costs more than the product: the 49 linears of a GPT-2-small decode
 * step (0.49 GB of weights, DRAM-resident) took 44-46 ms here against 68-98 ms
 * through oneDNN and 73 ms in torch (one thread, shared 2-core machine). Every
 * output is one thread's sum in a fixed order: the same for any thread count.
 *
 * A FEW input rows (R <= LINEAR_FEW_ROWS: the conditional and unconditional rows
 * of a guided decoding step, a small batch, VILA-U's depth transformer on a few
 * depths) take the same kernel on up to 4 rows at once: each weight row is read
 * once for the group and multiplied into every row's accumulators. oneDNN repacks
 * wᵀ for these as for one row. Each output keeps the one-row order of summation
 * (two chains of 16-float blocks, the masked tail into the second, one horizontal
 * sum, then the bias), so a row's outputs are the same bits whichever rows share
 * its call. */
enum { LINEAR_FEW_ROWS = 8 };

/* output o of NR rows: y[r OUT] = w_o · x_r + bias. NR is a constant at every call
 * (inlined), so the accumulators live in registers. */
static inline __attribute__((always_inline)) void rows_dot(float *y, const float *x, const float *wr, float bias,
                                                           const int NR, int64_t IN, int64_t OUT) {
    __mmask16 tail = (__mmask16)((1u << (IN % 16)) - 1);
    int64_t body = IN - IN % 16;
    __m512 acc0[4], acc1[4];
    for (int r = 0; r < NR; r++) acc0[r] = acc1[r] = _mm512_setzero_ps();
    int64_t k = 0;
    for (; k + 32 <= body; k += 32) {  /* two chains: the FMA latency is not the limit */
        __m512 w0 = _mm512_loadu_ps(wr + k), w1 = _mm512_loadu_ps(wr + k + 16);
        for (int r = 0; r < NR; r++) {
            acc0[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + r * IN + k), acc0[r]);
            acc1[r] = _mm512_fmadd_ps(w1, _mm512_loadu_ps(x + r * IN + k + 16), acc1[r]);
        }
    }
    if (k < body) {
        __m512 w0 = _mm512_loadu_ps(wr + k);
        for (int r = 0; r < NR; r++) acc0[r] = _mm512_fmadd_ps(w0, _mm512_loadu_ps(x + r * IN + k), acc0[r]);
    }
    if (tail) {
        __m512 wt = _mm512_maskz_loadu_ps(tail, wr + body);
        for (int r = 0; r < NR; r++)
            acc1[r] = _mm512_fmadd_ps(wt, _mm512_maskz_loadu_ps(tail, x + r * IN + body), acc1[r]);
    }
    for (int r = 0; r < NR; r++) y[r * OUT] = _mm512_reduce_add_ps(_mm512_add_ps(acc0[r], acc1[r])) + bias;
}

/* one parallel loop per group size: the outlined OpenMP body sees NR as a literal */
#define LINEAR_ROWS_LOOP(NR)                                                                        \
    do {                                                                                            \
        int par = (NR) * IN * OUT > MMU_PAR_GRAIN;                                                  \
        _Pragma("omp parallel for schedule(static) if (par)")                                       \
        for (int64_t o = 0; o < OUT; o++) rows_dot(yg + o, xg, w + o * IN, b ? b[o] : 0.0f, NR, IN, OUT); \
    } while (0)

// x (R, IN), w (OUT, IN), b (OUT) or NULL -> y (R, OUT), 1 <= R <= LINEAR_FEW_ROWS, groups of up to 4 rows
static void linear_few_rows(float *y, const float *x, const float *w, const float *b, int64_t R, int64_t IN,
                            int64_t OUT) {
    for (int64_t r0 = 0; r0 < R; r0 += 4) {
        float *yg = y + r0 * OUT;
        const float *xg = x + r0 * IN;
        switch (R - r0 < 4 ? R - r0 : 4) {
        case 1: LINEAR_ROWS_LOOP(1); break;
        case 2: LINEAR_ROWS_LOOP(2); break;
        case 3: LINEAR_ROWS_LOOP(3); break;
        default: LINEAR_ROWS_LOOP(4); break;
        }
    }
}
#endif

mmu_status mmu_linear(mmu_tensor **out, mmu_tensor *x, mmu_tensor *w, mmu_tensor *b) {
    mmu_status st;
    if ((st = mmu_check_dtype(x, MMU_FLOAT32, "linear", "input"))) return st;
    if ((st = mmu_check_dtype(w, MMU_FLOAT32, "linear", "weight"))) return st;
    if (b && (st = mmu_check_dtype(b, MMU_FLOAT32, "linear", "bias"))) return st;
    if (x->ndim == 0)
        return mmu_fail(MMU_EVALUE, "linear: input must be at least 1-D, got shape %s", mmu_shape_str(x));
    int64_t IN = x->shape[x->ndim - 1];
    if (w->ndim != 2 || w->shape[1] != IN)
        return mmu_fail(MMU_EVALUE, "linear: input has shape %s but weight has shape %s; expected weight "
                        "(out_features, %lld)", mmu_shape_str(x), mmu_shape_str(w), (long long)IN);
    int64_t OUT = w->shape[0];
    if (b && (b->ndim != 1 || b->shape[0] != OUT))
        return mmu_fail(MMU_EVALUE, "linear: bias has shape %s but weight has shape %s; expected bias (%lld)",
                        mmu_shape_str(b), mmu_shape_str(w), (long long)OUT);
    int64_t shape[MMU_MAX_DIMS];
    memcpy(shape, x->shape, x->ndim * sizeof(int64_t));
    shape[x->ndim - 1] = OUT;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, shape))) return st;
    int64_t R = prod(x->shape, x->ndim - 1);
    float *po = mmu_f32(*out);
    if ((*out)->numel == 0) {
        /* nothing to compute */
    } else if (IN == 0) { /* an empty sum: the bias alone */
        for (int64_t r = 0; r < R; r++)
            for (int64_t o = 0; o < OUT; o++) po[r * OUT + o] = b ? mmu_f32(b)[o] : 0.0f;
#if defined(__AVX512F__)
    } else if (R <= LINEAR_FEW_ROWS) {
        linear_few_rows(po, mmu_f32(x), mmu_f32(w), b ? mmu_f32(b) : NULL, R, IN, OUT);
#endif
    } else {
        /* wᵀ as an (IN, OUT) weights descriptor over w's own memory */
        mmu_md mx, mw, mb, mo;
        mmu_md_contig(&mx, 2, (int64_t[]){R, IN});
        md_transposed(&mw, 2, (int64_t[]){OUT, IN});
        mmu_md_contig(&mb, 2, (int64_t[]){1, OUT});
        mmu_md_contig(&mo, 2, (int64_t[]){R, OUT});
        st = mmu_dnnl_matmul(&mx, mmu_f32(x), &mw, mmu_f32(w), b ? &mb : NULL, b ? mmu_f32(b) : NULL, &mo, po);
    }
    mmu_node *n = NULL;
    if (!st) st = mmu_record(&n, *out, MMU_OP_LINEAR, 3, (mmu_tensor *[]){x, w, b});
    if (st) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n) { /* dx needs w, dw needs x */
        if (n->inputs[1].needs_grad) mmu_save(n, 0, x);
        if (n->inputs[0].needs_grad) mmu_save(n, 1, w);
    }
    return MMU_OK;
}

// g (R, C) -> out (C): column sums. Tasks are (row chunk, column block) pairs
// fixed by the shape alone, each summing into its own partial row; the
// partials are then added in chunk order, so the result does not depend on
// the thread count, and the two-level sum keeps the rounding error small.
static mmu_status column_sums(float *out, const float *g, int64_t R, int64_t C) {
    enum { RCHUNK = 512, CBLOCK = 512 };
    int64_t nrc = (R + RCHUNK - 1) / RCHUNK, ncb = (C + CBLOCK - 1) / CBLOCK;
    size_t pbytes = (size_t)nrc * C * sizeof(float);
    float *part = nrc > 1 ? mmu_alloc(pbytes) : out;
    if (!part) return mmu_fail(MMU_ENOMEM, "linear backward: out of memory for %lld x %lld partial sums",
                               (long long)nrc, (long long)C);
#pragma omp parallel for schedule(static) if (R * C > MMU_PAR_GRAIN)
    for (int64_t t = 0; t < nrc * ncb; t++) {
        int64_t rc = t / ncb, c0 = (t % ncb) * CBLOCK;
        int64_t r0 = rc * RCHUNK, r1 = r0 + RCHUNK < R ? r0 + RCHUNK : R;
        int64_t len = C - c0 < CBLOCK ? C - c0 : CBLOCK;
        float acc[CBLOCK];
        memcpy(acc, g + r0 * C + c0, len * sizeof(float));
        for (int64_t r = r0 + 1; r < r1; r++) {
            const float *row = g + r * C + c0;
            for (int64_t c = 0; c < len; c++) acc[c] += row[c];
        }
        memcpy(part + rc * C + c0, acc, len * sizeof(float));
    }
    if (nrc > 1) {
        for (int64_t c = 0; c < C; c++) out[c] = part[c];
        for (int64_t rc = 1; rc < nrc; rc++)
            for (int64_t c = 0; c < C; c++) out[c] += part[rc * C + c];
        mmu_free(part, pbytes);
    }
    return MMU_OK;
}

// g (..., OUT) -> dx = g @ w (..., IN), dw = gᵀ @ x (OUT, IN), db = Σ_rows g (OUT)
// The autograd engine may hand in gin[1] / gin[2]: the parameter's own .grad (exclusive, the
// weight's / bias's shape, float32; csrc/core/autograd.c's accumulates_into): then dw / db are
// ADDED to it (dw by the GEMM's sum post-op) instead of written to a new tensor the engine would
// add afterwards. gin[0] always comes in NULL.
mmu_status mmu_linear_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    const mmu_edge *ex = &n->inputs[0], *ew = &n->inputs[1];
    int64_t OUT = ew->shape[0], IN = ew->shape[1];
    int64_t R = prod(ex->shape, ex->ndim - 1);
    mmu_status st = MMU_OK;
    mmu_md mg;
    mmu_md_contig(&mg, 2, (int64_t[]){R, OUT});
    if (ex->needs_grad) {
        if ((st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, ex->ndim, ex->shape))) return st;
        if (gin[0]->numel == 0) {
        } else if (OUT == 0) {
            memset(mmu_f32(gin[0]), 0, gin[0]->numel * sizeof(float));
        } else {
            mmu_md mw, mx;
            mmu_md_contig(&mw, 2, (int64_t[]){OUT, IN});
            mmu_md_contig(&mx, 2, (int64_t[]){R, IN});
            if ((st = mmu_dnnl_matmul(&mg, mmu_f32(g), &mw, mmu_f32(n->saved[1]), NULL, NULL, &mx,
                                      mmu_f32(gin[0]))))
                return st;
        }
    }
    if (ew->needs_grad) {
        int acc = gin[1] != NULL;
        if (!acc && (st = mmu_tensor_empty(&gin[1], MMU_FLOAT32, 2, ew->shape))) return st;
        if (gin[1]->numel == 0) {
        } else if (R == 0) {
            if (!acc) memset(mmu_f32(gin[1]), 0, gin[1]->numel * sizeof(float));
        } else {
            mmu_md mgt, mx, mw;
            md_transposed(&mgt, 2, (int64_t[]){R, OUT}); /* (OUT, R) */
            mmu_md_contig(&mx, 2, (int64_t[]){R, IN});
            mmu_md_contig(&mw, 2, (int64_t[]){OUT, IN});
            st = acc ? mmu_dnnl_matmul_accumulate(&mgt, mmu_f32(g), &mx, mmu_f32(n->saved[0]), &mw, mmu_f32(gin[1]))
                     : mmu_dnnl_matmul(&mgt, mmu_f32(g), &mx, mmu_f32(n->saved[0]), NULL, NULL, &mw, mmu_f32(gin[1]));
            if (st) return st;
        }
    }
    if (n->n_inputs > 2 && n->inputs[2].needs_grad) {
        int acc = gin[2] != NULL;
        if (!acc && (st = mmu_tensor_empty(&gin[2], MMU_FLOAT32, 1, &OUT))) return st;
        if (R == 0) {
            if (!acc) memset(mmu_f32(gin[2]), 0, OUT * sizeof(float));
        } else if (OUT > 0 && !acc) {
            st = column_sums(mmu_f32(gin[2]), mmu_f32(g), R, OUT);
        } else if (OUT > 0) { /* the sums apart, then added: as the engine would have */
            size_t bytes = (size_t)OUT * sizeof(float);
            float *sums = mmu_alloc(bytes), *db = mmu_f32(gin[2]);
            if (!sums) return mmu_fail(MMU_ENOMEM, "linear backward: out of memory for %lld bias sums", (long long)OUT);
            if (!(st = column_sums(sums, mmu_f32(g), R, OUT)))
                for (int64_t o = 0; o < OUT; o++) db[o] += sums[o];
            mmu_free(sums, bytes);
        }
    }
    return st;
}

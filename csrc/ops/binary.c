/* Broadcasting binary ops (arithmetic, comparisons, logic) and where().
 *
 * Broadcasting follows NumPy: shapes are aligned on the right, a dim of 1
 * stretches. The kernel walks the output row by row (the last dim), with each
 * input advancing by 1 or 0 along that row, so the inner loop is a plain
 * vectorisable loop; rows are shared among OpenMP threads. */
#include <string.h>

#include "ops.h"

static const char *bin_name[MMU_BIN_COUNT] = {
    "add", "sub", "mul", "div", "maximum", "minimum", "lt", "le", "gt", "ge", "eq", "ne",
    "logical_and", "logical_or", "logical_xor",
};

mmu_status mmu_broadcast_shape(int *ndim, int64_t *shape, int na, const int64_t *sa, int nb,
                               const int64_t *sb, const char *op) {
    int n = na > nb ? na : nb;
    for (int d = 0; d < n; d++) {
        int64_t x = d - (n - na) >= 0 ? sa[d - (n - na)] : 1;
        int64_t y = d - (n - nb) >= 0 ? sb[d - (n - nb)] : 1;
        if (x != y && x != 1 && y != 1)
            return mmu_fail(MMU_EVALUE, "%s: shapes %s and %s cannot be broadcast together (dim %d: %lld vs %lld)",
                            op, mmu_dims_str(na, sa), mmu_dims_str(nb, sb), d, (long long)x, (long long)y);
        shape[d] = x == 1 ? y : x;
    }
    *ndim = n;
    return MMU_OK;
}

/* Element strides of t seen with out's shape (0 where t broadcasts). */
static void broadcast_strides(int64_t *strides, const mmu_tensor *t, int ndim, const int64_t *shape) {
    int64_t s = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        int td = d - (ndim - t->ndim);
        if (td < 0 || t->shape[td] == 1) strides[d] = 0;
        else { strides[d] = s; s *= t->shape[td]; }
    }
}

/* Offsets of the start of row r (all dims but the last) in each input. */
static inline void row_offsets(int64_t r, int ndim, const int64_t *shape, const int64_t *sa, const int64_t *sb,
                               int64_t *oa, int64_t *ob) {
    int64_t a = 0, b = 0;
    for (int d = ndim - 2; d >= 0; d--) {
        int64_t i = r % shape[d];
        r /= shape[d];
        a += i * sa[d];
        b += i * sb[d];
    }
    *oa = a;
    *ob = b;
}

/* One kernel per (op, types): three inner loops so that the common stride
 * patterns (1,1), (1,0), (0,1) are compile-time constants for the vectoriser. */
#define BINARY_KERNEL(NAME, T, R, EXPR)                                                        \
    static void NAME(R *o, const T *a, const T *b, int64_t n, int64_t sa, int64_t sb) {       \
        if (sa && sb) for (int64_t i = 0; i < n; i++) { T x = a[i], y = b[i]; o[i] = (EXPR); } \
        else if (sa) for (int64_t i = 0; i < n; i++) { T x = a[i], y = b[0]; o[i] = (EXPR); } \
        else if (sb) for (int64_t i = 0; i < n; i++) { T x = a[0], y = b[i]; o[i] = (EXPR); } \
        else for (int64_t i = 0; i < n; i++) { T x = a[0], y = b[0]; o[i] = (EXPR); }         \
    }

BINARY_KERNEL(k_add, float, float, x + y)
BINARY_KERNEL(k_sub, float, float, x - y)
BINARY_KERNEL(k_mul, float, float, x * y)
BINARY_KERNEL(k_div, float, float, x / y)
/* NaN propagates like torch.maximum */
BINARY_KERNEL(k_max, float, float, (x != x || y != y) ? x + y : (x > y ? x : y))
BINARY_KERNEL(k_min, float, float, (x != x || y != y) ? x + y : (x < y ? x : y))
BINARY_KERNEL(k_lt_f, float, uint8_t, x < y)
BINARY_KERNEL(k_le_f, float, uint8_t, x <= y)
BINARY_KERNEL(k_gt_f, float, uint8_t, x > y)
BINARY_KERNEL(k_ge_f, float, uint8_t, x >= y)
BINARY_KERNEL(k_eq_f, float, uint8_t, x == y)
BINARY_KERNEL(k_ne_f, float, uint8_t, x != y)
BINARY_KERNEL(k_lt_i, int64_t, uint8_t, x < y)
BINARY_KERNEL(k_le_i, int64_t, uint8_t, x <= y)
BINARY_KERNEL(k_gt_i, int64_t, uint8_t, x > y)
BINARY_KERNEL(k_ge_i, int64_t, uint8_t, x >= y)
BINARY_KERNEL(k_eq_i, int64_t, uint8_t, x == y)
BINARY_KERNEL(k_ne_i, int64_t, uint8_t, x != y)
BINARY_KERNEL(k_eq_b, uint8_t, uint8_t, x == y)
BINARY_KERNEL(k_ne_b, uint8_t, uint8_t, x != y)
BINARY_KERNEL(k_and, uint8_t, uint8_t, x && y)
BINARY_KERNEL(k_or, uint8_t, uint8_t, x || y)
BINARY_KERNEL(k_xor, uint8_t, uint8_t, (x != 0) != (y != 0))

typedef void (*binary_kernel)(void *o, const void *a, const void *b, int64_t n, int64_t sa, int64_t sb);

static binary_kernel pick_kernel(mmu_binary_op op, mmu_dtype dt) {
#define K(f) ((binary_kernel)(void (*)(void))(f))
    if (dt == MMU_FLOAT32) {
        binary_kernel t[] = {K(k_add), K(k_sub), K(k_mul), K(k_div), K(k_max), K(k_min), K(k_lt_f),
                             K(k_le_f), K(k_gt_f), K(k_ge_f), K(k_eq_f), K(k_ne_f), NULL, NULL, NULL};
        return t[op];
    }
    if (dt == MMU_INT64) {
        binary_kernel t[] = {NULL, NULL, NULL, NULL, NULL, NULL, K(k_lt_i), K(k_le_i), K(k_gt_i), K(k_ge_i),
                             K(k_eq_i), K(k_ne_i), NULL, NULL, NULL};
        return t[op];
    }
    binary_kernel t[] = {NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, K(k_eq_b), K(k_ne_b),
                         K(k_and), K(k_or), K(k_xor)};
    return t[op];
#undef K
}

/* out = a op b, no autograd. */
static mmu_status binary_raw(mmu_tensor **out, mmu_binary_op op, mmu_tensor *a, mmu_tensor *b) {
    const char *name = bin_name[op];
    if (a->dtype != b->dtype)
        return mmu_fail(MMU_ETYPE, "%s: dtypes differ: %s %s and %s %s", name, mmu_dtype_name(a->dtype),
                        mmu_shape_str(a), mmu_dtype_name(b->dtype), mmu_shape_str(b));
    binary_kernel kern = pick_kernel(op, a->dtype);
    if (!kern)
        return mmu_fail(MMU_ETYPE, "%s: not defined for %s tensors (shapes %s and %s)", name,
                        mmu_dtype_name(a->dtype), mmu_shape_str(a), mmu_shape_str(b));
    int ndim;
    int64_t shape[MMU_MAX_DIMS];
    mmu_status st = mmu_broadcast_shape(&ndim, shape, a->ndim, a->shape, b->ndim, b->shape, name);
    if (st) return st;
    mmu_dtype rdt = op <= MMU_BIN_MINIMUM ? a->dtype : MMU_BOOL;
    if ((st = mmu_tensor_empty(out, rdt, ndim, shape))) return st;
    int64_t n = (*out)->numel;
    if (n == 0) return MMU_OK;
    size_t es = mmu_dtype_size(a->dtype), rs = mmu_dtype_size(rdt);
    const char *pa = mmu_data(a), *pb = mmu_data(b);
    char *po = mmu_data(*out);
    if (a->numel == n && b->numel == n) { /* same shape: one flat loop, split in chunks */
        int64_t chunk = 16384, nchunks = (n + chunk - 1) / chunk;
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
        for (int64_t c = 0; c < nchunks; c++) {
            int64_t lo = c * chunk, len = n - lo < chunk ? n - lo : chunk;
            kern(po + lo * rs, pa + lo * es, pb + lo * es, len, 1, 1);
        }
        return MMU_OK;
    }
    int64_t sa[MMU_MAX_DIMS], sb[MMU_MAX_DIMS];
    broadcast_strides(sa, a, ndim, shape);
    broadcast_strides(sb, b, ndim, shape);
    int64_t cols = ndim ? shape[ndim - 1] : 1, rows = n / cols;
    int64_t la = ndim ? sa[ndim - 1] : 0, lb = ndim ? sb[ndim - 1] : 0;
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t r = 0; r < rows; r++) {
        int64_t oa, ob;
        row_offsets(r, ndim, shape, sa, sb, &oa, &ob);
        kern(po + r * cols * rs, pa + oa * es, pb + ob * es, cols, la, lb);
    }
    return MMU_OK;
}

mmu_status mmu_binary(mmu_tensor **out, mmu_binary_op op, mmu_tensor *a, mmu_tensor *b) {
    if (op < 0 || op >= MMU_BIN_COUNT) return mmu_fail(MMU_EVALUE, "binary: unknown op %d", (int)op);
    mmu_status st = binary_raw(out, op, a, b);
    if (st || op > MMU_BIN_MINIMUM) return st;
    static const mmu_op ops[] = {MMU_OP_ADD, MMU_OP_SUB, MMU_OP_MUL, MMU_OP_DIV, MMU_OP_MAXIMUM, MMU_OP_MINIMUM};
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, ops[op], 2, (mmu_tensor *[]){a, b}))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n && (op == MMU_BIN_MUL || op == MMU_BIN_DIV || op == MMU_BIN_MAXIMUM || op == MMU_BIN_MINIMUM)) {
        mmu_save(n, 0, a);
        mmu_save(n, 1, b);
    }
    return MMU_OK;
}

/* d(max(a, b)): the gradient goes to the larger input; ties split it in
 * half (torch's rule). which = 0 for a, 1 for b. */
static mmu_status minmax_grad(mmu_tensor **out, mmu_tensor *g, mmu_tensor *a, mmu_tensor *b, int is_max, int which) {
    mmu_tensor *ta = NULL, *tb = NULL;
    /* broadcast a and b to g's shape with zero-cost kernels: x + 0*... is
     * simplest written as expand */
    mmu_status st = mmu_expand(&ta, a, g->ndim, g->shape);
    if (!st) st = mmu_expand(&tb, b, g->ndim, g->shape);
    if (!st) st = mmu_tensor_empty_like(out, g);
    if (!st) {
        const float *pa = mmu_f32(ta), *pb = mmu_f32(tb), *pg = mmu_f32(g);
        float *po = mmu_f32(*out);
        int64_t n = g->numel;
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
        for (int64_t i = 0; i < n; i++) {
            float x = which ? pb[i] : pa[i], y = which ? pa[i] : pb[i];
            int wins = is_max ? x > y : x < y;
            po[i] = x == y ? 0.5f * pg[i] : (wins ? pg[i] : 0.0f);
        }
    }
    mmu_tensor_decref(ta);
    mmu_tensor_decref(tb);
    return st;
}

mmu_status mmu_binary_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mmu_tensor *a = n->saved[0], *b = n->saved[1];
    mmu_status st = MMU_OK;
    for (int i = 0; i < 2 && !st; i++) {
        if (!n->inputs[i].needs_grad) continue;
        mmu_tensor *full = NULL, *tmp = NULL;
        switch (n->op) {
        case MMU_OP_ADD: full = g; mmu_tensor_incref(g); break;
        case MMU_OP_SUB:
            if (i == 0) { full = g; mmu_tensor_incref(g); }
            else st = mmu_unary(&full, MMU_UN_NEG, g);
            break;
        case MMU_OP_MUL: st = binary_raw(&full, MMU_BIN_MUL, g, i == 0 ? b : a); break;
        case MMU_OP_DIV:
            if (i == 0) st = binary_raw(&full, MMU_BIN_DIV, g, b);
            else { /* -g * a / b^2 */
                st = binary_raw(&tmp, MMU_BIN_DIV, a, b);
                mmu_tensor *t2 = NULL;
                if (!st) st = binary_raw(&t2, MMU_BIN_DIV, tmp, b);
                MMU_CLEAR(tmp);
                if (!st) st = binary_raw(&tmp, MMU_BIN_MUL, g, t2);
                mmu_tensor_decref(t2);
                if (!st) st = mmu_unary(&full, MMU_UN_NEG, tmp);
                MMU_CLEAR(tmp);
            }
            break;
        case MMU_OP_MAXIMUM: st = minmax_grad(&full, g, a, b, 1, i); break;
        case MMU_OP_MINIMUM: st = minmax_grad(&full, g, a, b, 0, i); break;
        default: st = mmu_fail(MMU_ERUNTIME, "binary backward: unexpected op");
        }
        if (!st) st = mmu_reduce_to_shape(&gin[i], full, n->inputs[i].ndim, n->inputs[i].shape);
        mmu_tensor_decref(full);
    }
    return st;
}

/* ------------------------------------------------------------------ where */
/* cond (bool), a, b broadcast together -> out = cond ? a : b */
static mmu_status where_raw(mmu_tensor **out, mmu_tensor *cond, mmu_tensor *a, mmu_tensor *b) {
    int n1, ndim;
    int64_t s1[MMU_MAX_DIMS], shape[MMU_MAX_DIMS];
    mmu_status st = mmu_broadcast_shape(&n1, s1, cond->ndim, cond->shape, a->ndim, a->shape, "where");
    if (!st) st = mmu_broadcast_shape(&ndim, shape, n1, s1, b->ndim, b->shape, "where");
    if (!st) st = mmu_tensor_empty(out, a->dtype, ndim, shape);
    if (st) return st;
    int64_t sc[MMU_MAX_DIMS], sa[MMU_MAX_DIMS], sb[MMU_MAX_DIMS];
    broadcast_strides(sc, cond, ndim, shape);
    broadcast_strides(sa, a, ndim, shape);
    broadcast_strides(sb, b, ndim, shape);
    int64_t n = (*out)->numel;
    size_t es = mmu_dtype_size(a->dtype);
    const uint8_t *pc = mmu_bool(cond);
    const char *pa = mmu_data(a), *pb = mmu_data(b);
    char *po = mmu_data(*out);
    /* Fast path: every operand either the output's full size (same element order, as all
     * tensors are contiguous) or a single element -- no per-element index arithmetic. */
    int64_t kc = cond->numel == n ? 1 : 0, ka = a->numel == n ? 1 : 0, kb = b->numel == n ? 1 : 0;
    if ((kc || cond->numel == 1) && (ka || a->numel == 1) && (kb || b->numel == 1) && (es == 4 || es == 8)) {
        /* a bitwise select, not a branch: a random condition would mispredict half the time */
        if (es == 4) {
            const uint32_t *ua = (const uint32_t *)pa, *ub = (const uint32_t *)pb;
            uint32_t *uo = (uint32_t *)po;
#pragma omp parallel for simd schedule(static) if (n > MMU_PAR_GRAIN)
            for (int64_t i = 0; i < n; i++) {
                uint32_t m = 0u - (uint32_t)(pc[i * kc] != 0);
                uo[i] = (ua[i * ka] & m) | (ub[i * kb] & ~m);
            }
        } else {
            const uint64_t *ua = (const uint64_t *)pa, *ub = (const uint64_t *)pb;
            uint64_t *uo = (uint64_t *)po;
#pragma omp parallel for simd schedule(static) if (n > MMU_PAR_GRAIN)
            for (int64_t i = 0; i < n; i++) {
                uint64_t m = 0u - (uint64_t)(pc[i * kc] != 0);
                uo[i] = (ua[i * ka] & m) | (ub[i * kb] & ~m);
            }
        }
        return MMU_OK;
    }
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        int64_t r = i, oc = 0, oa = 0, ob = 0;
        for (int d = ndim - 1; d >= 0; d--) {
            int64_t k = r % shape[d];
            r /= shape[d];
            oc += k * sc[d];
            oa += k * sa[d];
            ob += k * sb[d];
        }
        memcpy(po + i * es, pc[oc] ? pa + oa * es : pb + ob * es, es);
    }
    return MMU_OK;
}

mmu_status mmu_where(mmu_tensor **out, mmu_tensor *cond, mmu_tensor *a, mmu_tensor *b) {
    mmu_status st;
    if ((st = mmu_check_dtype(cond, MMU_BOOL, "where", "condition"))) return st;
    if (a->dtype != b->dtype)
        return mmu_fail(MMU_ETYPE, "where: input and other must have the same dtype, got %s %s and %s %s",
                        mmu_dtype_name(a->dtype), mmu_shape_str(a), mmu_dtype_name(b->dtype), mmu_shape_str(b));
    if ((st = where_raw(out, cond, a, b))) return st;
    mmu_node *n = NULL;
    if ((st = mmu_record(&n, *out, MMU_OP_WHERE, 3, (mmu_tensor *[]){NULL, a, b}))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (n) mmu_save(n, 0, cond);
    return MMU_OK;
}

mmu_status mmu_where_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mmu_tensor *zero = NULL;
    mmu_status st = mmu_tensor_zeros(&zero, MMU_FLOAT32, 0, NULL);
    for (int i = 1; i < 3 && !st; i++) {
        if (!n->inputs[i].needs_grad) continue;
        mmu_tensor *full = NULL;
        st = i == 1 ? where_raw(&full, n->saved[0], g, zero) : where_raw(&full, n->saved[0], zero, g);
        if (!st) st = mmu_reduce_to_shape(&gin[i], full, n->inputs[i].ndim, n->inputs[i].shape);
        mmu_tensor_decref(full);
    }
    mmu_tensor_decref(zero);
    return st;
}

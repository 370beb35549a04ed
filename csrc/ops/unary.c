/* Elementwise math. Transcendental functions run on oneDNN's eltwise
 * primitives (JIT-compiled for the CPU's ISA, vectorised polynomial
 * approximations); trivial ones (neg, clamp, casts) are plain C loops, and so
 * are exp and relu: oneDNN 3.2's exp returns inf and its relu 0 for a NaN
 * input, which would hide a diverging run; torch (and these) give NaN. */
#include <math.h>
#include <string.h>

#include "../core/vmath.h"
#include "ops.h"
#include "../dnnl/mmu_dnnl.h"

static const struct {
    const char *name;
    mmu_op op;
    mmu_eltwise_alg alg; /* MMU_ELT_COUNT: computed in C */
} unary_info[MMU_UN_COUNT] = {
    [MMU_UN_NEG] = {"neg", MMU_OP_NEG, MMU_ELT_COUNT},
    [MMU_UN_EXP] = {"exp", MMU_OP_EXP, MMU_ELT_COUNT},
    [MMU_UN_LOG] = {"log", MMU_OP_LOG, MMU_ELT_LOG},
    [MMU_UN_SQRT] = {"sqrt", MMU_OP_SQRT, MMU_ELT_SQRT},
    [MMU_UN_ABS] = {"abs", MMU_OP_ABS, MMU_ELT_ABS},
    [MMU_UN_TANH] = {"tanh", MMU_OP_TANH, MMU_ELT_TANH},
    [MMU_UN_SIGMOID] = {"sigmoid", MMU_OP_SIGMOID, MMU_ELT_SIGMOID},
    [MMU_UN_RELU] = {"relu", MMU_OP_RELU, MMU_ELT_COUNT},
    [MMU_UN_GELU] = {"gelu", MMU_OP_GELU, MMU_ELT_GELU_ERF},
    [MMU_UN_GELU_TANH] = {"gelu", MMU_OP_GELU_TANH, MMU_ELT_GELU_TANH},
    [MMU_UN_SILU] = {"silu", MMU_OP_SILU, MMU_ELT_SILU},
};

static void neg_kernel(float *o, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < n; i++) o[i] = -x[i];
}

static void exp_kernel(float *o, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < n; i++) o[i] = mmu_exp(x[i]);
}

/* x < 0 ? 0 : x keeps NaN (the comparison is false) */
static void relu_kernel(float *o, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < n; i++) o[i] = x[i] < 0.0f ? 0.0f : x[i];
}

/* e^-x: vmath.h's mmu_exp, except +inf once -x > 88.5 (past float32's range) */
static inline float exp_neg(float x) { return -x > 88.5f ? INFINITY : mmu_exp(-x); }

/* tanh GELU, torch's gelu(approximate='tanh'), forward and backward in one pass each (oneDNN's
 * eltwise and then a pass putting +inf / large-|x| values right took two each way):
 *   y = x (1 + tanh u) / 2 = x·s,  s = sigmoid(2u) = 1 / (1 + e^-2u),  u = c (x + 0.044715 x³),
 *   dy/dx = s + x·s(1 - s)·2u' = s + (e·s)·s·x·2c (1 + 3·0.044715 x²),  e = e^-2u,  c = sqrt(2/pi).
 * The sigmoid form has no 1 + tanh cancellation (x = -5 keeps -2.2e-7 where 1 + tanhf(u) rounds).
 * x = -inf: e = inf, y = -inf·0 = NaN, as torch; x = +inf: y = inf. For |x| > 10 the derivative
 * is 1 (x > 0) or 0 to float precision (its tail is below 1e-35), as torch gives, and x³ or e·s²
 * never overflow into a NaN there; ±inf keeps NaN, as torch's. */
#define GELU_C 0.7978845608028654f
static void gelu_tanh_forward(float *o, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i], u2 = 2.0f * GELU_C * v * fmaf(0.044715f * v, v, 1.0f);
        o[i] = v / (1.0f + exp_neg(u2));
    }
}

static void gelu_tanh_backward(float *d, const float *x, const float *g, int64_t n) {
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        float v = x[i], a = fabsf(v), v2 = v * v;
        float u2 = 2.0f * GELU_C * v * fmaf(0.044715f, v2, 1.0f);
        float e = exp_neg(u2), s = 1.0f / (1.0f + e);
        /* e·s = e / (1 + e) <= 1 first: e alone nears float's max by x = -9.99 */
        float dydx = fmaf(e * s * s * v, 2.0f * GELU_C * fmaf(3.0f * 0.044715f, v2, 1.0f), s);
        d[i] = (a > 10.0f && a < INFINITY) ? (v > 0.0f ? g[i] : 0.0f * g[i]) : g[i] * dydx;
    }
}

/* oneDNN 3.2's gelu_erf gives NaN at x = +inf (x·Φ(x) is inf·1 only in the limit); torch's
 * float64 and scalar paths give +inf, so +inf is put back. -inf stays NaN, as in torch. */
static void gelu_fix_inf(float *o, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < n; i++) o[i] = x[i] == INFINITY ? INFINITY : o[i];
}

/* The C-computed ops: forward kernel, and whether the backward uses the output */
static void c_forward(mmu_unary_op op, float *o, const float *x, int64_t n) {
    switch (op) {
    case MMU_UN_EXP: exp_kernel(o, x, n); break;
    case MMU_UN_RELU: relu_kernel(o, x, n); break;
    default: neg_kernel(o, x, n); break;
    }
}

/* Records the node; saves the output (use-dst backward) or the input. */
static mmu_status record_eltwise(mmu_tensor **out, mmu_op op, mmu_eltwise_alg alg, mmu_tensor *x) {
    mmu_node *n = NULL;
    mmu_status st = mmu_record(&n, *out, op, 1, &x);
    if (!st && n) {
        n->ctx.i[0] = alg;
        /* exp and relu (C) and the oneDNN use-dst algorithms differentiate from the output */
        n->ctx.i[1] = alg == MMU_ELT_COUNT ? op != MMU_OP_NEG : mmu_dnnl_eltwise_has_dst_bwd(alg);
        if (n->ctx.i[1]) st = mmu_save_output(n, 0, *out);
        else if (alg != MMU_ELT_COUNT) mmu_save(n, 0, x);
    }
    if (st) MMU_CLEAR(*out);
    return st;
}

mmu_status mmu_unary(mmu_tensor **out, mmu_unary_op op, mmu_tensor *x) {
    if (op < 0 || op >= MMU_UN_COUNT) return mmu_fail(MMU_EVALUE, "unary: unknown op %d", (int)op);
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, unary_info[op].name, "input");
    if (st) return st;
    if ((st = mmu_tensor_empty_like(out, x))) return st;
    mmu_eltwise_alg alg = unary_info[op].alg;
    if (alg == MMU_ELT_COUNT) c_forward(op, mmu_f32(*out), mmu_f32(x), x->numel);
    else if (op == MMU_UN_GELU_TANH) gelu_tanh_forward(mmu_f32(*out), mmu_f32(x), x->numel);
    else if ((st = mmu_dnnl_eltwise_fwd(alg, 0.0f, 0.0f, mmu_f32(x), mmu_f32(*out), x->numel))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (op == MMU_UN_GELU) gelu_fix_inf(mmu_f32(*out), mmu_f32(x), x->numel);
    return record_eltwise(out, unary_info[op].op, alg, x);
}

mmu_status mmu_pow_scalar(mmu_tensor **out, mmu_tensor *x, double exponent) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "pow", "input");
    if (st) return st;
    if ((st = mmu_tensor_empty_like(out, x))) return st;
    const float *px = mmu_f32(x);
    float *po = mmu_f32(*out);
    int64_t n = x->numel;
    if (exponent == 2.0) { /* the common case (squared errors, norms): exact and memory-bound */
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
        for (int64_t i = 0; i < n; i++) po[i] = px[i] * px[i];
    } else if ((st = mmu_dnnl_eltwise_fwd(MMU_ELT_POW, 1.0f, (float)exponent, px, po, n))) {
        MMU_CLEAR(*out);
        return st;
    }
    mmu_node *nd = NULL;
    if ((st = mmu_record(&nd, *out, MMU_OP_POW, 1, &x))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (nd) {
        nd->ctx.f[0] = exponent;
        mmu_save(nd, 0, x);
    }
    return MMU_OK;
}

mmu_status mmu_clamp(mmu_tensor **out, mmu_tensor *x, int has_min, double min, int has_max, double max) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "clamp", "input");
    if (st) return st;
    if (!has_min && !has_max) return mmu_fail(MMU_EVALUE, "clamp: at least one of min and max must be given");
    if ((st = mmu_tensor_empty_like(out, x))) return st;
    float lo = has_min ? (float)min : -INFINITY, hi = has_max ? (float)max : INFINITY;
    const float *px = mmu_f32(x);
    float *po = mmu_f32(*out);
    int64_t n = x->numel;
    /* torch applies min then max, so min > max gives max everywhere */
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        float v = px[i];
        v = v < lo ? lo : v;
        po[i] = v > hi ? hi : v;
        if (px[i] != px[i]) po[i] = px[i]; /* NaN stays NaN */
    }
    mmu_node *nd = NULL;
    if ((st = mmu_record(&nd, *out, MMU_OP_CLAMP, 1, &x))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (nd) {
        nd->ctx.f[0] = lo;
        nd->ctx.f[1] = hi;
        mmu_save(nd, 0, x);
    }
    return MMU_OK;
}

/* softplus as torch computes it: z = beta·x in float32; z > threshold -> x, else
 * log(1 + exp(z)) / beta by vmath.h's overflow-free, log1p-accurate mmu_softplus (a
 * relative error near 1e-7 for every z, where log(1 + exp(z)) in float32 loses all
 * precision once exp(z) < 6e-8, i.e. z < -16.6). */
// x (any shape), beta, threshold -> out (x's shape)
mmu_status mmu_softplus(mmu_tensor **out, mmu_tensor *x, double beta, double threshold) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "softplus", "input");
    if (st) return st;
    if ((st = mmu_tensor_empty_like(out, x))) return st;
    const float *px = mmu_f32(x);
    float *po = mmu_f32(*out), b = (float)beta, thr = (float)threshold;
    int64_t n = x->numel;
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < n; i++) {
        float z = px[i] * b;
        po[i] = z > thr ? px[i] : mmu_softplusf(z) / b;
    }
    mmu_node *nd = NULL;
    if ((st = mmu_record(&nd, *out, MMU_OP_SOFTPLUS, 1, &x))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (nd) {
        nd->ctx.f[0] = beta;
        nd->ctx.f[1] = threshold;
        mmu_save(nd, 0, x);
    }
    return MMU_OK;
}

mmu_status mmu_unary_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    if (!n->inputs[0].needs_grad) return MMU_OK;
    mmu_status st = mmu_tensor_empty_like(&gin[0], g);
    if (st) return st;
    const float *pg = mmu_f32(g);
    float *pd = mmu_f32(gin[0]);
    int64_t len = g->numel;
    switch (n->op) {
    case MMU_OP_NEG:
        neg_kernel(pd, pg, len);
        return MMU_OK;
    case MMU_OP_EXP: { /* d exp = exp */
        const float *py = mmu_f32(n->saved[0]);
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN)
        for (int64_t i = 0; i < len; i++) pd[i] = pg[i] * py[i];
        return MMU_OK;
    }
    case MMU_OP_RELU: { /* torch's threshold_backward on the output: a NaN output passes g */
        const float *py = mmu_f32(n->saved[0]);
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN)
        for (int64_t i = 0; i < len; i++) pd[i] = py[i] <= 0.0f ? 0.0f : pg[i];
        return MMU_OK;
    }
    case MMU_OP_POW: {
        double p = n->ctx.f[0];
        const float *px = mmu_f32(n->saved[0]);
        if (p == 2.0) {
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN)
            for (int64_t i = 0; i < len; i++) pd[i] = 2.0f * px[i] * pg[i];
            return MMU_OK;
        }
        if (p == 0.0) { /* d/dx x^0 = 0 (torch returns zeros, even at x = 0) */
            memset(pd, 0, len * sizeof(float));
            return MMU_OK;
        }
        return mmu_dnnl_eltwise_bwd(MMU_ELT_POW, 0, 1.0f, (float)p, px, pg, pd, len);
    }
    case MMU_OP_CLAMP: {
        float lo = (float)n->ctx.f[0], hi = (float)n->ctx.f[1];
        const float *px = mmu_f32(n->saved[0]);
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN)
        for (int64_t i = 0; i < len; i++) pd[i] = (px[i] >= lo && px[i] <= hi) ? pg[i] : 0.0f;
        return MMU_OK;
    }
    case MMU_OP_SOFTPLUS: { /* d/dx = sigmoid(beta·x), 1 above the threshold (torch) */
        float b = (float)n->ctx.f[0], thr = (float)n->ctx.f[1];
        const float *px = mmu_f32(n->saved[0]);
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN)
        for (int64_t i = 0; i < len; i++) {
            float z = px[i] * b;
            pd[i] = z > thr ? pg[i] : pg[i] * mmu_sigmoidf(z);
        }
        return MMU_OK;
    }
    case MMU_OP_GELU_TANH: /* the C kernel, from the saved input */
        gelu_tanh_backward(pd, mmu_f32(n->saved[0]), pg, len);
        return MMU_OK;
    default:
        return mmu_dnnl_eltwise_bwd((mmu_eltwise_alg)n->ctx.i[0], (int)n->ctx.i[1], 0.0f, 0.0f,
                                    mmu_f32(n->saved[0]), pg, pd, len);
    }
}

mmu_status mmu_logical_not(mmu_tensor **out, mmu_tensor *x) {
    mmu_status st = mmu_check_dtype(x, MMU_BOOL, "logical_not", "input");
    if (!st) st = mmu_tensor_empty_like(out, x);
    if (st) return st;
    const uint8_t *px = mmu_bool(x);
    uint8_t *po = mmu_bool(*out);
    for (int64_t i = 0; i < x->numel; i++) po[i] = !px[i];
    return MMU_OK;
}

mmu_status mmu_cast(mmu_tensor **out, mmu_tensor *x, mmu_dtype dt) {
    if (dt != MMU_FLOAT32 && dt != MMU_INT64 && dt != MMU_BOOL)
        return mmu_fail(MMU_ETYPE, "to: unknown dtype code %d", (int)dt);
    if (x->dtype == dt) { /* like torch: .float() of a float tensor is itself */
        mmu_tensor_incref(x);
        *out = x;
        return MMU_OK;
    }
    mmu_status st = mmu_tensor_empty(out, dt, x->ndim, x->shape);
    if (st) return st;
    int64_t n = x->numel;
    const void *src = mmu_data(x);
    void *dst = mmu_data(*out);
#define CAST_LOOP(TS, TD, EXPR)                                               \
    do {                                                                      \
        const TS *s = src;                                                    \
        TD *d = dst;                                                          \
        _Pragma("omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)")   \
        for (int64_t i = 0; i < n; i++) d[i] = (EXPR);                        \
    } while (0)
    if (x->dtype == MMU_FLOAT32 && dt == MMU_INT64) CAST_LOOP(float, int64_t, (int64_t)s[i]);
    else if (x->dtype == MMU_FLOAT32) CAST_LOOP(float, uint8_t, s[i] != 0.0f);
    else if (x->dtype == MMU_INT64 && dt == MMU_FLOAT32) CAST_LOOP(int64_t, float, (float)s[i]);
    else if (x->dtype == MMU_INT64) CAST_LOOP(int64_t, uint8_t, s[i] != 0);
    else if (dt == MMU_FLOAT32) CAST_LOOP(uint8_t, float, (float)s[i]);
    else CAST_LOOP(uint8_t, int64_t, (int64_t)s[i]);
#undef CAST_LOOP
    return MMU_OK;
}

/* ------------------------------------------------------------ leaky_relu */
// x (any shape) -> out = x > 0 ? x : slope·x
mmu_status mmu_leaky_relu(mmu_tensor **out, mmu_tensor *x, double slope) {
    mmu_status st = mmu_check_dtype(x, MMU_FLOAT32, "leaky_relu", "input");
    if (st) return st;
    if ((st = mmu_tensor_empty(out, MMU_FLOAT32, x->ndim, x->shape))) return st;
    const float *px = mmu_f32(x);
    float *py = mmu_f32(*out), s = (float)slope;
    int64_t n = x->numel;
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < n; i++) py[i] = px[i] > 0.0f ? px[i] : px[i] * s;
    mmu_node *node = NULL;
    if ((st = mmu_record(&node, *out, MMU_OP_LEAKY_RELU, 1, (mmu_tensor *[]){x}))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (node) {
        node->ctx.f[0] = slope;
        mmu_save(node, 0, x);
    }
    return MMU_OK;
}

// g -> dx = x > 0 ? g : slope·g (torch's rule: slope at x == 0)
mmu_status mmu_leaky_relu_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    mmu_status st = mmu_tensor_empty(&gin[0], MMU_FLOAT32, n->inputs[0].ndim, n->inputs[0].shape);
    if (st) return st;
    const float *px = mmu_f32(n->saved[0]), *pg = mmu_f32(g);
    float *pd = mmu_f32(gin[0]), s = (float)n->ctx.f[0];
    int64_t cnt = g->numel;
#pragma omp parallel for schedule(static) if (cnt > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < cnt; i++) pd[i] = px[i] > 0.0f ? pg[i] : pg[i] * s;
    return MMU_OK;
}

/* ------------------------------------------------------------ swiglu
 * out = silu(gate)·up = gate·up / (1 + e^-gate): LLaMA's MLP activation (SwiGLU) in one pass.
 * Composed, it is a silu pass writing a tensor of the hidden width, a mul pass reading it back,
 * and three passes backward (the mul's two products, then silu's derivative); fused, one pass
 * each way, from the saved inputs:
 *   d gate = g·up·silu'(gate),  silu'(x) = s·(1 + x·(1 - s)),  s = sigmoid(x)
 *   d up   = g·silu(gate)
 * e^-x is exp_neg (above), so that silu(-inf) = -inf / inf = NaN and silu(-100) = -0 as torch's
 * x / (1 + e^-x) gives. */

// gate (any shape), up (gate's shape) -> out (gate's shape)
mmu_status mmu_swiglu(mmu_tensor **out, mmu_tensor *gate, mmu_tensor *up) {
    mmu_status st;
    if ((st = mmu_check_dtype(gate, MMU_FLOAT32, "swiglu", "gate"))) return st;
    if ((st = mmu_check_dtype(up, MMU_FLOAT32, "swiglu", "up"))) return st;
    if (!mmu_same_shape(gate, up))
        return mmu_fail(MMU_EVALUE, "swiglu: gate has shape %s but up has shape %s; they must be equal",
                        mmu_shape_str(gate), mmu_shape_str(up));
    if ((st = mmu_tensor_empty_like(out, gate))) return st;
    const float *pa = mmu_f32(gate), *pb = mmu_f32(up);
    float *po = mmu_f32(*out);
    int64_t n = gate->numel;
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
    for (int64_t i = 0; i < n; i++) po[i] = pa[i] / (1.0f + exp_neg(pa[i])) * pb[i];
    mmu_node *nd = NULL;
    if ((st = mmu_record(&nd, *out, MMU_OP_SWIGLU, 2, (mmu_tensor *[]){gate, up}))) {
        MMU_CLEAR(*out);
        return st;
    }
    if (nd) {
        mmu_save(nd, 0, gate);
        mmu_save(nd, 1, up);
    }
    return MMU_OK;
}

// g (out's shape) -> d gate, d up (the same shape)
mmu_status mmu_swiglu_backward(mmu_node *n, mmu_tensor *g, mmu_tensor **gin) {
    int want_a = n->inputs[0].needs_grad, want_b = n->inputs[1].needs_grad;
    mmu_status st = MMU_OK;
    if (want_a && (st = mmu_tensor_empty_like(&gin[0], g))) return st;
    if (want_b && (st = mmu_tensor_empty_like(&gin[1], g))) return st;
    const float *pg = mmu_f32(g), *pa = mmu_f32(n->saved[0]), *pb = mmu_f32(n->saved[1]);
    float *da = want_a ? mmu_f32(gin[0]) : NULL, *db = want_b ? mmu_f32(gin[1]) : NULL;
    int64_t len = g->numel;
    /* one loop per case, no test inside: each vectorises */
    if (da && db) {
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN)
        for (int64_t i = 0; i < len; i++) {
            float x = pa[i], e = 1.0f + exp_neg(x), s = 1.0f / e;
            da[i] = pg[i] * pb[i] * (s * (1.0f + x * (1.0f - s)));
            db[i] = pg[i] * (x / e);
        }
    } else if (da) {
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN)
        for (int64_t i = 0; i < len; i++) {
            float x = pa[i], s = 1.0f / (1.0f + exp_neg(x));
            da[i] = pg[i] * pb[i] * (s * (1.0f + x * (1.0f - s)));
        }
    } else if (db) {
#pragma omp parallel for schedule(static) if (len > MMU_PAR_GRAIN)
        for (int64_t i = 0; i < len; i++) db[i] = pg[i] * (pa[i] / (1.0f + exp_neg(pa[i])));
    }
    return MMU_OK;
}

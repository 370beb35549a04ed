/* Fused multi-tensor optimizer updates (no autograd): Adam/AdamW, SGD, the
 * gradient norm and in-place scaling of gradient clipping, and the EMA lerp.
 *
 * One call covers every tensor of a parameter group. The elements of all the
 * tensors are cut into fixed spans of at most SPAN elements (never crossing a
 * tensor boundary) and the spans are shared out by a static OpenMP schedule,
 * so a group of many small tensors still uses every core and one read/write
 * pass over p, g, m, v does the whole update (torch's single-tensor path makes
 * about ten passes per tensor, its foreach path one pass per op).
 *
 * Arithmetic follows torch.optim's single-tensor code op by op in float32,
 * with the scalar coefficients (bias corrections, step size) computed in
 * double as torch does in Python. Where ATen's CPU kernels fuse a multiply
 * and an add (add with alpha, lerp, addcmul: measured against torch 2.13)
 * we use fmaf too, so most elements agree bit for bit; the rest differ by an
 * ulp, because ATen's float sqrt is not correctly rounded and ours is.
 * The span boundaries depend only on the tensor sizes, never on the thread
 * count, and the norm sums its per-span partials in span order: the results
 * are bit-identical run to run and across thread counts. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../ops/ops.h"

#define SPAN 16384

typedef struct {
    int t;          /* tensor index */
    int64_t lo, hi; /* element range [lo, hi) within tensor t */
} span;

/* Spans over n tensors of the given numels; *out malloc'd (metadata, not
 * tensor data). Returns the count, or -1 when out of memory. */
static int64_t make_spans(span **out, int n, mmu_tensor *const *ts) {
    int64_t count = 0;
    for (int i = 0; i < n; i++) count += (ts[i]->numel + SPAN - 1) / SPAN;
    span *s = malloc((size_t)(count ? count : 1) * sizeof *s);
    if (!s) return -1;
    int64_t k = 0;
    for (int i = 0; i < n; i++)
        for (int64_t lo = 0; lo < ts[i]->numel; lo += SPAN)
            s[k++] = (span){i, lo, lo + SPAN < ts[i]->numel ? lo + SPAN : ts[i]->numel};
    *out = s;
    return count;
}

/* Every list entry float32 with the numel of params[i]. */
static mmu_status check_list(const char *op, const char *what, int n, mmu_tensor *const *params,
                             mmu_tensor *const *ts) {
    for (int i = 0; i < n; i++) {
        if (!ts[i]) return mmu_fail(MMU_EVALUE, "%s: %s[%d] is missing", op, what, i);
        if (ts[i]->dtype != MMU_FLOAT32)
            return mmu_fail(MMU_ETYPE, "%s: %s[%d] must be float32, got %s", op, what, i,
                            mmu_dtype_name(ts[i]->dtype));
        if (params && !mmu_same_shape(ts[i], params[i]))
            return mmu_fail(MMU_EVALUE, "%s: %s[%d] has shape %s but its parameter has shape %s", op, what, i,
                            mmu_shape_str(ts[i]), mmu_shape_str(params[i]));
    }
    return MMU_OK;
}

/* ---------------------------------------------------------------- Adam / AdamW */

/* Per-tensor coefficients (they differ when tensors have different step counts). */
typedef struct {
    float step_size_neg; /* -lr / (1 - beta1^step)          */
    float bc2_sqrt;      /* sqrt(1 - beta2^step)            */
} adam_coef;

typedef struct {
    float decay, wd, sign, w1, omw1, beta2, omb2, eps, step_size_neg, bc2_sqrt;
} adam_k;

/* One span of one tensor. wd_mode 0: none, 1: decoupled (AdamW), 2: L2 (Adam);
 * called with literal flags so each combination compiles to its own vector loop. */
static inline __attribute__((always_inline)) void adam_span(float *restrict pp, const float *restrict gg,
                                                            float *restrict mm, float *restrict vv,
                                                            float *restrict vx, int64_t n, const adam_k *kc,
                                                            const int wd_mode, const int amsgrad, const int lerp_lo) {
    const float decay = kc->decay, wd = kc->wd, sign = kc->sign, w1 = kc->w1, omw1 = kc->omw1;
    const float beta2 = kc->beta2, omb2 = kc->omb2, eps = kc->eps, ssn = kc->step_size_neg, bc2s = kc->bc2_sqrt;
    for (int64_t i = 0; i < n; i++) {
        float gi = gg[i] * sign;
        float pi = pp[i];
        if (wd_mode == 1) pi = pi * decay;       /* param.mul_(1 - lr * wd)        */
        if (wd_mode == 2) gi = fmaf(wd, pi, gi); /* grad.add(param, alpha=wd)      */
        float mi = mm[i];                        /* exp_avg.lerp_(grad, 1 - beta1) */
        mi = lerp_lo ? fmaf(w1, gi - mi, mi) : fmaf(-(gi - mi), omw1, gi);
        float vi = vv[i] * beta2;                /* exp_avg_sq.mul_(beta2)          */
        vi = fmaf(omb2 * gi, gi, vi);            /*   .addcmul_(g, g, value=1-beta2) */
        mm[i] = mi;
        vv[i] = vi;
        float vd = vi;
        if (amsgrad) {                           /* torch.maximum propagates NaN    */
            float x = vx[i];
            vd = (x != x || vi != vi) ? NAN : (x > vi ? x : vi);
            vx[i] = vd;
        }
        float denom = sqrtf(vd) / bc2s + eps;    /* (sqrt(v) / bc2_sqrt).add_(eps) */
        pp[i] = pi + (ssn * mi) / denom;         /* addcdiv_(m, denom, -step_size) */
    }
}

/* The tensors every update writes count one in-place write each (the version
 * counter: a graph that saved a parameter refuses to backpropagate through
 * its updated value, as torch's optimizers bump the version too). */
static void bump_versions(int n, mmu_tensor *const *ts) {
    for (int i = 0; ts && i < n; i++) mmu_bump_version(ts[i]);
}

/* p, g, m, v (and vmax when amsgrad) lists of n tensors shaped like p[i]:
 * one Adam step on each, in place. h->decoupled: AdamW's p *= 1 - lr*wd
 * (else Adam's g += wd*p). steps[i] is the step count after this update. */
mmu_status mmu_adam_step(int n, mmu_tensor *const *p, mmu_tensor *const *g, mmu_tensor *const *m,
                         mmu_tensor *const *v, mmu_tensor *const *vmax, const int64_t *steps,
                         const mmu_adam_hparams *h) {
    const char *op = h->decoupled ? "adamw" : "adam";
    mmu_status st;
    if (n < 0) return mmu_fail(MMU_EVALUE, "%s: negative tensor count %d", op, n);
    if ((st = check_list(op, "params", n, NULL, p)) || (st = check_list(op, "grads", n, p, g)) ||
        (st = check_list(op, "exp_avgs", n, p, m)) || (st = check_list(op, "exp_avg_sqs", n, p, v)) ||
        (h->amsgrad && (st = check_list(op, "max_exp_avg_sqs", n, p, vmax))))
        return st;
    for (int i = 0; i < n; i++)
        if (steps[i] < 1) return mmu_fail(MMU_EVALUE, "%s: step count of tensor %d is %lld (must be >= 1)", op, i,
                                          (long long)steps[i]);
    if (n == 0) return MMU_OK;
    adam_coef *coef = malloc((size_t)n * sizeof *coef);
    span *spans = NULL;
    int64_t ns = make_spans(&spans, n, p);
    if (!coef || ns < 0) {
        free(coef);
        free(spans);
        return mmu_fail(MMU_ENOMEM, "%s: out of memory", op);
    }
    for (int i = 0; i < n; i++) {
        double bc1 = 1.0 - pow(h->beta1, (double)steps[i]);
        double bc2 = 1.0 - pow(h->beta2, (double)steps[i]);
        coef[i].step_size_neg = (float)-(h->lr / bc1);
        coef[i].bc2_sqrt = (float)sqrt(bc2);
    }
    /* torch casts each Python scalar to float at the op that uses it */
    const float decay = (float)(1.0 - h->lr * h->weight_decay), wd = (float)h->weight_decay;
    const float w1 = (float)(1.0 - h->beta1), beta2 = (float)h->beta2, omb2 = (float)(1.0 - h->beta2);
    const float eps = (float)h->eps, omw1 = 1.0f - w1;
    /* maximize: g * -1 is exactly torch's -g */
    const float sign = h->maximize ? -1.0f : 1.0f;
    const int wd_mode = h->weight_decay == 0.0 ? 0 : h->decoupled ? 1 : 2;
    const int amsgrad = h->amsgrad != 0, lerp_lo = fabsf(w1) < 0.5f;
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += p[i]->numel;

#pragma omp parallel for schedule(static) if (total > MMU_PAR_GRAIN)
    for (int64_t k = 0; k < ns; k++) {
        const int t = spans[k].t;
        const int64_t lo = spans[k].lo, len = spans[k].hi - lo;
        float *pp = mmu_f32(p[t]) + lo, *mm = mmu_f32(m[t]) + lo, *vv = mmu_f32(v[t]) + lo;
        const float *gg = mmu_f32(g[t]) + lo;
        float *vx = amsgrad ? mmu_f32(vmax[t]) + lo : NULL;
        adam_k kc = {decay, wd, sign, w1, omw1, beta2, omb2, eps, coef[t].step_size_neg, coef[t].bc2_sqrt};
        /* the flags become constants of one inlined copy each: every copy vectorises */
        switch (wd_mode * 4 + amsgrad * 2 + lerp_lo) {
#define ADAM_CASE(W, A, L) case W * 4 + A * 2 + L: adam_span(pp, gg, mm, vv, vx, len, &kc, W, A, L); break;
            ADAM_CASE(0, 0, 0) ADAM_CASE(0, 0, 1) ADAM_CASE(0, 1, 0) ADAM_CASE(0, 1, 1)
            ADAM_CASE(1, 0, 0) ADAM_CASE(1, 0, 1) ADAM_CASE(1, 1, 0) ADAM_CASE(1, 1, 1)
            ADAM_CASE(2, 0, 0) ADAM_CASE(2, 0, 1) ADAM_CASE(2, 1, 0) ADAM_CASE(2, 1, 1)
#undef ADAM_CASE
        }
    }
    free(coef);
    free(spans);
    bump_versions(n, p);
    bump_versions(n, m);
    bump_versions(n, v);
    if (amsgrad) bump_versions(n, vmax);
    return MMU_OK;
}

/* ---------------------------------------------------------------- SGD */

typedef struct {
    float sign, wd, mom, omd, neg_lr;
} sgd_k;

/* One span. mom_mode 0: no momentum, 1: first step (buf = grad), 2: buf = mom*buf + (1-damp)*grad;
 * called with literal flags so each combination compiles to its own vector loop. */
static inline __attribute__((always_inline)) void sgd_span(float *restrict pp, const float *restrict gg,
                                                           float *restrict bb, int64_t n, const sgd_k *kc,
                                                           const int mom_mode, const int use_wd, const int nesterov) {
    const float sign = kc->sign, wd = kc->wd, mom = kc->mom, omd = kc->omd, neg_lr = kc->neg_lr;
    for (int64_t i = 0; i < n; i++) {
        float gi = gg[i] * sign;                /* maximize: -grad                 */
        float pi = pp[i];
        if (use_wd) gi = fmaf(wd, pi, gi);      /* grad.add(param, alpha=wd)       */
        if (mom_mode) {
            float b;
            if (mom_mode == 1) b = gi;          /* torch.clone(grad)               */
            else {
                b = bb[i] * mom;                /* buf.mul_(momentum)              */
                b = fmaf(omd, gi, b);           /*   .add_(grad, alpha=1-dampening) */
            }
            bb[i] = b;
            gi = nesterov ? fmaf(mom, b, gi) : b; /* grad.add(buf, alpha=momentum) */
        }
        pp[i] = fmaf(neg_lr, gi, pi);           /* param.add_(grad, alpha=-lr)     */
    }
}

/* p, g (and buf when momentum != 0) lists of n tensors; first[i] != 0 means
 * buf[i] is new: torch's first step sets it to the gradient (no dampening). */
mmu_status mmu_sgd_step(int n, mmu_tensor *const *p, mmu_tensor *const *g, mmu_tensor *const *buf,
                        const uint8_t *first, const mmu_sgd_hparams *h) {
    const char *op = "sgd";
    mmu_status st;
    const int use_mom = h->momentum != 0.0;
    if (n < 0) return mmu_fail(MMU_EVALUE, "%s: negative tensor count %d", op, n);
    if ((st = check_list(op, "params", n, NULL, p)) || (st = check_list(op, "grads", n, p, g)) ||
        (use_mom && (st = check_list(op, "momentum_buffers", n, p, buf))))
        return st;
    if (n == 0) return MMU_OK;
    span *spans = NULL;
    int64_t ns = make_spans(&spans, n, p);
    if (ns < 0) return mmu_fail(MMU_ENOMEM, "%s: out of memory", op);
    const float wd = (float)h->weight_decay, mom = (float)h->momentum, omd = (float)(1.0 - h->dampening);
    const float neg_lr = (float)-h->lr;
    const int use_wd = h->weight_decay != 0.0, nesterov = use_mom && h->nesterov;
    const sgd_k kc = {h->maximize ? -1.0f : 1.0f, wd, mom, omd, neg_lr};
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += p[i]->numel;

#pragma omp parallel for schedule(static) if (total > MMU_PAR_GRAIN)
    for (int64_t k = 0; k < ns; k++) {
        const int t = spans[k].t;
        const int64_t lo = spans[k].lo, len = spans[k].hi - lo;
        float *pp = mmu_f32(p[t]) + lo, *bb = use_mom ? mmu_f32(buf[t]) + lo : NULL;
        const float *gg = mmu_f32(g[t]) + lo;
        const int mom_mode = !use_mom ? 0 : first[t] ? 1 : 2;
        switch (mom_mode * 4 + use_wd * 2 + nesterov) {
#define SGD_CASE(M, W, N) case M * 4 + W * 2 + N: sgd_span(pp, gg, bb, len, &kc, M, W, N); break;
            SGD_CASE(0, 0, 0) SGD_CASE(0, 1, 0) SGD_CASE(1, 0, 0) SGD_CASE(1, 0, 1) SGD_CASE(1, 1, 0)
            SGD_CASE(1, 1, 1) SGD_CASE(2, 0, 0) SGD_CASE(2, 0, 1) SGD_CASE(2, 1, 0) SGD_CASE(2, 1, 1)
#undef SGD_CASE
        }
    }
    free(spans);
    bump_versions(n, p);
    if (use_mom) bump_versions(n, buf);
    return MMU_OK;
}

/* ---------------------------------------------------------------- gradient clipping */

/* Partial of one span: sum |x|^p in double (p = 2 and 1 specialised), or the
 * max |x| (p = inf; NaN wins, as torch's norm). */
static double span_partial(const float *x, int64_t lo, int64_t hi, double p) {
    if (isinf(p)) {
        float m = 0.0f;
        int bad = 0;
#pragma omp simd reduction(max : m) reduction(| : bad)
        for (int64_t i = lo; i < hi; i++) {
            float a = fabsf(x[i]);
            bad |= a != a;
            m = a > m ? a : m;
        }
        return bad ? NAN : m;
    }
    /* simd reductions: the lane split is fixed by the binary, so still deterministic */
    double acc = 0.0;
    if (p == 2.0) {
#pragma omp simd reduction(+ : acc)
        for (int64_t i = lo; i < hi; i++) acc += (double)x[i] * (double)x[i];
    } else if (p == 1.0) {
#pragma omp simd reduction(+ : acc)
        for (int64_t i = lo; i < hi; i++) acc += fabs((double)x[i]);
    } else {
        for (int64_t i = lo; i < hi; i++) acc += pow(fabs((double)x[i]), p);
    }
    return acc;
}

/* The p-norm of all n tensors taken together (p > 0, or inf), in double. */
mmu_status mmu_multi_norm(double *out, int n, mmu_tensor *const *ts, double p) {
    const char *op = "clip_grad_norm_";
    mmu_status st;
    if (!(p > 0.0)) return mmu_fail(MMU_EVALUE, "%s: norm_type must be > 0 or inf, got %g", op, p);
    if ((st = check_list(op, "grads", n, NULL, ts))) return st;
    *out = 0.0;
    if (n <= 0) return MMU_OK;
    span *spans = NULL;
    int64_t ns = make_spans(&spans, n, ts);
    double *part = malloc((size_t)(ns ? ns : 1) * sizeof *part);
    if (ns < 0 || !part) {
        free(spans);
        free(part);
        return mmu_fail(MMU_ENOMEM, "%s: out of memory", op);
    }
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += ts[i]->numel;
#pragma omp parallel for schedule(static) if (total > MMU_PAR_GRAIN)
    for (int64_t k = 0; k < ns; k++) part[k] = span_partial(mmu_f32(ts[spans[k].t]), spans[k].lo, spans[k].hi, p);
    double r = 0.0;
    if (isinf(p)) {
        for (int64_t k = 0; k < ns; k++) r = (part[k] != part[k] || part[k] > r) ? part[k] : r;
        if (r != r) r = NAN;
    } else {
        for (int64_t k = 0; k < ns; k++) r += part[k];
        r = p == 2.0 ? sqrt(r) : p == 1.0 ? r : pow(r, 1.0 / p);
    }
    free(spans);
    free(part);
    *out = r;
    return MMU_OK;
}

/* ts[i] *= c, in place, over all n tensors (float32 multiply as torch's mul_). */
mmu_status mmu_multi_scale_(int n, mmu_tensor *const *ts, float c) {
    mmu_status st;
    if ((st = check_list("clip_grad_norm_", "grads", n, NULL, ts))) return st;
    if (n <= 0) return MMU_OK;
    span *spans = NULL;
    int64_t ns = make_spans(&spans, n, ts);
    if (ns < 0) return mmu_fail(MMU_ENOMEM, "clip_grad_norm_: out of memory");
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += ts[i]->numel;
#pragma omp parallel for schedule(static) if (total > MMU_PAR_GRAIN)
    for (int64_t k = 0; k < ns; k++) {
        float *x = mmu_f32(ts[spans[k].t]);
        for (int64_t i = spans[k].lo; i < spans[k].hi; i++) x[i] *= c;
    }
    free(spans);
    bump_versions(n, ts);
    return MMU_OK;
}

/* ---------------------------------------------------------------- EMA */

/* shadow[i] += w * (src[i] - shadow[i]) over all n tensors (torch's lerp_
 * with weight w = 1 - decay); w == 1 copies src exactly. */
mmu_status mmu_multi_lerp_(int n, mmu_tensor *const *shadow, mmu_tensor *const *src, double weight) {
    const char *op = "ema_update";
    mmu_status st;
    if ((st = check_list(op, "shadow", n, NULL, shadow)) || (st = check_list(op, "params", n, shadow, src)))
        return st;
    if (!(weight >= 0.0 && weight <= 1.0))
        return mmu_fail(MMU_EVALUE, "%s: weight must be in [0, 1], got %g", op, weight);
    if (n <= 0) return MMU_OK;
    span *spans = NULL;
    int64_t ns = make_spans(&spans, n, shadow);
    if (ns < 0) return mmu_fail(MMU_ENOMEM, "%s: out of memory", op);
    const float w = (float)weight, omw = 1.0f - w;
    const int copy = weight == 1.0, lo_branch = w < 0.5f;
    int64_t total = 0;
    for (int i = 0; i < n; i++) total += shadow[i]->numel;
#pragma omp parallel for schedule(static) if (total > MMU_PAR_GRAIN)
    for (int64_t k = 0; k < ns; k++) {
        float *restrict s = mmu_f32(shadow[spans[k].t]);
        const float *restrict x = mmu_f32(src[spans[k].t]);
        int64_t lo = spans[k].lo, hi = spans[k].hi;
        if (copy) memcpy(s + lo, x + lo, (size_t)(hi - lo) * sizeof *s);
        else if (lo_branch)
            for (int64_t i = lo; i < hi; i++) s[i] = fmaf(w, x[i] - s[i], s[i]);
        else
            for (int64_t i = lo; i < hi; i++) s[i] = fmaf(-(x[i] - s[i]), omw, x[i]);
    }
    free(spans);
    bump_versions(n, shadow);
    return MMU_OK;
}

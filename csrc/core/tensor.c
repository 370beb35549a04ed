/* Tensors and their shared storage. */
#include <stdlib.h>
#include <string.h>

#include "mmu.h"

static mmu_storage *storage_new(size_t nbytes) {
    mmu_storage *s = calloc(1, sizeof *s);
    if (!s) return NULL;
    s->data = mmu_alloc(nbytes);
    if (!s->data) { free(s); return NULL; }
    s->nbytes = nbytes;
    s->refcount = 1;
    return s;
}

static void storage_decref(mmu_storage *s) {
    if (s && __atomic_sub_fetch(&s->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        mmu_free(s->data, s->nbytes);
        free(s);
    }
}

static mmu_status check_shape(int ndim, const int64_t *shape, int64_t *numel) {
    if (ndim < 0 || ndim > MMU_MAX_DIMS)
        return mmu_fail(MMU_EVALUE, "tensors have at most %d dims, got %d", MMU_MAX_DIMS, ndim);
    int64_t n = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return mmu_fail(MMU_EVALUE, "negative dimension %lld in shape %s",
                            (long long)shape[d], mmu_dims_str(ndim, shape));
        if (shape[d] && n > INT64_MAX / 64 / shape[d])
            return mmu_fail(MMU_EVALUE, "shape %s is too large", mmu_dims_str(ndim, shape));
        n *= shape[d];
    }
    *numel = n;
    return MMU_OK;
}

static mmu_tensor *tensor_header(mmu_dtype dt, int ndim, const int64_t *shape, int64_t numel) {
    mmu_tensor *t = calloc(1, sizeof *t);
    if (!t) return NULL;
    t->refcount = 1;
    t->dtype = dt;
    t->ndim = ndim;
    if (ndim) memcpy(t->shape, shape, ndim * sizeof *shape);
    t->numel = numel;
    return t;
}

mmu_status mmu_tensor_empty(mmu_tensor **out, mmu_dtype dt, int ndim, const int64_t *shape) {
    int64_t numel;
    /* the element size sizes the buffer: an unknown code would make one the
     * kernels then overrun (or a 0-byte one) */
    if (!mmu_dtype_size(dt)) return mmu_fail(MMU_ETYPE, "unknown dtype code %d (float32 = 0, int64 = 1, bool = 2)", (int)dt);
    mmu_status st = check_shape(ndim, shape, &numel);
    if (st) return st;
    size_t nbytes = (size_t)numel * mmu_dtype_size(dt);
    mmu_tensor *t = tensor_header(dt, ndim, shape, numel);
    if (!t) return mmu_fail(MMU_ENOMEM, "out of memory for a tensor header");
    t->storage = storage_new(nbytes);
    if (!t->storage) {
        free(t);
        return mmu_fail(MMU_ENOMEM, "out of memory allocating %zu bytes for a %s tensor of shape %s",
                        nbytes, mmu_dtype_name(dt), mmu_dims_str(ndim, shape));
    }
    *out = t;
    return MMU_OK;
}

mmu_status mmu_tensor_zeros(mmu_tensor **out, mmu_dtype dt, int ndim, const int64_t *shape) {
    mmu_status st = mmu_tensor_empty(out, dt, ndim, shape);
    if (st) return st;
    size_t nbytes = (size_t)(*out)->numel * mmu_dtype_size(dt);
    char *p = mmu_data(*out);
    if (nbytes < (1 << 20)) {
        memset(p, 0, nbytes);
    } else {
        /* first touch in parallel: pages land where the threads that use them run */
        int64_t chunks = (int64_t)(nbytes >> 16) + 1;
#pragma omp parallel for schedule(static)
        for (int64_t c = 0; c < chunks; c++) {
            size_t lo = (size_t)c << 16, hi = lo + ((size_t)1 << 16);
            if (hi > nbytes) hi = nbytes;
            if (lo < hi) memset(p + lo, 0, hi - lo);
        }
    }
    return MMU_OK;
}

mmu_status mmu_tensor_full(mmu_tensor **out, mmu_dtype dt, int ndim, const int64_t *shape, double value) {
    mmu_status st = mmu_tensor_empty(out, dt, ndim, shape);
    if (st) return st;
    int64_t n = (*out)->numel;
    if (dt == MMU_FLOAT32) {
        float v = (float)value, *p = mmu_f32(*out);
#pragma omp parallel for schedule(static) if (n > MMU_PAR_GRAIN)
        for (int64_t i = 0; i < n; i++) p[i] = v;
    } else if (dt == MMU_INT64) {
        int64_t v = (int64_t)value, *p = mmu_i64(*out);
        for (int64_t i = 0; i < n; i++) p[i] = v;
    } else {
        memset(mmu_data(*out), value != 0.0, (size_t)n);
    }
    return MMU_OK;
}

mmu_status mmu_tensor_empty_like(mmu_tensor **out, const mmu_tensor *t) {
    return mmu_tensor_empty(out, t->dtype, t->ndim, t->shape);
}

mmu_status mmu_tensor_view(mmu_tensor **out, mmu_tensor *t, int ndim, const int64_t *shape) {
    int64_t numel;
    mmu_status st = check_shape(ndim, shape, &numel);
    if (st) return st;
    if (numel != t->numel)
        return mmu_fail(MMU_EVALUE, "view: shape %s is invalid for a tensor of shape %s (%lld elements)",
                        mmu_dims_str(ndim, shape), mmu_shape_str(t), (long long)t->numel);
    mmu_tensor *v = tensor_header(t->dtype, ndim, shape, numel);
    if (!v) return mmu_fail(MMU_ENOMEM, "out of memory for a tensor header");
    v->storage = t->storage;
    __atomic_add_fetch(&t->storage->refcount, 1, __ATOMIC_RELAXED);
    v->offset = t->offset;
    *out = v;
    return MMU_OK;
}

mmu_status mmu_tensor_clone(mmu_tensor **out, const mmu_tensor *t) {
    mmu_status st = mmu_tensor_empty_like(out, t);
    if (st) return st;
    memcpy(mmu_data(*out), mmu_data(t), (size_t)t->numel * mmu_dtype_size(t->dtype));
    return MMU_OK;
}

mmu_status mmu_tensor_detach(mmu_tensor **out, mmu_tensor *t) {
    return mmu_tensor_view(out, t, t->ndim, t->shape);
}

void mmu_tensor_incref(mmu_tensor *t) {
    if (t) __atomic_add_fetch(&t->refcount, 1, __ATOMIC_RELAXED);
}

void mmu_tensor_decref(mmu_tensor *t) {
    if (!t) return;
    if (__atomic_sub_fetch(&t->refcount, 1, __ATOMIC_ACQ_REL) == 0) {
        storage_decref(t->storage);
        mmu_tensor_decref(t->grad);
        mmu_node_decref(t->grad_fn);
        if (t->grad_hooks && mmu_grad_hooks_free) mmu_grad_hooks_free(t->grad_hooks);
        free(t);
    }
}

int mmu_tensor_is_exclusive(const mmu_tensor *t) {
    return __atomic_load_n(&t->refcount, __ATOMIC_ACQUIRE) == 1 &&
           __atomic_load_n(&t->storage->refcount, __ATOMIC_ACQUIRE) == 1;
}

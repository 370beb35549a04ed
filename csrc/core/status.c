/* Errors: a thread-local message plus the status code the caller returns.
 * The binding turns (code, message) into the matching Python exception. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "mmu.h"

static _Thread_local char g_message[1024];

mmu_status mmu_fail(mmu_status code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(g_message, sizeof g_message, fmt, ap);
    va_end(ap);
    return code;
}

const char *mmu_error_message(void) { return g_message; }

/* Shape strings go into rotating buffers so that one message can format
 * several shapes: mmu_fail(..., "%s vs %s", mmu_shape_str(a), mmu_shape_str(b)). */
#define SHAPE_BUFS 8
static _Thread_local char g_shape_buf[SHAPE_BUFS][128];
static _Thread_local int g_shape_next;

const char *mmu_dims_str(int ndim, const int64_t *shape) {
    char *buf = g_shape_buf[g_shape_next];
    g_shape_next = (g_shape_next + 1) % SHAPE_BUFS;
    size_t pos = 0;
    pos += snprintf(buf + pos, 128 - pos, "(");
    for (int d = 0; d < ndim && pos < 120; d++)
        pos += snprintf(buf + pos, 128 - pos, d ? ", %lld" : "%lld", (long long)shape[d]);
    if (ndim == 1 && pos < 126) pos += snprintf(buf + pos, 128 - pos, ",");
    snprintf(buf + pos, 128 - pos, ")");
    return buf;
}

const char *mmu_shape_str(const mmu_tensor *t) { return mmu_dims_str(t->ndim, t->shape); }

size_t mmu_dtype_size(mmu_dtype dt) {
    switch ((int)dt) {
    case MMU_FLOAT32: return 4;
    case MMU_INT64: return 8;
    case MMU_BOOL: return 1;
    }
    return 0;
}

const char *mmu_dtype_name(mmu_dtype dt) {
    switch (dt) {
    case MMU_FLOAT32: return "float32";
    case MMU_INT64: return "int64";
    case MMU_BOOL: return "bool";
    }
    return "?";
}

mmu_status mmu_wrap_dim(int *out, int64_t dim, int ndim, const char *op) {
    int64_t n = ndim > 0 ? ndim : 1; /* a 0-d tensor accepts dim 0 / -1 like torch */
    if (dim < -n || dim >= n)
        return mmu_fail(MMU_EINDEX, "%s: dim %lld is out of range for a tensor with %d dims "
                        "(expected in [%lld, %lld])", op, (long long)dim, ndim, (long long)-n,
                        (long long)(n - 1));
    *out = (int)(dim < 0 ? dim + n : dim);
    return MMU_OK;
}

mmu_status mmu_check_dtype(const mmu_tensor *t, mmu_dtype dt, const char *op, const char *arg) {
    if (t->dtype != dt)
        return mmu_fail(MMU_ETYPE, "%s: %s must be %s, got %s with shape %s", op, arg,
                        mmu_dtype_name(dt), mmu_dtype_name(t->dtype), mmu_shape_str(t));
    return MMU_OK;
}

int mmu_same_shape(const mmu_tensor *a, const mmu_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return 0;
    return 1;
}

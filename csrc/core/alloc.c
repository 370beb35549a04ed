/* Caching allocator: 64-byte aligned buffers in size classes.
 *
 * Size classes are 4 per power of two (at most 25% slack), like jemalloc's.
 * A freed buffer goes on its class's free list; the next request of the same
 * class reuses it, so a training loop that allocates the same activations
 * every step stops calling the OS after the first step. The cache is capped
 * (MMU_CACHE_CAP bytes); beyond it buffers go back to the system. Small
 * requests are still 64-byte aligned (oneDNN and AVX-512 like that). */
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "mmu.h"

#define ALIGN 64
#define NUM_CLASSES 256
#define MMU_CACHE_CAP ((size_t)4 << 30)

typedef struct free_block { struct free_block *next; } free_block;

static pthread_mutex_t g_lock = PTHREAD_MUTEX_INITIALIZER;
static free_block *g_free[NUM_CLASSES];
static size_t g_in_use, g_cached, g_peak;

/* class index and the size it stands for */
static int size_class(size_t n, size_t *class_bytes) {
    if (n <= ALIGN) { *class_bytes = ALIGN; return 0; }
    int lg = 63 - __builtin_clzll((unsigned long long)(n - 1)); /* 2^lg < n <= 2^(lg+1) */
    size_t base = (size_t)1 << lg, quarter = base >> 2;
    size_t k = (n - base + quarter - 1) / quarter;   /* 1..4 */
    *class_bytes = base + k * quarter;
    if (*class_bytes % ALIGN) *class_bytes = (*class_bytes + ALIGN - 1) / ALIGN * ALIGN;
    int idx = (lg - 6) * 4 + (int)k;
    return idx < NUM_CLASSES ? idx : -1;
}

/* Under AddressSanitizer (MMU_DEBUG=1 builds) every buffer is its own
 * exact-size allocation and is freed at once: size-class slack and recycled
 * blocks would hide overflows and uses after free from ASan. */
#if defined(__SANITIZE_ADDRESS__)
#define MMU_ALLOC_EXACT 1
#else
#define MMU_ALLOC_EXACT 0
#endif

/* A new buffer of 4 MB or more asks for transparent huge pages over its page-aligned
 * part (as NumPy does for its arrays), where the kernel's THP mode is 'madvise'. A
 * stream over hundreds of MB of weights (a decoding step reads every weight once)
 * otherwise takes a TLB miss every 4 kB: the 49 linears of a GPT-2-small step on
 * one thread measured ~70 ms on 4 kB pages vs ~55 ms on NumPy's huge-paged arrays.
 * Advice only: a refusal changes nothing. */
static void advise_huge_pages(void *p, size_t bytes) {
#if defined(MADV_HUGEPAGE)
    if (bytes < ((size_t)4 << 20)) return;
    uintptr_t lo = ((uintptr_t)p + 4095) & ~(uintptr_t)4095, hi = ((uintptr_t)p + bytes) & ~(uintptr_t)4095;
    if (hi > lo) madvise((void *)lo, hi - lo, MADV_HUGEPAGE);
#else
    (void)p;
    (void)bytes;
#endif
}

void *mmu_alloc(size_t nbytes) {
    size_t bytes;
    int c = size_class(nbytes ? nbytes : 1, &bytes);
    void *p = NULL;
    if (MMU_ALLOC_EXACT) {
        if (posix_memalign(&p, ALIGN, nbytes ? nbytes : 1) != 0) return NULL;
        pthread_mutex_lock(&g_lock);
        g_in_use += bytes;
        if (g_in_use > g_peak) g_peak = g_in_use;
        pthread_mutex_unlock(&g_lock);
        return p;
    }
    pthread_mutex_lock(&g_lock);
    if (c >= 0 && g_free[c]) {
        p = g_free[c];
        g_free[c] = g_free[c]->next;
        g_cached -= bytes;
    }
    pthread_mutex_unlock(&g_lock);
    if (!p && posix_memalign(&p, ALIGN, bytes) != 0) {
        /* the cache may be holding what we need: give it back and retry once */
        mmu_alloc_empty_cache();
        if (posix_memalign(&p, ALIGN, bytes) != 0) return NULL;
    }
    advise_huge_pages(p, bytes);
    pthread_mutex_lock(&g_lock);
    g_in_use += bytes;
    if (g_in_use > g_peak) g_peak = g_in_use;
    pthread_mutex_unlock(&g_lock);
    return p;
}

void mmu_free(void *ptr, size_t nbytes) {
    if (!ptr) return;
    size_t bytes;
    int c = size_class(nbytes ? nbytes : 1, &bytes);
    pthread_mutex_lock(&g_lock);
    g_in_use -= bytes;
    if (!MMU_ALLOC_EXACT && c >= 0 && g_cached + bytes <= MMU_CACHE_CAP) {
        free_block *b = ptr;
        b->next = g_free[c];
        g_free[c] = b;
        g_cached += bytes;
        ptr = NULL;
    }
    pthread_mutex_unlock(&g_lock);
    free(ptr);
}

void mmu_alloc_empty_cache(void) {
    pthread_mutex_lock(&g_lock);
    for (int c = 0; c < NUM_CLASSES; c++) {
        while (g_free[c]) {
            free_block *b = g_free[c];
            g_free[c] = b->next;
            free(b);
        }
    }
    g_cached = 0;
    pthread_mutex_unlock(&g_lock);
}

void mmu_alloc_stats(size_t *in_use, size_t *cached, size_t *peak) {
    pthread_mutex_lock(&g_lock);
    if (in_use) *in_use = g_in_use;
    if (cached) *cached = g_cached;
    if (peak) *peak = g_peak;
    pthread_mutex_unlock(&g_lock);
}

/* peak := bytes in use now, so the next peak measures one piece of work (tests of copy-free ops) */
void mmu_alloc_reset_peak(void) {
    pthread_mutex_lock(&g_lock);
    g_peak = g_in_use;
    pthread_mutex_unlock(&g_lock);
}

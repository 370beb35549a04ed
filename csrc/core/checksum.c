/* CRC-32C (Castagnoli, polynomial 0x1EDC6F41 reflected = 0x82F63B78): the
 * checksum mmu.io stores in the files it writes, so that a flipped bit or a
 * zeroed block anywhere in a checkpoint is caught on load.
 *
 * Why not zlib.crc32: the zlib this Python links (1.2.13) runs ~300 MB/s, a
 * third of a second on a 100 MB checkpoint; the SSE4.2 crc32 instruction
 * computes CRC-32C at several GB/s (every x86-64-v3 CPU, mmu's baseline, has
 * it). The table fallback gives the same values on other CPUs.
 * Check value (the standard one): crc32c("123456789") = 0xE3069283. */
#include <string.h>

#include "mmu.h"

#if defined(__SSE4_2__)
#include <nmmintrin.h>

uint32_t mmu_crc32c(uint32_t crc, const void *data, size_t n) {
    const unsigned char *p = data;
    uint64_t c = ~crc;
    while (n && ((uintptr_t)p & 7)) {
        c = _mm_crc32_u8((uint32_t)c, *p++);
        n--;
    }
    /* one stream, 8 bytes an instruction: several GB/s, which is plenty next
     * to the disk (three interleaved streams would need a pclmul fold) */
    for (; n >= 8; n -= 8, p += 8) {
        uint64_t v;
        memcpy(&v, p, 8);
        c = _mm_crc32_u64(c, v);
    }
    while (n--) c = _mm_crc32_u8((uint32_t)c, *p++);
    return ~(uint32_t)c;
}

#else

uint32_t mmu_crc32c(uint32_t crc, const void *data, size_t n) {
    static uint32_t table[256];
    static int ready;
    if (!__atomic_load_n(&ready, __ATOMIC_ACQUIRE)) {
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t v = i;
            for (int k = 0; k < 8; k++) v = v & 1 ? (v >> 1) ^ 0x82F63B78u : v >> 1;
            table[i] = v;
        }
        __atomic_store_n(&ready, 1, __ATOMIC_RELEASE);
    }
    const unsigned char *p = data;
    uint32_t c = ~crc;
    while (n--) c = table[(c ^ *p++) & 0xff] ^ (c >> 8);
    return ~c;
}

#endif

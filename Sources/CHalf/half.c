/* Half-precision kernels. These sit on every hot path (every bf16/f16 checkpoint is decoded and
   encoded through them), so they are written to be memory-bound: F16C + AVX2 where the CPU has
   it (checked at run time, so the binary still runs on baseline x86-64), plain loops that the
   compiler vectorises otherwise. Unaligned 16-bit data are read and written with memcpy. */
#include "CHalf.h"
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static inline uint32_t f32_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }
static inline float bits_f32(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }

/* ---- portable scalar f16 ---- */
static inline float half_to_float(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1F, man = h & 0x3FF;
    if (exp == 0x1F) return bits_f32(sign | 0x7F800000 | (man << 13));      /* Inf / NaN */
    if (exp == 0) {
        if (man == 0) return bits_f32(sign);
        /* subnormal: man * 2^-24 is exact in f32 */
        float v = (float)man * 5.9604644775390625e-08f;
        return sign ? -v : v;
    }
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

static inline uint16_t float_to_half(float f) {
    uint32_t x = f32_bits(f);
    uint16_t sign = (uint16_t)((x >> 16) & 0x8000);
    uint32_t ax = x & 0x7FFFFFFF;
    if (ax > 0x7F800000) return sign | 0x7E00 | (uint16_t)((ax >> 13) & 0x3FF);  /* NaN, quiet */
    if (ax >= 0x477FF000) return sign | 0x7C00;          /* rounds to >= 65520: Inf */
    if (ax < 0x38800000) {                                /* result is subnormal or zero */
        if (ax < 0x33000000) return sign;                 /* < 2^-25: rounds to zero */
        uint32_t e = ax >> 23, m = (ax & 0x7FFFFF) | 0x800000;
        uint32_t shift = 126 - e;                         /* 14..24 */
        uint32_t q = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (q & 1))) q++;
        return sign | (uint16_t)q;
    }
    uint32_t r = ax + 0xFFF + ((ax >> 13) & 1);           /* round to nearest even at bit 13 */
    return sign | (uint16_t)((r - 0x38000000) >> 13);
}

#if defined(__x86_64__)
__attribute__((target("avx2,f16c")))
static void f16_to_f32_f16c(const uint8_t *s, float *d, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm_loadu_si128((const __m128i *)(s + 2 * i));
        _mm256_storeu_ps(d + i, _mm256_cvtph_ps(h));
    }
    for (; i < n; i++) { uint16_t h; memcpy(&h, s + 2 * i, 2); d[i] = half_to_float(h); }
}

__attribute__((target("avx2,f16c")))
static void f32_to_f16_f16c(const float *s, uint8_t *d, size_t n) {
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m128i h = _mm256_cvtps_ph(_mm256_loadu_ps(s + i), _MM_FROUND_TO_NEAREST_INT);
        _mm_storeu_si128((__m128i *)(d + 2 * i), h);
    }
    for (; i < n; i++) { uint16_t h = float_to_half(s[i]); memcpy(d + 2 * i, &h, 2); }
}

static int has_f16c(void) {
    /* Atomic: worker threads ask concurrently (ThreadSanitizer flagged the plain int). */
    static int cached = -1;
    int c = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (c < 0) {
        c = __builtin_cpu_supports("f16c") && __builtin_cpu_supports("avx2");
        __atomic_store_n(&cached, c, __ATOMIC_RELAXED);
    }
    return c;
}
#else
static int has_f16c(void) { return 0; }
#endif

int wt_half_uses_f16c(void) { return has_f16c(); }

void wt_f16_to_f32(const void *src, float *dst, size_t n) {
    const uint8_t *s = (const uint8_t *)src;
#if defined(__x86_64__)
    if (has_f16c()) { f16_to_f32_f16c(s, dst, n); return; }
#endif
    for (size_t i = 0; i < n; i++) { uint16_t h; memcpy(&h, s + 2 * i, 2); dst[i] = half_to_float(h); }
}

void wt_f32_to_f16(const float *src, void *dst, size_t n) {
    uint8_t *d = (uint8_t *)dst;
#if defined(__x86_64__)
    if (has_f16c()) { f32_to_f16_f16c(src, d, n); return; }
#endif
    for (size_t i = 0; i < n; i++) { uint16_t h = float_to_half(src[i]); memcpy(d + 2 * i, &h, 2); }
}

void wt_bf16_to_f32(const void *src, float *dst, size_t n) {
    const uint8_t *s = (const uint8_t *)src;
    for (size_t i = 0; i < n; i++) {
        uint16_t h; memcpy(&h, s + 2 * i, 2);
        dst[i] = bits_f32((uint32_t)h << 16);
    }
}

void wt_f32_to_bf16(const float *src, void *dst, size_t n) {
    uint8_t *d = (uint8_t *)dst;
    for (size_t i = 0; i < n; i++) {
        uint32_t b = f32_bits(src[i]);
        uint32_t rne = (b + 0x7FFF + ((b >> 16) & 1)) >> 16;
        /* NaN stays NaN: keep the payload's top bits and set the quiet bit */
        uint16_t h = (uint16_t)(((b & 0x7FFFFFFF) > 0x7F800000) ? ((b >> 16) | 0x0040) : rne);
        memcpy(d + 2 * i, &h, 2);
    }
}

/* ggml's block encoders and decoders at C speed. Each format has a portable path, which states the
   rules (and mirrors the Swift code it replaced, so outputs are byte-identical to earlier wtool
   and to ggml), and an AVX2 path that computes the same bytes eight lanes at a time. Built with
   -ffp-contract=off: a fused multiply-add would round differently from ggml's separate
   multiply and add. Blocks whose reciprocal scale overflows (subnormal scales) take the portable
   path, whose saturating conversions the vector instructions do not share. */
#include "CQuant.h"
#include "CHalf.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* ---------------------------------------------------------------- portable rules */

/* C's (int)v as x86 computes it (cvttss2si): NaN, infinities and values beyond the int32 range
   give INT_MIN. Only blocks whose reciprocal scale overflows (a subnormal scale, stored as an f16
   zero) meet those; ggml's compiled casts give them these bytes. */
static inline int trunc_int(float v) {
    if (!(fabsf(v) < 2147483648.0f)) return INT32_MIN;
    return (int)v;
}

/* roundf: nearest, ties away from zero (v - trunc(v) is exact in f32); INT_MIN as above. */
static inline int round_away(float v) {
    int t = trunc_int(v);
    if (t == INT32_MIN) return t;
    float frac = v - (float)t;
    return t + (frac >= 0.5f) - (frac <= -0.5f);
}

/* trit + 1 of ggml's lroundf(v) + 1: a non-finite product gives lroundf's LONG_MIN, whose low
   32 bits are 0, so the trit is 0 */
static inline uint8_t trit_code(float v) {
    int r = round_away(v);
    if (r == INT32_MIN) return 1;
    return (uint8_t)(r < -1 ? 0 : (r > 1 ? 2 : r + 1));
}

static inline uint8_t clamp_u8(int v, int hi) { return (uint8_t)(v < 0 ? 0 : (v > hi ? hi : v)); }

static inline void store_half(float v, uint8_t *o) { wt_f32_to_f16(&v, o, 1); }
static inline float load_half(const uint8_t *s) { float v; wt_f16_to_f32(s, &v, 1); return v; }

/* The value of largest magnitude with its sign; the first one on ties, +0 when all are zero. */
static inline float signed_max(const float *x) {
    float amax = 0, mx = 0;
    for (int j = 0; j < 32; j++) if (amax < fabsf(x[j])) { amax = fabsf(x[j]); mx = x[j]; }
    return mx;
}

/* ggml's strict comparisons: of +0.0 and -0.0 the first one seen stays. */
static inline void min_max(const float *x, float *lo, float *hi) {
    float a = 3.40282347e38f, b = -3.40282347e38f;
    for (int j = 0; j < 32; j++) { if (x[j] < a) a = x[j]; if (x[j] > b) b = x[j]; }
    *lo = a; *hi = b;
}

/* byte j: q[j] in the low nibble, q[j + 16] in the high one */
static inline void pack_nibbles(const uint8_t *q, uint8_t *o) {
    for (int j = 0; j < 16; j++) o[j] = (uint8_t)((q[j] & 15) | (q[j + 16] << 4));
}

/* bit j of one little-endian u32: bit 4 of q[j] */
static inline void store_high_bits(const uint8_t *q, uint8_t *o) {
    uint32_t qh = 0;
    for (int j = 0; j < 32; j++) qh |= (uint32_t)((q[j] >> 4) & 1) << j;
    for (int k = 0; k < 4; k++) o[k] = (uint8_t)(qh >> (8 * k));
}

static void q8_0_block(const float *x, uint8_t *o) {
    float amax = 0;
    for (int j = 0; j < 32; j++) amax = fmaxf(amax, fabsf(x[j]));
    float d = amax / 127, id = d != 0 ? 1 / d : 0;
    store_half(d, o);
    for (int j = 0; j < 32; j++) o[2 + j] = (uint8_t)((unsigned)round_away(x[j] * id) & 0xFF);
}

/* Q4_0 (levels 16, 18-byte blocks) and Q5_0 (levels 32, 22 bytes): d = signed max / -(levels/2) */
static void q_0_block(const float *x, uint8_t *o, int levels) {
    uint8_t q[32];
    float d = signed_max(x) / (float)(-levels / 2), id = d != 0 ? 1 / d : 0;
    float offset = (float)(levels / 2) + 0.5f;
    store_half(d, o);
    for (int j = 0; j < 32; j++) q[j] = clamp_u8(trunc_int(x[j] * id + offset), levels - 1);
    if (levels == 32) { store_high_bits(q, o + 2); pack_nibbles(q, o + 6); } else pack_nibbles(q, o + 2);
}

/* Q4_1 (20 bytes) and Q5_1 (24 bytes): d = (max - min) / (levels - 1), m = min */
static void q_1_block(const float *x, uint8_t *o, int levels) {
    uint8_t q[32];
    float lo, hi;
    min_max(x, &lo, &hi);
    float d = (hi - lo) / (float)(levels - 1), id = d != 0 ? 1 / d : 0;
    store_half(d, o);
    store_half(lo, o + 2);
    for (int j = 0; j < 32; j++) q[j] = clamp_u8(trunc_int((x[j] - lo) * id + 0.5f), levels - 1);
    if (levels == 32) { store_high_bits(q, o + 4); pack_nibbles(q, o + 8); } else pack_nibbles(q, o + 4);
}

/* Ternary super-blocks: d = max |x|, trit + 1 = roundf(x / d) + 1 in {0, 1, 2}. */
static float trits_portable(const float *x, uint8_t *q) {
    float amax = 0;
    for (int j = 0; j < 256; j++) amax = fmaxf(amax, fabsf(x[j]));
    float id = amax != 0 ? 1 / amax : 0;
    for (int j = 0; j < 256; j++) q[j] = trit_code(x[j] * id);
    return amax;
}

/* Trits in base 3, first most significant, scaled so trit k decodes as ((u8)(b * 3^k) * 3) >> 8;
   4-trit bytes are padded so their first trit is the top one. */
static inline uint8_t pack_trits(const uint8_t *q, int first, int stride, int count) {
    unsigned v = 0;
    for (int k = 0; k < count; k++) v = v * 3 + q[first + k * stride];
    if (count == 4) v *= 3;
    return (uint8_t)((v * 256 + 242) / 243);
}

static void tq1_0_pack(const uint8_t *q, float d, uint8_t *o) {
    for (int m = 0; m < 32; m++) o[m] = pack_trits(q, m, 32, 5);
    for (int m = 0; m < 16; m++) o[32 + m] = pack_trits(q, 160 + m, 16, 5);
    for (int m = 0; m < 4; m++) o[48 + m] = pack_trits(q, 240 + m, 4, 4);
    store_half(d, o + 52);
}

/* Per 128 elements, byte m holds elements m + 32k at bits 2k. */
static void tq2_0_pack(const uint8_t *q, float d, uint8_t *o) {
    for (int c = 0; c < 2; c++)
        for (int m = 0; m < 32; m++) {
            const uint8_t *e = q + c * 128 + m;
            o[c * 32 + m] = (uint8_t)(e[0] | e[32] << 2 | e[64] << 4 | e[96] << 6);
        }
    store_half(d, o + 64);
}

/* ---------------------------------------------------------------- AVX2 */
#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,f16c")))

AVX2 static inline __m256 abs8(__m256 v) { return _mm256_andnot_ps(_mm256_set1_ps(-0.0f), v); }

AVX2 static inline float hmax8(__m256 v) {
    __m128 m = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_max_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_max_ss(m, _mm_shuffle_ps(m, m, 1)));
}

AVX2 static inline float hmin8(__m256 v) {
    __m128 m = _mm_min_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    m = _mm_min_ps(m, _mm_movehl_ps(m, m));
    return _mm_cvtss_f32(_mm_min_ss(m, _mm_shuffle_ps(m, m, 1)));
}

/* max |x| over 32 values */
AVX2 static inline float amax32(const __m256 *v) {
    return hmax8(_mm256_max_ps(_mm256_max_ps(abs8(v[0]), abs8(v[1])), _mm256_max_ps(abs8(v[2]), abs8(v[3]))));
}

/* roundf of eight lanes, as round_away (the values are far inside the int32 range) */
AVX2 static inline __m256i round_away8(__m256 v) {
    __m256i t = _mm256_cvttps_epi32(v);
    __m256 frac = _mm256_sub_ps(v, _mm256_cvtepi32_ps(t));
    __m256i up = _mm256_castps_si256(_mm256_cmp_ps(frac, _mm256_set1_ps(0.5f), _CMP_GE_OQ));
    __m256i down = _mm256_castps_si256(_mm256_cmp_ps(frac, _mm256_set1_ps(-0.5f), _CMP_LE_OQ));
    return _mm256_add_epi32(_mm256_sub_epi32(t, up), down);   /* a true compare is -1 */
}

/* 32 int32 lanes in [0, 255] (unsigned) or [-128, 127] (signed) to 32 bytes in order */
AVX2 static inline __m256i bytes32(__m256i a, __m256i b, __m256i c, __m256i d, int is_signed) {
    __m256i ab = _mm256_packs_epi32(a, b), cd = _mm256_packs_epi32(c, d);
    __m256i r = is_signed ? _mm256_packs_epi16(ab, cd) : _mm256_packus_epi16(ab, cd);
    return _mm256_permutevar8x32_epi32(r, _mm256_setr_epi32(0, 4, 1, 5, 2, 6, 3, 7));
}

AVX2 static inline void store_half_avx2(float v, uint8_t *o) {
    uint16_t h = _cvtss_sh(v, _MM_FROUND_TO_NEAREST_INT);
    memcpy(o, &h, 2);
}

AVX2 static inline float load_half_avx2(const uint8_t *s) { uint16_t h; memcpy(&h, s, 2); return _cvtsh_ss(h); }

AVX2 static inline void load32(const float *x, __m256 *v) {
    for (int k = 0; k < 4; k++) v[k] = _mm256_loadu_ps(x + 8 * k);
}

AVX2 static inline void store_nibbles(__m256i q, uint8_t *o) {
    __m128i lo = _mm256_castsi256_si128(q), hi = _mm256_extracti128_si256(q, 1);
    _mm_storeu_si128((__m128i *)o, _mm_or_si128(lo, _mm_slli_epi16(hi, 4)));
}

AVX2 static inline void store_high_bits_avx2(__m256i q, uint8_t *o) {
    uint32_t qh = (uint32_t)_mm256_movemask_epi8(_mm256_slli_epi16(q, 3));   /* bit 4 -> bit 7 */
    memcpy(o, &qh, 4);
}

/* x * id + offset, truncated, clamped to [0, hi], for 32 lanes */
AVX2 static inline __m256i codes32(const __m256 *v, __m256 shift, __m256 id, __m256 offset, int hi) {
    __m256i r[4];
    for (int k = 0; k < 4; k++) {
        __m256 s = _mm256_add_ps(_mm256_mul_ps(_mm256_sub_ps(v[k], shift), id), offset);
        r[k] = _mm256_max_epi32(_mm256_min_epi32(_mm256_cvttps_epi32(s), _mm256_set1_epi32(hi)), _mm256_setzero_si256());
    }
    return bytes32(r[0], r[1], r[2], r[3], 0);
}

AVX2 static void encode_q8_0_avx2(const float *x, size_t n, uint8_t *out) {
    for (size_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        uint8_t *o = out + 34 * b;
        __m256 v[4];
        load32(xb, v);
        float d = amax32(v) / 127, id = d != 0 ? 1 / d : 0;
        if (!isfinite(id)) { q8_0_block(xb, o); continue; }
        store_half_avx2(d, o);
        __m256 vid = _mm256_set1_ps(id);
        __m256i q = bytes32(round_away8(_mm256_mul_ps(v[0], vid)), round_away8(_mm256_mul_ps(v[1], vid)),
                            round_away8(_mm256_mul_ps(v[2], vid)), round_away8(_mm256_mul_ps(v[3], vid)), 1);
        _mm256_storeu_si256((__m256i *)(o + 2), q);
    }
}

AVX2 static void encode_q_0_avx2(const float *x, size_t n, uint8_t *out, int levels) {
    size_t bytes = levels == 32 ? 22 : 18;
    for (size_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        uint8_t *o = out + bytes * b;
        __m256 v[4];
        load32(xb, v);
        float amax = amax32(v), mx = 0;
        if (amax != 0) {   /* the first value of that magnitude, as ggml's strict < keeps */
            __m256 m = _mm256_set1_ps(amax);
            uint32_t hits = 0;
            for (int k = 0; k < 4; k++) hits |= (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(abs8(v[k]), m, _CMP_EQ_OQ)) << (8 * k);
            mx = xb[__builtin_ctz(hits)];
        }
        float d = mx / (float)(-levels / 2), id = d != 0 ? 1 / d : 0;
        if (!isfinite(id)) { q_0_block(xb, o, levels); continue; }
        store_half_avx2(d, o);
        __m256i q = codes32(v, _mm256_setzero_ps(), _mm256_set1_ps(id), _mm256_set1_ps((float)(levels / 2) + 0.5f), levels - 1);
        if (levels == 32) { store_high_bits_avx2(q, o + 2); store_nibbles(_mm256_and_si256(q, _mm256_set1_epi8(15)), o + 6); }
        else store_nibbles(q, o + 2);
    }
}

AVX2 static void encode_q_1_avx2(const float *x, size_t n, uint8_t *out, int levels) {
    size_t bytes = levels == 32 ? 24 : 20;
    for (size_t b = 0; b < n / 32; b++) {
        const float *xb = x + 32 * b;
        uint8_t *o = out + bytes * b;
        __m256 v[4];
        load32(xb, v);
        float lo = hmin8(_mm256_min_ps(_mm256_min_ps(v[0], v[1]), _mm256_min_ps(v[2], v[3])));
        float hi = hmax8(_mm256_max_ps(_mm256_max_ps(v[0], v[1]), _mm256_max_ps(v[2], v[3])));
        if (lo == 0 || hi == 0) min_max(xb, &lo, &hi);   /* which zero, +0 or -0, is the first seen */
        float d = (hi - lo) / (float)(levels - 1), id = d != 0 ? 1 / d : 0;
        if (!isfinite(id) || !isfinite(d)) { q_1_block(xb, o, levels); continue; }
        store_half_avx2(d, o);
        store_half_avx2(lo, o + 2);
        __m256i q = codes32(v, _mm256_set1_ps(lo), _mm256_set1_ps(id), _mm256_set1_ps(0.5f), levels - 1);
        if (levels == 32) { store_high_bits_avx2(q, o + 4); store_nibbles(_mm256_and_si256(q, _mm256_set1_epi8(15)), o + 8); }
        else store_nibbles(q, o + 4);
    }
}

/* trits + 1 of one 256-value super-block into q; returns d, or -1 when the portable path must run */
AVX2 static float trits_avx2(const float *x, uint8_t *q) {
    __m256 m = _mm256_setzero_ps();
    for (int k = 0; k < 32; k++) m = _mm256_max_ps(m, abs8(_mm256_loadu_ps(x + 8 * k)));
    float amax = hmax8(m), id = amax != 0 ? 1 / amax : 0;
    if (!isfinite(id)) return -1;
    __m256 vid = _mm256_set1_ps(id);
    __m256i one = _mm256_set1_epi32(1);
    for (int c = 0; c < 8; c++) {
        __m256i r[4];
        for (int k = 0; k < 4; k++) r[k] = _mm256_add_epi32(round_away8(_mm256_mul_ps(_mm256_loadu_ps(x + 32 * c + 8 * k), vid)), one);
        _mm256_storeu_si256((__m256i *)(q + 32 * c), bytes32(r[0], r[1], r[2], r[3], 0));
    }
    return amax;
}

AVX2 static void encode_tq_avx2(const float *x, size_t n, uint8_t *out, int tq2) {
    uint8_t q[256];
    size_t bytes = tq2 ? 66 : 54;
    for (size_t b = 0; b < n / 256; b++) {
        const float *xb = x + 256 * b;
        float d = trits_avx2(xb, q);
        if (d < 0) d = trits_portable(xb, q);
        if (tq2) {
            for (int c = 0; c < 2; c++) {
                const uint8_t *e = q + 128 * c;
                __m256i v = _mm256_loadu_si256((const __m256i *)e);
                v = _mm256_or_si256(v, _mm256_slli_epi16(_mm256_loadu_si256((const __m256i *)(e + 32)), 2));
                v = _mm256_or_si256(v, _mm256_slli_epi16(_mm256_loadu_si256((const __m256i *)(e + 64)), 4));
                v = _mm256_or_si256(v, _mm256_slli_epi16(_mm256_loadu_si256((const __m256i *)(e + 96)), 6));
                _mm256_storeu_si256((__m256i *)(out + bytes * b + 32 * c), v);
            }
            store_half_avx2(d, out + bytes * b + 64);
        } else {
            tq1_0_pack(q, d, out + bytes * b);
        }
    }
}

/* eight int8 codes -> f32 */
AVX2 static inline __m256 f32_of_i8(const uint8_t *s) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)s)));
}

AVX2 static void decode_q8_0_avx2(const uint8_t *src, size_t n, float *y) {
    for (size_t b = 0; b < n / 32; b++) {
        const uint8_t *s = src + 34 * b;
        __m256 d = _mm256_set1_ps(load_half_avx2(s));
        for (int k = 0; k < 4; k++) _mm256_storeu_ps(y + 32 * b + 8 * k, _mm256_mul_ps(d, f32_of_i8(s + 2 + 8 * k)));
    }
}

/* the 32 codes of a 4/5-bit block as int32 lanes: nibbles, plus bit 4 from qh when given */
AVX2 static inline void codes_of(const uint8_t *qs, const uint8_t *qh, __m256i *c) {
    __m128i bytes = _mm_loadu_si128((const __m128i *)qs);
    __m128i lo = _mm_and_si128(bytes, _mm_set1_epi8(15)), hi = _mm_and_si128(_mm_srli_epi16(bytes, 4), _mm_set1_epi8(15));
    c[0] = _mm256_cvtepu8_epi32(lo);
    c[1] = _mm256_cvtepu8_epi32(_mm_srli_si128(lo, 8));
    c[2] = _mm256_cvtepu8_epi32(hi);
    c[3] = _mm256_cvtepu8_epi32(_mm_srli_si128(hi, 8));
    if (qh) {
        uint32_t h;
        memcpy(&h, qh, 4);
        __m256i bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128), all = _mm256_set1_epi32((int)h);
        for (int k = 0; k < 4; k++) {
            __m256i set = _mm256_cmpeq_epi32(_mm256_and_si256(all, _mm256_slli_epi32(bits, 8 * k)), _mm256_slli_epi32(bits, 8 * k));
            c[k] = _mm256_or_si256(c[k], _mm256_and_si256(set, _mm256_set1_epi32(16)));
        }
    }
}

/* Q4_0 / Q5_0: d * (q - levels/2) */
AVX2 static void decode_q_0_avx2(const uint8_t *src, size_t n, float *y, int levels) {
    size_t bytes = levels == 32 ? 22 : 18;
    for (size_t b = 0; b < n / 32; b++) {
        const uint8_t *s = src + bytes * b;
        __m256 d = _mm256_set1_ps(load_half_avx2(s));
        __m256i c[4];
        codes_of(levels == 32 ? s + 6 : s + 2, levels == 32 ? s + 2 : NULL, c);
        for (int k = 0; k < 4; k++)
            _mm256_storeu_ps(y + 32 * b + 8 * k, _mm256_mul_ps(d, _mm256_cvtepi32_ps(_mm256_sub_epi32(c[k], _mm256_set1_epi32(levels / 2)))));
    }
}

/* Q4_1 / Q5_1: d * q + m */
AVX2 static void decode_q_1_avx2(const uint8_t *src, size_t n, float *y, int levels) {
    size_t bytes = levels == 32 ? 24 : 20;
    for (size_t b = 0; b < n / 32; b++) {
        const uint8_t *s = src + bytes * b;
        __m256 d = _mm256_set1_ps(load_half_avx2(s)), m = _mm256_set1_ps(load_half_avx2(s + 2));
        __m256i c[4];
        codes_of(levels == 32 ? s + 8 : s + 4, levels == 32 ? s + 4 : NULL, c);
        for (int k = 0; k < 4; k++)
            _mm256_storeu_ps(y + 32 * b + 8 * k, _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(c[k])), m));
    }
}

AVX2 static size_t first_nonfinite_avx2(const float *x, size_t n) {
    const __m256i expo = _mm256_set1_epi32(0x7F800000);
    size_t i = 0;
    for (; i + 32 <= n; i += 32) {
        __m256i any = _mm256_setzero_si256();
        for (int k = 0; k < 4; k++) {
            __m256i e = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(x + i + 8 * k)), expo);
            any = _mm256_or_si256(any, _mm256_cmpeq_epi32(e, expo));
        }
        if (!_mm256_testz_si256(any, any)) break;
    }
    for (; i < n; i++) if (!isfinite(x[i])) return i;
    return n;
}

/* CHalf checks the same two features (AVX2 and F16C) once for the process */
static int cpu_has_avx2(void) { return wt_half_uses_f16c(); }
#else
static int cpu_has_avx2(void) { return 0; }
#endif

static int avx2_allowed = 1;

void wt_quant_allow_avx2(int allow) { __atomic_store_n(&avx2_allowed, allow, __ATOMIC_RELAXED); }
int wt_quant_uses_avx2(void) { return cpu_has_avx2() && __atomic_load_n(&avx2_allowed, __ATOMIC_RELAXED); }

/* ---------------------------------------------------------------- entry points */

#if defined(__x86_64__)
#define VECTOR(call) do { if (wt_quant_uses_avx2()) { call; return; } } while (0)
#else
#define VECTOR(call) do { } while (0)
#endif

void wt_encode_q8_0(const float *x, size_t n, void *out) {
    VECTOR(encode_q8_0_avx2(x, n, out));
    for (size_t b = 0; b < n / 32; b++) q8_0_block(x + 32 * b, (uint8_t *)out + 34 * b);
}

void wt_encode_q4_0(const float *x, size_t n, void *out) {
    VECTOR(encode_q_0_avx2(x, n, out, 16));
    for (size_t b = 0; b < n / 32; b++) q_0_block(x + 32 * b, (uint8_t *)out + 18 * b, 16);
}

void wt_encode_q5_0(const float *x, size_t n, void *out) {
    VECTOR(encode_q_0_avx2(x, n, out, 32));
    for (size_t b = 0; b < n / 32; b++) q_0_block(x + 32 * b, (uint8_t *)out + 22 * b, 32);
}

void wt_encode_q4_1(const float *x, size_t n, void *out) {
    VECTOR(encode_q_1_avx2(x, n, out, 16));
    for (size_t b = 0; b < n / 32; b++) q_1_block(x + 32 * b, (uint8_t *)out + 20 * b, 16);
}

void wt_encode_q5_1(const float *x, size_t n, void *out) {
    VECTOR(encode_q_1_avx2(x, n, out, 32));
    for (size_t b = 0; b < n / 32; b++) q_1_block(x + 32 * b, (uint8_t *)out + 24 * b, 32);
}

void wt_encode_tq1_0(const float *x, size_t n, void *out) {
    VECTOR(encode_tq_avx2(x, n, out, 0));
    uint8_t q[256];
    for (size_t b = 0; b < n / 256; b++) { float d = trits_portable(x + 256 * b, q); tq1_0_pack(q, d, (uint8_t *)out + 54 * b); }
}

void wt_encode_tq2_0(const float *x, size_t n, void *out) {
    VECTOR(encode_tq_avx2(x, n, out, 1));
    uint8_t q[256];
    for (size_t b = 0; b < n / 256; b++) { float d = trits_portable(x + 256 * b, q); tq2_0_pack(q, d, (uint8_t *)out + 66 * b); }
}

void wt_decode_q8_0(const void *src, size_t n, float *y) {
    VECTOR(decode_q8_0_avx2(src, n, y));
    const uint8_t *s = src;
    for (size_t b = 0; b < n / 32; b++) {
        float d = load_half(s + 34 * b);
        for (int j = 0; j < 32; j++) y[32 * b + j] = d * (float)(int8_t)s[34 * b + 2 + j];
    }
}

/* the 32 codes of a 4/5-bit block */
static inline void codes_portable(const uint8_t *qs, const uint8_t *qh, int *c) {
    uint32_t h = qh ? (uint32_t)qh[0] | (uint32_t)qh[1] << 8 | (uint32_t)qh[2] << 16 | (uint32_t)qh[3] << 24 : 0;
    for (int j = 0; j < 16; j++) {
        c[j] = (qs[j] & 15) | (int)((h >> j) & 1) << 4;
        c[j + 16] = (qs[j] >> 4) | (int)((h >> (j + 16)) & 1) << 4;
    }
}

static void decode_q_0(const uint8_t *src, size_t n, float *y, int levels) {
    size_t bytes = levels == 32 ? 22 : 18;
    int c[32];
    for (size_t b = 0; b < n / 32; b++) {
        const uint8_t *s = src + bytes * b;
        float d = load_half(s);
        codes_portable(levels == 32 ? s + 6 : s + 2, levels == 32 ? s + 2 : NULL, c);
        for (int j = 0; j < 32; j++) y[32 * b + j] = d * (float)(c[j] - levels / 2);
    }
}

static void decode_q_1(const uint8_t *src, size_t n, float *y, int levels) {
    size_t bytes = levels == 32 ? 24 : 20;
    int c[32];
    for (size_t b = 0; b < n / 32; b++) {
        const uint8_t *s = src + bytes * b;
        float d = load_half(s), m = load_half(s + 2);
        codes_portable(levels == 32 ? s + 8 : s + 4, levels == 32 ? s + 4 : NULL, c);
        for (int j = 0; j < 32; j++) y[32 * b + j] = d * (float)c[j] + m;
    }
}

void wt_decode_q4_0(const void *src, size_t n, float *y) { VECTOR(decode_q_0_avx2(src, n, y, 16)); decode_q_0(src, n, y, 16); }
void wt_decode_q5_0(const void *src, size_t n, float *y) { VECTOR(decode_q_0_avx2(src, n, y, 32)); decode_q_0(src, n, y, 32); }
void wt_decode_q4_1(const void *src, size_t n, float *y) { VECTOR(decode_q_1_avx2(src, n, y, 16)); decode_q_1(src, n, y, 16); }
void wt_decode_q5_1(const void *src, size_t n, float *y) { VECTOR(decode_q_1_avx2(src, n, y, 32)); decode_q_1(src, n, y, 32); }

size_t wt_first_nonfinite(const float *x, size_t n) {
#if defined(__x86_64__)
    if (wt_quant_uses_avx2()) return first_nonfinite_avx2(x, n);
#endif
    for (size_t i = 0; i < n; i++) if (!isfinite(x[i])) return i;
    return n;
}

/* compressed-tensors' round-to-nearest integer quantization, streamed by rows: codes, scales,
   zero points, the packed words and the decoded values in one pass over a row (the caller measures
   the error on the decoded values while they are still in cache). The rules are in CQuant.h; the
   portable path states them, the AVX2 path computes the same bits eight lanes at a time
   (divisions, not reciprocals, as the Swift reference and compressed-tensors divide). */
#include "CQuant.h"
#include "CHalf.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* A value rounded to the scale dtype: f16 and bf16 round to nearest even. */
static inline float round_to_dtype(float v, int dtype) {
    if (dtype == 1) { uint16_t h; float r; wt_f32_to_f16(&v, &h, 1); wt_f16_to_f32(&h, &r, 1); return r; }
    if (dtype == 2) { uint16_t h; float r; wt_f32_to_bf16(&v, &h, 1); wt_bf16_to_f32(&h, &r, 1); return r; }
    return v;
}

/* round-half-even by the 1.5 * 2^23 trick (|v| <= 2^22) */
static inline float rhe(float v) { return (v + 12582912.0f) - 12582912.0f; }

typedef struct { float s, z; } run_scale;

static inline run_scale scale_of(float lo, float hi, int bits, int symmetric, int dtype, float eps) {
    float qmin = (float)-(1 << (bits - 1)), qmax = (float)((1 << (bits - 1)) - 1);
    run_scale r = {0, 0};
    if (symmetric) {
        float m = hi >= -lo ? hi : -lo;                       /* Swift's max(-lo, hi) */
        r.s = m / ((qmax - qmin) / 2);
    } else {
        r.s = (hi - lo) / (qmax - qmin);
    }
    if (r.s == 0) r.s = eps;
    r.s = round_to_dtype(r.s, dtype);
    if (!symmetric) {
        float z = rintf(qmin - lo / r.s);
        r.z = z < qmin ? qmin : (z > qmax ? qmax : z);       /* min(qmax, max(qmin, z)) */
    }
    return r;
}

/* Appends code u (bits wide) at element c of a row's bit stream. */
static inline void put_bits(uint32_t *w0, size_t c, int bits, uint32_t u) {
    size_t bit = c * (size_t)bits, w = bit >> 5;
    unsigned shift = (unsigned)(bit & 31);
    w0[w] |= u << shift;
    if (shift + (unsigned)bits > 32) w0[w + 1] |= u >> (32 - shift);
}

static void rtn_run_portable(const float *x, size_t n, int bits, int symmetric, int dtype, float eps, float *scale, float *zero,
                             uint32_t *w0, size_t first, float *y) {
    float lo = 0, hi = 0;
    for (size_t k = 0; k < n; k++) { if (x[k] < lo) lo = x[k]; if (x[k] >= hi) hi = x[k]; }
    run_scale r = scale_of(lo, hi, bits, symmetric, dtype, eps);
    *scale = r.s; *zero = r.z;
    float qmin = (float)-(1 << (bits - 1)), qmax = (float)((1 << (bits - 1)) - 1);
    for (size_t k = 0; k < n; k++) {
        float v = x[k] / r.s + r.z;
        v = v >= qmin ? v : qmin;                              /* Swift's max(qlo, v) */
        v = qmax >= v ? v : qmax;                              /* min(qhi, v) */
        float q = rhe(v);
        put_bits(w0, first + k, bits, (uint32_t)((int)q + (1 << (bits - 1))));
        y[k] = round_to_dtype((q - r.z) * r.s, dtype);
    }
}

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,f16c")))

AVX2 static inline __m256 round_to_dtype8(__m256 v, int dtype) {
    if (dtype == 1) return _mm256_cvtph_ps(_mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
    if (dtype == 2) {   /* bf16 round to nearest even; decoded values are finite */
        __m256i b = _mm256_castps_si256(v);
        __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(b, 16), _mm256_set1_epi32(1));
        b = _mm256_add_epi32(b, _mm256_add_epi32(_mm256_set1_epi32(0x7FFF), lsb));
        return _mm256_castsi256_ps(_mm256_and_si256(b, _mm256_set1_epi32((int)0xFFFF0000u)));
    }
    return v;
}

/* runs of a multiple of 8 values */
AVX2 static void rtn_run_avx2(const float *x, size_t n, int bits, int symmetric, int dtype, float eps, float *scale, float *zero,
                              uint32_t *w0, size_t first, float *y) {
    __m256 vlo = _mm256_setzero_ps(), vhi = _mm256_setzero_ps();
    for (size_t k = 0; k < n; k += 8) {
        __m256 v = _mm256_loadu_ps(x + k);
        vlo = _mm256_min_ps(vlo, v);
        vhi = _mm256_max_ps(vhi, v);
    }
    float l[8], h[8], lo = 0, hi = 0;
    _mm256_storeu_ps(l, vlo); _mm256_storeu_ps(h, vhi);
    for (int k = 0; k < 8; k++) { if (l[k] < lo) lo = l[k]; if (h[k] > hi) hi = h[k]; }
    /* the signs of zero bounds never reach the codes: a zero range takes eps, and -lo enters
       only through max(-lo, hi) or qmin - lo / s */
    run_scale r = scale_of(lo, hi, bits, symmetric, dtype, eps);
    *scale = r.s; *zero = r.z;
    const __m256 vs = _mm256_set1_ps(r.s), vz = _mm256_set1_ps(r.z);
    const __m256 qmin = _mm256_set1_ps((float)-(1 << (bits - 1))), qmax = _mm256_set1_ps((float)((1 << (bits - 1)) - 1));
    const __m256 magic = _mm256_set1_ps(12582912.0f);
    const __m256i offset = _mm256_set1_epi32(1 << (bits - 1));
    for (size_t k = 0; k < n; k += 8) {
        __m256 v = _mm256_add_ps(_mm256_div_ps(_mm256_loadu_ps(x + k), vs), vz);
        v = _mm256_min_ps(_mm256_max_ps(v, qmin), qmax);
        __m256 q = _mm256_sub_ps(_mm256_add_ps(v, magic), magic);
        _mm256_storeu_ps(y + k, round_to_dtype8(_mm256_mul_ps(_mm256_sub_ps(q, vz), vs), dtype));
        __m256i u = _mm256_add_epi32(_mm256_cvtps_epi32(q), offset);
        size_t c = first + k;
        if (bits == 4 && (c & 7) == 0) {
            __m256i sh = _mm256_sllv_epi32(u, _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28));
            __m128i o = _mm_or_si128(_mm256_castsi256_si128(sh), _mm256_extracti128_si256(sh, 1));
            o = _mm_or_si128(o, _mm_unpackhi_epi64(o, o));
            o = _mm_or_si128(o, _mm_srli_epi64(o, 32));
            w0[c / 8] = (uint32_t)_mm_cvtsi128_si32(o);
        } else if (bits == 8 && (c & 3) == 0) {
            __m128i b = _mm_packus_epi16(_mm_packus_epi32(_mm256_castsi256_si128(u), _mm256_extracti128_si256(u, 1)), _mm_setzero_si128());
            _mm_storel_epi64((__m128i *)((uint8_t *)w0 + c), b);
        } else {
            uint32_t lanes[8];
            _mm256_storeu_si256((__m256i *)lanes, u);
            for (int j = 0; j < 8; j++) put_bits(w0, c + (size_t)j, bits, lanes[j]);
        }
    }
}
#endif

void wt_pack_codes(const int8_t *q, size_t rows, size_t cols, int bits, uint32_t *packed, size_t words_per_row) {
    memset(packed, 0, rows * words_per_row * sizeof(uint32_t));
    for (size_t r = 0; r < rows; r++)
        for (size_t c = 0; c < cols; c++)
            put_bits(packed + r * words_per_row, c, bits, (uint32_t)((int)q[r * cols + c] + (1 << (bits - 1))));
}

void wt_rtn_rows(const float *x, size_t rows, size_t cols, size_t run, int bits, int symmetric, int scale_dtype, float eps,
                 float *scales, float *zeros, uint32_t *packed, size_t words_per_row, float *decoded) {
    size_t runs = cols / run;
    memset(packed, 0, rows * words_per_row * sizeof(uint32_t));
#if defined(__x86_64__)
    int vector = wt_quant_uses_avx2() && run % 8 == 0;
#endif
    for (size_t r = 0; r < rows; r++) {
        uint32_t *w0 = packed + r * words_per_row;
        for (size_t g = 0; g < runs; g++) {
            size_t at = r * cols + g * run, s = r * runs + g;
#if defined(__x86_64__)
            if (vector) { rtn_run_avx2(x + at, run, bits, symmetric, scale_dtype, eps, scales + s, zeros + s, w0, g * run, decoded + at); continue; }
#endif
            rtn_run_portable(x + at, run, bits, symmetric, scale_dtype, eps, scales + s, zeros + s, w0, g * run, decoded + at);
        }
    }
}

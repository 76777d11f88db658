/* Delta and residual passes of lowrank-svd extract (see CLowRank.h). They were a fifth of the
   extraction's time as Swift closures over arrays (zip/map and a scalar f64 sum). */
#include "CLowRank.h"
#include "CHalf.h"
#include <stdint.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static int allow_avx2 = 1;
int wt_lowrank_uses_avx2(void) { return allow_avx2 && wt_half_uses_f16c(); }
void wt_lowrank_allow_avx2(int allow) { allow_avx2 = allow; }

static double lanes_total(const double *acc) { return ((acc[0] + acc[1]) + acc[2]) + acc[3]; }

static double delta_portable(float *x, const float *base, size_t n) {
    double acc[4] = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) {
            float d = (float)((double)x[i + j] - (double)base[i + j]);
            x[i + j] = d;
            double dd = (double)d;
            acc[j] += dd * dd;
        }
    for (int j = 0; i < n; i++, j++) {
        float d = (float)((double)x[i] - (double)base[i]);
        x[i] = d;
        acc[j] += (double)d * (double)d;
    }
    return lanes_total(acc);
}

static double diff_portable(const float *a, const float *b, size_t n) {
    double acc[4] = {0, 0, 0, 0};
    size_t i = 0;
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) {
            double d = (double)a[i + j] - (double)b[i + j];
            acc[j] += d * d;
        }
    for (int j = 0; i < n; i++, j++) {
        double d = (double)a[i] - (double)b[i];
        acc[j] += d * d;
    }
    return lanes_total(acc);
}

static inline float bf16_value(const uint8_t *p) {
    uint16_t h;
    memcpy(&h, p, 2);
    uint32_t b = (uint32_t)h << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
}

/* Entries i ..< n of a bf16 pair into the four lanes, whole quads then single entries from lane 0
   (the order of the three-pass path: the AVX2 pass finishes its rows with it too). */
static double delta_bf16_rest(const uint8_t *ft, const uint8_t *base, float *out, size_t i, size_t n, double *acc) {
    for (; i + 4 <= n; i += 4)
        for (int j = 0; j < 4; j++) {
            float d = (float)((double)bf16_value(ft + 2 * (i + j)) - (double)bf16_value(base + 2 * (i + j)));
            out[i + j] = d;
            acc[j] += (double)d * (double)d;
        }
    for (int j = 0; i < n; i++, j++) {
        float d = (float)((double)bf16_value(ft + 2 * i) - (double)bf16_value(base + 2 * i));
        out[i] = d;
        acc[j] += (double)d * (double)d;
    }
    return lanes_total(acc);
}

static double delta_bf16_portable(const uint8_t *ft, const uint8_t *base, float *out, size_t n) {
    double acc[4] = {0, 0, 0, 0};
    return delta_bf16_rest(ft, base, out, 0, n, acc);
}

#if defined(__x86_64__)
/* Four entries: their deltas stored and their squares added to the four lanes. */
__attribute__((target("avx2")))
static inline __m256d delta_quad(__m128 f, __m128 b, float *out, __m256d acc) {
    __m128 d = _mm256_cvtpd_ps(_mm256_sub_pd(_mm256_cvtps_pd(f), _mm256_cvtps_pd(b)));
    _mm_storeu_ps(out, d);
    __m256d r = _mm256_cvtps_pd(d);
    return _mm256_add_pd(acc, _mm256_mul_pd(r, r));
}

__attribute__((target("avx2")))
static double delta_bf16_avx2(const uint8_t *ft, const uint8_t *base, float *out, size_t n) {
    __m256d acc = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i f = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(ft + 2 * i))), 16);
        __m256i b = _mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i *)(base + 2 * i))), 16);
        __m256 fv = _mm256_castsi256_ps(f), bv = _mm256_castsi256_ps(b);
        acc = delta_quad(_mm256_castps256_ps128(fv), _mm256_castps256_ps128(bv), out + i, acc);
        acc = delta_quad(_mm256_extractf128_ps(fv, 1), _mm256_extractf128_ps(bv, 1), out + i + 4, acc);
    }
    double a[4];
    _mm256_storeu_pd(a, acc);
    return delta_bf16_rest(ft, base, out, i, n, a);
}

__attribute__((target("avx2")))
static double delta_avx2(float *x, const float *base, size_t n) {
    __m256d acc = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(x + i)), _mm256_cvtps_pd(_mm_loadu_ps(base + i)));
        __m128 f = _mm256_cvtpd_ps(d);
        _mm_storeu_ps(x + i, f);
        __m256d r = _mm256_cvtps_pd(f);
        acc = _mm256_add_pd(acc, _mm256_mul_pd(r, r));
    }
    double a[4];
    _mm256_storeu_pd(a, acc);
    for (int j = 0; i < n; i++, j++) {
        float d = (float)((double)x[i] - (double)base[i]);
        x[i] = d;
        a[j] += (double)d * (double)d;
    }
    return lanes_total(a);
}

__attribute__((target("avx2")))
static double diff_avx2(const float *a, const float *b, size_t n) {
    __m256d acc = _mm256_setzero_pd();
    size_t i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d d = _mm256_sub_pd(_mm256_cvtps_pd(_mm_loadu_ps(a + i)), _mm256_cvtps_pd(_mm_loadu_ps(b + i)));
        acc = _mm256_add_pd(acc, _mm256_mul_pd(d, d));
    }
    double s[4];
    _mm256_storeu_pd(s, acc);
    for (int j = 0; i < n; i++, j++) {
        double d = (double)a[i] - (double)b[i];
        s[j] += d * d;
    }
    return lanes_total(s);
}
#endif

double wt_delta_sumsq(float *x, const float *base, size_t n) {
#if defined(__x86_64__)
    if (wt_lowrank_uses_avx2()) return delta_avx2(x, base, n);
#endif
    return delta_portable(x, base, n);
}

double wt_delta_bf16_sumsq(const void *ft, const void *base, float *out, size_t n) {
#if defined(__x86_64__)
    if (wt_lowrank_uses_avx2()) return delta_bf16_avx2(ft, base, out, n);
#endif
    return delta_bf16_portable(ft, base, out, n);
}

double wt_diff_sumsq(const float *a, const float *b, size_t n) {
#if defined(__x86_64__)
    if (wt_lowrank_uses_avx2()) return diff_avx2(a, b, n);
#endif
    return diff_portable(a, b, n);
}

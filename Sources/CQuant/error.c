/* The quantization error sums of ErrorAccumulator, in C: the same operations in the same order
   (so the report's figures are unchanged), with an AVX2 path; every quantize job measures every
   value it writes, so this sits on the hot path beside the encoders. */
#include "CQuant.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* the f32 lane sum in the order Swift's SIMD8.sum() takes (measured: lane 0 to 7, in turn) */
static inline float lane_sum(const float *v) {
    float s = v[0];
    for (int l = 1; l < 8; l++) s += v[l];
    return s;
}

static inline float lane_max(const float *v) {
    float m = v[0];
    for (int l = 1; l < 8; l++) m = v[l] > m ? v[l] : m;
    return m;
}

static void error_portable(const float *ref, const float *got, size_t n, double *max_abs, double *err_sq, double *ref_sq) {
    size_t full = n - n % 8, i = 0;
    while (i < full) {
        size_t end = i + 8 * 512 < full ? i + 8 * 512 : full;
        float mx[8] = {0}, es[8] = {0}, rs[8] = {0};
        for (; i < end; i += 8)
            for (int l = 0; l < 8; l++) {
                float r = ref[i + l], g = got[i + l];
                int finite = r < INFINITY && r > -INFINITY;
                float d = finite ? g - r : 0;
                if (d != d) d = INFINITY;
                d = fabsf(d);
                float r0 = finite ? r : 0;
                mx[l] = d > mx[l] ? d : mx[l];
                es[l] += d * d;
                rs[l] += r0 * r0;
            }
        double m = (double)lane_max(mx);
        if (m > *max_abs) *max_abs = m;
        *err_sq += (double)lane_sum(es);
        *ref_sq += (double)lane_sum(rs);
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2")))
static void error_avx2(const float *ref, const float *got, size_t n, double *max_abs, double *err_sq, double *ref_sq) {
    const __m256 inf = _mm256_set1_ps(INFINITY), ninf = _mm256_set1_ps(-INFINITY), sign = _mm256_set1_ps(-0.0f);
    size_t full = n - n % 8, i = 0;
    while (i < full) {
        size_t end = i + 8 * 512 < full ? i + 8 * 512 : full;
        __m256 mx = _mm256_setzero_ps(), es = _mm256_setzero_ps(), rs = _mm256_setzero_ps();
        for (; i < end; i += 8) {
            __m256 r = _mm256_loadu_ps(ref + i), g = _mm256_loadu_ps(got + i);
            __m256 finite = _mm256_and_ps(_mm256_cmp_ps(r, inf, _CMP_LT_OQ), _mm256_cmp_ps(r, ninf, _CMP_GT_OQ));
            __m256 d = _mm256_and_ps(_mm256_sub_ps(g, r), finite);
            d = _mm256_blendv_ps(d, inf, _mm256_cmp_ps(d, d, _CMP_UNORD_Q));
            d = _mm256_andnot_ps(sign, d);
            __m256 r0 = _mm256_and_ps(r, finite);
            mx = _mm256_max_ps(d, mx);             /* d > mx ? d : mx */
            es = _mm256_add_ps(es, _mm256_mul_ps(d, d));
            rs = _mm256_add_ps(rs, _mm256_mul_ps(r0, r0));
        }
        float m8[8], e8[8], r8[8];
        _mm256_storeu_ps(m8, mx); _mm256_storeu_ps(e8, es); _mm256_storeu_ps(r8, rs);
        double m = (double)lane_max(m8);
        if (m > *max_abs) *max_abs = m;
        *err_sq += (double)lane_sum(e8);
        *ref_sq += (double)lane_sum(r8);
    }
}
#endif

void wt_error_add(const float *ref, const float *got, size_t n, double *max_abs, double *err_sq, double *ref_sq) {
#if defined(__x86_64__)
    if (wt_quant_uses_avx2()) { error_avx2(ref, got, n, max_abs, err_sq, ref_sq); return; }
#endif
    error_portable(ref, got, n, max_abs, err_sq, ref_sq);
}

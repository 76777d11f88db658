/* Row-scope magnitude and Wanda pruning of a piece of rows in one pass per row: scores, the k-th
   smallest by selection (not a sort, not a histogram: rows are short), the mask, the output bytes
   and the report's sums. The mask rule is PruneMask.smallest's (the Swift statement): scores are
   compared by their bit patterns, which order non-negative floats (NaN above infinity). */
#include "CQuant.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* The k-th smallest (1-based) of v[0..n), reordering v. Quickselect without data-dependent
   branches (a partition's comparisons are coin flips on weights, and mispredicted branches cost
   more than the work): per round one counting pass (below / equal to a median-of-three pivot)
   and one compaction of the side that holds the answer, in place. The value is the order
   statistic, so the pivot rule changes the time, never the result. */
static inline __attribute__((always_inline)) uint32_t kth_smallest(uint32_t *v, size_t n, size_t k) {
    size_t want = k - 1;
    while (n > 24) {
        uint32_t a = v[0], b = v[n / 2], c = v[n - 1];
        uint32_t pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        size_t lt = 0, eq = 0;
        for (size_t i = 0; i < n; i++) { lt += v[i] < pivot; eq += v[i] == pivot; }
        if (want < lt) {
            size_t m = 0;
            for (size_t i = 0; i < n; i++) { uint32_t x = v[i]; v[m] = x; m += x < pivot; }
            n = m;
        } else if (want < lt + eq) {
            return pivot;
        } else {
            size_t m = 0;
            for (size_t i = 0; i < n; i++) { uint32_t x = v[i]; v[m] = x; m += x > pivot; }
            n = m;
            want -= lt + eq;
        }
    }
    for (size_t i = 1; i < n; i++) {
        uint32_t x = v[i];
        size_t j = i;
        while (j > 0 && v[j - 1] > x) { v[j] = v[j - 1]; j--; }
        v[j] = x;
    }
    return v[want];
}

/* x where flag is 1, +0.0 where it is 0, by masking the bits (a kept NaN must not reach a sum of
   the pruned entries, and a multiply by the flag would let it; the AND vectorises, a select did not) */
static inline double where(double x, uint8_t flag) {
    uint64_t b;
    memcpy(&b, &x, 8);
    b &= (uint64_t)0 - flag;
    memcpy(&x, &b, 8);
    return x;
}

static inline uint32_t score_bits(float w, const double *col_scale, size_t c) {
    uint32_t b;
    if (col_scale) {
        float s = (float)((double)fabsf(w) * col_scale[c]);
        memcpy(&b, &s, 4);
    } else {
        memcpy(&b, &w, 4);
    }
    return b & 0x7FFFFFFFu;
}

/* The body, compiled twice below: for AVX2 and for any x86-64 (the same operations in the same
   order, so the same results; wt_prune_rows picks one as the other kernels do). */
static inline __attribute__((always_inline))
void prune_rows(const float *w, const void *src, int elem_size, size_t rows, size_t cols, size_t k,
                const double *col_scale, const double *act, void *dst, uint32_t *scratch, wt_prune_tally *tally) {
    /* scratch: cols scores kept, cols reordered by the selection, cols mask bytes */
    uint32_t *score = scratch, *sel = scratch + cols;
    uint8_t *mask = (uint8_t *)(scratch + 2 * cols);
    const uint8_t *s = src;
    uint8_t *d = dst;
    memcpy(d, s, rows * cols * (size_t)elem_size);
    for (size_t r = 0; r < rows; r++) {
        const float *wr = w + r * cols;
        uint8_t *dr = d + r * cols * (size_t)elem_size;
        if (k == 0 || k >= cols) {
            memset(mask, k == 0 ? 0 : 1, cols);
        } else {
            /* two loops: a test on col_scale inside would become masked loads through NULL */
            if (col_scale) for (size_t c = 0; c < cols; c++) score[c] = score_bits(wr[c], col_scale, c);
            else for (size_t c = 0; c < cols; c++) score[c] = score_bits(wr[c], NULL, c);
            memcpy(sel, score, cols * sizeof(uint32_t));
            uint32_t t = kth_smallest(sel, cols, k);
            size_t below = 0;
            for (size_t c = 0; c < cols; c++) { mask[c] = score[c] < t; below += mask[c]; }
            /* the k - below entries equal to t, lower index first */
            for (size_t c = 0, ties = k - below; ties > 0 && c < cols; c++)
                if (score[c] == t) { mask[c] = 1; ties--; }
        }
        /* branch-free (the mask is a coin flip per entry on real weights), four partial sums a
           quantity so the adds pipeline and vectorise */
        double ws[4] = {0}, rs[4] = {0}, ns[4] = {0}, ds[4] = {0};
        size_t pruned = 0, zeros = 0, c = 0;
        for (; c + 4 <= cols; c += 4)
            for (int l = 0; l < 4; l++) {
                double x = (double)wr[c + l], x2 = x * x;
                ws[l] += x2;
                rs[l] += where(x2, mask[c + l]);
            }
        for (; c < cols; c++) { double x = (double)wr[c], x2 = x * x; ws[0] += x2; rs[0] += where(x2, mask[c]); }
        if (act) {   /* a loop of its own: a test inside would become masked loads through NULL */
            for (c = 0; c + 4 <= cols; c += 4)
                for (int l = 0; l < 4; l++) {
                    double x = (double)wr[c + l], x2a = x * x * act[c + l];
                    ds[l] += x2a;
                    ns[l] += where(x2a, mask[c + l]);
                }
            for (; c < cols; c++) { double x = (double)wr[c], x2a = x * x * act[c]; ds[0] += x2a; ns[0] += where(x2a, mask[c]); }
        }
        for (c = 0; c < cols; c++) { pruned += mask[c]; zeros += mask[c] | (wr[c] == 0); }
        double w_sq = (ws[0] + ws[1]) + (ws[2] + ws[3]), removed_sq = (rs[0] + rs[1]) + (rs[2] + rs[3]);
        double num = (ns[0] + ns[1]) + (ns[2] + ns[3]), den = (ds[0] + ds[1]) + (ds[2] + ds[3]);
        if (elem_size == 2) {
            uint16_t *o = (uint16_t *)dr;
            for (size_t c = 0; c < cols; c++) o[c] &= (uint16_t)(mask[c] - 1);
        } else {
            uint32_t *o = (uint32_t *)dr;
            for (size_t c = 0; c < cols; c++) o[c] &= (uint32_t)mask[c] - 1;
        }
        tally->w_sq += w_sq; tally->removed_sq += removed_sq; tally->out_num += num; tally->out_den += den;
        tally->pruned += pruned; tally->zeros += zeros;
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2")))
static void prune_rows_avx2(const float *w, const void *src, int elem_size, size_t rows, size_t cols, size_t k,
                            const double *col_scale, const double *act, void *dst, uint32_t *scratch, wt_prune_tally *tally) {
    prune_rows(w, src, elem_size, rows, cols, k, col_scale, act, dst, scratch, tally);
}
#endif

void wt_prune_rows(const float *w, const void *src, int elem_size, size_t rows, size_t cols, size_t k,
                   const double *col_scale, const double *act, void *dst, uint32_t *scratch, wt_prune_tally *tally) {
#if defined(__x86_64__)
    if (wt_quant_uses_avx2()) { prune_rows_avx2(w, src, elem_size, rows, cols, k, col_scale, act, dst, scratch, tally); return; }
#endif
    prune_rows(w, src, elem_size, rows, cols, k, col_scale, act, dst, scratch, tally);
}

static void prune_n4_portable(const uint16_t *s, size_t count, int keep, const double *square, uint16_t *d, wt_prune_tally *tally) {
    int drop = 4 - keep;
    double norm = 0, removed = 0;
    size_t pruned = 0, zeros = 0;
    for (size_t g = 0; g + 4 <= count; g += 4) {
        uint16_t a[4];
        for (int j = 0; j < 4; j++) a[j] = s[g + j] & 0x7FFF;
        for (int j = 0; j < 4; j++) {
            /* entry j is pruned when fewer than drop entries rank before it (smaller, or equal and
               at a lower index) */
            int rank = 0;
            for (int i = 0; i < 4; i++) rank += (i != j) & ((a[i] < a[j]) | ((a[i] == a[j]) & (i < j)));
            uint8_t p = rank < drop;
            d[g + j] = s[g + j] & (uint16_t)(p - 1);
            norm += square[a[j]];
            removed += where(square[a[j]], p);
            pruned += p;
            zeros += p | (a[j] == 0);
        }
    }
    tally->w_sq += norm; tally->removed_sq += removed; tally->pruned += pruned; tally->zeros += zeros;
}

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2,f16c")))

/* the squares of four 16-bit magnitudes (as four int64 lanes' worth of f32 values), 0 if not finite */
AVX2 static inline __m256d squares4(__m128 v) { __m256d x = _mm256_cvtps_pd(v); return _mm256_mul_pd(x, x); }

/* sixteen entries (four groups) at a time, 16-bit lanes: rank by three rotations within groups */
AVX2 static void prune_n4_avx2(const uint16_t *s, size_t count, int keep, int is_bf16, uint16_t *d, wt_prune_tally *tally) {
    const __m256i rot[3] = {
        _mm256_setr_epi8(2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9, 2, 3, 4, 5, 6, 7, 0, 1, 10, 11, 12, 13, 14, 15, 8, 9),
        _mm256_setr_epi8(4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11, 4, 5, 6, 7, 0, 1, 2, 3, 12, 13, 14, 15, 8, 9, 10, 11),
        _mm256_setr_epi8(6, 7, 0, 1, 2, 3, 4, 5, 14, 15, 8, 9, 10, 11, 12, 13, 6, 7, 0, 1, 2, 3, 4, 5, 14, 15, 8, 9, 10, 11, 12, 13)};
    /* rotation r compares entry j with entry (j + r) % 4, which has a lower index when j >= 4 - r */
    const __m256i lower[3] = {
        _mm256_setr_epi16(0, 0, 0, -1, 0, 0, 0, -1, 0, 0, 0, -1, 0, 0, 0, -1),
        _mm256_setr_epi16(0, 0, -1, -1, 0, 0, -1, -1, 0, 0, -1, -1, 0, 0, -1, -1),
        _mm256_setr_epi16(0, -1, -1, -1, 0, -1, -1, -1, 0, -1, -1, -1, 0, -1, -1, -1)};
    const __m256i low15 = _mm256_set1_epi16(0x7FFF), drop = _mm256_set1_epi16((short)(4 - keep));
    const __m256i inf = _mm256_set1_epi16(is_bf16 ? 0x7F80 : 0x7C00);
    __m256d norm = _mm256_setzero_pd(), removed = _mm256_setzero_pd();
    size_t pruned = 0, zeros = 0, g = 0;
    for (; g + 16 <= count; g += 16) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(s + g)), a = _mm256_and_si256(v, low15);
        __m256i rank = _mm256_setzero_si256();
        for (int r = 0; r < 3; r++) {
            __m256i b = _mm256_shuffle_epi8(a, rot[r]);
            __m256i before = _mm256_or_si256(_mm256_cmpgt_epi16(a, b), _mm256_and_si256(_mm256_cmpeq_epi16(a, b), lower[r]));
            rank = _mm256_sub_epi16(rank, before);
        }
        __m256i p = _mm256_cmpgt_epi16(drop, rank);   /* all ones where pruned */
        _mm256_storeu_si256((__m256i *)(d + g), _mm256_andnot_si256(p, v));
        __m256i zero = _mm256_or_si256(p, _mm256_cmpeq_epi16(a, _mm256_setzero_si256()));
        pruned += (size_t)__builtin_popcount((unsigned)_mm256_movemask_epi8(p)) / 2;
        zeros += (size_t)__builtin_popcount((unsigned)_mm256_movemask_epi8(zero)) / 2;
        /* the values: non-finite magnitudes count as 0, as the table has them */
        __m256i finite = _mm256_andnot_si256(_mm256_cmpgt_epi16(a, _mm256_sub_epi16(inf, _mm256_set1_epi16(1))), a);
        for (int h = 0; h < 2; h++) {
            __m128i m16 = h ? _mm256_extracti128_si256(finite, 1) : _mm256_castsi256_si128(finite);
            __m128i p16 = h ? _mm256_extracti128_si256(p, 1) : _mm256_castsi256_si128(p);
            __m256 f = is_bf16 ? _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(m16), 16)) : _mm256_cvtph_ps(m16);
            for (int q = 0; q < 2; q++) {
                __m256d sq = squares4(q ? _mm256_extractf128_ps(f, 1) : _mm256_castps256_ps128(f));
                __m256i pm = _mm256_cvtepi16_epi64(q ? _mm_srli_si128(p16, 8) : p16);
                norm = _mm256_add_pd(norm, sq);
                removed = _mm256_add_pd(removed, _mm256_and_pd(sq, _mm256_castsi256_pd(pm)));
            }
        }
    }
    double nn[4], rr[4];
    _mm256_storeu_pd(nn, norm); _mm256_storeu_pd(rr, removed);
    tally->w_sq += (nn[0] + nn[1]) + (nn[2] + nn[3]);
    tally->removed_sq += (rr[0] + rr[1]) + (rr[2] + rr[3]);
    tally->pruned += pruned; tally->zeros += zeros;
}
#endif

void wt_prune_n4_half(const void *src, size_t count, int keep, int is_bf16, const double *square, void *dst, wt_prune_tally *tally) {
#if defined(__x86_64__)
    if (wt_quant_uses_avx2()) {
        size_t head = count / 16 * 16;
        prune_n4_avx2(src, head, keep, is_bf16, dst, tally);
        prune_n4_portable((const uint16_t *)src + head, count - head, keep, square, (uint16_t *)dst + head, tally);
        return;
    }
#endif
    prune_n4_portable(src, count, keep, square, dst, tally);
}

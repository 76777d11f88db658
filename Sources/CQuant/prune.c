/* Row-scope and N:M magnitude and Wanda pruning of a piece of rows, a row at a time: scores, the
   k-th smallest by selection (not a sort, not a histogram: rows are short) or each N:M group's
   stable order, the mask, DSnoT's refinement (dsnot.c) when asked, the output bytes and the
   report's sums. The top-k rule is PruneMask.smallest's (the Swift statement): scores are compared
   by their bit patterns, which order non-negative floats (NaN above infinity); the N:M rule is
   PruneMask.nm's (scores compared as floats). */
#include "CQuant.h"
#include "masked.h"
#include <math.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

#if defined(__x86_64__)
/* For each 8-bit mask, the indices of its set bits in order, a nibble each (lowest first): the
   lane permutation that packs the kept lanes of 8 to the front. */
static const uint32_t compact_lut[256] = {
    0x00000000, 0x00000000, 0x00000001, 0x00000010, 0x00000002, 0x00000020, 0x00000021, 0x00000210,
    0x00000003, 0x00000030, 0x00000031, 0x00000310, 0x00000032, 0x00000320, 0x00000321, 0x00003210,
    0x00000004, 0x00000040, 0x00000041, 0x00000410, 0x00000042, 0x00000420, 0x00000421, 0x00004210,
    0x00000043, 0x00000430, 0x00000431, 0x00004310, 0x00000432, 0x00004320, 0x00004321, 0x00043210,
    0x00000005, 0x00000050, 0x00000051, 0x00000510, 0x00000052, 0x00000520, 0x00000521, 0x00005210,
    0x00000053, 0x00000530, 0x00000531, 0x00005310, 0x00000532, 0x00005320, 0x00005321, 0x00053210,
    0x00000054, 0x00000540, 0x00000541, 0x00005410, 0x00000542, 0x00005420, 0x00005421, 0x00054210,
    0x00000543, 0x00005430, 0x00005431, 0x00054310, 0x00005432, 0x00054320, 0x00054321, 0x00543210,
    0x00000006, 0x00000060, 0x00000061, 0x00000610, 0x00000062, 0x00000620, 0x00000621, 0x00006210,
    0x00000063, 0x00000630, 0x00000631, 0x00006310, 0x00000632, 0x00006320, 0x00006321, 0x00063210,
    0x00000064, 0x00000640, 0x00000641, 0x00006410, 0x00000642, 0x00006420, 0x00006421, 0x00064210,
    0x00000643, 0x00006430, 0x00006431, 0x00064310, 0x00006432, 0x00064320, 0x00064321, 0x00643210,
    0x00000065, 0x00000650, 0x00000651, 0x00006510, 0x00000652, 0x00006520, 0x00006521, 0x00065210,
    0x00000653, 0x00006530, 0x00006531, 0x00065310, 0x00006532, 0x00065320, 0x00065321, 0x00653210,
    0x00000654, 0x00006540, 0x00006541, 0x00065410, 0x00006542, 0x00065420, 0x00065421, 0x00654210,
    0x00006543, 0x00065430, 0x00065431, 0x00654310, 0x00065432, 0x00654320, 0x00654321, 0x06543210,
    0x00000007, 0x00000070, 0x00000071, 0x00000710, 0x00000072, 0x00000720, 0x00000721, 0x00007210,
    0x00000073, 0x00000730, 0x00000731, 0x00007310, 0x00000732, 0x00007320, 0x00007321, 0x00073210,
    0x00000074, 0x00000740, 0x00000741, 0x00007410, 0x00000742, 0x00007420, 0x00007421, 0x00074210,
    0x00000743, 0x00007430, 0x00007431, 0x00074310, 0x00007432, 0x00074320, 0x00074321, 0x00743210,
    0x00000075, 0x00000750, 0x00000751, 0x00007510, 0x00000752, 0x00007520, 0x00007521, 0x00075210,
    0x00000753, 0x00007530, 0x00007531, 0x00075310, 0x00007532, 0x00075320, 0x00075321, 0x00753210,
    0x00000754, 0x00007540, 0x00007541, 0x00075410, 0x00007542, 0x00075420, 0x00075421, 0x00754210,
    0x00007543, 0x00075430, 0x00075431, 0x00754310, 0x00075432, 0x00754320, 0x00754321, 0x07543210,
    0x00000076, 0x00000760, 0x00000761, 0x00007610, 0x00000762, 0x00007620, 0x00007621, 0x00076210,
    0x00000763, 0x00007630, 0x00007631, 0x00076310, 0x00007632, 0x00076320, 0x00076321, 0x00763210,
    0x00000764, 0x00007640, 0x00007641, 0x00076410, 0x00007642, 0x00076420, 0x00076421, 0x00764210,
    0x00007643, 0x00076430, 0x00076431, 0x00764310, 0x00076432, 0x00764320, 0x00764321, 0x07643210,
    0x00000765, 0x00007650, 0x00007651, 0x00076510, 0x00007652, 0x00076520, 0x00076521, 0x00765210,
    0x00007653, 0x00076530, 0x00076531, 0x00765310, 0x00076532, 0x00765320, 0x00765321, 0x07653210,
    0x00007654, 0x00076540, 0x00076541, 0x00765410, 0x00076542, 0x00765420, 0x00765421, 0x07654210,
    0x00076543, 0x00765430, 0x00765431, 0x07654310, 0x00765432, 0x07654320, 0x07654321, 0x76543210,
};

/* Keeps the entries of v[0..n) below the pivot (greater: above it), in order, at the front of v;
   returns how many. Eight at a time: one compare, the permutation from the table, one store of 8
   lanes at the write position (never past the lanes just read, so in place is safe). Scores are at
   most 0x7FFFFFFF, so signed compares order them. */
__attribute__((target("avx2")))
static size_t compact_avx2(uint32_t *v, size_t n, uint32_t pivot, int greater) {
    const __m256i p = _mm256_set1_epi32((int)pivot), shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28);
    const __m256i nibble = _mm256_set1_epi32(0xF);
    size_t m = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(v + i));
        __m256i keep = greater ? _mm256_cmpgt_epi32(x, p) : _mm256_cmpgt_epi32(p, x);
        int mask = _mm256_movemask_ps(_mm256_castsi256_ps(keep));
        __m256i idx = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)compact_lut[mask]), shifts), nibble);
        _mm256_storeu_si256((__m256i *)(v + m), _mm256_permutevar8x32_epi32(x, idx));
        m += (size_t)__builtin_popcount((unsigned)mask);
    }
    for (; i < n; i++) { uint32_t x = v[i]; v[m] = x; m += greater ? x > pivot : x < pivot; }
    return m;
}
#endif

#if defined(__x86_64__)
/* How many of v[0..n) are below / equal to the pivot: eight 32-bit counters (clang's own
   vectorisation widened them to 64 bits, four lanes a step). */
__attribute__((target("avx2")))
static void count_avx2(const uint32_t *v, size_t n, uint32_t pivot, size_t *lt, size_t *eq) {
    const __m256i p = _mm256_set1_epi32((int)pivot);
    __m256i l8 = _mm256_setzero_si256(), e8 = _mm256_setzero_si256();
    size_t i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(v + i));
        l8 = _mm256_sub_epi32(l8, _mm256_cmpgt_epi32(p, x));
        e8 = _mm256_sub_epi32(e8, _mm256_cmpeq_epi32(p, x));
    }
    uint32_t l[8], e[8];
    _mm256_storeu_si256((__m256i *)l, l8);
    _mm256_storeu_si256((__m256i *)e, e8);
    size_t a = 0, b = 0;
    for (int j = 0; j < 8; j++) { a += l[j]; b += e[j]; }
    for (; i < n; i++) { a += v[i] < pivot; b += v[i] == pivot; }
    *lt = a;
    *eq = b;
}
#endif

/* The k-th smallest (1-based) of v[0..n), reordering v. Quickselect without data-dependent
   branches (a partition's comparisons are coin flips on weights, and mispredicted branches cost
   more than the work): per round one counting pass (below / equal to a median-of-three pivot)
   and one compaction of the side that holds the answer, in place (with AVX2, eight lanes at a
   time). The value is the order statistic, so the pivot rule and the compaction change the time,
   never the result. */
static inline __attribute__((always_inline)) uint32_t kth_smallest(uint32_t *v, size_t n, size_t k, int avx2) {
    size_t want = k - 1;
    while (n > 24) {
        uint32_t a = v[0], b = v[n / 2], c = v[n - 1];
        uint32_t pivot = a < b ? (b < c ? b : (a < c ? c : a)) : (a < c ? a : (b < c ? c : b));
        size_t lt = 0, eq = 0;
#if defined(__x86_64__)
        if (avx2) count_avx2(v, n, pivot, &lt, &eq);
        else
#endif
        for (size_t i = 0; i < n; i++) { lt += v[i] < pivot; eq += v[i] == pivot; }
        if (want < lt) {
#if defined(__x86_64__)
            if (avx2) { n = compact_avx2(v, n, pivot, 0); continue; }
#endif
            size_t m = 0;
            for (size_t i = 0; i < n; i++) { uint32_t x = v[i]; v[m] = x; m += x < pivot; }
            n = m;
        } else if (want < lt + eq) {
            return pivot;
        } else {
            want -= lt + eq;
#if defined(__x86_64__)
            if (avx2) { n = compact_avx2(v, n, pivot, 1); continue; }
#endif
            size_t m = 0;
            for (size_t i = 0; i < n; i++) { uint32_t x = v[i]; v[m] = x; m += x > pivot; }
            n = m;
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

#if defined(__x86_64__)
/* Copies the entries of v[0..n) within [lo, hi] to out, in order (out has room for n), and counts
   those below lo; returns how many were copied. Eight at a time as compact_avx2 does (a store
   never reaches past the lanes read, so out needs no slack). */
__attribute__((target("avx2")))
static size_t bracket_avx2(const uint32_t *v, size_t n, uint32_t lo, uint32_t hi, uint32_t *out, size_t *below) {
    const __m256i l = _mm256_set1_epi32((int)lo), h = _mm256_set1_epi32((int)hi);
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), nibble = _mm256_set1_epi32(0xF);
    size_t m = 0, b = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i x = _mm256_loadu_si256((const __m256i *)(v + i));
        __m256i lt = _mm256_cmpgt_epi32(l, x), gt = _mm256_cmpgt_epi32(x, h);
        int mask = _mm256_movemask_ps(_mm256_castsi256_ps(_mm256_or_si256(lt, gt))) ^ 0xFF;
        __m256i idx = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)compact_lut[mask]), shifts), nibble);
        _mm256_storeu_si256((__m256i *)(out + m), _mm256_permutevar8x32_epi32(x, idx));
        m += (size_t)__builtin_popcount((unsigned)mask);
        b += (size_t)__builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(lt)));
    }
    for (; i < n; i++) { uint32_t x = v[i]; out[m] = x; m += (x >= lo) & (x <= hi); b += x < lo; }
    *below = b;
    return m;
}
#endif

/* The k-th smallest (1-based) of score[0..n), score untouched, sel[0..n) as scratch. Long rows:
   a strided sample of 64 brackets the answer (the sample's ranks 8 either side of k's, two
   standard deviations), one pass counts the entries below the bracket and copies those inside,
   and the selection runs on those (about a quarter of the row); when the bracket misses, on the
   whole row. The answer is the order statistic either way. */
static inline __attribute__((always_inline)) uint32_t select_kth(const uint32_t *score, uint32_t *sel, size_t n, size_t k, int avx2) {
    if (n >= 1024) {
        enum { S = 64, MARGIN = 8 };
        uint32_t sample[S];
        for (size_t i = 0; i < S; i++) sample[i] = score[(2 * i + 1) * n / (2 * S)];
        size_t at = (k - 1) * S / n;   /* k's rank among the sample, 0-based */
        uint32_t lo = at >= MARGIN ? kth_smallest(sample, S, at - MARGIN + 1, avx2) : 0;
        uint32_t hi = at + MARGIN < S ? kth_smallest(sample, S, at + MARGIN + 1, avx2) : 0x7FFFFFFFu;   /* scores are at most this */
        size_t below = 0, m = 0;
#if defined(__x86_64__)
        if (avx2) m = bracket_avx2(score, n, lo, hi, sel, &below);
        else
#endif
        for (size_t i = 0; i < n; i++) { uint32_t x = score[i]; sel[m] = x; m += (x >= lo) & (x <= hi); below += x < lo; }
        if (below < k && k <= below + m) return kth_smallest(sel, m, k - below, avx2);
    }
    memcpy(sel, score, n * sizeof(uint32_t));
    return kth_smallest(sel, n, k, avx2);
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

/* A row's scores (score_bits of each entry). Two loops: a test on scale inside would become masked
   loads through NULL. */
static inline __attribute__((always_inline)) void row_scores(const float *wr, size_t cols, const double *scale, uint32_t *score) {
    if (scale) for (size_t c = 0; c < cols; c++) score[c] = score_bits(wr[c], scale, c);
    else for (size_t c = 0; c < cols; c++) score[c] = score_bits(wr[c], NULL, c);
}

/* The last entries of a row (count < 4, from x, mask bytes m, act NULL or from the same column)
   into lane 0 of the report's sums, as the portable loops add them, and the counts. */
static inline void tail_sums(const float *x, const uint8_t *m, const double *act, size_t count, double ws[4], double rs[4], double ns[4],
                             double ds[4], size_t *pruned, size_t *zeros) {
    for (size_t j = 0; j < count; j++) {
        double v = (double)x[j], x2 = v * v;
        ws[0] += x2;
        rs[0] += masked(x2, m[j]);
        *pruned += m[j];
        *zeros += m[j] | (x[j] == 0);
    }
    if (act) for (size_t j = 0; j < count; j++) { double v = (double)x[j], x2a = v * v * act[j]; ds[0] += x2a; ns[0] += masked(x2a, m[j]); }
}

#if defined(__x86_64__)
/* Four entries of the report's sums with explicit AVX2 (clang left them scalar): lane l takes the
   entry c = l mod 4, as the portable loops do, so the sums are the same bits; p: 32-bit lanes, all
   ones where pruned. */
__attribute__((target("avx2")))
static inline void sums4(const float *x4, __m128i p, const double *act, __m256d *w4, __m256d *r4, __m256d *d4, __m256d *n4) {
    __m256d x = _mm256_cvtps_pd(_mm_loadu_ps(x4)), x2 = _mm256_mul_pd(x, x);
    __m256d pm = _mm256_castsi256_pd(_mm256_cvtepi32_epi64(p));
    *w4 = _mm256_add_pd(*w4, x2);
    *r4 = _mm256_add_pd(*r4, _mm256_and_pd(x2, pm));
    if (act) {
        __m256d x2a = _mm256_mul_pd(x2, _mm256_loadu_pd(act));
        *d4 = _mm256_add_pd(*d4, x2a);
        *n4 = _mm256_add_pd(*n4, _mm256_and_pd(x2a, pm));
    }
}

/* The report's sums and counts of one row from its mask bytes (see prune_rows). */
__attribute__((target("avx2")))
static void row_sums_avx2(const float *wr, const uint8_t *mask, const double *act, size_t cols, double ws[4], double rs[4], double ns[4], double ds[4],
                          size_t *pruned, size_t *zeros) {
    __m256d w4 = _mm256_setzero_pd(), r4 = w4, n4 = w4, d4 = w4;
    size_t c = 0, pr = 0, ze = 0;
    for (; c + 4 <= cols; c += 4) {
        uint32_t m4;
        memcpy(&m4, mask + c, 4);
        __m128i p = _mm_sub_epi32(_mm_setzero_si128(), _mm_cvtepu8_epi32(_mm_cvtsi32_si128((int)m4)));
        unsigned pm = (unsigned)_mm_movemask_ps(_mm_castsi128_ps(p));
        unsigned zm = (unsigned)_mm_movemask_ps(_mm_cmpeq_ps(_mm_loadu_ps(wr + c), _mm_setzero_ps())) | pm;
        pr += (size_t)__builtin_popcount(pm);
        ze += (size_t)__builtin_popcount(zm);
        sums4(wr + c, p, act ? act + c : NULL, &w4, &r4, &d4, &n4);
    }
    _mm256_storeu_pd(ws, w4); _mm256_storeu_pd(rs, r4); _mm256_storeu_pd(ns, n4); _mm256_storeu_pd(ds, d4);
    *pruned = pr;
    *zeros = ze;
    tail_sums(wr + c, mask + c, act ? act + c : NULL, cols - c, ws, rs, ns, ds, pruned, zeros);
}
#endif

#if defined(__x86_64__)
/* Eight 32-bit lanes of 0 / -1 (a compare's) stored as eight mask bytes 0 / 1, in lane order, in
   one store (a byte store per entry from a bit mask was most of the time of an N:M row). */
__attribute__((target("avx2"), always_inline))
static inline void store_mask_bytes(uint8_t *mask, __m256i lanes) {
    __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(lanes), _mm256_extracti128_si256(lanes, 1));
    _mm_storel_epi64((__m128i *)mask, _mm_and_si128(_mm_packs_epi16(p16, p16), _mm_set1_epi8(1)));
}

/* mask[c] = score[c] < t, eight a step; returns how many are below. */
__attribute__((target("avx2")))
static size_t mask_below_avx2(const uint32_t *score, size_t cols, uint32_t t, uint8_t *mask) {
    const __m256i tt = _mm256_set1_epi32((int)t);
    size_t c = 0, below = 0;
    for (; c + 8 <= cols; c += 8) {
        __m256i lt = _mm256_cmpgt_epi32(tt, _mm256_loadu_si256((const __m256i *)(score + c)));   /* scores are at most 0x7FFFFFFF */
        store_mask_bytes(mask + c, lt);
        below += (size_t)__builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(lt)));
    }
    for (; c < cols; c++) { mask[c] = score[c] < t; below += mask[c]; }
    return below;
}

/* Marks the first `ties` entries whose score equals t (lower index first). */
__attribute__((target("avx2")))
static void mark_ties_avx2(const uint32_t *score, size_t cols, uint32_t t, size_t ties, uint8_t *mask) {
    const __m256i tt = _mm256_set1_epi32((int)t);
    size_t c = 0;
    for (; ties > 0 && c + 8 <= cols; c += 8) {
        unsigned eq = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_loadu_si256((const __m256i *)(score + c)), tt)));
        while (eq && ties > 0) { mask[c + (size_t)__builtin_ctz(eq)] = 1; eq &= eq - 1; ties--; }
    }
    for (; ties > 0 && c < cols; c++)
        if (score[c] == t) { mask[c] = 1; ties--; }
}
#endif

/* N:M, one group at g: a stable insertion sort of its M entries by score compared as floats
   (PruneMask.nm's statement), the first M - N pruned. idx: M words of scratch. */
static void nm_group(const uint32_t *score, size_t g, size_t keep, size_t m, uint8_t *mask, uint32_t *idx) {
    float f[2];
    for (size_t j = 0; j < m; j++) { idx[j] = (uint32_t)(g + j); mask[g + j] = 0; }
    for (size_t a = 1; a < m; a++) {
        uint32_t x = idx[a];
        size_t b = a;
        for (; b > 0; b--) {
            memcpy(&f[0], score + idx[b - 1], 4);
            memcpy(&f[1], score + x, 4);
            if (!(f[0] > f[1])) break;
            idx[b] = idx[b - 1];
        }
        idx[b] = x;
    }
    for (size_t j = 0; j < m - keep; j++) mask[idx[j]] = 1;
}

#if defined(__x86_64__)
/* N:4 and N:8, eight scores a step (two groups of 4, or one of 8): an entry's place in the stable
   order is the number of entries of its group before it (smaller, or equal at a lower index),
   counted over the group's rotations; it is pruned when that is below M - N. Without NaN this is
   the insertion sort's order; a step with a NaN score takes nm_group. Returns the entries done. */
__attribute__((target("avx2")))
static size_t nm_ranks_avx2(const uint32_t *score, size_t cols, size_t keep, size_t m, uint8_t *mask, uint32_t *idx) {
    __m256i perm[7], lower[7];
    for (size_t r = 1; r < m; r++) {
        int32_t p[8], l[8];
        for (int j = 0; j < 8; j++) {
            int base = j / (int)m * (int)m, in = j % (int)m, to = (in + (int)r) % (int)m;
            p[j] = base + to;
            l[j] = to < in ? -1 : 0;   /* the entry compared with has a lower index */
        }
        perm[r - 1] = _mm256_loadu_si256((const __m256i *)p);
        lower[r - 1] = _mm256_loadu_si256((const __m256i *)l);
    }
    const __m256i drop = _mm256_set1_epi32((int)(m - keep));
    size_t g = 0;
    for (; g + 8 <= cols; g += 8) {
        __m256 a = _mm256_loadu_ps((const float *)(score + g));
        if (_mm256_movemask_ps(_mm256_cmp_ps(a, a, _CMP_UNORD_Q))) {
            for (size_t h = g; h < g + 8; h += m) nm_group(score, h, keep, m, mask, idx);
            continue;
        }
        __m256i rank = _mm256_setzero_si256();
        for (size_t r = 0; r + 1 < m; r++) {
            __m256 b = _mm256_permutevar8x32_ps(a, perm[r]);
            __m256 before = _mm256_or_ps(_mm256_cmp_ps(b, a, _CMP_LT_OQ),
                                         _mm256_and_ps(_mm256_cmp_ps(b, a, _CMP_EQ_OQ), _mm256_castsi256_ps(lower[r])));
            rank = _mm256_sub_epi32(rank, _mm256_castps_si256(before));
        }
        store_mask_bytes(mask + g, _mm256_cmpgt_epi32(drop, rank));
    }
    return g;
}
#endif

/* The mask of one row (score: the row's scores, written here; sel: scratch). Top-k: the k
   smallest, ties to the lower index. N:M: in each group of M consecutive entries the M - N of
   least score by a stable insertion sort comparing the scores as floats, PruneMask.nm's
   statement (so a NaN score compares as it does there). */
static inline __attribute__((always_inline))
void row_mask(const float *wr, size_t cols, wt_row_rule rule, const double *col_scale, uint32_t *score, uint32_t *sel, uint8_t *mask, int avx2) {
    const size_t k = rule.k;
    if (rule.nm_m == 0 && (k == 0 || k >= cols)) {
        memset(mask, k == 0 ? 0 : 1, cols);
        return;
    }
    row_scores(wr, cols, col_scale, score);
    if (rule.nm_m) {
        size_t g = 0;
#if defined(__x86_64__)
        if (avx2 && (rule.nm_m == 4 || rule.nm_m == 8)) g = nm_ranks_avx2(score, cols, rule.nm_keep, rule.nm_m, mask, sel);
#endif
        for (; g + rule.nm_m <= cols; g += rule.nm_m) nm_group(score, g, rule.nm_keep, rule.nm_m, mask, sel);
        memset(mask + g, 0, cols - g);   /* a partial last group stays (cols is a multiple of M in wtool) */
        return;
    }
    uint32_t t = select_kth(score, sel, cols, k, avx2);
#if defined(__x86_64__)
    if (avx2) { mark_ties_avx2(score, cols, t, k - mask_below_avx2(score, cols, t, mask), mask); return; }
#endif
    size_t below = 0;
    for (size_t c = 0; c < cols; c++) { mask[c] = score[c] < t; below += mask[c]; }
    /* the k - below entries equal to t, lower index first */
    for (size_t c = 0, ties = k - below; ties > 0 && c < cols; c++)
        if (score[c] == t) { mask[c] = 1; ties--; }
}

#if defined(__x86_64__)
/* A top-k row once its threshold t is known, in one pass: the mask (score < t, then the first
   k - below entries equal to t, lower index first) is formed eight lanes at a time and used at
   once for the report's sums, the counts and the output bytes, with the same operations in the
   same order as row_mask + the sums and output of prune_rows (so the same bytes and bits). */
__attribute__((target("avx2")))
static void finish_topk_avx2(const float *wr, const uint8_t *sr, int elem_size, size_t cols, const uint32_t *score, uint32_t t, size_t k,
                             const double *act, uint8_t *dr, wt_prune_tally *tally) {
    size_t lt, eq;
    count_avx2(score, cols, t, &lt, &eq);
    size_t ties = k - lt;
    const __m256i tt = _mm256_set1_epi32((int)t), bit = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    __m256d w4 = _mm256_setzero_pd(), r4 = w4, d4 = w4, n4 = w4;
    size_t pruned = 0, zeros = 0, c = 0;
    for (; c + 4 <= cols; c += 4 + (c + 8 <= cols ? 4 : 0)) {
        const int eight = c + 8 <= cols;   /* else one last step of four */
        __m256i sc = eight ? _mm256_loadu_si256((const __m256i *)(score + c)) : _mm256_castsi128_si256(_mm_loadu_si128((const __m128i *)(score + c)));
        __m256i p = _mm256_cmpgt_epi32(tt, sc);
        if (!eight) p = _mm256_and_si256(p, _mm256_setr_epi32(-1, -1, -1, -1, 0, 0, 0, 0));
        if (ties) {   /* the entries equal to t in this step, lower index first, while ties remain */
            unsigned e = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(sc, tt))) & (eight ? 0xFFu : 0xFu), add = 0;
            while (e && ties) { add |= e & (0u - e); e &= e - 1; ties--; }
            p = _mm256_or_si256(p, _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)add), bit), bit));
        }
        const int lanes = eight ? 8 : 4;
        unsigned pm = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(p)) & ((1u << lanes) - 1);
        __m256 x8 = eight ? _mm256_loadu_ps(wr + c) : _mm256_castps128_ps256(_mm_loadu_ps(wr + c));
        unsigned zm = ((unsigned)_mm256_movemask_ps(_mm256_cmp_ps(x8, _mm256_setzero_ps(), _CMP_EQ_OQ)) | pm) & ((1u << lanes) - 1);
        pruned += (size_t)__builtin_popcount(pm);
        zeros += (size_t)__builtin_popcount(zm);
        sums4(wr + c, _mm256_castsi256_si128(p), act ? act + c : NULL, &w4, &r4, &d4, &n4);
        if (eight) sums4(wr + c + 4, _mm256_extracti128_si256(p, 1), act ? act + c + 4 : NULL, &w4, &r4, &d4, &n4);
        if (elem_size == 2) {
            __m128i p16 = _mm_packs_epi32(_mm256_castsi256_si128(p), _mm256_extracti128_si256(p, 1));
            if (eight) {
                __m128i v = _mm_loadu_si128((const __m128i *)(sr + 2 * c));
                _mm_storeu_si128((__m128i *)(dr + 2 * c), _mm_andnot_si128(p16, v));
            } else {
                uint64_t v, q;
                memcpy(&v, sr + 2 * c, 8);
                q = (uint64_t)_mm_cvtsi128_si64(p16);
                v &= ~q;
                memcpy(dr + 2 * c, &v, 8);
            }
        } else if (eight) {
            _mm256_storeu_si256((__m256i *)(dr + 4 * c), _mm256_andnot_si256(p, _mm256_loadu_si256((const __m256i *)(sr + 4 * c))));
        } else {
            _mm_storeu_si128((__m128i *)(dr + 4 * c), _mm_andnot_si128(_mm256_castsi256_si128(p), _mm_loadu_si128((const __m128i *)(sr + 4 * c))));
        }
    }
    double ws[4], rs[4], ns[4], ds[4];
    _mm256_storeu_pd(ws, w4); _mm256_storeu_pd(rs, r4); _mm256_storeu_pd(ns, n4); _mm256_storeu_pd(ds, d4);
    /* the last cols % 4 entries into lane 0, as prune_rows does */
    const size_t tail = c;
    uint8_t m[4];
    for (size_t j = tail; j < cols; j++) {
        uint8_t q = score[j] < t;
        if (!q && score[j] == t && ties) { q = 1; ties--; }
        m[j - tail] = q;
    }
    tail_sums(wr + tail, m, act ? act + tail : NULL, cols - tail, ws, rs, ns, ds, &pruned, &zeros);
    for (size_t j = tail; j < cols; j++) {
        if (elem_size == 2) { uint16_t v; memcpy(&v, sr + 2 * j, 2); v &= (uint16_t)(m[j - tail] - 1); memcpy(dr + 2 * j, &v, 2); }
        else { uint32_t v; memcpy(&v, sr + 4 * j, 4); v &= (uint32_t)m[j - tail] - 1; memcpy(dr + 4 * j, &v, 4); }
    }
    tally->w_sq += (ws[0] + ws[1]) + (ws[2] + ws[3]);
    tally->removed_sq += (rs[0] + rs[1]) + (rs[2] + rs[3]);
    tally->out_num += (ns[0] + ns[1]) + (ns[2] + ns[3]);
    tally->out_den += (ds[0] + ds[1]) + (ds[2] + ds[3]);
    tally->pruned += pruned;
    tally->zeros += zeros;
}
#endif

/* Rows per DSnoT group: wt_dsnot_rows sums eight rows' errors side by side. */
#define GROUP 8

static size_t align8(size_t n) { return (n + 7) / 8 * 8; }

size_t wt_prune_rows_scratch_bytes(size_t cols, int dsnot) {
    size_t g = dsnot ? GROUP : 1;
    size_t base = align8((g + 1) * cols * sizeof(uint32_t) + g * cols);
    return base + (dsnot ? wt_dsnot_scratch_bytes(cols) : 0);
}

/* The body, compiled twice below: for AVX2 and for any x86-64 (the same operations in the same
   order, so the same results; wt_prune_rows picks one as the other kernels do). */
static inline __attribute__((always_inline))
void prune_rows(const float *w, const void *src, int elem_size, size_t rows, size_t cols, wt_row_rule rule,
                const double *col_scale, const double *act, const wt_dsnot_params *dsnot, const double *give_scale,
                void *dst, void *scratch, wt_prune_tally *tally, int avx2) {
    /* scratch: per row of a group its scores; the selection's copy; per row of a group its mask
       bytes; then DSnoT's scratch */
    const size_t group = dsnot ? GROUP : 1;
    uint32_t *scores = scratch, *sel = scores + group * cols;
    uint8_t *masks = (uint8_t *)(sel + cols);
    void *dscratch = (uint8_t *)scratch + align8((group + 1) * cols * sizeof(uint32_t) + group * cols);
    const uint8_t *s = src;
    uint8_t *d = dst;
#if defined(__x86_64__)
    if (avx2 && !dsnot && rule.nm_m == 0 && rule.k > 0 && rule.k < cols) {
        /* top-k without DSnoT: the mask never needs to exist (finish_topk_avx2) */
        for (size_t r = 0; r < rows; r++) {
            const float *wr = w + r * cols;
            row_scores(wr, cols, col_scale, scores);
            uint32_t t = select_kth(scores, sel, cols, rule.k, avx2);
            finish_topk_avx2(wr, s + r * cols * (size_t)elem_size, elem_size, cols, scores, t, rule.k, act, d + r * cols * (size_t)elem_size, tally);
        }
        return;
    }
#endif
    for (size_t r0 = 0; r0 < rows; r0 += group) {
        const size_t m = rows - r0 < group ? rows - r0 : group;
        for (size_t i = 0; i < m; i++)
            row_mask(w + (r0 + i) * cols, cols, rule, col_scale, scores + i * cols, sel, masks + i * cols, avx2);
        if (dsnot) {
            /* the giving-up order: the Wanda score (the selection's scores when they are it) */
            for (size_t i = 0; i < m; i++) {
                const float *wr = w + (r0 + i) * cols;
                uint32_t *sc = scores + i * cols;
                if (give_scale) row_scores(wr, cols, give_scale, sc);
                else if (rule.nm_m == 0 && (rule.k == 0 || rule.k >= cols))   /* row_mask computed none */
                    row_scores(wr, cols, col_scale, sc);
            }
            tally->swaps += wt_dsnot_rows(w + r0 * cols, masks, (const float *)scores, m, cols, dsnot, dscratch);
        }
        for (size_t i = 0; i < m; i++) {
            const size_t r = r0 + i;
            const float *wr = w + r * cols;
            const uint8_t *mask = masks + i * cols;
            uint8_t *dr = d + r * cols * (size_t)elem_size;
            /* branch-free (the mask is a coin flip per entry on real weights), four partial sums a
               quantity so the adds pipeline and vectorise */
            double ws[4] = {0}, rs[4] = {0}, ns[4] = {0}, ds[4] = {0};
            size_t pruned = 0, zeros = 0, c = 0;
#if defined(__x86_64__)
            if (avx2) {
                row_sums_avx2(wr, mask, act, cols, ws, rs, ns, ds, &pruned, &zeros);
            } else
#endif
            {
            for (; c + 4 <= cols; c += 4)
                for (int l = 0; l < 4; l++) {
                    double x = (double)wr[c + l], x2 = x * x;
                    ws[l] += x2;
                    rs[l] += masked(x2, mask[c + l]);
                }
            for (; c < cols; c++) { double x = (double)wr[c], x2 = x * x; ws[0] += x2; rs[0] += masked(x2, mask[c]); }
            if (act) {   /* a loop of its own: a test inside would become masked loads through NULL */
                for (c = 0; c + 4 <= cols; c += 4)
                    for (int l = 0; l < 4; l++) {
                        double x = (double)wr[c + l], x2a = x * x * act[c + l];
                        ds[l] += x2a;
                        ns[l] += masked(x2a, mask[c + l]);
                    }
                for (; c < cols; c++) { double x = (double)wr[c], x2a = x * x * act[c]; ds[0] += x2a; ns[0] += masked(x2a, mask[c]); }
            }
            for (c = 0; c < cols; c++) { pruned += mask[c]; zeros += mask[c] | (wr[c] == 0); }
            }
            double w_sq = (ws[0] + ws[1]) + (ws[2] + ws[3]), removed_sq = (rs[0] + rs[1]) + (rs[2] + rs[3]);
            double num = (ns[0] + ns[1]) + (ns[2] + ns[3]), den = (ds[0] + ds[1]) + (ds[2] + ds[3]);
            /* the output straight from the input bytes (read by memcpy: src need not be aligned) */
            const uint8_t *sr = s + r * cols * (size_t)elem_size;
            if (elem_size == 2) {
                uint16_t *o = (uint16_t *)dr;
                for (size_t c = 0; c < cols; c++) { uint16_t v; memcpy(&v, sr + 2 * c, 2); o[c] = v & (uint16_t)(mask[c] - 1); }
            } else {
                uint32_t *o = (uint32_t *)dr;
                for (size_t c = 0; c < cols; c++) { uint32_t v; memcpy(&v, sr + 4 * c, 4); o[c] = v & ((uint32_t)mask[c] - 1); }
            }
            tally->w_sq += w_sq; tally->removed_sq += removed_sq; tally->out_num += num; tally->out_den += den;
            tally->pruned += pruned; tally->zeros += zeros;
        }
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2")))
static void prune_rows_avx2(const float *w, const void *src, int elem_size, size_t rows, size_t cols, wt_row_rule rule,
                            const double *col_scale, const double *act, const wt_dsnot_params *dsnot, const double *give_scale,
                            void *dst, void *scratch, wt_prune_tally *tally) {
    prune_rows(w, src, elem_size, rows, cols, rule, col_scale, act, dsnot, give_scale, dst, scratch, tally, 1);
}
#endif

void wt_prune_rows(const float *w, const void *src, int elem_size, size_t rows, size_t cols, wt_row_rule rule,
                   const double *col_scale, const double *act, const wt_dsnot_params *dsnot, const double *give_scale,
                   void *dst, void *scratch, wt_prune_tally *tally) {
#if defined(__x86_64__)
    if (wt_quant_uses_avx2()) { prune_rows_avx2(w, src, elem_size, rows, cols, rule, col_scale, act, dsnot, give_scale, dst, scratch, tally); return; }
#endif
    prune_rows(w, src, elem_size, rows, cols, rule, col_scale, act, dsnot, give_scale, dst, scratch, tally, 0);
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
            removed += masked(square[a[j]], p);
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

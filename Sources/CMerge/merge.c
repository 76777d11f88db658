/* Per-entry passes of the task-arithmetic merges (see CMerge.h). As Swift loops they were most of
   a TIES, DARE or DELLA merge: a random draw behind a call per entry, a sort of index arrays by a
   closure per DELLA row, f64 SIMD over arrays of pointers with bounds checks. */
#include "CMerge.h"
#include "CHalf.h"
#include <math.h>
#include <stdlib.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static int allow_avx2 = 1, allow_avx512 = 1;
int wt_merge_uses_avx2(void) { return allow_avx2 && wt_half_uses_f16c(); }
void wt_merge_allow_avx2(int allow) { allow_avx2 = allow; }

int wt_merge_uses_avx512(void) {
#if defined(__x86_64__)
    static int cached = -1;   /* atomic: workers ask concurrently */
    int c = __atomic_load_n(&cached, __ATOMIC_RELAXED);
    if (c < 0) {
        c = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512vl");
        __atomic_store_n(&cached, c, __ATOMIC_RELAXED);
    }
    return allow_avx512 && c && wt_merge_uses_avx2();
#else
    return 0;
#endif
}
void wt_merge_allow_avx512(int allow) { allow_avx512 = allow; }

/* Random draws are Linalg.SeededRNG's xoshiro256**, drawn in bulk by wt_rng_draws24 (draws.c): the
   top 24 bits v of a draw, its unit float v 2^-24 (exact in float and double). */
static inline double unit(uint32_t v) { return (double)((float)v * 0x1p-24f); }

/* The smallest draw (24 bits) whose unit float is not below probability q: v 2^-24 < q exactly
   when v < draw_bound(q) (the product is exact): one integer compare decides. */
static inline uint32_t draw_bound(double q) {
    if (!(q > 0)) return 0;
    if (q >= 1) return 16777216u;
    double x = q * 16777216.0;   /* exact: a power-of-two scaling */
    uint32_t t = (uint32_t)x;    /* floor, without a call to ceil (x86-64's baseline has no rounding instruction) */
    return t + ((double)t < x);
}

/* Draws a kernel asks for at a time: one round of wt_rng_draws24's lanes (64 KiB). */
#define DRAW_CHUNK WT_RNG_ROUND

/* v when keep, else +0, without a branch: keep is a coin flip at density 0.5 (the empty asm hides
   the mask from the compiler, which would otherwise turn the select back into a branch). */
static inline float kept_or_zero(float v, int keep) {
    uint32_t b, mask = 0u - (uint32_t)keep;
#if defined(__GNUC__)
    __asm__("" : "+r"(mask));
#endif
    memcpy(&b, &v, 4);
    b &= mask;
    memcpy(&v, &b, 4);
    return v;
}

/* DARE on a chunk whose draws are known: kept when the draw is below draw_bound(density). */
static size_t dare_portable(float *p, const uint32_t *draw, size_t n, uint32_t below, float scale) {
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) {
        int keep = draw[i] < below;
        p[i] = kept_or_zero(p[i] * scale, keep);
        kept += (size_t)keep;
    }
    return kept;
}

#if defined(__x86_64__)
/* The same, eight entries a step: the same product, masked to +0 (draws and the bound are below
   2^25, so the signed compare is the unsigned one). */
__attribute__((target("avx2")))
static size_t dare_avx2(float *p, const uint32_t *draw, size_t n, uint32_t below, float scale) {
    const __m256i b = _mm256_set1_epi32((int)below);
    const __m256 sc = _mm256_set1_ps(scale);
    size_t kept = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256 keep = _mm256_castsi256_ps(_mm256_cmpgt_epi32(b, _mm256_loadu_si256((const __m256i *)(draw + i))));
        _mm256_storeu_ps(p + i, _mm256_and_ps(_mm256_mul_ps(_mm256_loadu_ps(p + i), sc), keep));
        kept += (size_t)__builtin_popcount((unsigned)_mm256_movemask_ps(keep));
    }
    return kept + dare_portable(p + i, draw + i, n - i, below, scale);
}
#endif

size_t wt_dare_drop(float *p, size_t n, uint64_t state[4], double density, float scale) {
    const uint32_t below = draw_bound(density);
    uint32_t local[256];
    uint32_t *draw = n > 256 ? malloc((n < DRAW_CHUNK ? n : DRAW_CHUNK) * sizeof(uint32_t)) : NULL;
    const size_t chunk = draw ? DRAW_CHUNK : 256;   /* no chunk (small, or no memory): the same draws, 256 at a time */
    if (!draw) draw = local;
    size_t kept = 0;
    for (size_t i = 0; i < n; i += chunk) {
        size_t c = n - i < chunk ? n - i : chunk;
        wt_rng_draws24(state, draw, c);
#if defined(__x86_64__)
        if (wt_merge_uses_avx2()) { kept += dare_avx2(p + i, draw, c, below, scale); continue; }
#endif
        kept += dare_portable(p + i, draw, c, below, scale);
    }
    if (draw != local) free(draw);
    return kept;
}

/* ---- DELLA: the keep decision by magnitude buckets, exact ranks (inverse_density) by a stable
   radix sort of (|p| bits, index) ---- */

/* The histograms (4096), a bucket sort's counts (1024), its sorted flags (2048), the buckets' draw
   thresholds (2 x 2048) and the quarter rows' bucket counts (4 x 2048, zero between rows: a row
   clears the buckets it used, so no row pays for clearing all of them); then a, b (keys) and prob
   (n each). */
enum { QUARTERS_AT = (4096 + 1024) * 4 + 2048 + 4096 * 4, QUARTER_BYTES = 4 * 2048 * 4 };

size_t wt_della_scratch_bytes(size_t n) { return QUARTERS_AT + QUARTER_BYTES + n * (2 * sizeof(uint64_t) + sizeof(double)); }

void wt_della_scratch_clear(void *scratch) { memset((uint8_t *)scratch + QUARTERS_AT, 0, QUARTER_BYTES); }

/* Sorts keys |bits| << 32 | index ascending: three stable counting passes over the magnitude's
   11 + 10 + 10 bits (a pass whose digit is the same for every entry is skipped); the index in the
   low half keeps ties in index order. Returns the array holding the result (a or b). */
static uint64_t *sort_by_magnitude(const float *p, size_t n, uint64_t *a, uint64_t *b, uint32_t *hist) {
    static const int shifts[3] = {32, 43, 53}, widths[3] = {11, 10, 10};
    uint32_t *h[3] = {hist, hist + 2048, hist + 3072};
    memset(hist, 0, 4096 * sizeof(uint32_t));
    const uint32_t *bits = (const uint32_t *)p;
    for (size_t i = 0; i < n; i++) {
        uint64_t m = bits[i] & 0x7FFFFFFFu;
        a[i] = m << 32 | (uint64_t)i;
        h[0][m & 2047]++; h[1][(m >> 11) & 1023]++; h[2][m >> 21]++;
    }
    for (int pass = 0; pass < 3; pass++) {
        uint32_t *c = h[pass], buckets = 1u << widths[pass], sum = 0;
        int trivial = 0;
        for (uint32_t d = 0; d < buckets; d++) {
            uint32_t k = c[d];
            if (k == n) trivial = 1;
            c[d] = sum; sum += k;
        }
        if (trivial) continue;
        int shift = shifts[pass];
        uint64_t mask = buckets - 1;
        for (size_t i = 0; i < n; i++) { uint64_t v = a[i]; b[c[(v >> shift) & mask]++] = v; }
        uint64_t *t = a; a = b; b = t;
    }
    return a;
}

/* The exact rank of a key (|bits| << 32 | index: ascending |p|, ties by index) among the entries
   of its bucket, which `members` lists as such keys: how many are smaller (keys are distinct). */
static size_t rank_in_bucket_portable(const uint64_t *members, size_t count, uint64_t key) {
    size_t r = 0;
    for (size_t j = 0; j < count; j++) r += members[j] < key;
    return r;
}

#if defined(__x86_64__)
/* The same, four keys a compare (keys are below 2^63: the signed compare is the unsigned one). */
__attribute__((target("avx2")))
static size_t rank_in_bucket_avx2(const uint64_t *members, size_t count, uint64_t key) {
    const __m256i k = _mm256_set1_epi64x((long long)key);
    __m256i r = _mm256_setzero_si256();
    size_t j = 0;
    for (; j + 4 <= count; j += 4) r = _mm256_sub_epi64(r, _mm256_cmpgt_epi64(k, _mm256_loadu_si256((const __m256i *)(members + j))));
    uint64_t lanes[4];
    _mm256_storeu_si256((__m256i *)lanes, r);
    return (size_t)(lanes[0] + lanes[1] + lanes[2] + lanes[3]) + rank_in_bucket_portable(members + j, count - j, key);
}
#endif

static size_t rank_in_bucket(const uint64_t *members, size_t count, uint64_t key) {
#if defined(__x86_64__)
    if (wt_merge_uses_avx2()) return rank_in_bucket_avx2(members, count, key);
#endif
    return rank_in_bucket_portable(members, count, key);
}

/* A bucket's members (sharing their magnitude's top 11 bits) sorted by key, so by magnitude then
   index: two stable counting passes over the other 20 bits, through tmp, back into members. */
static void sort_bucket(uint64_t *members, size_t count, uint64_t *tmp, uint32_t *c) {
    uint64_t *from = members, *to = tmp;
    for (int shift = 32; shift <= 42; shift += 10) {
        memset(c, 0, 1024 * sizeof(uint32_t));
        for (size_t j = 0; j < count; j++) c[(from[j] >> shift) & 1023]++;
        uint32_t sum = 0;
        for (uint32_t d = 0; d < 1024; d++) { uint32_t k = c[d]; c[d] = sum; sum += k; }
        for (size_t j = 0; j < count; j++) to[c[(from[j] >> shift) & 1023]++] = from[j];
        uint64_t *t = from; from = to; to = t;
    }
}

/* The position of key in sorted members (it is one of them: keys hold the index). */
static size_t position_in_sorted(const uint64_t *members, size_t count, uint64_t key) {
    size_t lo = 0, hi = count;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        if (members[mid] < key) lo = mid + 1; else hi = mid;
    }
    return lo;
}

/* A row's buckets (see wt_della_row): members a (keys |bits| << 32 | index, by bucket), b and counts
   for a bucket's sort, which buckets are sorted, each bucket's start and end, and the draw bounds
   of its lowest and highest probability. */
struct della_row {
    uint64_t *a, *b;
    uint32_t *counts;
    uint8_t *sorted;
    const uint32_t *start, *fill;
    const double *prob_by_rank;
    uint32_t *low, *high;
    uint32_t span;   /* the widest bucket's high - low */
};

/* Whether entry i (magnitude bits m) is kept when its draw v falls between its bucket's lowest and
   highest probability: its exact rank, by a scan of the bucket or, once the scans of the draws
   still to land in its range (about size x range of them) would cost more than sorting it, a
   search. */
static int della_keep_by_rank(const struct della_row *row, uint32_t m, size_t i, uint32_t v) {
    uint32_t d = m >> 20, lo = row->start[d], hi = row->fill[d] - 1;
    const double *prob = row->prob_by_rank;
    size_t size = hi - lo + 1, r;
    uint64_t *members = row->a + lo;
    if (!row->sorted[d] && (double)size * (double)size * (prob[hi] - prob[lo]) > 4.0 * (double)size + 4096.0) {
        sort_bucket(members, size, row->b, row->counts);
        row->sorted[d] = 1;
    }
    uint64_t key = (uint64_t)m << 32 | (uint64_t)i;
    r = row->sorted[d] ? position_in_sorted(members, size, key) : rank_in_bucket(members, size, key);
    return unit(v) < prob[lo + r];
}

/* The keep decisions of entries from ..< to, applied to p; returns how many were kept. */
static size_t della_keep_portable(const struct della_row *row, float *p, size_t from, size_t to, const uint32_t *draw) {
    const uint32_t *bits = (const uint32_t *)p;
    size_t kept = 0;
    for (size_t i = from; i < to; i++) {
        uint32_t m = bits[i] & 0x7FFFFFFFu, d = m >> 20, v = draw[i];
        int keep = v < row->low[d], open = (v >= row->low[d]) & (v < row->high[d]);
#if defined(__GNUC__)
        __asm__("" : "+r"(keep), "+r"(open));   /* both as flags computed, one rare branch (not two coin flips) */
#endif
        if (__builtin_expect(open, 0)) keep = della_keep_by_rank(row, m, i, v);
        p[i] = kept_or_zero(p[i], keep);
        kept += (size_t)keep;
    }
    return kept;
}

#if defined(__x86_64__)
/* The same, eight entries a step: the low bounds gathered from the table; a draw within the widest
   bucket's span above its bucket's low bound (a few in a hundred) is checked against its own
   bucket's high bound one by one (a second gather for every step cost more); the rare draws inside
   a bucket's range are decided one by one in index order (as the portable loop does, so a bucket
   is sorted at the same moment); the dropped entries set to +0 by a mask. */
__attribute__((target("avx2")))
static size_t della_keep_avx2(const struct della_row *row, float *p, size_t n, const uint32_t *draw) {
    const uint32_t *bits = (const uint32_t *)p;
    const __m256i magnitude = _mm256_set1_epi32(0x7FFFFFFF), lane = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    const __m256i span = _mm256_set1_epi32((int)row->span);
    size_t kept = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i m = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(bits + i)), magnitude), d = _mm256_srli_epi32(m, 20);
        __m256i low = _mm256_i32gather_epi32((const int *)row->low, d, 4);
        __m256i v = _mm256_loadu_si256((const __m256i *)(draw + i));
        /* draws and bounds are below 2^25: the signed compares are the unsigned ones */
        __m256i keep = _mm256_cmpgt_epi32(low, v), near = _mm256_andnot_si256(keep, _mm256_cmpgt_epi32(span, _mm256_sub_epi32(v, low)));
        unsigned km = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(keep)), om = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(near));
        for (; om; om &= om - 1) {
            unsigned j = (unsigned)__builtin_ctz(om);
            uint32_t mj = bits[i + j] & 0x7FFFFFFFu;
            if (draw[i + j] < row->high[mj >> 20] && della_keep_by_rank(row, mj, i + j, draw[i + j])) km |= 1u << j;
        }
        __m256i mask = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32((int)km), lane), lane);
        _mm256_storeu_ps(p + i, _mm256_and_ps(_mm256_loadu_ps(p + i), _mm256_castsi256_ps(mask)));
        kept += (size_t)__builtin_popcount(km);
    }
    return kept + della_keep_portable(row, p, i, n, draw);
}
#endif

size_t wt_della_row(float *p, size_t n, const uint32_t *draw, const double *prob_by_rank, int inverse, void *scratch) {
    /* the tables first (their place does not depend on n), then the keys and probabilities */
    uint32_t *hist = scratch;
    uint64_t *a = (uint64_t *)((uint8_t *)scratch + QUARTERS_AT + QUARTER_BYTES), *b = a + n;
    double *prob = (double *)(b + n);
    size_t kept = 0;
    if (n == 0) return 0;
    if (inverse) {
        /* Every kept entry is divided by its own probability: exact ranks for all, by a sort. */
        const uint64_t *sorted = sort_by_magnitude(p, n, a, b, hist);
        for (size_t r = 0; r < n; r++) prob[(uint32_t)sorted[r]] = prob_by_rank[r];
        for (size_t i = 0; i < n; i++) {
            int keep = unit(draw[i]) < prob[i];
            p[i] = kept_or_zero((float)((double)p[i] / prob[i]), keep);
            kept += (size_t)keep;
        }
        return kept;
    }
    /* Only the keep decision is needed, and the probability only grows with the rank: the top 11
       bits of |p| put each entry in a bucket whose ranks are known from a histogram, and the draw
       decides against the bucket's lowest and highest probabilities; only a draw between the two
       (rare: a bucket spans a small slice of the probability range) needs the exact rank. */
    const uint32_t *bits = (const uint32_t *)p;
    uint32_t *start = hist, *fill = hist + 2048, *counts = hist + 4096;
    uint8_t *sorted = (uint8_t *)(counts + 1024);
    struct della_row row = {a, b, counts, sorted, start, fill, prob_by_rank, (uint32_t *)(sorted + 2048), (uint32_t *)(sorted + 2048) + 2048, 0};
    /* The row in four quarters, each with its own bucket counts and, below, its own write position
       per bucket, interleaved: one counter for the whole row made each entry wait for the last
       one's store when both fell in one bucket (the usual case: a few buckets hold most of a row).
       Quarter k's members of a bucket follow quarter k - 1's, so every bucket lists its members in
       index order, as one pass would. */
    uint32_t *q0 = row.high + 2048, *q1 = q0 + 2048, *q2 = q1 + 2048, *q3 = q2 + 2048;
    memset(sorted, 0, 2048);
    const size_t len = n / 4;
    const uint32_t *b0 = bits, *b1 = bits + len, *b2 = bits + 2 * len, *b3 = bits + 3 * len;
    for (size_t i = 0; i < len; i++) {
        q0[(b0[i] & 0x7FFFFFFFu) >> 20]++; q1[(b1[i] & 0x7FFFFFFFu) >> 20]++;
        q2[(b2[i] & 0x7FFFFFFFu) >> 20]++; q3[(b3[i] & 0x7FFFFFFFu) >> 20]++;
    }
    for (size_t i = 4 * len; i < n; i++) q3[(bits[i] & 0x7FFFFFFFu) >> 20]++;
    /* The buckets in use, ascending (a scan of the four tables, four buckets a step: a loop over
       every bucket up to the highest cost more than the counting when rows are 4096 long); each
       one's start, each quarter's write position in it and its end; then the draw bounds: a draw v
       (unit float v 2^-24) is below probability q exactly when v < ceil(q 2^24) (the product is
       exact), so an entry's decision reads one table entry. Other buckets' entries are never read. */
    uint32_t used = 0, sum = 0;
    uint32_t *in_use = (uint32_t *)b;   /* b is free until a bucket is sorted */
    for (uint32_t d = 0; d < 2048; d += 4) {
        unsigned nonzero;
#if defined(__x86_64__)
        __m128i x = _mm_or_si128(_mm_or_si128(_mm_loadu_si128((const __m128i *)(q0 + d)), _mm_loadu_si128((const __m128i *)(q1 + d))),
                                 _mm_or_si128(_mm_loadu_si128((const __m128i *)(q2 + d)), _mm_loadu_si128((const __m128i *)(q3 + d))));
        nonzero = (unsigned)_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(x, _mm_setzero_si128()))) ^ 0xFu;
#else
        nonzero = 0;
        for (unsigned j = 0; j < 4; j++) nonzero |= (unsigned)((q0[d + j] | q1[d + j] | q2[d + j] | q3[d + j]) != 0) << j;
#endif
        for (; nonzero; nonzero &= nonzero - 1) in_use[used++] = d + (uint32_t)__builtin_ctz(nonzero);
    }
    for (uint32_t j = 0; j < used; j++) {
        uint32_t d = in_use[j], c;
        start[d] = sum;
        c = q0[d]; q0[d] = sum; sum += c;
        c = q1[d]; q1[d] = sum; sum += c;
        c = q2[d]; q2[d] = sum; sum += c;
        c = q3[d]; q3[d] = sum; sum += c;
        fill[d] = sum;
    }
    for (size_t i = 0; i < len; i++) {
        uint64_t m0 = b0[i] & 0x7FFFFFFFu, m1 = b1[i] & 0x7FFFFFFFu, m2 = b2[i] & 0x7FFFFFFFu, m3 = b3[i] & 0x7FFFFFFFu;
        a[q0[m0 >> 20]++] = m0 << 32 | (uint64_t)i;
        a[q1[m1 >> 20]++] = m1 << 32 | (uint64_t)(len + i);
        a[q2[m2 >> 20]++] = m2 << 32 | (uint64_t)(2 * len + i);
        a[q3[m3 >> 20]++] = m3 << 32 | (uint64_t)(3 * len + i);
    }
    for (size_t i = 4 * len; i < n; i++) {
        uint64_t m = bits[i] & 0x7FFFFFFFu;
        a[q3[m >> 20]++] = m << 32 | (uint64_t)i;
    }
    for (uint32_t j = 0; j < used; j++) {   /* the tables zero again for the next row */
        uint32_t d = in_use[j];
        q0[d] = 0; q1[d] = 0; q2[d] = 0; q3[d] = 0;
    }
    /* fill[d] is now the end of bucket d. */
    for (uint32_t j = 0; j < used; j++) {
        uint32_t d = in_use[j];
        row.low[d] = draw_bound(prob_by_rank[start[d]]);
        row.high[d] = draw_bound(prob_by_rank[fill[d] - 1]);
        if (row.high[d] - row.low[d] > row.span) row.span = row.high[d] - row.low[d];
    }
#if defined(__x86_64__)
    if (wt_merge_uses_avx2()) return della_keep_avx2(&row, p, n, draw);
#endif
    return della_keep_portable(&row, p, 0, n, draw);
}

/* ---- TIES: magnitude histograms for the radix selection ---- */

void wt_magnitude_histogram(const float *x, size_t n, unsigned shift, unsigned width, int filtered, uint32_t prefix, intptr_t *hist) {
    const uint32_t *bits = (const uint32_t *)x;
    const uint32_t mask = (1u << width) - 1, all = filtered ? 0 : 1;
    const unsigned fixed = shift + width;
    /* Four histograms in turn: neighbours often share a digit (a narrow bracket puts nearly all
       entries in one or two buckets), and one counter would make each increment wait for the
       last. The filter is added, not branched on: whether an entry matches the prefix is a coin
       flip. Counts fit 32 bits per chunk of 2^31 entries. */
    uint32_t h[4][2048];
    for (size_t lo = 0; lo < n; lo += (size_t)1 << 31) {
        size_t hi = n - lo > ((size_t)1 << 31) ? lo + ((size_t)1 << 31) : n, i = lo;
        memset(h, 0, sizeof h);
        for (; i + 4 <= hi; i += 4)
            for (int j = 0; j < 4; j++) {
                uint32_t v = bits[i + j] & 0x7FFFFFFFu;
                h[j][(v >> shift) & mask] += all | (uint32_t)(v >> fixed == prefix);
            }
        for (; i < hi; i++) {
            uint32_t v = bits[i] & 0x7FFFFFFFu;
            h[0][(v >> shift) & mask] += all | (uint32_t)(v >> fixed == prefix);
        }
        for (uint32_t d = 0; d <= mask; d++) hist[d] += (intptr_t)h[0][d] + h[1][d] + h[2][d] + h[3][d];
    }
}

/* ---- TIES: sign election and disjoint sum ---- */

static inline size_t elect_one(const float *const *x, const double *w, size_t M, float *out, size_t i, int normalize, double lambda) {
    double total = 0;
    int pos = 0, neg = 0;
    for (size_t m = 0; m < M; m++) {
        double d = (double)x[m][i] * w[m];
        total += d; pos |= d > 0; neg |= d < 0;
    }
    double sign = total < 0 ? -1.0 : 1.0, sum = 0, div = 0;
    for (size_t m = 0; m < M; m++) {
        double d = (double)x[m][i] * w[m];
        int agree = d * sign > 0;
        sum += agree ? d : 0.0;
        div += agree ? w[m] : 0.0;
    }
    if (normalize) sum /= div == 0 ? 1.0 : div;
    out[i] = (float)(sum * lambda);
    return (size_t)(pos & neg);
}

static size_t elect_portable(const float *const *x, const double *w, size_t M, float *out, size_t n, int normalize, double lambda) {
    size_t conflicts = 0;
    for (size_t i = 0; i < n; i++) conflicts += elect_one(x, w, M, out, i, normalize, lambda);
    return conflicts;
}

#if defined(__x86_64__)
__attribute__((target("avx2")))
static size_t elect_avx2(const float *const *x, const double *w, size_t M, float *out, size_t n, int normalize, double lambda) {
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0), minus = _mm256_set1_pd(-1.0), lam = _mm256_set1_pd(lambda);
    size_t conflicts = 0, i = 0;
    for (; i + 4 <= n; i += 4) {
        __m256d total = zero, pos = zero, neg = zero;
        for (size_t m = 0; m < M; m++) {
            __m256d d = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(x[m] + i)), _mm256_set1_pd(w[m]));
            total = _mm256_add_pd(total, d);
            pos = _mm256_or_pd(pos, _mm256_cmp_pd(d, zero, _CMP_GT_OQ));
            neg = _mm256_or_pd(neg, _mm256_cmp_pd(d, zero, _CMP_LT_OQ));
        }
        conflicts += (size_t)__builtin_popcount((unsigned)_mm256_movemask_pd(_mm256_and_pd(pos, neg)));
        __m256d sign = _mm256_blendv_pd(one, minus, _mm256_cmp_pd(total, zero, _CMP_LT_OQ));
        __m256d sum = zero, div = zero;
        for (size_t m = 0; m < M; m++) {
            __m256d wm = _mm256_set1_pd(w[m]);
            __m256d d = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(x[m] + i)), wm);
            __m256d agree = _mm256_cmp_pd(_mm256_mul_pd(d, sign), zero, _CMP_GT_OQ);
            sum = _mm256_add_pd(sum, _mm256_and_pd(agree, d));
            div = _mm256_add_pd(div, _mm256_and_pd(agree, wm));
        }
        if (normalize) sum = _mm256_div_pd(sum, _mm256_blendv_pd(div, one, _mm256_cmp_pd(div, zero, _CMP_EQ_OQ)));
        _mm_storeu_ps(out + i, _mm256_cvtpd_ps(_mm256_mul_pd(sum, lam)));
    }
    for (; i < n; i++) conflicts += elect_one(x, w, M, out, i, normalize, lambda);
    return conflicts;
}
#endif

size_t wt_elect_sum(const float *const *x, const double *w, size_t M, float *out, size_t n, int normalize, double lambda) {
#if defined(__x86_64__)
    if (wt_merge_uses_avx2()) return elect_avx2(x, w, M, out, n, normalize, lambda);
#endif
    return elect_portable(x, w, M, out, n, normalize, lambda);
}

/* ---- TIES in one pass: deltas, cut, election, base added, report sums ---- */

/* Entry i's terms of the delta geometry, lane i mod 4: sq[4m + j] += d_m^2, dots[4k + j] += d_p d_q. */
static inline void geometry_one(const float *const *x, size_t M, const float *base, size_t i, double *sq, double *dots) {
    size_t j = i & 3, k = 0;
    double b = (double)base[i];
    for (size_t p = 0; p < M; p++) {
        double dp = (double)x[p][i] - b;
        sq[4 * p + j] += dp * dp;
        for (size_t r = p + 1; r < M; r++, k++) dots[4 * k + j] += dp * ((double)x[r][i] - b);
    }
}

/* Whether the delta of magnitude bits mb is kept under cut t with *left ties to keep (keep_one's
   rule on a value instead of in place). */
static inline int cut_keeps(uint32_t mb, uint32_t t, size_t *left) {
    int tie = (mb == t) & (*left > 0), keep = (mb > t) | tie;
    *left -= (size_t)tie;
    return keep;
}

/* Whether model m keeps entry i (index at + i in the tensor), whose delta has magnitude bits mb. */
static inline int model_keeps(wt_ties_model *model, uint32_t mb, size_t at, size_t i) {
    if (model->mask) return (model->mask[(at + i) >> 3] >> ((at + i) & 7)) & 1;
    return cut_keeps(mb, model->cut, &model->left);
}

/* Entry i without the report sums: returns 1 when kept deltas of both signs met. */
static inline size_t ties_one(const float *const *x, size_t M, const float *base, size_t i, wt_ties_model *models, size_t at,
                              const double *w, int normalize, double lambda, float *out, size_t *kept) {
    float kd[8];
    for (size_t m = 0; m < M; m++) {
        float d = x[m][i] - base[i];
        uint32_t b;
        memcpy(&b, &d, 4);
        int keep = model_keeps(&models[m], b & 0x7FFFFFFFu, at, i);
        kd[m] = kept_or_zero(d, keep);
        if (models[m].scaled) kd[m] *= models[m].factor;
        kept[m] += (size_t)keep;
    }
    const float *kp[8];
    for (size_t m = 0; m < M; m++) kp[m] = kd + m;
    float mixed;
    size_t conflict = elect_one(kp, w, M, &mixed, 0, normalize, lambda);
    out[i] = mixed + base[i];
    return conflict;
}

static size_t ties_portable(const float *const *x, size_t M, const float *base, size_t n, wt_ties_model *models, size_t at,
                            const double *w, int normalize, double lambda, float *out, size_t *kept,
                            double *sq, double *dots, double change[4], double squares[4]) {
    size_t conflicts = 0;
    for (size_t i = 0; i < n; i++) {
        conflicts += ties_one(x, M, base, i, models, at, w, normalize, lambda, out, kept);
        if (i >= (n & ~(size_t)3)) continue;   /* the last n mod 4 are the caller's */
        size_t j = i & 3;
        double b = (double)base[i];
        geometry_one(x, M, base, i, sq, dots);
        double d = (double)out[i] - b;
        change[j] += d * d;
        squares[j] += b * b;
    }
    return conflicts;
}

#if defined(__x86_64__)
/* Four entries a step, the f64 lanes of wt_delta_lanes / wt_elect_sum / wt_add_base side by side.
   A model's cut is a compare of the f32 delta's magnitude bits (signed compares order them: both
   sides are at most 0x7FFFFFFF); a quad holding entries equal to the cut takes them in index order
   only when the ties left run out inside it. A remembered kept set gives four bits a quad. */
__attribute__((target("avx2"), always_inline))
static inline size_t ties_avx2_body(const float *const *x, const size_t M, const float *base, size_t n, wt_ties_model *models, size_t at,
                                    const double *w, int normalize, double lambda, float *out, size_t *kept,
                                    double *sq, double *dots, double change[4], double squares[4]) {
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0), minus = _mm256_set1_pd(-1.0), lam = _mm256_set1_pd(lambda);
    const __m128i sign_off = _mm_set1_epi32(0x7FFFFFFF), lane_bits = _mm_setr_epi32(1, 2, 4, 8);
    __m256d s[8], t[28], dd[8], dw[8], wv[8];
    __m128i tv[8];
    size_t P = M * (M - 1) / 2, conflicts = 0, quads = n / 4;
    for (size_t m = 0; m < M; m++) {
        s[m] = _mm256_loadu_pd(sq + 4 * m);
        wv[m] = _mm256_set1_pd(w[m]);
        tv[m] = _mm_set1_epi32((int)models[m].cut);
    }
    for (size_t k = 0; k < P; k++) t[k] = _mm256_loadu_pd(dots + 4 * k);
    __m256d ch = _mm256_loadu_pd(change), bs = _mm256_loadu_pd(squares);
    for (size_t q = 0; q < quads; q++) {
        size_t i = 4 * q;
        __m128 bf = _mm_loadu_ps(base + i);
        __m256d b = _mm256_cvtps_pd(bf), total = zero, pos = zero, neg = zero;
        for (size_t m = 0; m < M; m++) {
            __m128 xf = _mm_loadu_ps(x[m] + i), df = _mm_sub_ps(xf, bf);
            dd[m] = _mm256_sub_pd(_mm256_cvtps_pd(xf), b);
            s[m] = _mm256_add_pd(s[m], _mm256_mul_pd(dd[m], dd[m]));
            __m128i keep;
            if (models[m].mask) {   /* four bits from the remembered kept set, spread to lanes */
                size_t bit = at + i;
                const uint8_t *bytes = models[m].mask + (bit >> 3);
                unsigned shift = (unsigned)(bit & 7), nibble = (unsigned)bytes[0] >> shift;
                if (shift > 4) nibble |= (unsigned)bytes[1] << (8 - shift);   /* in the set: bit + 3 < the tensor's count */
                keep = _mm_cmpeq_epi32(_mm_and_si128(_mm_set1_epi32((int)nibble), lane_bits), lane_bits);
            } else {
                __m128i mb = _mm_and_si128(_mm_castps_si128(df), sign_off);
                keep = _mm_cmpgt_epi32(mb, tv[m]);
                unsigned ties = (unsigned)_mm_movemask_ps(_mm_castsi128_ps(_mm_cmpeq_epi32(mb, tv[m])));
                if (ties) {
                    size_t count = (size_t)__builtin_popcount(ties), *left = &models[m].left;
                    if (*left >= count) {   /* all of them kept */
                        keep = _mm_or_si128(keep, _mm_cmpeq_epi32(mb, tv[m]));
                        *left -= count;
                    } else if (*left > 0) {   /* the ties run out here: in index order */
                        uint32_t lanes[4], k4[4];
                        _mm_storeu_si128((__m128i *)lanes, mb);
                        for (int l = 0; l < 4; l++) k4[l] = 0u - (uint32_t)cut_keeps(lanes[l], models[m].cut, left);
                        keep = _mm_loadu_si128((const __m128i *)k4);
                    }
                }
            }
            kept[m] += (size_t)__builtin_popcount((unsigned)_mm_movemask_ps(_mm_castsi128_ps(keep)));
            __m128 kd = _mm_and_ps(df, _mm_castsi128_ps(keep));
            if (models[m].scaled) kd = _mm_mul_ps(kd, _mm_set1_ps(models[m].factor));
            __m256d d = _mm256_mul_pd(_mm256_cvtps_pd(kd), wv[m]);
            dw[m] = d;
            total = _mm256_add_pd(total, d);
            pos = _mm256_or_pd(pos, _mm256_cmp_pd(d, zero, _CMP_GT_OQ));
            neg = _mm256_or_pd(neg, _mm256_cmp_pd(d, zero, _CMP_LT_OQ));
        }
        conflicts += (size_t)__builtin_popcount((unsigned)_mm256_movemask_pd(_mm256_and_pd(pos, neg)));
        __m256d sign = _mm256_blendv_pd(one, minus, _mm256_cmp_pd(total, zero, _CMP_LT_OQ)), sum = zero, div = zero;
        for (size_t m = 0; m < M; m++) {
            __m256d agree = _mm256_cmp_pd(_mm256_mul_pd(dw[m], sign), zero, _CMP_GT_OQ);
            sum = _mm256_add_pd(sum, _mm256_and_pd(agree, dw[m]));
            div = _mm256_add_pd(div, _mm256_and_pd(agree, wv[m]));
        }
        if (normalize) sum = _mm256_div_pd(sum, _mm256_blendv_pd(div, one, _mm256_cmp_pd(div, zero, _CMP_EQ_OQ)));
        __m128 o = _mm_add_ps(_mm256_cvtpd_ps(_mm256_mul_pd(sum, lam)), bf);
        _mm_storeu_ps(out + i, o);
        __m256d dc = _mm256_sub_pd(_mm256_cvtps_pd(o), b);
        ch = _mm256_add_pd(ch, _mm256_mul_pd(dc, dc));
        bs = _mm256_add_pd(bs, _mm256_mul_pd(b, b));
        for (size_t p = 0, k = 0; p < M; p++)
            for (size_t r = p + 1; r < M; r++, k++) t[k] = _mm256_add_pd(t[k], _mm256_mul_pd(dd[p], dd[r]));
    }
    for (size_t m = 0; m < M; m++) _mm256_storeu_pd(sq + 4 * m, s[m]);
    for (size_t k = 0; k < P; k++) _mm256_storeu_pd(dots + 4 * k, t[k]);
    _mm256_storeu_pd(change, ch);
    _mm256_storeu_pd(squares, bs);
    for (size_t i = 4 * quads; i < n; i++) conflicts += ties_one(x, M, base, i, models, at, w, normalize, lambda, out, kept);
    return conflicts;
}

/* The body compiled once per model count: with M a constant the loops over models unroll and the
   per-model vectors stay in registers (a loop over a runtime M kept them on the stack, twice the
   time). */
__attribute__((target("avx2")))
static size_t ties_avx2(const float *const *x, size_t M, const float *base, size_t n, wt_ties_model *models, size_t at,
                        const double *w, int normalize, double lambda, float *out, size_t *kept,
                        double *sq, double *dots, double change[4], double squares[4]) {
#define TIES_M(k) case k: return ties_avx2_body(x, k, base, n, models, at, w, normalize, lambda, out, kept, sq, dots, change, squares);
    switch (M) { TIES_M(1) TIES_M(2) TIES_M(3) TIES_M(4) TIES_M(5) TIES_M(6) TIES_M(7) TIES_M(8) default: return 0; }
#undef TIES_M
}
#endif

#if defined(__x86_64__)
/* The same pass eight entries a step, for the size of the out-of-order window: each f64 vector
   op does two quads' work. The report's sums keep their four lanes and their order: the low quad's
   terms are added, then the high quad's; the ties at a cut are taken in index order across the
   eight as across two quads. The last n mod 8 entries go to the AVX2 body. */
#define AVX512 __attribute__((target("avx512f,avx512vl"), always_inline))
AVX512 static inline __m256d add_quads(__m256d acc, __m512d v) {
    return _mm256_add_pd(_mm256_add_pd(acc, _mm512_castpd512_pd256(v)), _mm512_extractf64x4_pd(v, 1));
}

AVX512 static inline size_t ties_avx512_body(const float *const *x, const size_t M, const float *base, size_t n, wt_ties_model *models, size_t at,
                                             const double *w, int normalize, double lambda, float *out, size_t *kept,
                                             double *sq, double *dots, double change[4], double squares[4]) {
    const __m512d zero = _mm512_setzero_pd(), one = _mm512_set1_pd(1.0), minus = _mm512_set1_pd(-1.0), lam = _mm512_set1_pd(lambda);
    const __m256i sign_off = _mm256_set1_epi32(0x7FFFFFFF);
    __m256d s[8], t[28];
    __m512d dd[8], dw[8], wv[8];
    __m256i tv[8];
    size_t P = M * (M - 1) / 2, conflicts = 0, octs = n / 8;
    for (size_t m = 0; m < M; m++) {
        s[m] = _mm256_loadu_pd(sq + 4 * m);
        wv[m] = _mm512_set1_pd(w[m]);
        tv[m] = _mm256_set1_epi32((int)models[m].cut);
    }
    for (size_t k = 0; k < P; k++) t[k] = _mm256_loadu_pd(dots + 4 * k);
    __m256d ch = _mm256_loadu_pd(change), bs = _mm256_loadu_pd(squares);
    for (size_t o = 0; o < octs; o++) {
        size_t i = 8 * o;
        __m256 bf = _mm256_loadu_ps(base + i);
        __m512d b = _mm512_cvtps_pd(bf), total = zero;
        __mmask8 pos = 0, neg = 0;
        for (size_t m = 0; m < M; m++) {
            __m256 xf = _mm256_loadu_ps(x[m] + i), df = _mm256_sub_ps(xf, bf);
            dd[m] = _mm512_sub_pd(_mm512_cvtps_pd(xf), b);
            s[m] = add_quads(s[m], _mm512_mul_pd(dd[m], dd[m]));
            __mmask8 keep;
            if (models[m].mask) {   /* eight bits from the remembered kept set */
                size_t bit = at + i;
                const uint8_t *bytes = models[m].mask + (bit >> 3);
                unsigned shift = (unsigned)(bit & 7), eight = (unsigned)bytes[0] >> shift;
                if (shift) eight |= (unsigned)bytes[1] << (8 - shift);   /* in the set: bit + 7 < the tensor's count */
                keep = (__mmask8)eight;
            } else {
                __m256i mb = _mm256_and_si256(_mm256_castps_si256(df), sign_off);
                keep = _mm256_cmpgt_epi32_mask(mb, tv[m]);
                __mmask8 ties = _mm256_cmpeq_epi32_mask(mb, tv[m]);
                if (ties) {
                    size_t count = (size_t)__builtin_popcount((unsigned)ties), *left = &models[m].left;
                    if (*left >= count) {   /* all of them kept */
                        keep |= ties;
                        *left -= count;
                    } else {   /* the ties run out here: in index order */
                        for (unsigned rest = ties; rest && *left > 0; rest &= rest - 1, (*left)--) keep |= (__mmask8)(rest & (0u - rest));
                    }
                }
            }
            kept[m] += (size_t)__builtin_popcount((unsigned)keep);
            __m256 kd = _mm256_maskz_mov_ps(keep, df);
            if (models[m].scaled) kd = _mm256_mul_ps(kd, _mm256_set1_ps(models[m].factor));
            __m512d d = _mm512_mul_pd(_mm512_cvtps_pd(kd), wv[m]);
            dw[m] = d;
            total = _mm512_add_pd(total, d);
            pos |= _mm512_cmp_pd_mask(d, zero, _CMP_GT_OQ);
            neg |= _mm512_cmp_pd_mask(d, zero, _CMP_LT_OQ);
        }
        conflicts += (size_t)__builtin_popcount((unsigned)(pos & neg));
        __m512d sign = _mm512_mask_blend_pd(_mm512_cmp_pd_mask(total, zero, _CMP_LT_OQ), one, minus), sum = zero, div = zero;
        for (size_t m = 0; m < M; m++) {
            __mmask8 agree = _mm512_cmp_pd_mask(_mm512_mul_pd(dw[m], sign), zero, _CMP_GT_OQ);
            sum = _mm512_add_pd(sum, _mm512_maskz_mov_pd(agree, dw[m]));
            div = _mm512_add_pd(div, _mm512_maskz_mov_pd(agree, wv[m]));
        }
        if (normalize) sum = _mm512_div_pd(sum, _mm512_mask_blend_pd(_mm512_cmp_pd_mask(div, zero, _CMP_EQ_OQ), div, one));
        __m256 of = _mm256_add_ps(_mm512_cvtpd_ps(_mm512_mul_pd(sum, lam)), bf);
        _mm256_storeu_ps(out + i, of);
        __m512d dc = _mm512_sub_pd(_mm512_cvtps_pd(of), b);
        ch = add_quads(ch, _mm512_mul_pd(dc, dc));
        bs = add_quads(bs, _mm512_mul_pd(b, b));
        for (size_t p = 0, k = 0; p < M; p++)
            for (size_t r = p + 1; r < M; r++, k++) t[k] = add_quads(t[k], _mm512_mul_pd(dd[p], dd[r]));
    }
    for (size_t m = 0; m < M; m++) _mm256_storeu_pd(sq + 4 * m, s[m]);
    for (size_t k = 0; k < P; k++) _mm256_storeu_pd(dots + 4 * k, t[k]);
    _mm256_storeu_pd(change, ch);
    _mm256_storeu_pd(squares, bs);
    size_t i = 8 * octs;
    const float *xr[8];
    for (size_t m = 0; m < M; m++) xr[m] = x[m] + i;
    return conflicts + ties_avx2_body(xr, M, base + i, n - i, models, at + i, w, normalize, lambda, out + i, kept, sq, dots, change, squares);
}

__attribute__((target("avx512f,avx512vl")))
static size_t ties_avx512(const float *const *x, size_t M, const float *base, size_t n, wt_ties_model *models, size_t at,
                          const double *w, int normalize, double lambda, float *out, size_t *kept,
                          double *sq, double *dots, double change[4], double squares[4]) {
#define TIES512_M(k) case k: return ties_avx512_body(x, k, base, n, models, at, w, normalize, lambda, out, kept, sq, dots, change, squares);
    switch (M) { TIES512_M(1) TIES512_M(2) TIES512_M(3) TIES512_M(4) TIES512_M(5) TIES512_M(6) TIES512_M(7) TIES512_M(8) default: return 0; }
#undef TIES512_M
}
#undef AVX512
#endif

size_t wt_ties_block(const float *const *x, size_t M, const float *base, size_t n, wt_ties_model *models, size_t at,
                     const double *w, int normalize, double lambda, float *out, size_t *kept,
                     double *sq, double *dots, double change[4], double squares[4]) {
    if (M == 0 || M > 8) return 0;   /* the caller checks; nothing is written */
#if defined(__x86_64__)
    if (wt_merge_uses_avx512()) return ties_avx512(x, M, base, n, models, at, w, normalize, lambda, out, kept, sq, dots, change, squares);
    if (wt_merge_uses_avx2()) return ties_avx2(x, M, base, n, models, at, w, normalize, lambda, out, kept, sq, dots, change, squares);
#endif
    return ties_portable(x, M, base, n, models, at, w, normalize, lambda, out, kept, sq, dots, change, squares);
}

/* ---- Report sums: delta geometry and L1 norms in four lanes ---- */

static void delta_lanes_portable(float *const *x, size_t M, const float *base, size_t quads, double *sq, double *dots, int subtract) {
    for (size_t i = 0; i < 4 * quads; i++) {
        geometry_one((const float *const *)x, M, base, i, sq, dots);
        if (subtract) for (size_t p = 0; p < M; p++) x[p][i] -= base[i];
    }
}

#if defined(__x86_64__)
__attribute__((target("avx2")))
static void delta_lanes_avx2(float *const *x, size_t M, const float *base, size_t quads, double *sq, double *dots, int subtract) {
    __m256d s[8], t[28], d[8];
    size_t P = M * (M - 1) / 2;
    for (size_t m = 0; m < M; m++) s[m] = _mm256_loadu_pd(sq + 4 * m);
    for (size_t k = 0; k < P; k++) t[k] = _mm256_loadu_pd(dots + 4 * k);
    for (size_t q = 0; q < quads; q++) {
        size_t i = 4 * q, k = 0;
        __m128 bf = _mm_loadu_ps(base + i);
        __m256d b = _mm256_cvtps_pd(bf);
        for (size_t m = 0; m < M; m++) {
            __m128 xf = _mm_loadu_ps(x[m] + i);
            d[m] = _mm256_sub_pd(_mm256_cvtps_pd(xf), b);
            s[m] = _mm256_add_pd(s[m], _mm256_mul_pd(d[m], d[m]));
            if (subtract) _mm_storeu_ps(x[m] + i, _mm_sub_ps(xf, bf));
        }
        for (size_t p = 0; p < M; p++)
            for (size_t r = p + 1; r < M; r++, k++) t[k] = _mm256_add_pd(t[k], _mm256_mul_pd(d[p], d[r]));
    }
    for (size_t m = 0; m < M; m++) _mm256_storeu_pd(sq + 4 * m, s[m]);
    for (size_t k = 0; k < P; k++) _mm256_storeu_pd(dots + 4 * k, t[k]);
}

__attribute__((target("avx2")))
static void abs_lanes_avx2(const float *p, size_t quads, double lanes[4]) {
    const __m256d sign = _mm256_set1_pd(-0.0);
    __m256d acc = _mm256_loadu_pd(lanes);
    for (size_t q = 0; q < quads; q++) acc = _mm256_add_pd(acc, _mm256_andnot_pd(sign, _mm256_cvtps_pd(_mm_loadu_ps(p + 4 * q))));
    _mm256_storeu_pd(lanes, acc);
}
#endif

void wt_delta_lanes(const float *const *x, size_t M, const float *base, size_t quads, double *sq, double *dots) {
    float *const *xs = (float *const *)x;   /* read only: subtract is 0 */
#if defined(__x86_64__)
    if (M <= 8 && wt_merge_uses_avx2()) { delta_lanes_avx2(xs, M, base, quads, sq, dots, 0); return; }
#endif
    delta_lanes_portable(xs, M, base, quads, sq, dots, 0);
}

void wt_delta_lanes_subtract(float *const *x, size_t M, const float *base, size_t n, double *sq, double *dots) {
    size_t quads = n / 4;
#if defined(__x86_64__)
    if (M <= 8 && wt_merge_uses_avx2()) delta_lanes_avx2(x, M, base, quads, sq, dots, 1);
    else
#endif
    delta_lanes_portable(x, M, base, quads, sq, dots, 1);
    for (size_t i = 4 * quads; i < n; i++)
        for (size_t m = 0; m < M; m++) x[m][i] -= base[i];
}

static inline void add_base_one(float *out, const float *base, size_t i, double *change, double *squares, size_t j) {
    float o = out[i] + base[i];
    out[i] = o;
    double d = (double)o - (double)base[i], b = (double)base[i];
    change[j] += d * d;
    squares[j] += b * b;
}

#if defined(__x86_64__)
__attribute__((target("avx2")))
static size_t add_base_avx2(float *out, const float *base, size_t quads, double change[4], double squares[4]) {
    __m256d c = _mm256_loadu_pd(change), s = _mm256_loadu_pd(squares);
    for (size_t q = 0; q < quads; q++) {
        __m128 bf = _mm_loadu_ps(base + 4 * q), o = _mm_add_ps(_mm_loadu_ps(out + 4 * q), bf);
        _mm_storeu_ps(out + 4 * q, o);
        __m256d b = _mm256_cvtps_pd(bf), d = _mm256_sub_pd(_mm256_cvtps_pd(o), b);
        c = _mm256_add_pd(c, _mm256_mul_pd(d, d));
        s = _mm256_add_pd(s, _mm256_mul_pd(b, b));
    }
    _mm256_storeu_pd(change, c);
    _mm256_storeu_pd(squares, s);
    return quads;
}
#endif

void wt_add_base(float *out, const float *base, size_t n, double change[4], double squares[4]) {
    size_t quads = n / 4, q = 0;
#if defined(__x86_64__)
    if (wt_merge_uses_avx2()) q = add_base_avx2(out, base, quads, change, squares);
#endif
    for (; q < quads; q++)
        for (size_t j = 0; j < 4; j++) add_base_one(out, base, 4 * q + j, change, squares, j);
    for (size_t i = 4 * quads; i < n; i++) out[i] += base[i];
}

void wt_abs_lanes(const float *p, size_t quads, double lanes[4]) {
#if defined(__x86_64__)
    if (wt_merge_uses_avx2()) { abs_lanes_avx2(p, quads, lanes); return; }
#endif
    for (size_t q = 0; q < quads; q++)
        for (int j = 0; j < 4; j++) lanes[j] += fabs((double)p[4 * q + (size_t)j]);
}

/* ---- TIES: one counting pass for a bracketed selection, and the top-k mask ---- */

static inline size_t bracket_one(uint32_t v, uint32_t lo, uint32_t hi, uint32_t *out, size_t w, size_t cap, size_t *a) {
    *a += v > hi;
    out[w < cap ? w : cap] = v;
    return (size_t)((v >= lo) & (v <= hi));
}

#if defined(__x86_64__)
/* For each 8-bit mask, the indices of its set bits in order, 4 bits each (lowest first): the lane
   permutation that packs the selected lanes of 8 to the front. Built once at load. */
static uint32_t pack_lut[256];
__attribute__((constructor)) static void build_pack_lut(void) {
    for (uint32_t m = 0; m < 256; m++) {
        uint32_t v = 0, k = 0;
        for (uint32_t l = 0; l < 8; l++) if (m >> l & 1) v |= l << (4 * k++);
        pack_lut[m] = v;
    }
}

/* Eight at a time: the packed inside lanes are stored at the write position (out has 8 slots of
   room past cap), the count of lanes above added per lane. Magnitude bits are at most 0x7FFFFFFF,
   so signed compares order them. */
__attribute__((target("avx2")))
static size_t bracket_avx2(const uint32_t *bits, size_t n, uint32_t lo, uint32_t hi, uint32_t *out, size_t cap, size_t *above) {
    const __m256i sign_off = _mm256_set1_epi32(0x7FFFFFFF), vlo = _mm256_set1_epi32((int)lo - 1), vhi = _mm256_set1_epi32((int)hi);
    const __m256i shifts = _mm256_setr_epi32(0, 4, 8, 12, 16, 20, 24, 28), nibble = _mm256_set1_epi32(0xF);
    __m256i count = _mm256_setzero_si256();
    size_t w = 0, i = 0, a = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(bits + i)), sign_off);
        __m256i gt = _mm256_cmpgt_epi32(v, vhi);
        count = _mm256_sub_epi32(count, gt);
        __m256i in = _mm256_andnot_si256(gt, _mm256_cmpgt_epi32(v, vlo));
        unsigned mask = (unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(in));
        __m256i perm = _mm256_and_si256(_mm256_srlv_epi32(_mm256_set1_epi32((int)pack_lut[mask]), shifts), nibble);
        _mm256_storeu_si256((__m256i *)(out + (w < cap ? w : cap)), _mm256_permutevar8x32_epi32(v, perm));
        w += (size_t)__builtin_popcount(mask);
        if ((i & ((1u << 20) - 1)) == 0) {   /* lane counts stay below 2^31 */
            uint32_t c[8]; _mm256_storeu_si256((__m256i *)c, count); count = _mm256_setzero_si256();
            for (int l = 0; l < 8; l++) a += c[l];
        }
    }
    uint32_t c[8]; _mm256_storeu_si256((__m256i *)c, count);
    for (int l = 0; l < 8; l++) a += c[l];
    for (; i < n; i++) w += bracket_one(bits[i] & 0x7FFFFFFFu, lo, hi, out, w, cap, &a);
    *above += a;
    return w;
}
#endif

size_t wt_bracket(const float *x, size_t n, uint32_t lo, uint32_t hi, uint32_t *out, size_t cap, size_t *above) {
    const uint32_t *bits = (const uint32_t *)x;
    if (hi > 0x7FFFFFFFu) hi = 0x7FFFFFFFu;   /* nothing is above: the same counts */
#if defined(__x86_64__)
    if (lo > 0 && wt_merge_uses_avx2()) return bracket_avx2(bits, n, lo, hi, out, cap, above);
#endif
    size_t w = 0, a = 0;
    for (size_t i = 0; i < n; i++) w += bracket_one(bits[i] & 0x7FFFFFFFu, lo, hi, out, w, cap, &a);
    *above += a;
    return w;
}

static inline size_t keep_one(uint32_t *b, uint32_t t, size_t *left) {
    uint32_t m = *b & 0x7FFFFFFFu;
    int tie = (m == t) & (*left > 0), keep = (m > t) | tie;
    *left -= (size_t)tie;
    *b = keep ? *b : 0;
    return (size_t)keep;
}

#if defined(__x86_64__)
__attribute__((target("avx2")))
static size_t keep_above_avx2(uint32_t *b, size_t n, uint32_t t, size_t *left) {
    const __m256i sign_off = _mm256_set1_epi32(0x7FFFFFFF), vt = _mm256_set1_epi32((int)t);
    size_t kept = 0, i = 0;
    for (; i + 8 <= n; i += 8) {
        __m256i v = _mm256_loadu_si256((const __m256i *)(b + i)), m = _mm256_and_si256(v, sign_off);
        if (_mm256_movemask_epi8(_mm256_cmpeq_epi32(m, vt))) {   /* an entry equal to the cut: in order */
            for (size_t j = i; j < i + 8; j++) kept += keep_one(b + j, t, left);
            continue;
        }
        __m256i gt = _mm256_cmpgt_epi32(m, vt);
        _mm256_storeu_si256((__m256i *)(b + i), _mm256_and_si256(v, gt));
        kept += (size_t)__builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(gt)));
    }
    for (; i < n; i++) kept += keep_one(b + i, t, left);
    return kept;
}
#endif

size_t wt_keep_above(float *p, size_t n, uint32_t t, size_t *ties) {
    uint32_t *b = (uint32_t *)p;
#if defined(__x86_64__)
    if (wt_merge_uses_avx2()) return keep_above_avx2(b, n, t, ties);
#endif
    size_t kept = 0;
    for (size_t i = 0; i < n; i++) kept += keep_one(b + i, t, ties);
    return kept;
}

/* ---- The kept set of a random sparsifier, remembered between two passes ---- */

#if defined(__x86_64__)
/* Whole bytes of the mask, eight entries a step: bit l of byte k is whether |b[8k + l]| is not 0. */
__attribute__((target("avx2")))
static void mask_bytes_avx2(const uint32_t *b, size_t bytes, uint8_t *out) {
    const __m256i sign_off = _mm256_set1_epi32(0x7FFFFFFF), zero = _mm256_setzero_si256();
    for (size_t k = 0; k < bytes; k++) {
        __m256i v = _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(b + 8 * k)), sign_off);
        out[k] = (uint8_t)~(unsigned)_mm256_movemask_ps(_mm256_castsi256_ps(_mm256_cmpeq_epi32(v, zero)));
    }
}

/* Whole bytes applied, eight entries a step: each byte's bits spread to lane masks. */
__attribute__((target("avx2")))
static void mask_apply_avx2(uint32_t *b, size_t bytes, const uint8_t *in) {
    const __m256i lane_bits = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
    for (size_t k = 0; k < bytes; k++) {
        __m256i keep = _mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(in[k]), lane_bits), lane_bits);
        _mm256_storeu_si256((__m256i *)(b + 8 * k), _mm256_and_si256(_mm256_loadu_si256((const __m256i *)(b + 8 * k)), keep));
    }
}
#endif

/* Bit j of the mask: set when the float with these bits is nonzero (either sign of zero clears it). */
static inline void store_bit(uint8_t *bits, size_t j, uint32_t value) {
    uint8_t bit = (uint8_t)(1u << (j & 7));
    bits[j >> 3] = (uint8_t)((bits[j >> 3] & ~bit) | ((value & 0x7FFFFFFFu) ? bit : 0));
}

void wt_mask_store(const float *p, size_t n, uint8_t *bits, size_t at) {
    const uint32_t *b = (const uint32_t *)p;
    size_t i = 0;
    for (; i < n && ((at + i) & 7); i++) store_bit(bits, at + i, b[i]);   /* up to a byte boundary */
#if defined(__x86_64__)
    if (wt_merge_uses_avx2() && n - i >= 8) {
        size_t bytes = (n - i) / 8;
        mask_bytes_avx2(b + i, bytes, bits + ((at + i) >> 3));
        i += 8 * bytes;
    }
#endif
    for (; i + 8 <= n; i += 8) {   /* whole bytes */
        uint32_t byte = 0;
        for (int l = 0; l < 8; l++) byte |= (uint32_t)((b[i + l] & 0x7FFFFFFFu) != 0) << l;
        bits[(at + i) >> 3] = (uint8_t)byte;
    }
    for (; i < n; i++) store_bit(bits, at + i, b[i]);
}

void wt_mask_apply(float *p, size_t n, const uint8_t *bits, size_t at) {
    uint32_t *b = (uint32_t *)p;
    size_t i = 0;
    for (; i < n && ((at + i) & 7); i++) p[i] = kept_or_zero(p[i], (bits[(at + i) >> 3] >> ((at + i) & 7)) & 1);
#if defined(__x86_64__)
    if (wt_merge_uses_avx2() && n - i >= 8) {
        size_t bytes = (n - i) / 8;
        mask_apply_avx2(b + i, bytes, bits + ((at + i) >> 3));
        i += 8 * bytes;
    }
#endif
    for (; i + 8 <= n; i += 8) {
        uint32_t byte = bits[(at + i) >> 3];
        for (int l = 0; l < 8; l++) b[i + l] &= 0u - ((byte >> l) & 1);
    }
    for (; i < n; i++) p[i] = kept_or_zero(p[i], (bits[(at + i) >> 3] >> ((at + i) & 7)) & 1);
}

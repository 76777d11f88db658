/* DSnoT's refinement of rows (Zhang et al., "Dynamic Sparse No Training"), the rule DSnoT.swift
   states: the expected output error of the row's pruned weights, err = sum of w_j E[x_j] over the
   pruned j (in index order), is driven towards 0 by swapping a pruned weight back in for a kept one,
   at most max_cycles times, while |err| > threshold and the swap keeps err's sign.

   err never changes sign during a row (a swap that would change it ends the row), so a row reads
   one end of the growth order and one list of kept weights, and on real rows only a few entries of
   each (2.4 swaps a row on the bench). The candidates are therefore taken one at a time from a
   two-level tournament (the best of each block of 64, then the best block), built in one
   vectorised pass; the errors of eight rows are summed side by side (one vector lane a row, two
   independent chains; each row's sum still in index order, so the same bits). Rows with a
   non-finite candidate value (the tournament's sentinels are infinities) take the ordered-ends
   path, which orders up to max_cycles candidates from each end of each list (insertion into a
   short sorted list; a merge sort when the ends cover most of the list) and gives the same choices
   for finite values. */
#include "CQuant.h"
#include "masked.h"
#include <math.h>
#include <string.h>
#include <stddef.h>
#include <float.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

typedef struct { const double *key; const float *score; } order_ctx;

/* growth order: contribution / max(var, 1e-12) ascending, lower index first */
static int grow_less(const order_ctx *o, uint32_t a, uint32_t b) {
    return o->key[a] < o->key[b] || (o->key[a] == o->key[b] && a < b);
}
/* giving-up order: Wanda score ascending, lower index first */
static int score_less(const order_ctx *o, uint32_t a, uint32_t b) {
    return o->score[a] < o->score[b] || (o->score[a] == o->score[b] && a < b);
}
typedef int (*less_fn)(const order_ctx *, uint32_t, uint32_t);

static void merge_sort(uint32_t *v, size_t n, uint32_t *tmp, less_fn less, const order_ctx *o) {
    if (n < 2) return;
    size_t h = n / 2;
    merge_sort(v, h, tmp, less, o);
    merge_sort(v + h, n - h, tmp, less, o);
    size_t i = 0, j = h, k = 0;
    while (i < h && j < n) tmp[k++] = less(o, v[j], v[i]) ? v[j++] : v[i++];
    while (i < h) tmp[k++] = v[i++];
    while (j < n) tmp[k++] = v[j++];
    memcpy(v, tmp, n * sizeof(uint32_t));
}

/* The first k of items[0..n) in the order `less` (reversed: the last k, last first), written to
   out in that order; returns how many (min(k, n)). items is reordered. */
static size_t first_in_order(uint32_t *items, size_t n, size_t k, int reversed, less_fn less, const order_ctx *o,
                             uint32_t *out, uint32_t *tmp) {
    if (k > n) k = n;
    if (k == 0) return 0;
    if (4 * k >= n) {
        merge_sort(items, n, tmp, less, o);
        for (size_t i = 0; i < k; i++) out[i] = reversed ? items[n - 1 - i] : items[i];
        return k;
    }
    size_t len = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t x = items[i];
        /* before(x, y): x comes first in the wanted order */
        #define BEFORE(x, y) (reversed ? less(o, (y), (x)) : less(o, (x), (y)))
        if (len == k && !BEFORE(x, out[k - 1])) continue;
        size_t lo = 0, hi = len;
        while (lo < hi) { size_t mid = (lo + hi) / 2; if (BEFORE(x, out[mid])) hi = mid; else lo = mid + 1; }
        size_t end = len < k ? len : k - 1;
        memmove(out + lo + 1, out + lo, (end - lo) * sizeof(uint32_t));
        out[lo] = x;
        if (len < k) len++;
        #undef BEFORE
    }
    return len;
}

static double sign_of(double x) { return signbit(x) ? -1.0 : (x == 0 ? 0.0 : 1.0); }

/* N:M: the kept (not blocked) entry of least score in r's group, lower index first; -1 if none */
static ptrdiff_t group_pick(size_t r, size_t nm_m, size_t cols, const uint8_t *blocked, const order_ctx *o) {
    size_t start = r - r % nm_m;
    ptrdiff_t q = -1;
    for (size_t j = start; j < start + nm_m && j < cols; j++)
        if (!blocked[j] && (q < 0 || score_less(o, (uint32_t)j, (uint32_t)q))) q = (ptrdiff_t)j;
    return q;
}

typedef struct {
    double *key, *gv, *pv, *gbest, *pbest;
    uint32_t *list, *tmp, *front, *back, *neg, *pos;
    uint8_t *blocked;
} row_scratch;

#define BLOCK 64
static size_t blocks_of(size_t cols) { return (cols + BLOCK - 1) / BLOCK; }

/* The ordered-ends path (any values; see the top of the file). */
static size_t refine_ordered(const double *contrib, double err, uint8_t *pruned, const double *var, const float *score, size_t cols,
                             const wt_dsnot_params *prm, row_scratch *s) {
    double *key = s->key;
    uint32_t *list = s->list, *tmp = s->tmp, *front = s->front, *back = s->back, *neg = s->neg, *pos = s->pos;
    uint8_t *blocked = s->blocked;
    const size_t nm_m = prm->nm_m, max_cycles = prm->max_cycles;
    order_ctx o = { key, score };
    for (size_t j = 0; j < cols; j++) key[j] = contrib[j] / (1e-12 >= var[j] ? 1e-12 : var[j]);
    const double sign0 = sign_of(err);
    /* growth candidates: the pruned entries; front: the first max_cycles, back: the last */
    size_t gcount = 0;
    for (size_t j = 0; j < cols; j++) { list[gcount] = (uint32_t)j; gcount += pruned[j]; }
    first_in_order(list, gcount, max_cycles, 0, grow_less, &o, front, tmp);
    first_in_order(list, gcount, max_cycles, 1, grow_less, &o, back, tmp);
    /* unstructured: the kept entries of each contribution sign, first max_cycles by score */
    size_t nneg = 0, npos = 0;
    if (nm_m == 0) {
        size_t c = 0;
        for (size_t j = 0; j < cols; j++) { list[c] = (uint32_t)j; c += !pruned[j] & (contrib[j] < 0); }
        nneg = first_in_order(list, c, max_cycles, 0, score_less, &o, neg, tmp);
        c = 0;
        for (size_t j = 0; j < cols; j++) { list[c] = (uint32_t)j; c += !pruned[j] & (contrib[j] > 0); }
        npos = first_in_order(list, c, max_cycles, 0, score_less, &o, pos, tmp);
    }
    for (size_t j = 0; j < cols; j++) blocked[j] = pruned[j];
    size_t lo = 0, hi = gcount, ni = 0, pi = 0, swaps = 0;   /* hi: one past the current high end */
    for (size_t cycle = 0; cycle < max_cycles; cycle++) {
        if (!(fabs(err) > prm->threshold) || lo >= hi) break;
        /* grow[lo] is front[lo]; grow[hi - 1] is back[gcount - hi] (both within reach: each end moves
           at most max_cycles times) */
        uint32_t r = err > 0 ? back[gcount - hi] : front[lo];
        uint32_t p;
        if (nm_m) {
            ptrdiff_t q = group_pick(r, nm_m, cols, blocked, &o);
            if (q < 0) break;
            p = (uint32_t)q;
        } else if (err < 0) {
            if (pi >= npos) break;
            p = pos[pi];
        } else {
            if (ni >= nneg) break;
            p = neg[ni];
        }
        double after = err + contrib[p] - contrib[r];
        if (sign_of(after) != sign0) break;
        pruned[p] = 1;
        pruned[r] = 0;
        blocked[p] = 1;
        if (!nm_m) { if (err < 0) pi++; else ni++; }
        if (err > 0) hi--; else lo++;
        err = after;
        swaps++;
    }
    return swaps;
}

/* The tournament: v holds every entry's value, the sentinel (an infinity) where the entry is no
   candidate; best[b] the best of block b. take_least: the least value, its lowest index (ascending
   order, ties to the lower index); take_greatest: the greatest, its highest index (the same order
   read from the other end). Each removes what it returns; -1 when only sentinels are left. */
static ptrdiff_t take_least(double *v, double *best, size_t n) {
    size_t nb = blocks_of(n), b = 0;
    for (size_t i = 1; i < nb; i++) if (best[i] < best[b]) b = i;
    const double m = best[b];
    if (m == INFINITY) return -1;
    size_t s = b * BLOCK, e = s + BLOCK < n ? s + BLOCK : n, j = s;
    while (v[j] != m) j++;
    v[j] = INFINITY;
    double t = INFINITY;
    for (size_t i = s; i < e; i++) t = v[i] < t ? v[i] : t;
    best[b] = t;
    return (ptrdiff_t)j;
}

static ptrdiff_t take_greatest(double *v, double *best, size_t n) {
    size_t nb = blocks_of(n), b = 0;
    for (size_t i = 1; i < nb; i++) if (best[i] >= best[b]) b = i;
    const double m = best[b];
    if (m == -INFINITY) return -1;
    size_t s = b * BLOCK, e = s + BLOCK < n ? s + BLOCK : n, j = e;
    while (v[--j] != m) {}
    v[j] = -INFINITY;
    double t = -INFINITY;
    for (size_t i = s; i < e; i++) t = v[i] > t ? v[i] : t;
    best[b] = t;
    return (ptrdiff_t)j;
}

/* One entry of the pass that builds the tournaments: its values in both (the sentinel where it is
   no candidate), folded into its block's bests gb and pb. Returns 1 when a candidate's value is
   not finite. */
static inline __attribute__((always_inline))
int build_entry(const double *contrib, const uint8_t *pruned, const double *var, const float *score, size_t j, int dir, int with_kept,
                double *gv, double *pv, double *gb, double *pb) {
    const double gs = dir > 0 ? -INFINITY : INFINITY;
    double k = contrib[j] / (1e-12 >= var[j] ? 1e-12 : var[j]);
    int g = pruned[j] != 0, bad;
    gv[j] = g ? k : gs;
    bad = g & !(fabs(k) <= DBL_MAX);
    *gb = dir > 0 ? (gv[j] > *gb ? gv[j] : *gb) : (gv[j] < *gb ? gv[j] : *gb);
    if (with_kept) {
        int c = !g & (dir >= 0 ? contrib[j] < 0 : contrib[j] > 0);
        double sc = (double)score[j];
        pv[j] = c ? sc : INFINITY;
        bad |= c & !(fabs(sc) <= DBL_MAX);
        *pb = pv[j] < *pb ? pv[j] : *pb;
    }
    return bad;
}

/* The pass that builds the tournaments (portable statement; build_avx2 below does the same
   operations four lanes at a time). Returns 1 when a candidate's value is not finite. */
static int build_portable(const double *contrib, const uint8_t *pruned, const double *var, const float *score, size_t cols, int dir,
                          int with_kept, double *gv, double *pv, double *gbest, double *pbest) {
    int bad = 0;
    for (size_t s = 0; s < cols; s += BLOCK) {
        size_t e = s + BLOCK < cols ? s + BLOCK : cols;
        double gb = dir > 0 ? -INFINITY : INFINITY, pb = INFINITY;
        for (size_t j = s; j < e; j++) bad |= build_entry(contrib, pruned, var, score, j, dir, with_kept, gv, pv, &gb, &pb);
        gbest[s / BLOCK] = gb;
        if (with_kept) pbest[s / BLOCK] = pb;
    }
    return bad;
}

#if defined(__x86_64__)
#define AVX2 __attribute__((target("avx2")))

/* all ones in the lanes whose byte of p[0..4) is non-zero (the bytes are 0 or 1) */
AVX2 static inline __m256d lanes_of(const uint8_t *p) {
    uint32_t b;
    memcpy(&b, p, 4);
    return _mm256_castsi256_pd(_mm256_sub_epi64(_mm256_setzero_si256(), _mm256_cvtepu8_epi64(_mm_cvtsi32_si128((int)b))));
}

/* The best of the four lanes (greatest or least). The lanes hold no NaN that matters: a NaN
   candidate sends the row to the ordered-ends path, and the tournament only compares values, so
   which of two equal zeros is kept changes nothing. */
AVX2 static inline double reduce4(__m256d v, int greatest) {
    __m128d lo = _mm256_castpd256_pd128(v), hi = _mm256_extractf128_pd(v, 1);
    __m128d a = greatest ? _mm_max_pd(lo, hi) : _mm_min_pd(lo, hi);
    __m128d b = _mm_unpackhi_pd(a, a);
    return _mm_cvtsd_f64(greatest ? _mm_max_sd(a, b) : _mm_min_sd(a, b));
}

AVX2 static int build_avx2(const double *contrib, const uint8_t *pruned, const double *var, const float *score, size_t cols, int dir,
                           int with_kept, double *gv, double *pv, double *gbest, double *pbest) {
    const double gs = dir > 0 ? -INFINITY : INFINITY;
    const int want_neg = dir >= 0;
    const __m256d tiny = _mm256_set1_pd(1e-12), huge = _mm256_set1_pd(DBL_MAX), inf = _mm256_set1_pd(INFINITY);
    const __m256d gsv = _mm256_set1_pd(gs), zero = _mm256_setzero_pd(), sign = _mm256_set1_pd(-0.0);
    __m256d badv = zero;
    int bad = 0;
    for (size_t s = 0; s < cols; s += BLOCK) {
        size_t e = s + BLOCK < cols ? s + BLOCK : cols, j = s;
        __m256d gb = gsv, pb = inf;
        for (; j + 4 <= e; j += 4) {
            __m256d c = _mm256_loadu_pd(contrib + j);
            /* 1e-12 >= v ? 1e-12 : v, NaN passed through: max_pd returns its second operand then */
            __m256d k = _mm256_div_pd(c, _mm256_max_pd(tiny, _mm256_loadu_pd(var + j)));
            __m256d pm = lanes_of(pruned + j);
            __m256d g = _mm256_blendv_pd(gsv, k, pm);
            _mm256_storeu_pd(gv + j, g);
            badv = _mm256_or_pd(badv, _mm256_andnot_pd(_mm256_cmp_pd(_mm256_andnot_pd(sign, k), huge, _CMP_LE_OQ), pm));
            gb = dir > 0 ? _mm256_max_pd(g, gb) : _mm256_min_pd(g, gb);
            if (with_kept) {
                __m256d want = want_neg ? _mm256_cmp_pd(c, zero, _CMP_LT_OQ) : _mm256_cmp_pd(c, zero, _CMP_GT_OQ);
                __m256d cand = _mm256_andnot_pd(pm, want);
                __m256d sc = _mm256_cvtps_pd(_mm_loadu_ps(score + j));
                __m256d p = _mm256_blendv_pd(inf, sc, cand);
                _mm256_storeu_pd(pv + j, p);
                badv = _mm256_or_pd(badv, _mm256_andnot_pd(_mm256_cmp_pd(_mm256_andnot_pd(sign, sc), huge, _CMP_LE_OQ), cand));
                pb = _mm256_min_pd(p, pb);
            }
        }
        double gbs = reduce4(gb, dir > 0), pbs = reduce4(pb, 0);
        for (; j < e; j++)   /* a ragged last block: the portable statement */
            bad |= build_entry(contrib, pruned, var, score, j, dir, with_kept, gv, pv, &gbs, &pbs);
        gbest[s / BLOCK] = gbs;
        if (with_kept) pbest[s / BLOCK] = pbs;
    }
    return bad | (_mm256_movemask_pd(badv) != 0);
}

/* Four rows' errors side by side, one lane a row: each row's four entries of a step are masked,
   transposed to one vector per column and added in column order, so every lane is its row's sum
   in index order (the portable statement's bits). Also stores the contributions. */
AVX2 static inline __m256d add_quad(__m256d acc, const float *w, const uint8_t *pr, __m256d m, double *contrib, size_t cols, size_t o) {
    __m256d t[4];
    for (int r = 0; r < 4; r++) {
        __m256d c = _mm256_mul_pd(_mm256_cvtps_pd(_mm_loadu_ps(w + o + r * cols)), m);
        _mm256_storeu_pd(contrib + o + r * cols, c);
        t[r] = _mm256_and_pd(c, lanes_of(pr + o + r * cols));
    }
    __m256d a0 = _mm256_unpacklo_pd(t[0], t[1]), a1 = _mm256_unpackhi_pd(t[0], t[1]);
    __m256d a2 = _mm256_unpacklo_pd(t[2], t[3]), a3 = _mm256_unpackhi_pd(t[2], t[3]);
    acc = _mm256_add_pd(acc, _mm256_permute2f128_pd(a0, a2, 0x20));
    acc = _mm256_add_pd(acc, _mm256_permute2f128_pd(a1, a3, 0x20));
    acc = _mm256_add_pd(acc, _mm256_permute2f128_pd(a0, a2, 0x31));
    return _mm256_add_pd(acc, _mm256_permute2f128_pd(a1, a3, 0x31));
}

/* rows 0..4*sets of w (sets 1 or 2: two independent chains hide the adds' latency) */
AVX2 static void errors_avx2(const float *w, const uint8_t *pr, const double *mean, size_t cols, int sets, double *contrib, double *err) {
    __m256d a = _mm256_setzero_pd(), b = _mm256_setzero_pd();
    size_t j = 0;
    for (; j + 4 <= cols; j += 4) {
        __m256d m = _mm256_loadu_pd(mean + j);
        a = add_quad(a, w, pr, m, contrib, cols, j);
        if (sets == 2) b = add_quad(b, w, pr, m, contrib, cols, 4 * cols + j);
    }
    _mm256_storeu_pd(err, a);
    if (sets == 2) _mm256_storeu_pd(err + 4, b);
    for (int r = 0; r < 4 * sets; r++) {
        double e = err[r];
        for (size_t t = j; t < cols; t++) {
            double c = (double)w[r * cols + t] * mean[t];
            contrib[r * cols + t] = c;
            e += masked(c, pr[r * cols + t]);
        }
        err[r] = e;
    }
}
#endif

/* One row: the tournament path, or the ordered-ends one when a candidate value is not finite. */
static size_t refine_row(const double *contrib, double err, uint8_t *pruned, const double *var, const float *score, size_t cols,
                         const wt_dsnot_params *prm, row_scratch *s) {
    const size_t nm_m = prm->nm_m;
    if (prm->max_cycles == 0 || !(fabs(err) > prm->threshold)) return 0;
    const int dir = err > 0 ? 1 : (err < 0 ? -1 : 0);
    int bad;
#if defined(__x86_64__)
    if (wt_quant_uses_avx2()) bad = build_avx2(contrib, pruned, var, score, cols, dir, nm_m == 0, s->gv, s->pv, s->gbest, s->pbest);
    else
#endif
    bad = build_portable(contrib, pruned, var, score, cols, dir, nm_m == 0, s->gv, s->pv, s->gbest, s->pbest);
    if (bad) return refine_ordered(contrib, err, pruned, var, score, cols, prm, s);
    const double sign0 = sign_of(err);
    order_ctx o = { NULL, score };
    uint8_t *blocked = s->blocked;
    if (nm_m) memcpy(blocked, pruned, cols);
    size_t swaps = 0;
    for (size_t cycle = 0; cycle < prm->max_cycles; cycle++) {
        if (!(fabs(err) > prm->threshold)) break;
        ptrdiff_t r = dir > 0 ? take_greatest(s->gv, s->gbest, cols) : take_least(s->gv, s->gbest, cols);
        if (r < 0) break;
        ptrdiff_t p = nm_m ? group_pick((size_t)r, nm_m, cols, blocked, &o) : take_least(s->pv, s->pbest, cols);
        if (p < 0) break;
        double after = err + contrib[p] - contrib[r];
        if (sign_of(after) != sign0) break;
        pruned[p] = 1;
        pruned[r] = 0;
        if (nm_m) blocked[p] = 1;
        err = after;
        swaps++;
    }
    return swaps;
}

static void carve(void *scratch, size_t cols, double **contrib, row_scratch *s) {
    double *d = scratch;
    size_t nb = blocks_of(cols);
    *contrib = d; d += 8 * cols;
    s->key = d; d += cols;
    s->gv = d; d += cols;
    s->pv = d; d += cols;
    s->gbest = d; d += nb;
    s->pbest = d; d += nb;
    uint32_t *u = (uint32_t *)d;
    s->list = u; u += cols;
    s->tmp = u; u += cols;
    s->front = u; u += cols;
    s->back = u; u += cols;
    s->neg = u; u += cols;
    s->pos = u; u += cols;
    s->blocked = (uint8_t *)u;
}

size_t wt_dsnot_scratch_bytes(size_t cols) {
    return (11 * cols + 2 * blocks_of(cols)) * sizeof(double) + 6 * cols * sizeof(uint32_t) + cols + 8;
}

size_t wt_dsnot_rows(const float *w, uint8_t *pruned, const float *score, size_t rows, size_t cols, const wt_dsnot_params *prm, void *scratch) {
    double *contrib;
    row_scratch s;
    carve(scratch, cols, &contrib, &s);
    const double *mean = prm->mean;
    size_t swaps = 0;
    const int avx2 = wt_quant_uses_avx2();
    for (size_t r0 = 0; r0 < rows; r0 += 8) {
        size_t m = rows - r0 < 8 ? rows - r0 : 8, done = 0;
        const float *w0 = w + r0 * cols;
        const uint8_t *p0 = pruned + r0 * cols;
        double err[8];
        /* err: masked adds in index order (adding +0.0 for a kept entry leaves err as it is: err is
           never -0.0, it starts at +0.0 and a sum that rounds to zero is +0.0), several rows side
           by side so the chains overlap */
#if defined(__x86_64__)
        if (avx2 && m >= 4) {
            int sets = m == 8 ? 2 : 1;
            errors_avx2(w0, p0, mean, cols, sets, contrib, err);
            done = 4 * (size_t)sets;
        }
#endif
        for (size_t i = done; i < m; i++) {
            double e = 0, *c = contrib + i * cols;
            for (size_t j = 0; j < cols; j++) {
                c[j] = (double)w0[i * cols + j] * mean[j];
                e += masked(c[j], p0[i * cols + j]);
            }
            err[i] = e;
        }
        for (size_t i = 0; i < m; i++)
            swaps += refine_row(contrib + i * cols, err[i], pruned + (r0 + i) * cols, prm->var, score + (r0 + i) * cols, cols, prm, &s);
    }
    return swaps;
}

/* DSnoT's refinement of one row (Zhang et al., "Dynamic Sparse No Training"), the rule DSnoT.swift
   states: the expected output error of the row's pruned weights, err = sum of w_j E[x_j] over the
   pruned j, is driven towards 0 by swapping a pruned weight back in for a kept one, at most
   max_cycles times, while |err| > threshold and the swap keeps err's sign. A row reads at most
   max_cycles candidates from each end of each ordered list, so only those ends are ordered
   (insertion into a short sorted list; a merge sort when the ends cover most of the list). */
#include "CQuant.h"
#include "masked.h"
#include <math.h>
#include <string.h>

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

size_t wt_dsnot_row(const float *w, uint8_t *pruned, const double *mean, const double *var, const float *score, size_t cols,
                    size_t nm_m, size_t max_cycles, double threshold, void *scratch) {
    double *contrib = scratch, *key = contrib + cols;
    uint32_t *list = (uint32_t *)(key + cols), *tmp = list + cols;
    uint32_t *front = tmp + cols, *back = front + cols, *neg = back + cols, *pos = neg + cols;
    uint8_t *blocked = (uint8_t *)(pos + cols);
    order_ctx o = { key, score };
    double err = 0;
    /* Branch-free passes: the mask is a coin flip per entry, and mispredicted branches were most of
       the time. Adding +0.0 for a kept entry leaves err as it is (err is never -0.0: it starts at
       +0.0, and a sum that rounds to zero is +0.0). */
    for (size_t j = 0; j < cols; j++) {
        contrib[j] = (double)w[j] * mean[j];
        key[j] = contrib[j] / (1e-12 >= var[j] ? 1e-12 : var[j]);
    }
    for (size_t j = 0; j < cols; j++) err += masked(contrib[j], pruned[j]);
    const double sign0 = sign_of(err);
    /* growth candidates: the pruned entries; front: the first max_cycles, back: the last */
    size_t gcount = 0;
    for (size_t j = 0; j < cols; j++) { list[gcount] = (uint32_t)j; gcount += pruned[j]; }
    size_t nfront = first_in_order(list, gcount, max_cycles, 0, grow_less, &o, front, tmp);
    size_t nback = first_in_order(list, gcount, max_cycles, 1, grow_less, &o, back, tmp);
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
        if (!(fabs(err) > threshold) || lo >= hi) break;
        /* grow[lo] is front[lo]; grow[hi - 1] is back[gcount - hi] (both within reach: each end moves
           at most max_cycles times) */
        uint32_t r = err > 0 ? back[gcount - hi] : front[lo];
        uint32_t p;
        if (nm_m) {
            size_t start = r - r % nm_m;
            int found = 0;
            uint32_t q = 0;
            for (size_t j = start; j < start + nm_m && j < cols; j++)
                if (!blocked[j] && (!found || score_less(&o, (uint32_t)j, q))) { q = (uint32_t)j; found = 1; }
            if (!found) break;
            p = q;
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
    (void)nfront; (void)nback;
    return swaps;
}

size_t wt_dsnot_scratch_bytes(size_t cols) { return cols * (2 * sizeof(double) + 6 * sizeof(uint32_t) + 1); }

/* Jonker-Volgenant for dense matrices (see CAssign.h). Written from the paper's description:
   R. Jonker, A. Volgenant, "A shortest augmenting path algorithm for dense and sparse linear
   assignment problems", Computing 38 (1987) 325-340.

   Only column prices v are kept: row i's reduced cost of column j is c[i][j] - v[j] minus its
   row minimum. Invariant between the phases: every assigned row holds a column of least
   c[i][j] - v[j] in its row, which is what makes each augmenting path a shortest one and the
   final assignment optimal. */
#include "CAssign.h"
#include <float.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sched.h>
#include <unistd.h>
#include <stdatomic.h>

typedef struct {
    const double *c;
    double sign;   /* the matrix solved is sign * c (-1: maximising; exact) */
    size_t n;
    long *x;       /* column of each row, -1 when free */
    long *y;       /* row of each column, -1 when free */
    double *v;     /* column prices */
    long *free_rows;
    size_t nfree;
} lap_state;

/* Column reduction: v[j] = min_i c[i][j]. A row that is the least of some columns takes the
   lowest of them; the other such columns stay free. Scanned row by row (a column walk of a
   row-major matrix misses the cache every step); ties in a column go to the lower row. */
static void column_reduction(lap_state *s, long *argmin, long *matches) {
    const size_t n = s->n;
    const double *c = s->c, sg = s->sign;
    for (size_t j = 0; j < n; j++) { s->v[j] = sg * c[j]; argmin[j] = 0; }
    for (size_t i = 1; i < n; i++) {
        const double *row = c + i * n;
        for (size_t j = 0; j < n; j++)
            if (sg * row[j] < s->v[j]) { s->v[j] = sg * row[j]; argmin[j] = (long)i; }
    }
    for (size_t i = 0; i < n; i++) { s->x[i] = -1; matches[i] = 0; }
    for (size_t j = 0; j < n; j++) {
        long i = argmin[j];
        matches[i]++;
        if (s->x[i] < 0) { s->x[i] = (long)j; s->y[j] = i; } else s->y[j] = -1;
    }
}

/* Reduction transfer: a row holding the only column it is least in lowers that column's price by
   its margin to its second-best column, so the column is still its best (tied) but costs other
   rows more. Rows that hold nothing go on the free list. */
static void reduction_transfer(lap_state *s, const long *matches) {
    const size_t n = s->n;
    s->nfree = 0;
    for (size_t i = 0; i < n; i++) {
        if (matches[i] == 0) { s->free_rows[s->nfree++] = (long)i; continue; }
        if (matches[i] != 1) continue;
        const double *row = s->c + i * n;
        long j1 = s->x[i];
        double m = INFINITY;
        for (size_t j = 0; j < n; j++)
            if ((long)j != j1) { double h = s->sign * row[j] - s->v[j]; if (h < m) m = h; }
        if (m < INFINITY) s->v[j1] -= m;
    }
}

/* Augmenting row reduction: each free row takes its best column, lowering that column's price by
   its margin to the second best so a displaced owner bids again at once (an auction step). When
   best and second best tie, the row takes the second if it is free and otherwise waits for the
   shortest path phase (bidding on ties displaces rows without progress). Bounded work: past the
   budget the rows left go to the next phase, so float rounding cannot make it cycle forever. */
static void augmenting_row_reduction(lap_state *s) {
    const size_t n = s->n;
    const double *v = s->v;
    size_t budget = 16 * n + 64;
    for (int round = 0; round < 2 && s->nfree > 0; round++) {
        size_t k = 0, pending = s->nfree, kept = 0;
        while (k < pending) {
            if (budget == 0) {
                memmove(s->free_rows + kept, s->free_rows + k, (pending - k) * sizeof(long));
                kept += pending - k;
                break;
            }
            budget--;
            long i = s->free_rows[k++];
            const double *row = s->c + (size_t)i * n;
            const double sg = s->sign;
            double umin = sg * row[0] - v[0], usub = INFINITY;
            long j1 = 0, j2 = -1;
            for (size_t j = 1; j < n; j++) {
                double h = sg * row[j] - v[j];
                if (h < usub) {
                    if (h >= umin) { usub = h; j2 = (long)j; }
                    else { usub = umin; j2 = j1; umin = h; j1 = (long)j; }
                }
            }
            long i0 = s->y[j1];
            if (umin < usub) {
                s->v[j1] -= usub - umin;
            } else if (i0 >= 0) {
                if (s->y[j2] >= 0) { s->free_rows[kept++] = i; continue; }
                j1 = j2; i0 = -1;
            }
            s->x[i] = j1; s->y[j1] = i;
            if (i0 >= 0) {
                s->x[i0] = -1;
                if (umin < usub) s->free_rows[--k] = i0; else s->free_rows[kept++] = i0;
            }
        }
        s->nfree = kept;
    }
}

/* The Dijkstra steps run over all n columns, settled ones included, because a dense pass
   vectorises: a settled column's w is -inf and its d +inf, so the relaxation leaves it alone and
   the least distance skips it. Both paths compute (sg * row[j] - w[j]) - h and compare exactly, so
   they give the same bits. */

/* Relaxes every column through row i (d[j] = min(d[j], (sg * row[j] - w[j]) - h), pred[j] = i
   where it lowered) and returns the least d. */
static double relax_portable(const double *row, double sg, const double *w, double h, double *d, long *pred, long i, size_t n) {
    double least = INFINITY;
    for (size_t j = 0; j < n; j++) {
        double nd = (sg * row[j] - w[j]) - h;
        if (nd < d[j]) { d[j] = nd; pred[j] = i; }
        if (d[j] < least) least = d[j];
    }
    return least;
}

/* The column to settle next: the lowest free one at distance `least`, else the lowest at it.
   (A separate pass: tracking the column inside the relaxation measured slower, its blends
   lengthen the loop's dependency chain, while this pass stops at the first free hit and reads
   only d.) */
static size_t pick_portable(const double *d, const long *y, double least, size_t n) {
    size_t first = n;
    for (size_t j = 0; j < n; j++) {
        if (d[j] != least) continue;
        if (y[j] < 0) return j;
        if (first == n) first = j;
    }
    return first;
}

#if defined(__x86_64__)
#include <immintrin.h>

__attribute__((target("avx2")))
static double relax_avx2(const double *row, double sg, const double *w, double h, double *d, long *pred, long i, size_t n) {
    const __m256d vh = _mm256_set1_pd(h), vsg = _mm256_set1_pd(sg);
    const __m256d vi = _mm256_castsi256_pd(_mm256_set1_epi64x(i));
    __m256d vmin = _mm256_set1_pd(INFINITY);
    size_t j = 0;
    for (; j + 4 <= n; j += 4) {
        __m256d nd = _mm256_sub_pd(_mm256_sub_pd(_mm256_mul_pd(vsg, _mm256_loadu_pd(row + j)), _mm256_loadu_pd(w + j)), vh);
        __m256d dj = _mm256_loadu_pd(d + j);
        __m256d lower = _mm256_cmp_pd(nd, dj, _CMP_LT_OQ);
        dj = _mm256_blendv_pd(dj, nd, lower);
        _mm256_storeu_pd(d + j, dj);
        __m256d p = _mm256_loadu_pd((const double *)(pred + j));
        _mm256_storeu_pd((double *)(pred + j), _mm256_blendv_pd(p, vi, lower));
        vmin = _mm256_min_pd(vmin, dj);
    }
    double lanes[4];
    _mm256_storeu_pd(lanes, vmin);
    double least = relax_portable(row + j, sg, w + j, h, d + j, pred + j, i, n - j);
    for (int k = 0; k < 4; k++) if (lanes[k] < least) least = lanes[k];
    return least;
}

__attribute__((target("avx2")))
static size_t pick_avx2(const double *d, const long *y, double least, size_t n) {
    const __m256d vl = _mm256_set1_pd(least);
    size_t first = n, j = 0;
    for (; j + 4 <= n; j += 4) {
        int hits = _mm256_movemask_pd(_mm256_cmp_pd(_mm256_loadu_pd(d + j), vl, _CMP_EQ_OQ));
        while (hits) {
            size_t k = j + (size_t)__builtin_ctz((unsigned)hits);
            if (y[k] < 0) return k;
            if (first == n) first = k;
            hits &= hits - 1;
        }
    }
    for (; j < n; j++) {
        if (d[j] != least) continue;
        if (y[j] < 0) return j;
        if (first == n) first = j;
    }
    return first;
}

static int allow_avx2 = 1;
int wt_lap_uses_avx2(void) { return allow_avx2 && __builtin_cpu_supports("avx2"); }
#define RELAX(...) (avx2 ? relax_avx2(__VA_ARGS__) : relax_portable(__VA_ARGS__))
#define PICK(...) (avx2 ? pick_avx2(__VA_ARGS__) : pick_portable(__VA_ARGS__))
#else
static int allow_avx2 = 0;
int wt_lap_uses_avx2(void) { return 0; }
#define RELAX(...) relax_portable(__VA_ARGS__)
#define PICK(...) pick_portable(__VA_ARGS__)
#endif
void wt_lap_allow_avx2(int allow) { allow_avx2 = allow; }

/* A second thread for the relaxations of the shortest-path phase: each pass is split into two
   column ranges, the helper relaxing the upper one. The passes read a whole cost row from memory
   each (the matrix is far larger than the caches), and one core does not draw the memory's full
   bandwidth; each column is relaxed by the same arithmetic whichever thread does it and the least
   of the two halves is exact, so the answer does not depend on the split. The helper spins
   between passes (they are microseconds apart) and is joined before the solve returns. */
typedef struct {
    const double *row, *w;
    double sign, h;
    double *d;
    long *pred;
    const long *y;
    long i;
    size_t from, n;
    int avx2;
    double least;
    size_t at;
    atomic_uint posted;    /* generation of the pass posted by the main thread (0: quit) */
    atomic_uint finished;  /* generation of the pass the helper finished */
} relax_helper;

static inline void spin_pause(unsigned *spins) {
#if defined(__x86_64__)
    if (++*spins < 4096) { __builtin_ia32_pause(); return; }
#else
    ++*spins;
#endif
    sched_yield();
}

/* Relaxes columns [0, n) of the given arrays and picks the next column among them (by pick's
   rule, at their own least distance). The picks of two ranges combine into the pick of the
   whole: the lower range's wins unless the upper range is nearer, or equally near with a free
   column where the lower one has none. */
static double relax_range(int avx2, const double *row, double sg, const double *w, double h, double *d, long *pred,
                          const long *y, long i, size_t n, size_t *at) {
    (void)avx2; /* unused where only the portable path exists */
    double least = RELAX(row, sg, w, h, d, pred, i, n);
    *at = PICK(d, y, least, n);
    return least;
}

static void *helper_main(void *arg) {
    relax_helper *t = arg;
    unsigned seen = 1;
    for (;;) {
        unsigned g, spins = 0;
        while ((g = atomic_load_explicit(&t->posted, memory_order_acquire)) == seen) spin_pause(&spins);
        if (g == 0) return NULL;
        seen = g;
        size_t f = t->from;
        t->least = relax_range(t->avx2, t->row + f, t->sign, t->w + f, t->h, t->d + f, t->pred + f, t->y + f, t->i, t->n - f, &t->at);
        t->at += f;
        atomic_store_explicit(&t->finished, g, memory_order_release);
    }
}

typedef struct {
    double *d;      /* distance of each column from the free row */
    double *w;      /* v for unsettled columns, -inf for settled */
    long *pred;     /* row before each column on its shortest path */
    long *settled;  /* settled columns, in order */
    double *dset;   /* their distances */
    relax_helper *helper;  /* NULL: one thread */
    unsigned generation;
    int avx2;
} path_scratch;

/* One relaxation pass over all columns through row i, on one thread or split over two; returns
   the least distance and sets *at to the column to settle next. */
static double relax_all(path_scratch *p, const long *y, const double *row, double sg, double h, long i, size_t n, size_t *at) {
    relax_helper *t = p->helper;
    if (!t) return relax_range(p->avx2, row, sg, p->w, h, p->d, p->pred, y, i, n, at);
    t->row = row; t->sign = sg; t->w = p->w; t->h = h; t->d = p->d; t->pred = p->pred; t->y = y; t->i = i;
    unsigned g = ++p->generation;
    atomic_store_explicit(&t->posted, g, memory_order_release);
    double least = relax_range(p->avx2, row, sg, p->w, h, p->d, p->pred, y, i, t->from, at);
    unsigned spins = 0;
    while (atomic_load_explicit(&t->finished, memory_order_acquire) != g) spin_pause(&spins);
    if (t->least < least || (t->least == least && y[*at] >= 0 && y[t->at] < 0)) { *at = t->at; return t->least; }
    return least;
}

/* One shortest augmenting path (Dijkstra over columns) from free row f, then the price update of
   the settled columns, then the flip along the path. */
static void augment(lap_state *s, long f, path_scratch *p) {
    const size_t n = s->n;
    const double *c = s->c;
    double *v = s->v, *d = p->d, *w = p->w;
    memcpy(w, v, n * sizeof(double));
    for (size_t j = 0; j < n; j++) { d[j] = INFINITY; p->pred[j] = f; }
    size_t j;
    double least = relax_all(p, s->y, c + (size_t)f * n, s->sign, 0.0, f, n, &j);
    size_t nsettled = 0;
    size_t end;
    for (;;) {
        if (s->y[j] < 0) { end = j; break; }
        p->settled[nsettled] = (long)j;
        p->dset[nsettled++] = least;
        d[j] = INFINITY;
        w[j] = -INFINITY;
        long i = s->y[j];
        const double *row = c + (size_t)i * n;
        double h = (s->sign * row[j] - v[j]) - least;
        least = relax_all(p, s->y, row, s->sign, h, i, n, &j);
    }
    for (size_t k = 0; k < nsettled; k++) v[p->settled[k]] += p->dset[k] - least;
    for (;;) {
        long i = p->pred[end];
        s->y[end] = i;
        long next = s->x[i];
        s->x[i] = (long)end;
        if (i == f) break;
        end = (size_t)next;
    }
}

/* Below this size a pass is too short for the hand-over between threads to pay. */
enum { two_thread_minimum = 1024 };

/* Solves for sign * c (sign = 1 or -1). */
static int solve_signed(const double *c, double sign, size_t n, long *x, int threads) {
    if (n == 0) return 0;
    if (n == 1) { x[0] = 0; return 0; }
    lap_state s = { c, sign, n, x, NULL, NULL, NULL, 0 };
    long *y = malloc(n * sizeof(long)), *a = malloc(n * sizeof(long)), *b = malloc(n * sizeof(long));
    long *fr = malloc(n * sizeof(long));
    double *v = malloc(n * sizeof(double)), *d = malloc(n * sizeof(double));
    double *w = malloc(n * sizeof(double)), *dset = malloc(n * sizeof(double));
    int rc = -1;
    if (!y || !a || !b || !fr || !v || !d || !w || !dset) goto done;
    s.y = y; s.v = v; s.free_rows = fr;
    column_reduction(&s, a, b);
    reduction_transfer(&s, b);
    augmenting_row_reduction(&s);
    path_scratch p = { d, w, a, b, dset, NULL, 1, wt_lap_uses_avx2() };
    relax_helper helper;
    pthread_t thread;
    /* (Only with a second CPU online: the threads spin while they wait for each other.) */
    if (threads > 1 && n >= two_thread_minimum && s.nfree > 0 && sysconf(_SC_NPROCESSORS_ONLN) > 1) {
        helper.from = (n / 2) & ~(size_t)3;
        helper.n = n;
        helper.avx2 = p.avx2;
        atomic_init(&helper.posted, 1);
        atomic_init(&helper.finished, 1);
        if (pthread_create(&thread, NULL, helper_main, &helper) == 0) p.helper = &helper;
    }
    for (size_t k = 0; k < s.nfree; k++) augment(&s, fr[k], &p);
    if (p.helper) {
        atomic_store_explicit(&helper.posted, 0, memory_order_release);
        pthread_join(thread, NULL);
    }
    rc = 0;
done:
    free(y); free(a); free(b); free(fr); free(v); free(d); free(w); free(dset);
    return rc;
}

int wt_lap_solve(const double *c, size_t n, int maximize, long *x, int threads, size_t *bad) {
    size_t count = n * n;
    /* One pass checks every value finite and below the limit (an OR of compares, which
       vectorises) ... */
    int outside = 0;
    for (size_t k = 0; k < count; k++) outside |= !(fabs(c[k]) <= WT_LAP_LIMIT);
    if (outside) {
        for (size_t k = 0; k < count; k++) if (!(fabs(c[k]) <= WT_LAP_LIMIT)) { *bad = k; break; }
        return fabs(c[*bad]) <= DBL_MAX ? -3 : -2;
    }
    /* ... and maximising solves the negated matrix, negated where it is read (exact). */
    return solve_signed(c, maximize ? -1.0 : 1.0, n, x, threads);
}

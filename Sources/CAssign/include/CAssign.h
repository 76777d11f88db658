#ifndef CASSIGN_H
#define CASSIGN_H
#include <stddef.h>

/* Largest |value| solved: the duals and path lengths are sums of a few values, which must not
   overflow to infinity (the search would then have no least distance). */
#define WT_LAP_LIMIT 1e300

/* The dense linear assignment problem: x[i] = the column of row i in a permutation that
   minimises (maximize = 0) or maximises sum_i c[i * n + x[i]] over an n x n row-major f64 matrix.
   Jonker and Volgenant's method (1987): column reduction, reduction transfer, two rounds of
   augmenting row reduction, then a shortest augmenting path per row still free; maximising
   solves the negated matrix, negated where it is read (no copy). Exact: the answer is an
   optimum, and deterministic for a given matrix: the same whatever `threads` (with 2 or more,
   the shortest-path passes of large matrices are split over two threads).
   Returns 0; -2 (NaN or infinite) or -3 (finite but above WT_LAP_LIMIT in magnitude) with
   *bad = the row-major index of the first such value; -1 when scratch memory could not be
   allocated. */
int wt_lap_solve(const double *c, size_t n, int maximize, long *x, int threads, size_t *bad);

/* 1: the AVX2 passes are used; tests switch them off (0) to compare the two (same answer). */
int wt_lap_uses_avx2(void);
void wt_lap_allow_avx2(int allow);

#endif

#ifndef CLOWRANK_H
#define CLOWRANK_H
#include <stddef.h>

/* The element-wise passes of low-rank extraction over a whole matrix, in f64 where the Swift code
   they replace was. Sums run in four f64 lanes (lane j takes the elements i = j mod 4) added
   lane 0 to 3 at the end, the same in the AVX2 path and the portable one: results do not depend
   on the CPU. */

/* x[i] = (float)((double)x[i] - (double)base[i]) (x holds the fine-tune on entry, the delta on
   return); returns the sum of the squares of the rounded deltas. */
double wt_delta_sumsq(float *x, const float *base, size_t n);

/* wt_delta_sumsq for two bf16 arrays (unaligned bytes) in one pass: out[i] = (float)((double)ft[i] -
   (double)base[i]), the same deltas and sum as decoding both to f32 first. */
double wt_delta_bf16_sumsq(const void *ft, const void *base, float *out, size_t n);

/* The sum of ((double)a[i] - (double)b[i])^2. */
double wt_diff_sumsq(const float *a, const float *b, size_t n);

/* 1: the AVX2 paths are used; tests switch them off (0) to compare the two. */
int wt_lowrank_uses_avx2(void);
void wt_lowrank_allow_avx2(int allow);
#endif

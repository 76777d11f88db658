#ifndef CPANEL_H
#define CPANEL_H

/* Products of one large row-major matrix with a thin panel (the power iterations of the SVD
   engine), in AVX-512 kernels that read the large matrix where it lies: OpenBLAS copies it into
   its packed format on every call (a quarter of a randomized extraction's time) and runs thin
   panels at two thirds of its peak. Every entry of a result is one chain of fused multiply-adds
   in a fixed order, starting from zero (c = fmaf(a, b, c)), so the result does not depend on the
   blocking, the thread count or the machine. Call them only when wt_panel_available() says
   so (the caller asks BLAS otherwise). `scratch` holds wt_panel_scratch_floats(l) floats,
   64-byte aligned, used by one call at a time. */

long wt_panel_scratch_floats(long l);

/* y (rows x l, row stride ldy) = a (rows x n, stride lda) * x (n x l, stride ldx); entry (i, j)
   is the chain over k = 0 ..< n of fmaf(a[i][k], x[k][j], c). */
void wt_panel_times(const float *a, long rows, long n, long lda, const float *x, long l, long ldx,
                    float *y, long ldy, float *scratch);

/* zt (l x cols, row stride ldz) = q^T * a, q m x l (stride ldq), a m x cols (stride lda); entry
   (t, j) is the chain over i = 0 ..< m of fmaf(q[i][t], a[i][j], c). */
void wt_panel_transposed_times(const float *a, long m, long cols, long lda, const float *q, long l,
                               long ldq, float *zt, long ldz, float *scratch);

/* The sum over a's entries of ((double)a[i][j] - (double)p[i][j])^2, p = b c the product of b (rows
   x k, stride ldb) and c (k x n, stride ldc), each p[i][j] the chain over t = 0 ..< k of
   fmaf(b[i][t], c[t][j], p) in f32 (the rank-k approximation as its factors give it); the squares
   are added in f64 lanes, in a fixed order. `scratch` holds wt_panel_residual_scratch_floats(k)
   floats, 64-byte aligned. */
double wt_panel_residual_sumsq(const float *a, long rows, long n, long lda, const float *b, long k, long ldb,
                               const float *c, long ldc, float *scratch);
long wt_panel_residual_scratch_floats(long k);

/* 1: the CPU has AVX-512 and the kernels are not switched off (tests switch them off, 0, to run
   the callers' BLAS path). */
int wt_panel_available(void);
void wt_panel_allow(int allow);

#endif

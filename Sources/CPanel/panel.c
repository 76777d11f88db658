/* Thin-panel products in AVX-512 (see CPanel.h for the contract). Both keep a tile of the result
   in registers and run its fused multiply-add chains over a block of the shared dimension, the
   tile reloaded from the result between blocks (a store and a load are exact, so the chain of
   each entry is the same however the dimension is blocked). */
#include "CPanel.h"
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

static int allowed = 1;
void wt_panel_allow(int allow) { allowed = allow; }

int wt_panel_available(void) {
#if defined(__x86_64__)
    /* the runtime's check includes the OS saving the 512-bit state (XGETBV) */
    return allowed && __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

#if defined(__x86_64__)

/* ---- y = a x: tiles of up to 4 rows x 5 vectors (80 columns), 20 accumulators ----
   The tile's rows of `a` are read in place (four sequential streams, each element broadcast);
   the block of x is copied once per call into rows padded to a multiple of 16 (`xp`), so every
   load of it is a whole aligned vector. The block of x is sized to stay in L2. */

#define TIMES_BLOCK_BYTES (192 * 1024)

/* Rows of x per block for a padded panel width lp. */
static long times_block_rows(long lp) {
    long kc = TIMES_BLOCK_BYTES / (lp * 4);
    return kc < 16 ? 16 : kc;
}

/* The mask of the 16 columns from column j of a row of l (none past its end). */
static inline __mmask16 column_mask(long j, long l) {
    long left = l - j;
    return left >= 16 ? (__mmask16)0xFFFF : left <= 0 ? (__mmask16)0 : (__mmask16)((1u << left) - 1);
}

__attribute__((always_inline, target("avx512f")))
static inline void times_tile(const float *a, long lda, const float *xp, long lp, float *y, long ldy,
                              long j, long l, int first, long k0, long k1, const int R, const int V) {
    __m512 c[4][5];
    __mmask16 mask[5];
    for (int v = 0; v < V; v++) mask[v] = column_mask(j + 16 * v, l);
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++)
            c[r][v] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[v], y + r * ldy + j + 16 * v);
    const float *xr = xp + j;   /* xp: the block of x, its row 0 being x's row k0 */
    for (long k = k0; k < k1; k++, xr += lp) {
        __m512 xv[5];
        for (int v = 0; v < V; v++) xv[v] = _mm512_load_ps(xr + 16 * v);
        for (int r = 0; r < R; r++) {
            __m512 b = _mm512_set1_ps(a[r * lda + k]);
            for (int v = 0; v < V; v++) c[r][v] = _mm512_fmadd_ps(b, xv[v], c[r][v]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) _mm512_mask_storeu_ps(y + r * ldy + j + 16 * v, mask[v], c[r][v]);
}

#define TIMES_CASE(R, V) case (R) * 8 + (V): times_tile(a, lda, xp, lp, y, ldy, j, l, first, k0, k1, R, V); break;
#define TIMES_ROW(R) TIMES_CASE(R, 1) TIMES_CASE(R, 2) TIMES_CASE(R, 3) TIMES_CASE(R, 4) TIMES_CASE(R, 5)

__attribute__((target("avx512f")))
static void times_dispatch(const float *a, long lda, const float *xp, long lp, float *y, long ldy,
                           long j, long l, int first, long k0, long k1, int R, int V) {
    switch (R * 8 + V) {
        TIMES_ROW(1) TIMES_ROW(2) TIMES_ROW(3) TIMES_ROW(4)
        default: break;
    }
}

__attribute__((target("avx512f")))
static void times_avx512(const float *a, long rows, long n, long lda, const float *x, long l, long ldx, float *y, long ldy, float *xp) {
    long lp = (l + 15) & ~15L, kc = times_block_rows(lp);
    if (kc > n) kc = n;
    for (long k0 = 0; k0 < n; k0 += kc) {
        long k1 = k0 + kc < n ? k0 + kc : n;
        for (long k = k0; k < k1; k++) {
            float *d = xp + (k - k0) * lp;
            memcpy(d, x + k * ldx, (size_t)l * 4);
            memset(d + l, 0, (size_t)(lp - l) * 4);
        }
        for (long i = 0; i < rows; i += 4) {
            int R = rows - i < 4 ? (int)(rows - i) : 4;
            for (long j = 0; j < l; j += 80) {
                int V = (int)((l - j + 15) / 16);
                if (V > 5) V = 5;
                times_dispatch(a + i * lda, lda, xp, lp, y + i * ldy, ldy, j, l, k0 == 0, k0, k1, R, V);
            }
        }
    }
}

/* ---- zt = q^T a: tiles of up to 6 rows of zt x 4 vectors (64 columns), 24 accumulators ----
   A block of `a` (96 rows x up to 512 columns) is first copied into strips of 64 columns, each
   strip's rows contiguous, and every tile of zt's rows then reads a strip from there: read in
   place, a strip's rows lie a whole row of `a` apart, which maps them onto a few cache sets
   (4096 floats apart: all onto one) and evicts the strip between tiles (measured: 30 instead of
   60 GFLOP/s). A 96-row strip (24 KB) stays in L1; the copy reads each row's piece in order.
   Callers keep `cols` to about a thousand, so the rows of zt that a block updates stay in L2. */

#define STRIP_ROWS 96
#define PANEL_COLUMNS 512

__attribute__((always_inline, target("avx512f")))
static inline void transposed_tile(const float *sp, const float *q, long ldq, float *zt, long ldz,
                                   const __mmask16 *mask, int first, long rows, const int R) {
    __m512 c[6][4];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < 4; v++)
            c[r][v] = first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[v], zt + r * ldz + 16 * v);
    for (long i = 0; i < rows; i++) {
        const float *s = sp + i * 64;
        __m512 a0 = _mm512_load_ps(s), a1 = _mm512_load_ps(s + 16), a2 = _mm512_load_ps(s + 32), a3 = _mm512_load_ps(s + 48);
        const float *qr = q + i * ldq;
        for (int r = 0; r < R; r++) {
            __m512 b = _mm512_set1_ps(qr[r]);
            c[r][0] = _mm512_fmadd_ps(b, a0, c[r][0]);
            c[r][1] = _mm512_fmadd_ps(b, a1, c[r][1]);
            c[r][2] = _mm512_fmadd_ps(b, a2, c[r][2]);
            c[r][3] = _mm512_fmadd_ps(b, a3, c[r][3]);
        }
    }
    for (int r = 0; r < R; r++)
        for (int v = 0; v < 4; v++) _mm512_mask_storeu_ps(zt + r * ldz + 16 * v, mask[v], c[r][v]);
}

#define TRANSPOSED_CASE(R) case R: transposed_tile(sp, q, ldq, zt, ldz, mask, first, rows, R); break;

__attribute__((target("avx512f")))
static void transposed_dispatch(const float *sp, const float *q, long ldq, float *zt, long ldz,
                                const __mmask16 *mask, int first, long rows, int R) {
    switch (R) {
        TRANSPOSED_CASE(1) TRANSPOSED_CASE(2) TRANSPOSED_CASE(3) TRANSPOSED_CASE(4) TRANSPOSED_CASE(5) TRANSPOSED_CASE(6)
        default: break;
    }
}

__attribute__((target("avx512f")))
static void transposed_avx512(const float *a, long m, long cols, long lda, const float *q, long l, long ldq, float *zt, long ldz, float *sp) {
    for (long i0 = 0; i0 < m; i0 += STRIP_ROWS) {
        long rows = m - i0 < STRIP_ROWS ? m - i0 : STRIP_ROWS;
        for (long j0 = 0; j0 < cols; j0 += PANEL_COLUMNS) {
            long width = cols - j0 < PANEL_COLUMNS ? cols - j0 : PANEL_COLUMNS;
            long strips = (width + 63) / 64;
            /* copy the block row by row (each row's piece read in order) into strips of 64
               columns, the last one padded with zeros; the piece two rows on is fetched
               meanwhile (each row starts a new page, which the hardware does not prefetch
               into: the copy ran 5-40% faster so, in alternated runs) */
            for (long i = 0; i < rows; i++) {
                const float *src = a + (i0 + i) * lda + j0;
                if (i + 2 < rows)
                    for (long c = 0; c < width; c += 16) _mm_prefetch((const char *)(src + 2 * lda + c), _MM_HINT_T0);
                for (long st = 0; st < strips; st++) {
                    float *d = sp + (st * STRIP_ROWS + i) * 64;
                    for (int v = 0; v < 4; v++)
                        _mm512_store_ps(d + 16 * v, _mm512_maskz_loadu_ps(column_mask(st * 64 + 16 * v, width), src + st * 64 + 16 * v));
                }
            }
            for (long st = 0; st < strips; st++) {
                __mmask16 mask[4];
                for (int v = 0; v < 4; v++) mask[v] = column_mask(st * 64 + 16 * v, width);
                for (long t = 0; t < l; t += 6) {
                    int R = l - t < 6 ? (int)(l - t) : 6;
                    transposed_dispatch(sp + st * STRIP_ROWS * 64, q + i0 * ldq + t, ldq, zt + t * ldz + j0 + st * 64, ldz, mask, i0 == 0, rows, R);
                }
            }
        }
    }
}

/* ---- sum of (a - b c)^2: tiles of up to 4 rows x 5 vectors of the product, as in y = a x ----
   The product's tile never leaves the registers: each entry is compared with a's in f64 and its
   square added to eight f64 lanes. The block of c (k x 80) is copied padded, once per block of
   rows, for all its tiles. */

__attribute__((always_inline, target("avx512f")))
static inline __m512d residual_tile(const float *a, long lda, const float *b, long ldb, long k, const float *cp,
                                    const __mmask16 *mask, int ahead, __m512d sum, const int R, const int V) {
    __m512 p[4][5];
    for (int r = 0; r < R; r++)
        for (int v = 0; v < V; v++) p[r][v] = _mm512_setzero_ps();
    const float *cr = cp;
    for (long t = 0; t < k; t++, cr += 80) {
        __m512 cv[5];
        for (int v = 0; v < V; v++) cv[v] = _mm512_load_ps(cr + 16 * v);
        for (int r = 0; r < R; r++) {
            __m512 s = _mm512_set1_ps(b[r * ldb + t]);
            for (int v = 0; v < V; v++) p[r][v] = _mm512_fmadd_ps(s, cv[v], p[r][v]);
        }
    }
    /* one f64 chain per vector of columns (not one for the tile: the adds' latency would bound it),
       and this tile's rows of the next 80 columns of a fetched into L2 meanwhile (every tile of
       the block comes before them, and the rows lie a page or more apart: no hardware prefetch) */
    __m512d part[5];
    for (int v = 0; v < V; v++) part[v] = _mm512_setzero_pd();
    for (int r = 0; r < R; r++) {
        for (int v = 0; v < ahead; v++) _mm_prefetch((const char *)(a + r * lda + 80 + 16 * v), _MM_HINT_T1);
        for (int v = 0; v < V; v++) {
            __m512 av = _mm512_maskz_loadu_ps(mask[v], a + r * lda + 16 * v);
            __m512d lo = _mm512_sub_pd(_mm512_cvtps_pd(_mm512_castps512_ps256(av)), _mm512_cvtps_pd(_mm512_castps512_ps256(p[r][v])));
            __m512d hi = _mm512_sub_pd(_mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(av), 1))),
                                       _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(p[r][v]), 1))));
            part[v] = _mm512_add_pd(part[v], _mm512_mul_pd(lo, lo));
            part[v] = _mm512_add_pd(part[v], _mm512_mul_pd(hi, hi));
        }
    }
    for (int v = 0; v < V; v++) sum = _mm512_add_pd(sum, part[v]);
    return sum;
}

#define RESIDUAL_CASE(R, V) case (R) * 8 + (V): return residual_tile(a, lda, b, ldb, k, cp, mask, ahead, sum, R, V);
#define RESIDUAL_ROW(R) RESIDUAL_CASE(R, 1) RESIDUAL_CASE(R, 2) RESIDUAL_CASE(R, 3) RESIDUAL_CASE(R, 4) RESIDUAL_CASE(R, 5)

__attribute__((target("avx512f")))
static __m512d residual_dispatch(const float *a, long lda, const float *b, long ldb, long k, const float *cp,
                                 const __mmask16 *mask, int ahead, __m512d sum, int R, int V) {
    switch (R * 8 + V) {
        RESIDUAL_ROW(1) RESIDUAL_ROW(2) RESIDUAL_ROW(3) RESIDUAL_ROW(4)
        default: return sum;
    }
}

__attribute__((target("avx512f")))
static double residual_avx512(const float *a, long rows, long n, long lda, const float *b, long k, long ldb,
                              const float *c, long ldc, float *cp) {
    __m512d sum = _mm512_setzero_pd();
    for (long j = 0; j < n; j += 80) {
        long w = n - j < 80 ? n - j : 80;
        int V = (int)((w + 15) / 16);
        __mmask16 mask[5];
        for (int v = 0; v < 5; v++) mask[v] = column_mask(j + 16 * v, n);
        long after = n - j - 80;   /* columns after this group: the vectors of them to prefetch */
        int ahead = after <= 0 ? 0 : after >= 80 ? 5 : (int)((after + 15) / 16);
        for (long t = 0; t < k; t++) {
            memcpy(cp + t * 80, c + t * ldc + j, (size_t)w * 4);
            memset(cp + t * 80 + w, 0, (size_t)(80 - w) * 4);
        }
        for (long i = 0; i < rows; i += 4) {
            int R = rows - i < 4 ? (int)(rows - i) : 4;
            sum = residual_dispatch(a + i * lda + j, lda, b + i * ldb, ldb, k, cp, mask, ahead, sum, R, V);
        }
    }
    double lanes[8];
    _mm512_storeu_pd(lanes, sum);
    return ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3])) + ((lanes[4] + lanes[5]) + (lanes[6] + lanes[7]));
}

#endif

long wt_panel_residual_scratch_floats(long k) { return (k > 0 ? k : 1) * 80; }

double wt_panel_residual_sumsq(const float *a, long rows, long n, long lda, const float *b, long k, long ldb,
                               const float *c, long ldc, float *scratch) {
    if (rows <= 0 || n <= 0) return 0;
#if defined(__x86_64__)
    return residual_avx512(a, rows, n, lda, b, k, ldb, c, ldc, scratch);
#else
    (void)lda; (void)b; (void)k; (void)ldb; (void)c; (void)ldc; (void)scratch;
    return 0;
#endif
}

long wt_panel_scratch_floats(long l) {
    long lp = (l + 15) & ~15L;
#if defined(__x86_64__)
    long times = times_block_rows(lp) * lp, strip = STRIP_ROWS * PANEL_COLUMNS;
    return times > strip ? times : strip;
#else
    return lp;
#endif
}

void wt_panel_times(const float *a, long rows, long n, long lda, const float *x, long l, long ldx, float *y, long ldy, float *scratch) {
    if (rows <= 0 || l <= 0) return;
    if (n <= 0) {   /* chains of nothing */
        for (long i = 0; i < rows; i++) memset(y + i * ldy, 0, (size_t)l * 4);
        return;
    }
#if defined(__x86_64__)
    times_avx512(a, rows, n, lda, x, l, ldx, y, ldy, scratch);
#else
    (void)a; (void)lda; (void)x; (void)ldx; (void)scratch;
#endif
}

void wt_panel_transposed_times(const float *a, long m, long cols, long lda, const float *q, long l, long ldq, float *zt, long ldz, float *scratch) {
    if (cols <= 0 || l <= 0) return;
    if (m <= 0) {
        for (long t = 0; t < l; t++) memset(zt + t * ldz, 0, (size_t)cols * 4);
        return;
    }
#if defined(__x86_64__)
    transposed_avx512(a, m, cols, lda, q, l, ldq, zt, ldz, scratch);
#else
    (void)a; (void)lda; (void)q; (void)ldq; (void)scratch;
#endif
}

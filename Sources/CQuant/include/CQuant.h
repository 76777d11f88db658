#ifndef CQUANT_H
#define CQUANT_H
#include <stddef.h>
#include <stdint.h>

/* llama.cpp's 32-element block formats and its ternary super-blocks, encoded and decoded byte for
   byte as ggml's quantize_row_*_ref / dequantize_row_* (see GGMLLegacyBlocks.swift for the
   rules). n is a multiple of the block size (32; 256 for TQ1_0/TQ2_0). Every function has an
   AVX2 path chosen at run time and a portable one that gives the same bytes. */
void wt_encode_q8_0(const float *x, size_t n, void *out);
void wt_encode_q4_0(const float *x, size_t n, void *out);
void wt_encode_q4_1(const float *x, size_t n, void *out);
void wt_encode_q5_0(const float *x, size_t n, void *out);
void wt_encode_q5_1(const float *x, size_t n, void *out);
void wt_encode_tq1_0(const float *x, size_t n, void *out);
void wt_encode_tq2_0(const float *x, size_t n, void *out);

void wt_decode_q8_0(const void *src, size_t n, float *y);
void wt_decode_q4_0(const void *src, size_t n, float *y);
void wt_decode_q4_1(const void *src, size_t n, float *y);
void wt_decode_q5_0(const void *src, size_t n, float *y);
void wt_decode_q5_1(const void *src, size_t n, float *y);

/* compressed-tensors' round-to-nearest integers (IntegerRTN in wtool's Swift states the rules) for
   `rows` rows of `cols` values, one scale (and zero point) per run of `run` values, run dividing
   cols. Per run: lo = min(0, min x), hi = max(0, max x); symmetric s = max(-lo, hi) / ((2^b - 1) / 2),
   else s = (hi - lo) / (2^b - 1) and z = clamp(rint(qmin - lo / s)); a zero s becomes eps; s is
   rounded to the scale's dtype (scale_dtype 0: f32, 1: f16, 2: bf16) before use; q =
   round_half_even(clamp(x / s + z, qmin, qmax)). Writes scales[rows * cols / run] and
   zeros[...] (0 when symmetric), the codes packed as compressed-tensors' dense little-endian bit
   stream (q + 2^(b-1), words_per_row 32-bit words a row, zero-padded), and decoded[rows * cols] =
   (q - z) * s rounded to the scale dtype: what an engine computes. bits 2...8. */
void wt_rtn_rows(const float *x, size_t rows, size_t cols, size_t run, int bits, int symmetric, int scale_dtype, float eps,
                 float *scales, float *zeros, uint32_t *packed, size_t words_per_row, float *decoded);

/* The same bit stream from codes already computed: rows of cols signed b-bit values (the
   whole-tensor schemes: tensor scales, HQQ, StatsQ, ternary). */
void wt_pack_codes(const int8_t *q, size_t rows, size_t cols, int bits, uint32_t *packed, size_t words_per_row);

/* DSnoT's settings: mean and var per input channel; nm_m the group size M of N:M pruning (0:
   unstructured); at most max_cycles swaps a row while |err| > threshold. */
typedef struct {
    const double *mean, *var;
    size_t nm_m, max_cycles;
    double threshold;
} wt_dsnot_params;

/* DSnoT's refinement of `rows` rows of `cols` entries in place (pruned: 1 = pruned), DSnoT.swift's
   rule: w the weights, score the Wanda score of each entry (the order in which kept weights are
   given up). scratch holds wt_dsnot_scratch_bytes(cols) bytes, aligned for double. Returns the
   number of swaps. */
size_t wt_dsnot_rows(const float *w, uint8_t *pruned, const float *score, size_t rows, size_t cols, const wt_dsnot_params *params,
                     void *scratch);
size_t wt_dsnot_scratch_bytes(size_t cols);

/* What row-wise pruning of a piece of rows removed, for the report. */
typedef struct {
    double w_sq, removed_sq;       /* sum of w^2 over all entries / over the pruned ones */
    double out_num, out_den;       /* sum of removed^2 * act[c] and of w^2 * act[c] (act given) */
    size_t pruned, zeros;          /* pruned entries; entries zero afterwards */
    size_t swaps;                  /* DSnoT's swaps */
} wt_prune_tally;

/* Which entries of a row are pruned: nm_m 0: the k of smallest score (ties: lower index first);
   else in every group of nm_m consecutive entries the nm_m - nm_keep of smallest score (a stable
   sort of the group, PruneMask.nm). */
typedef struct { size_t k, nm_keep, nm_m; } wt_row_rule;

/* Row-scope pruning of `rows` rows of `cols` decoded values w by `rule`, score = |w| (col_scale
   NULL) or (float)((double)|w| * col_scale[c]) (Wanda: col_scale = sqrt of the activations'
   squared norms). With dsnot (its nm_m that of the rule), DSnoT then refines each row's mask
   (wt_dsnot_rows) with the Wanda score (float)((double)|w| * give_scale[c]) as the giving-up order
   (give_scale NULL: the score above). Writes the row bytes of `src` (elem_size 2 or 4) to `dst`
   with the pruned entries all-zero bytes (+0.0), and adds to `tally` (act: the activations'
   squared norms, or NULL). scratch holds wt_prune_rows_scratch_bytes(cols, dsnot != NULL) bytes,
   aligned for double. dst is aligned for elem_size. */
void wt_prune_rows(const float *w, const void *src, int elem_size, size_t rows, size_t cols, wt_row_rule rule,
                   const double *col_scale, const double *act, const wt_dsnot_params *dsnot, const double *give_scale,
                   void *dst, void *scratch, wt_prune_tally *tally);
size_t wt_prune_rows_scratch_bytes(size_t cols, int dsnot);

/* N:4 magnitude pruning of 16-bit floats (F16/BF16) on their storage bits: in every 4 consecutive
   entries the 4 - keep of smallest magnitude (ties: lower index first) become +0.0. `square` holds
   the square of each of the 32768 magnitudes (0 for non-finite ones) for the report's sums; is_bf16
   says which format (the AVX2 path decodes the values itself). count is a multiple of 4. */
void wt_prune_n4_half(const void *src, size_t count, int keep, int is_bf16, const double *square, void *dst, wt_prune_tally *tally);

/* The error of an approximation `got` of `ref` over n values (ErrorAccumulator in Swift states the
   meaning): per lane of eight, d = |got - ref| in f32 (0 where ref is not finite, infinite where
   got is NaN and ref finite), squares of d and of the finite refs summed in f32 lanes over runs of
   512 steps, each run's lane sums (lane 0 to 7 in turn) added in f64; the n % 8
   tail is left to the caller. Adds to max_abs, err_sq and ref_sq. */
void wt_error_add(const float *ref, const float *got, size_t n, double *max_abs, double *err_sq, double *ref_sq);

/* Index of the first NaN or infinity among x[0..n), or n when all are finite. */
size_t wt_first_nonfinite(const float *x, size_t n);

/* 1: the AVX2 paths are used (the CPU has AVX2 and F16C, and they were not switched off). Tests
   switch them off (0) to compare the portable paths with the vector ones. */
int wt_quant_uses_avx2(void);
void wt_quant_allow_avx2(int allow);

#endif

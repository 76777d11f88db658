#ifndef CMERGE_H
#define CMERGE_H
#include <stddef.h>
#include <stdint.h>

/* The per-entry passes of the task-arithmetic merges (TIES, DARE, DELLA and their linear forms),
   each the statement of a Swift rule it replaced, with the same arithmetic in the same order, so
   outputs and report figures keep their bits. Random draws are Linalg.SeededRNG's xoshiro256**
   (state[4] is its state, advanced in place) and its unit float: (next >> 40) * 2^-24. Sums run in
   four f64 lanes (lane j takes the quads' entry j), which the caller adds up as before. */

/* The next n draws of the stream in `state`, each as its top 24 bits (next >> 40; its unit float
   is that times 2^-24), into out, state advanced by n: the same values as n draws one at a time,
   computed in eight lanes that start 2048 draws apart (a jump ahead by a precomputed GF(2) matrix
   of the transition), AVX2 at run time, for each whole WT_RNG_ROUND draws (the rest one at a
   time: callers ask for whole rounds where they can). */
#define WT_RNG_ROUND 16384
void wt_rng_draws24(uint64_t state[4], uint32_t *out, size_t n);

/* DARE: keeps entry i when the next unit draw is below `density` (then p[i] *= scale), else sets
   it to +0. Returns how many were kept. */
size_t wt_dare_drop(float *p, size_t n, uint64_t state[4], double density, float scale);

/* DELLA, one row of n entries: the keep probability of entry i is prob_by_rank[r], r its rank in
   ascending |p| order (ties by index); kept when its unit draw (draw[i] 2^-24, draw[] from
   wt_rng_draws24) is below it, then divided by it when `inverse`; dropped entries become +0.
   `scratch` holds wt_della_scratch_bytes(n' >= n) bytes, 8-byte aligned, passed once to
   wt_della_scratch_clear before its first row (part of it must be zero between rows, and each row
   leaves it so). Returns how many were kept. */
size_t wt_della_row(float *p, size_t n, const uint32_t *draw, const double *prob_by_rank, int inverse, void *scratch);
size_t wt_della_scratch_bytes(size_t n);
void wt_della_scratch_clear(void *scratch);

/* Histogram of digit ((bits(|x|) >> shift) & (2^width - 1)) into hist (added to it); with
   `filtered`, only of the entries whose bits above shift + width equal `prefix`. */
void wt_magnitude_histogram(const float *x, size_t n, unsigned shift, unsigned width, int filtered, uint32_t prefix, intptr_t *hist);

/* One pass of a bracketed selection: adds to *above the entries with bits(|x|) > hi and writes
   those with lo <= bits(|x|) <= hi to out (which has cap + 8 slots; past cap they are counted,
   not kept). Returns how many were inside the bracket. */
size_t wt_bracket(const float *x, size_t n, uint32_t lo, uint32_t hi, uint32_t *out, size_t cap, size_t *above);

/* TIES's top-k as a cut: zeroes (to +0) the entries with bits(|p|) below t and those equal to it
   once the first *ties of them (in index order, counted down) are kept. Returns how many were kept. */
size_t wt_keep_above(float *p, size_t n, uint32_t t, size_t *ties);

/* TIES sign election and disjoint sum of M weighted deltas (TaskArithmeticPipeline.electAndSum):
   out[i] = lambda * (the sum of the w_m x_m[i] whose sign is the sign of their total, 0 electing
   +), divided by the sum of their weights with `normalize`. Returns the entries where deltas of
   both signs met. */
size_t wt_elect_sum(const float *const *x, const double *w, size_t M, float *out, size_t n, int normalize, double lambda);

/* One model's sparsifier in wt_ties_block: a magnitude cut (keep magnitudes above `cut`, and the
   first `left` equal to it, counted down; keep-all is cut 0 with left SIZE_MAX, drop-all cut
   0x7FFFFFFF with left 0), or, when `mask` is not NULL, the kept set a probe pass remembered as
   bits (wt_mask_store's layout; entry i of the block is bit at + i). With `scaled`, kept deltas
   are then multiplied by `factor` (mergekit's L1 rescale), in f32. */
typedef struct {
    uint32_t cut;
    size_t left;
    const uint8_t *mask;
    int scaled;
    float factor;
} wt_ties_model;

/* One block of a sign-electing merge of M <= 8 models in one pass. For entry i: d_m = x_m[i] -
   base[i] (f32), kept or set to +0 by model m's sparsifier (as wt_keep_above or wt_mask_apply),
   scaled, then out[i] = base[i] + the wt_elect_sum of the kept d_m (f32). The report's sums as the
   separate passes take them (wt_delta_lanes on the raw values, wt_add_base's change and squares),
   for the first 4 * (n / 4) entries, lane i mod 4; the caller adds the last n mod 4. x and base are
   not written; models[m].left is counted down, kept[m] is added to (also for masks). Returns the
   entries where kept deltas of both signs met. */
size_t wt_ties_block(const float *const *x, size_t M, const float *base, size_t n, wt_ties_model *models, size_t at,
                     const double *w, int normalize, double lambda, float *out, size_t *kept,
                     double *sq, double *dots, double change[4], double squares[4]);

/* For the first 4 * quads entries: sq[4m + j] += d_m^2 and dots[4k + j] += d_p d_q (pairs p < q in
   order (0,1), (0,2), ..., (1,2), ...), with d_m = (double)x_m[i] - (double)base[i], j = i mod 4. */
void wt_delta_lanes(const float *const *x, size_t M, const float *base, size_t quads, double *sq, double *dots);

/* wt_delta_lanes over the first 4 * (n / 4) entries, and x_m[i] -= base[i] (in f32) for all n: the
   report's geometry and the deltas in one pass. */
void wt_delta_lanes_subtract(float *const *x, size_t M, const float *base, size_t n, double *sq, double *dots);

/* out[i] += base[i] (in f32) for all n; for the first 4 * (n / 4) entries change[j] += (out[i] -
   base[i])^2 (the new out, in f64) and squares[j] += base[i]^2, j = i mod 4. */
void wt_add_base(float *out, const float *base, size_t n, double change[4], double squares[4]);

/* lanes[j] += |(double)p[i]| for the first 4 * quads entries, j = i mod 4. */
void wt_abs_lanes(const float *p, size_t quads, double lanes[4]);

/* The entries a random sparsifier kept, as bits (bit j of the mask is entry j, lowest bit of a byte
   first): store sets bits at ..< at + n to whether |p[i]| is not zero, apply sets p[i] to +0 where
   the bit is clear. Kept zeros read as dropped, which changes nothing downstream (a zero delta
   never agrees in an election and adds nothing). */
void wt_mask_store(const float *p, size_t n, uint8_t *bits, size_t at);
void wt_mask_apply(float *p, size_t n, const uint8_t *bits, size_t at);

/* 1: the AVX2 paths are used; tests switch them off (0) to compare the two. */
int wt_merge_uses_avx2(void);
void wt_merge_allow_avx2(int allow);
/* 1: wt_ties_block's AVX-512 path is used (AVX2 allowed, a CPU with AVX-512F and VL); tests switch
   it off (0) to compare it with the AVX2 one. */
int wt_merge_uses_avx512(void);
void wt_merge_allow_avx512(int allow);
#endif

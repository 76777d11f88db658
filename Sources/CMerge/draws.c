/* Many draws of one xoshiro256** stream at once (see CMerge.h, wt_rng_draws24).

   One stream is serial: each state follows from the last, a chain of about four dependent
   operations a draw, which made the draws a quarter of a DARE merge's CPU. But the state transition
   is linear over GF(2) (xors, shifts, a rotation; the ** scrambler only shapes the output), so
   T^SEGMENT, T the transition, is a 256 x 256 bit matrix: applied to a state it gives the state
   SEGMENT draws later. Eight lanes then start SEGMENT draws apart and run side by side in
   vectors; lane j's draws are the stream's draws j SEGMENT ... (j + 1) SEGMENT - 1, so the
   output is the same sequence, bit for bit, as drawing one at a time. */
#include "CMerge.h"
#include <pthread.h>
#include <string.h>
#if defined(__x86_64__)
#include <immintrin.h>
#endif

/* Draws per lane per round (eight lanes: WT_RNG_ROUND draws a round). The seven jumps of a round
   cost about as much as a few thousand draws, so a round is long; the matrix is 8 KiB. */
#define SEGMENT 2048
#define LANES 8
_Static_assert(SEGMENT * LANES == WT_RNG_ROUND, "a round is WT_RNG_ROUND draws");

static inline uint64_t rotl(uint64_t x, int k) { return (x << k) | (x >> (64 - k)); }

static inline uint64_t draw24(uint64_t s[4]) {
    uint64_t result = rotl(s[1] * 5, 7) * 9, t = s[1] << 17;
    s[2] ^= s[0]; s[3] ^= s[1]; s[1] ^= s[2]; s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result >> 40;
}

static void draws_serial(uint64_t s[4], uint32_t *out, size_t n) {
    for (size_t i = 0; i < n; i++) out[i] = (uint32_t)draw24(s);
}

#if defined(__x86_64__)
/* Column b of T^SEGMENT: the state SEGMENT draws after the state whose only set bit is b (bit
   b % 64 of word b / 64). */
static uint64_t jump_columns[256][4];
static pthread_once_t jump_once = PTHREAD_ONCE_INIT;

static void make_jump_columns(void) {
    for (int b = 0; b < 256; b++) {
        uint64_t s[4] = {0, 0, 0, 0};
        s[b / 64] = (uint64_t)1 << (b % 64);
        for (int i = 0; i < SEGMENT; i++) (void)draw24(s);
        memcpy(jump_columns[b], s, sizeof s);
    }
}

/* out = T^SEGMENT in: the xor of the columns of in's set bits (no branch on the bits, which are
   coin flips). */
static void jump(const uint64_t in[4], uint64_t out[4]) {
    uint64_t y[4] = {0, 0, 0, 0};
    for (int w = 0; w < 4; w++)
        for (int bit = 0; bit < 64; bit++) {
            uint64_t take = 0 - ((in[w] >> bit) & 1);
            const uint64_t *c = jump_columns[w * 64 + bit];
            y[0] ^= c[0] & take; y[1] ^= c[1] & take; y[2] ^= c[2] & take; y[3] ^= c[3] & take;
        }
    memcpy(out, y, sizeof y);
}

/* The lanes' states of one round, lane 0 the stream's own. */
static void lane_states(const uint64_t s[4], uint64_t lanes[LANES][4]) {
    memcpy(lanes[0], s, 4 * sizeof(uint64_t));
    for (int j = 1; j < LANES; j++) jump(lanes[j - 1], lanes[j]);
}

/* One xoshiro256** step of four lanes (word k of lane l in lane l of s[k]); returns the draws'
   top 24 bits in 64-bit lanes. x * 5 and x * 9 as shift-adds, rotations as two shifts. */
__attribute__((always_inline, target("avx2")))
static inline __m256i step4(__m256i s[4]) {
    __m256i x = _mm256_add_epi64(s[1], _mm256_slli_epi64(s[1], 2));
    x = _mm256_or_si256(_mm256_slli_epi64(x, 7), _mm256_srli_epi64(x, 57));
    x = _mm256_add_epi64(x, _mm256_slli_epi64(x, 3));
    __m256i t = _mm256_slli_epi64(s[1], 17);
    s[2] = _mm256_xor_si256(s[2], s[0]);
    s[3] = _mm256_xor_si256(s[3], s[1]);
    s[1] = _mm256_xor_si256(s[1], s[2]);
    s[0] = _mm256_xor_si256(s[0], s[3]);
    s[2] = _mm256_xor_si256(s[2], t);
    s[3] = _mm256_or_si256(_mm256_slli_epi64(s[3], 45), _mm256_srli_epi64(s[3], 19));
    return _mm256_srli_epi64(x, 40);
}

/* A round in two groups of four lanes (A: lanes 0-3, B: 4-7). Each step's eight draws are one
   vector of 32-bit values, A's and B's interleaved (a | b << 32: vector position p holds lane
   (p % 2) * 4 + p / 2); eight steps are transposed so that each lane's eight draws are stored
   together, at their place in its segment. */
__attribute__((target("avx2")))
static void round_avx2(uint64_t s[4], uint32_t *out) {
    uint64_t lanes[LANES][4];
    lane_states(s, lanes);
    __m256i a[4], b[4];
    for (int k = 0; k < 4; k++) {
        a[k] = _mm256_setr_epi64x((long long)lanes[0][k], (long long)lanes[1][k], (long long)lanes[2][k], (long long)lanes[3][k]);
        b[k] = _mm256_setr_epi64x((long long)lanes[4][k], (long long)lanes[5][k], (long long)lanes[6][k], (long long)lanes[7][k]);
    }
    static const int lane_of_position[8] = {0, 4, 1, 5, 2, 6, 3, 7};
    for (size_t t = 0; t < SEGMENT; t += 8) {
        __m256i r[8];
        for (int u = 0; u < 8; u++) {
            __m256i da = step4(a), db = step4(b);
            r[u] = _mm256_or_si256(da, _mm256_slli_epi64(db, 32));
        }
        /* 8 x 8 transpose of 32-bit entries: o[p][u] = r[u][p] */
        __m256i t0 = _mm256_unpacklo_epi32(r[0], r[1]), t1 = _mm256_unpackhi_epi32(r[0], r[1]);
        __m256i t2 = _mm256_unpacklo_epi32(r[2], r[3]), t3 = _mm256_unpackhi_epi32(r[2], r[3]);
        __m256i t4 = _mm256_unpacklo_epi32(r[4], r[5]), t5 = _mm256_unpackhi_epi32(r[4], r[5]);
        __m256i t6 = _mm256_unpacklo_epi32(r[6], r[7]), t7 = _mm256_unpackhi_epi32(r[6], r[7]);
        __m256i u0 = _mm256_unpacklo_epi64(t0, t2), u1 = _mm256_unpackhi_epi64(t0, t2);
        __m256i u2 = _mm256_unpacklo_epi64(t1, t3), u3 = _mm256_unpackhi_epi64(t1, t3);
        __m256i u4 = _mm256_unpacklo_epi64(t4, t6), u5 = _mm256_unpackhi_epi64(t4, t6);
        __m256i u6 = _mm256_unpacklo_epi64(t5, t7), u7 = _mm256_unpackhi_epi64(t5, t7);
        __m256i o[8] = {
            _mm256_permute2x128_si256(u0, u4, 0x20), _mm256_permute2x128_si256(u1, u5, 0x20),
            _mm256_permute2x128_si256(u2, u6, 0x20), _mm256_permute2x128_si256(u3, u7, 0x20),
            _mm256_permute2x128_si256(u0, u4, 0x31), _mm256_permute2x128_si256(u1, u5, 0x31),
            _mm256_permute2x128_si256(u2, u6, 0x31), _mm256_permute2x128_si256(u3, u7, 0x31),
        };
        for (int p = 0; p < 8; p++)
            _mm256_storeu_si256((__m256i *)(out + (size_t)lane_of_position[p] * SEGMENT + t), o[p]);
    }
    /* the stream's state after the round: lane 7's (group B's last lane) */
    uint64_t w[4];
    for (int k = 0; k < 4; k++) { _mm256_storeu_si256((__m256i *)w, b[k]); s[k] = w[3]; }
}
#endif

void wt_rng_draws24(uint64_t state[4], uint32_t *out, size_t n) {
    uint64_t s[4] = {state[0], state[1], state[2], state[3]};
    size_t i = 0;
#if defined(__x86_64__)
    if (n >= (size_t)LANES * SEGMENT && wt_merge_uses_avx2()) {
        pthread_once(&jump_once, make_jump_columns);
        for (; n - i >= (size_t)LANES * SEGMENT; i += (size_t)LANES * SEGMENT) round_avx2(s, out + i);
    }
#endif
    draws_serial(s, out + i, n - i);
    memcpy(state, s, sizeof s);
}

/* Shared by the pruning kernels. */
#ifndef WT_MASKED_H
#define WT_MASKED_H
#include <stdint.h>
#include <string.h>

/* x where flag is 1, +0.0 where it is 0, by masking the bits (a kept NaN must not reach a sum of
   the pruned entries, and a multiply by the flag would let it; the AND vectorises, a select did not) */
static inline double masked(double x, uint8_t flag) {
    uint64_t b;
    memcpy(&b, &x, 8);
    b &= (uint64_t)0 - flag;
    memcpy(&x, &b, 8);
    return x;
}
#endif

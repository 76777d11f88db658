#ifndef CHALF_H
#define CHALF_H
#include <stddef.h>
#include <stdint.h>

/* Conversions between 16-bit floats and f32. Sources and destinations of 16-bit data may be
   unaligned (safetensors does not require alignment). f32 -> f16/bf16 rounds to nearest even;
   NaN stays NaN. */
void wt_f16_to_f32(const void *src, float *dst, size_t n);
void wt_f32_to_f16(const float *src, void *dst, size_t n);
void wt_bf16_to_f32(const void *src, float *dst, size_t n);
void wt_f32_to_bf16(const float *src, void *dst, size_t n);
/* 1 when the F16C instructions are used, 0 for the portable fallback. */
int wt_half_uses_f16c(void);

#endif

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

/* Index of the first NaN or infinity among x[0..n), or n when all are finite. */
size_t wt_first_nonfinite(const float *x, size_t n);

/* 1: the AVX2 paths are used (the CPU has AVX2 and F16C, and they were not switched off). Tests
   switch them off (0) to compare the portable paths with the vector ones. */
int wt_quant_uses_avx2(void);
void wt_quant_allow_avx2(int allow);

#endif

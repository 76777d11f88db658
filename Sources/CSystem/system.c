#include "CSystem.h"
#include <stdlib.h> /* defines __GLIBC__ */
#if defined(__GLIBC__)
#include <malloc.h>
#endif

/* A fixed mmap threshold: buffers above it are mapped and unmapped on free, instead of glibc
   raising the threshold after the first free and keeping later buffers in per-thread heaps. */
void wt_serve_large_allocations_from_mmap(int threshold_bytes) {
#if defined(__GLIBC__)
    mallopt(M_MMAP_THRESHOLD, threshold_bytes);
#else
    (void)threshold_bytes;
#endif
}

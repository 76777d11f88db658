#ifndef CSYSTEM_H
#define CSYSTEM_H
/* libc settings Swift cannot reach (glibc's malloc.h is not in the Glibc module). */
void wt_serve_large_allocations_from_mmap(int threshold_bytes);
#endif

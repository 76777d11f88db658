#ifndef CSYSTEM_H
#define CSYSTEM_H
/* libc settings Swift cannot reach (glibc's malloc.h is not in the Glibc module), and the
   async-signal-safe part of temporary-file cleanup. */
void wt_serve_large_allocations_from_mmap(int threshold_bytes);

/* Temporary files to remove if the process is interrupted (SIGINT, SIGTERM, SIGHUP): a fixed table
   the signal handler can walk without locks or allocation. Returns 0 when the table is full (the
   file is then only removed on a normal error path). */
int wt_register_temporary(const char *path);
void wt_unregister_temporary(const char *path);
void wt_install_interrupt_cleanup(void);
#endif

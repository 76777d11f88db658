#ifndef CSYSTEM_H
#define CSYSTEM_H
/* libc settings Swift cannot reach (glibc's malloc.h is not in the Glibc module), and the
   async-signal-safe part of temporary-file cleanup. */
void wt_serve_large_allocations_from_mmap(int threshold_bytes);

/* Temporary files to remove if the process is interrupted (SIGINT, SIGTERM, SIGHUP): a fixed table
   the signal handler can walk without locks or allocation. Returns 0 when the table is full (the
   file is then only removed on a normal error path). */
int wt_register_temporary(const char *path);
/* A staging folder: removed with everything in it. */
int wt_register_temporary_tree(const char *path);
void wt_unregister_temporary(const char *path);
/* Also turns a SIGBUS inside a registered input mapping into a one-line error naming the file
   (exit 1, temporaries removed). */
void wt_install_interrupt_cleanup(void);

/* Removes a file, or a folder and everything in it (async-signal-safe calls only). 0 on success. */
int wt_remove_tree(const char *path);

#include <stddef.h>
void wt_register_mapping(const void *base, size_t length, const char *path);
void wt_unregister_mapping(const void *base);

/* renameat2(RENAME_EXCHANGE): swaps two existing paths atomically; -1 with errno (EINVAL, ENOSYS)
   where the filesystem or kernel lacks it. */
int wt_exchange(const char *a, const char *b);
int wt_process_alive(int pid);

/* Starts the write-out of fd's dirty pages and returns without waiting (Linux; elsewhere nothing).
   A hint: errors surface at fsync. */
int wt_start_writeback(int fd);
#endif

/* Write-behind for output files: sync_file_range is Linux's (glibc declares it with _GNU_SOURCE,
   which the Glibc module does not set). */
#define _GNU_SOURCE
#include "CSystem.h"
#include <fcntl.h>

int wt_start_writeback(int fd) {
#if defined(__linux__)
    /* start writing the file's dirty pages out, without waiting for them (0, 0: the whole file) */
    return sync_file_range(fd, 0, 0, SYNC_FILE_RANGE_WRITE);
#else
    (void)fd;
    return 0;
#endif
}

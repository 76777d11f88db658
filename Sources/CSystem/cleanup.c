#define _GNU_SOURCE
#include "CSystem.h"
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

/* One slot per temporary being written: a file (shards of one output, small files) or a staging
   folder (a folder output built under a temporary sibling name). A slot is published by setting
   `used` last and retired by clearing it first, so the handler only ever sees complete paths. */
#define WT_SLOTS 256
static char wt_paths[WT_SLOTS][PATH_MAX];
static volatile sig_atomic_t wt_used[WT_SLOTS];    /* 0 free, 1 file, 2 folder tree */
static pthread_mutex_t wt_lock = PTHREAD_MUTEX_INITIALIZER;

static int wt_register(const char *path, int kind) {
    if (strlen(path) >= PATH_MAX) return 0;
    pthread_mutex_lock(&wt_lock);
    for (int i = 0; i < WT_SLOTS; i++) {
        if (!wt_used[i]) {
            strcpy(wt_paths[i], path);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            wt_used[i] = kind;
            pthread_mutex_unlock(&wt_lock);
            return 1;
        }
    }
    pthread_mutex_unlock(&wt_lock);
    return 0;
}

int wt_register_temporary(const char *path) { return wt_register(path, 1); }
int wt_register_temporary_tree(const char *path) { return wt_register(path, 2); }

void wt_unregister_temporary(const char *path) {
    pthread_mutex_lock(&wt_lock);
    for (int i = 0; i < WT_SLOTS; i++) {
        if (wt_used[i] && strcmp(wt_paths[i], path) == 0) { wt_used[i] = 0; break; }
    }
    pthread_mutex_unlock(&wt_lock);
}

/* Removes the entries of an open folder, recursively, with only async-signal-safe calls
   (getdents64, unlinkat, openat, close): usable from a signal handler. */
struct wt_dirent64 { uint64_t ino; int64_t off; unsigned short reclen; unsigned char type; char name[]; };

static void wt_clear_dir(int dfd, int depth) {
    char buf[4096];
    /* Passes over the folder until one removes nothing (entries removed under the cursor may
       make a pass skip some). */
    for (int removed = 1; removed;) {
        removed = 0;
        lseek(dfd, 0, SEEK_SET);
        for (;;) {
            long n = syscall(SYS_getdents64, dfd, buf, sizeof buf);
            if (n <= 0) break;
            for (long off = 0; off < n;) {
                struct wt_dirent64 *d = (struct wt_dirent64 *)(buf + off);
                off += d->reclen;
                if (strcmp(d->name, ".") == 0 || strcmp(d->name, "..") == 0) continue;
                if (unlinkat(dfd, d->name, 0) == 0) { removed = 1; continue; }
                if (depth < 16) {
                    int sub = openat(dfd, d->name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
                    if (sub >= 0) { wt_clear_dir(sub, depth + 1); close(sub); }
                }
                if (unlinkat(dfd, d->name, AT_REMOVEDIR) == 0) removed = 1;
            }
        }
    }
}

int wt_remove_tree(const char *path) {
    if (unlink(path) == 0) return 0;
    int dfd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (dfd < 0) return errno == ENOENT ? 0 : -1;
    wt_clear_dir(dfd, 0);
    close(dfd);
    return rmdir(path);
}

static void wt_remove_registered(void) {
    for (int i = 0; i < WT_SLOTS; i++) {
        if (wt_used[i] == 1) unlink(wt_paths[i]);
        else if (wt_used[i] == 2) wt_remove_tree(wt_paths[i]);
    }
}

static void wt_on_interrupt(int sig) {
    wt_remove_registered();
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Memory-mapped inputs, so that a SIGBUS (the file was truncated underneath) is reported as an
   error naming the file instead of a crash. */
#define WT_MAPS 4096
static const char *volatile wt_map_base[WT_MAPS];
static size_t wt_map_len[WT_MAPS];
static char wt_map_path[WT_MAPS][PATH_MAX];

void wt_register_mapping(const void *base, size_t length, const char *path) {
    if (strlen(path) >= PATH_MAX) return;
    pthread_mutex_lock(&wt_lock);
    for (int i = 0; i < WT_MAPS; i++) {
        if (!wt_map_base[i]) {
            strcpy(wt_map_path[i], path);
            wt_map_len[i] = length;
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            wt_map_base[i] = (const char *)base;
            break;
        }
    }
    pthread_mutex_unlock(&wt_lock);
}

void wt_unregister_mapping(const void *base) {
    pthread_mutex_lock(&wt_lock);
    for (int i = 0; i < WT_MAPS; i++) if (wt_map_base[i] == (const char *)base) { wt_map_base[i] = 0; break; }
    pthread_mutex_unlock(&wt_lock);
}

static void wt_write_str(const char *s) {
    size_t n = strlen(s);
    while (n > 0) {
        ssize_t w = write(2, s, n);
        if (w <= 0) return;
        s += w; n -= (size_t)w;
    }
}

static void wt_on_bus_error(int sig, siginfo_t *info, void *ctx) {
    (void)ctx;
    const char *addr = (const char *)info->si_addr;
    const char *file = 0;
    for (int i = 0; i < WT_MAPS; i++) {
        const char *b = wt_map_base[i];
        if (b && addr >= b && addr < b + wt_map_len[i]) { file = wt_map_path[i]; break; }
    }
    if (!file) {   /* not one of our inputs: a real crash */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    wt_write_str("wtool: error: ");
    wt_write_str(file);
    wt_write_str(": the file changed while it was being read (truncated or replaced by another process); nothing was written\n");
    wt_remove_registered();
    _exit(1);
}

void wt_install_interrupt_cleanup(void) {
    signal(SIGINT, wt_on_interrupt);
    signal(SIGTERM, wt_on_interrupt);
    signal(SIGHUP, wt_on_interrupt);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = wt_on_bus_error;
    sa.sa_flags = SA_SIGINFO;
    sigemptyset(&sa.sa_mask);
    sigaction(SIGBUS, &sa, 0);
}

int wt_exchange(const char *a, const char *b) {
#ifdef SYS_renameat2
    return (int)syscall(SYS_renameat2, AT_FDCWD, a, AT_FDCWD, b, 2 /* RENAME_EXCHANGE */);
#else
    errno = ENOSYS;
    return -1;
#endif
}

int wt_process_alive(int pid) {
    return kill(pid, 0) == 0 || errno == EPERM;
}

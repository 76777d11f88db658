#include "CSystem.h"
#include <pthread.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <limits.h>

/* One slot per temporary file being written (shards of one output, plus small files). A slot is
   published by setting `used` last and retired by clearing it first, so the handler only ever sees
   complete paths. */
#define WT_SLOTS 256
static char wt_paths[WT_SLOTS][PATH_MAX];
static volatile sig_atomic_t wt_used[WT_SLOTS];
static pthread_mutex_t wt_lock = PTHREAD_MUTEX_INITIALIZER;

int wt_register_temporary(const char *path) {
    if (strlen(path) >= PATH_MAX) return 0;
    pthread_mutex_lock(&wt_lock);
    for (int i = 0; i < WT_SLOTS; i++) {
        if (!wt_used[i]) {
            strcpy(wt_paths[i], path);
            __atomic_thread_fence(__ATOMIC_SEQ_CST);
            wt_used[i] = 1;
            pthread_mutex_unlock(&wt_lock);
            return 1;
        }
    }
    pthread_mutex_unlock(&wt_lock);
    return 0;
}

void wt_unregister_temporary(const char *path) {
    pthread_mutex_lock(&wt_lock);
    for (int i = 0; i < WT_SLOTS; i++) {
        if (wt_used[i] && strcmp(wt_paths[i], path) == 0) { wt_used[i] = 0; break; }
    }
    pthread_mutex_unlock(&wt_lock);
}

static void wt_on_interrupt(int sig) {
    for (int i = 0; i < WT_SLOTS; i++) if (wt_used[i]) unlink(wt_paths[i]);   /* async-signal-safe */
    signal(sig, SIG_DFL);
    raise(sig);
}

void wt_install_interrupt_cleanup(void) {
    signal(SIGINT, wt_on_interrupt);
    signal(SIGTERM, wt_on_interrupt);
    signal(SIGHUP, wt_on_interrupt);
}

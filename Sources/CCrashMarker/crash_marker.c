#define _GNU_SOURCE
#include "crash_marker.h"

#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#define PLACES 64

// The places and the previous handlers are process-wide by nature: a signal handler has no other way to
// find them. Places are claimed and released with atomic exchanges; the handlers are installed once.
static _Atomic(int32_t *) places[PLACES];
static atomic_flag installed = ATOMIC_FLAG_INIT;
static const int signals[] = {SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE, SIGABRT};
#define SIGNALS (sizeof(signals) / sizeof(signals[0]))
static struct sigaction previous[SIGNALS];
static __thread int32_t cached_thread_id;

int32_t inetinfo_thread_id(void) {
    if (cached_thread_id == 0) cached_thread_id = (int32_t)syscall(SYS_gettid);
    return cached_thread_id;
}

int inetinfo_crash_marker_add(int32_t *place) {
    for (int i = 0; i < PLACES; i++) {
        int32_t *expected = NULL;
        if (atomic_compare_exchange_strong(&places[i], &expected, place)) return 0;
    }
    return -1;
}

void inetinfo_crash_marker_remove(int32_t *place) {
    for (int i = 0; i < PLACES; i++) {
        int32_t *expected = place;
        if (atomic_compare_exchange_strong(&places[i], &expected, NULL)) return;
    }
}

static void mark(int signal, siginfo_t *info, void *context) {
    // Kernel-generated (a fault or a trap: si_code > 0), or raised by this very process (abort()).
    int own = info != NULL && (info->si_code > 0 || (info->si_code == SI_TKILL && info->si_pid == getpid()));
    if (own) {
        int32_t thread = (int32_t)syscall(SYS_gettid);
        for (int i = 0; i < PLACES; i++) {
            int32_t *place = atomic_load(&places[i]);
            if (place != NULL) {
                int32_t unset = 0;
                __atomic_compare_exchange_n(place, &unset, thread, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);
            }
        }
    }
    for (unsigned i = 0; i < SIGNALS; i++) {
        if (signals[i] != signal) continue;
        struct sigaction *before = &previous[i];
        if ((before->sa_flags & SA_SIGINFO) && before->sa_sigaction != NULL) {
            before->sa_sigaction(signal, info, context);
            return;
        }
        if (before->sa_handler != SIG_DFL && before->sa_handler != SIG_IGN) {
            before->sa_handler(signal);
            return;
        }
        // The default action: restored, then the signal happens again — a fault by re-running the faulting
        // instruction on return, anything else raised again (it is blocked until this handler returns).
        sigaction(signal, before, NULL);
        if (!(info != NULL && info->si_code > 0) || signal == SIGTRAP) raise(signal);
        return;
    }
}

void inetinfo_crash_marker_install(void) {
    if (atomic_flag_test_and_set(&installed)) return;
    for (unsigned i = 0; i < SIGNALS; i++) {
        struct sigaction action;
        memset(&action, 0, sizeof action);
        action.sa_sigaction = mark;
        action.sa_flags = SA_SIGINFO | SA_ONSTACK;
        sigemptyset(&action.sa_mask);
        sigaction(signals[i], &action, &previous[i]);
    }
}

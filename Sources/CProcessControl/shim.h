// Process-control calls Swift cannot import directly: `prctl` is variadic, and glibc's
// `posix_spawn_file_actions_addclosefrom_np` (2.34+) is not exported by Swift's Glibc module.
#ifndef INETINFO_PROCESS_CONTROL_SHIM_H
#define INETINFO_PROCESS_CONTROL_SHIM_H

#include <fcntl.h>
#include <stdint.h>
#include <signal.h>
#include <spawn.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <unistd.h>

/// The calling process receives `signal` when its parent ends (PR_SET_PDEATHSIG).
static inline int inetinfo_set_parent_death_signal(int signal) {
    return prctl(PR_SET_PDEATHSIG, (unsigned long)signal, 0UL, 0UL, 0UL);
}

/// The spawned child closes every descriptor from `lowest` up.
static inline int inetinfo_spawn_close_from(posix_spawn_file_actions_t *actions, int lowest) {
    return posix_spawn_file_actions_addclosefrom_np(actions, lowest);
}

/// A descriptor that names the process `pid` for as long as it is open, even once it has been reaped
/// (then signals to it fail with ESRCH instead of reaching whoever reuses the pid); -1 with errno set.
static inline int inetinfo_pidfd_open(pid_t pid) {
    return (int)syscall(SYS_pidfd_open, pid, 0);
}

static inline int inetinfo_pidfd_send_signal(int pidfd, int signal) {
    return (int)syscall(SYS_pidfd_send_signal, pidfd, signal, NULL, 0);
}

/// A pipe whose both ends are close-on-exec (pipe2 is hidden from Swift without _GNU_SOURCE).
static inline int inetinfo_pipe_cloexec(int fds[2]) {
    return pipe2(fds, O_CLOEXEC);
}

/// Atomic operations on memory shared between processes (a worker's figure file, `mmap`ed): Swift's
/// atomics want memory they allocated themselves.
static inline void inetinfo_atomic_add_u64(uint64_t *address, uint64_t amount) {
    __atomic_fetch_add(address, amount, __ATOMIC_RELAXED);
}

/// Adds `amount` to the double stored (as its bits) at `address`.
static inline void inetinfo_atomic_add_double(uint64_t *address, double amount) {
    uint64_t expected = __atomic_load_n(address, __ATOMIC_RELAXED);
    for (;;) {
        double current;
        __builtin_memcpy(&current, &expected, sizeof current);
        double next = current + amount;
        uint64_t desired;
        __builtin_memcpy(&desired, &next, sizeof desired);
        if (__atomic_compare_exchange_n(address, &expected, desired, 1, __ATOMIC_RELAXED, __ATOMIC_RELAXED)) return;
    }
}

static inline void inetinfo_atomic_store_u64(uint64_t *address, uint64_t value) {
    __atomic_store_n(address, value, __ATOMIC_RELAXED);
}

/// Publishes a slot: everything written before is visible to a reader that sees `value`.
static inline void inetinfo_atomic_store_release_u32(uint32_t *address, uint32_t value) {
    __atomic_store_n(address, value, __ATOMIC_RELEASE);
}

#endif

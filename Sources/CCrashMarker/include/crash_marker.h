// Which thread of this process crashed, written where the host can read it after the process is gone
// (the flight recorder's header): a crash is attributed to the connection whose input that very thread
// was processing, never to one that another thread happened to be processing at the same moment.
#ifndef INETINFO_CRASH_MARKER_H
#define INETINFO_CRASH_MARKER_H

#include <stdint.h>

/// The calling thread's kernel thread id (cached per thread: no system call after the first).
int32_t inetinfo_thread_id(void);

/// Adds a place where the id of the first thread that crashes is written (nothing is written while it is
/// not 0). At most 64 places; returns 0, or -1 when they are all taken.
int inetinfo_crash_marker_add(int32_t *place);

/// Removes a place (before the memory it is in goes away).
void inetinfo_crash_marker_remove(int32_t *place);

/// Installs the handlers for SIGSEGV, SIGBUS, SIGILL, SIGTRAP, SIGFPE and SIGABRT, once per process. Each
/// writes the thread's id into every place when the signal is the thread's own (a fault, a trap, its own
/// abort; not a signal sent by another process), then hands the signal to whatever handled it before (the
/// Swift runtime's backtracer, or the default action: the process ends with that signal).
void inetinfo_crash_marker_install(void);

#endif

#ifndef INETINFO_FILE_SYSTEM_H
#define INETINFO_FILE_SYSTEM_H

#include <stdint.h>

/// syncfs(2) (declared by glibc only under _GNU_SOURCE): writes back every dirty file and folder of the
/// file system holding `fd` and flushes its device. 0, or -1 with errno (a write-back error since `fd`
/// was opened, reported once).
int inetinfo_syncfs(int fd);

/// The `f_type` magic of the file system holding `fd` (fstatfs(2)); 0 with errno set on failure.
int64_t inetinfo_file_system_type(int fd);

#endif

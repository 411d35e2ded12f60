#define _GNU_SOURCE
#include "file_system.h"

#include <sys/vfs.h>
#include <unistd.h>

int inetinfo_syncfs(int fd) { return syncfs(fd); }

int64_t inetinfo_file_system_type(int fd) {
    struct statfs info;
    if (fstatfs(fd, &info) != 0) return 0;
    return (int64_t)info.f_type;
}

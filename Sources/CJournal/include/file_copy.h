#ifndef INETINFO_FILE_COPY_H
#define INETINFO_FILE_COPY_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

/// copy_file_range(2) (a GNU extension glibc declares only under _GNU_SOURCE): copies in the kernel
/// from `in` at `*in_offset` to `out` at `*out_offset`, advancing both. -1 with errno on failure.
ssize_t inetinfo_copy_file_range(int in, int64_t *in_offset, int out, int64_t *out_offset, size_t length);

#endif

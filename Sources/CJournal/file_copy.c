#define _GNU_SOURCE
#include "file_copy.h"

#include <unistd.h>

ssize_t inetinfo_copy_file_range(int in, int64_t *in_offset, int out, int64_t *out_offset, size_t length) {
    loff_t from = *in_offset, to = *out_offset;
    ssize_t copied = copy_file_range(in, &from, out, &to, length, 0);
    if (copied > 0) {
        *in_offset = from;
        *out_offset = to;
    }
    return copied;
}

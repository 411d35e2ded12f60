#ifndef INETINFO_CRC32C_H
#define INETINFO_CRC32C_H

#include <stddef.h>
#include <stdint.h>

/// CRC-32C (Castagnoli, RFC 3720 §B.4): continues `crc` (0 to start) over `length` bytes.
/// Uses the SSE 4.2 instruction when the processor has it, a table otherwise; both give the same value.
uint32_t inetinfo_crc32c(uint32_t crc, const void *bytes, size_t length);

#endif

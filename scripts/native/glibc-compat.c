/*
 * Linked into the embedded libbpf.so (scripts/build-libbpf.sh) so that it needs no glibc newer
 * than the Bun runtime does (2.17). Building on a newer glibc binds three calls to newer symbol
 * versions; the link wraps them (-Wl,--wrap=NAME) and these wrappers bind to the old versions:
 *   fstat     GLIBC_2.33 (older glibc only had __fxstat): the fstat system call directly; the
 *             kernel's struct stat is glibc's on x86_64 and aarch64
 *   fcntl64   GLIBC_2.28 (_FILE_OFFSET_BITS=64 redirect): plain fcntl, identical on 64-bit
 *   fmemopen  GLIBC_2.22: the original fmemopen; libbpf only opens a string for reading, where
 *             both versions behave the same
 * scripts/build-libbpf.sh checks the result with objdump (no GLIBC_ version above 2.17).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stdio.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#if defined(__x86_64__)
#define BASE_VERSION "GLIBC_2.2.5"
#elif defined(__aarch64__)
#define BASE_VERSION "GLIBC_2.17"
#else
#error "glibc-compat.c: add the base glibc symbol version of this architecture"
#endif

extern int compat_fcntl(int fd, int cmd, ...);
extern FILE *compat_fmemopen(void *buf, size_t size, const char *mode);
__asm__(".symver compat_fcntl, fcntl@" BASE_VERSION);
__asm__(".symver compat_fmemopen, fmemopen@" BASE_VERSION);

__attribute__((visibility("hidden"))) int __wrap_fstat(int fd, struct stat *st)
{
	return (int)syscall(SYS_fstat, fd, st);
}

/* Every fcntl command libbpf and libelf use takes an int or a pointer: one long covers both. */
__attribute__((visibility("hidden"))) int __wrap_fcntl64(int fd, int cmd, ...)
{
	va_list ap;
	long arg;

	va_start(ap, cmd);
	arg = va_arg(ap, long);
	va_end(ap);
	return compat_fcntl(fd, cmd, arg);
}

__attribute__((visibility("hidden"))) FILE *__wrap_fmemopen(void *buf, size_t size, const char *mode)
{
	return compat_fmemopen(buf, size, mode);
}

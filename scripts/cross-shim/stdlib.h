/* CI-only stand-in (see scripts/cross-check.sh): clang's own mm_malloc.h,
 * pulled in by ring's x86-64 code, needs these three declarations from libc. */
#include <stddef.h>
void *malloc(size_t size);
void free(void *ptr);
int posix_memalign(void **memptr, size_t alignment, size_t size);

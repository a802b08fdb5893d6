/* CI-only stand-in for the Apple SDK header of this name (see
 * scripts/cross-check.sh): just what ring's base.h reads for an iOS device. */
#define TARGET_OS_IPHONE 1
#define TARGET_OS_OSX 0
#define TARGET_OS_SIMULATOR 0

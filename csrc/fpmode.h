/* fpmode.h - flush-to-zero for the core's own compute, and the caller's
 * floating-point mode put back afterwards.
 *
 * A subnormal float (|x| < 2^-126) costs an Intel core a microcode assist
 * of a hundred cycles or more per operation. Trained weights make them
 * common: GELU of a large negative pre-activation underflows (x/2 erfc(..)
 * below 1e-38), and the next layer's GEMM reads every one. The shipped
 * models ran window mode 15-70 times slower than random weights until each
 * public compute entry point (himae_encode, himae_reconstruct,
 * himae_stream_push, himae_stream_prepare) ran between
 *     himae_fpmode saved = himae_fpmode_flush();
 *     ...
 *     himae_fpmode_set(saved);
 * which sets x86 MXCSR FTZ (bit 15: subnormal results become 0) and DAZ
 * (bit 6: subnormal inputs read as 0), or AArch64 FPCR.FZ (bit 24: both),
 * for the calling thread only; elsewhere both are no-ops. A subnormal is
 * below any output's rounding error here, so flushing changes no result
 * that matters and makes the cost independent of the data.
 *
 * Weights are flushed once at load instead (himae_flush_subnormal), so that
 * they are the same on every target, with or without these modes.
 *
 * The same calls set rounding to nearest (MXCSR RC, FPCR.RMode = 0), which
 * is every result's contract: a caller that left another rounding mode
 * (fesetround) would otherwise get other bits, and the int8 kernels would
 * disagree, since x86's VCVTPS2DQ and lrintf follow the mode and ARM's
 * FCVTNS does not. Loading packs weights (Winograd transforms, int8
 * rounding) under the same mode, and so do the heads.
 */
#ifndef HIMAE_FPMODE_H
#define HIMAE_FPMODE_H

#include <stdint.h>
#include <string.h>

#if defined(__SSE__) || defined(__x86_64__)
#include <xmmintrin.h>
#define HIMAE_FPMODE_X86 1
#define HIMAE_FPMODE_FLUSH 0x8040u  /* MXCSR FTZ | DAZ */
#define HIMAE_FPMODE_FLAGS 0x003Fu  /* MXCSR exception flags, not mode */
#define HIMAE_FPMODE_ROUND 0x6000u  /* MXCSR RC: 0 = to nearest */
#elif defined(__aarch64__)
#define HIMAE_FPMODE_ARM64 1
#define HIMAE_FPMODE_FLUSH (1u << 24) /* FPCR.FZ */
#define HIMAE_FPMODE_FLAGS 0u         /* FPCR holds no flags (FPSR does) */
#define HIMAE_FPMODE_ROUND (3u << 22) /* FPCR.RMode: 0 = to nearest */
#else
#define HIMAE_FPMODE_FLUSH 0u
#define HIMAE_FPMODE_FLAGS 0u
#define HIMAE_FPMODE_ROUND 0u
#endif

typedef uint64_t himae_fpmode;

/* The calling thread's floating-point control register (MXCSR, FPCR; 0
 * where neither exists). */
static inline himae_fpmode himae_fpmode_get(void) {
#if defined(HIMAE_FPMODE_X86)
    return _mm_getcsr();
#elif defined(HIMAE_FPMODE_ARM64)
    uint64_t fpcr;
    __asm__ volatile("mrs %0, fpcr" : "=r"(fpcr));
    return fpcr;
#else
    return 0;
#endif
}

static inline void himae_fpmode_set(himae_fpmode mode) {
#if defined(HIMAE_FPMODE_X86)
    _mm_setcsr((unsigned int)mode);
#elif defined(HIMAE_FPMODE_ARM64)
    __asm__ volatile("msr fpcr, %0" : : "r"(mode));
#else
    (void)mode;
#endif
}

/* Turn flush-to-zero on and round to nearest; returns the mode to restore. */
static inline himae_fpmode himae_fpmode_flush(void) {
    const himae_fpmode saved = himae_fpmode_get();
    const himae_fpmode want = (saved & ~(himae_fpmode)HIMAE_FPMODE_ROUND) | HIMAE_FPMODE_FLUSH;
    if (want != saved) himae_fpmode_set(want);
    return saved;
}

/* x, or 0 (same sign) when x is subnormal: bit operations only, so the
 * result does not depend on the floating-point mode. */
static inline float himae_flush_subnormal(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if ((u & 0x7F800000u) == 0) u &= 0x80000000u;
    memcpy(&x, &u, sizeof u);
    return x;
}

#endif

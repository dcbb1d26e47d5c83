/* dispatch.c - the one place that knows which micro-kernels exist and which
 * this CPU and OS can run (CPUID for the instructions, XGETBV for the OS
 * saving the wider registers). */
#include <string.h>

#include "internal.h"

#if defined(__x86_64__) || defined(__i386__)
#define HIMAE_X86 1
#include <cpuid.h>
extern const himae_ukernel himae_ukernel_avx2[HIMAE_PRECISION_COUNT], himae_ukernel_avx512[HIMAE_PRECISION_COUNT];
extern const himae_ukernel himae_ukernel_avx512_bf16dot, himae_ukernel_avx512_int8, himae_ukernel_avx2_int8;
#elif defined(__aarch64__)
#define HIMAE_ARM64 1
extern const himae_ukernel himae_ukernel_neon[HIMAE_PRECISION_COUNT];
extern const himae_ukernel himae_ukernel_neon_bf16dot, himae_ukernel_neon_int8;
#ifdef __linux__
#include <sys/auxv.h>
#endif
#endif
extern const himae_ukernel himae_ukernel_scalar[HIMAE_PRECISION_COUNT];

static const char *const isa_names[HIMAE_ISA_COUNT] = {"scalar", "avx2", "avx512", "neon"};
static const char *const precision_names[HIMAE_PRECISION_COUNT] = {"f32", "bf16", "bf16dot", "int8"};

/* Index of name among n names, or -1. */
static int name_index(const char *const *names, int n, const char *name) {
    for (int i = 0; i < n; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

const char *himae_isa_name(enum himae_isa isa) {
    return (unsigned)isa < HIMAE_ISA_COUNT ? isa_names[isa] : "unknown";
}

int himae_isa_from_name(const char *name, enum himae_isa *isa) {
    const int i = name_index(isa_names, HIMAE_ISA_COUNT, name);
    if (i >= 0) *isa = (enum himae_isa)i;
    return i >= 0;
}

const char *himae_precision_name(enum himae_precision precision) {
    return (unsigned)precision < HIMAE_PRECISION_COUNT ? precision_names[precision] : "unknown";
}

int himae_precision_from_name(const char *name, enum himae_precision *precision) {
    const int i = name_index(precision_names, HIMAE_PRECISION_COUNT, name);
    if (i >= 0) *precision = (enum himae_precision)i;
    return i >= 0;
}

#ifdef HIMAE_X86
static unsigned long long xgetbv0(void) {
    unsigned eax, edx;
    __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
    return ((unsigned long long)edx << 32) | eax;
}
#endif

#ifdef HIMAE_X86
/* AVX512-BF16 (CPUID leaf 7, subleaf 1, EAX bit 5): the dot-product
 * instructions of the bf16dot kernel, on top of AVX512F. */
static int avx512_bf16(void) {
    unsigned a, b, c, d;
    return himae_isa_supported(HIMAE_ISA_AVX512) && __get_cpuid_count(7, 1, &a, &b, &c, &d) && ((a >> 5) & 1);
}

/* AVX512-VNNI (CPUID leaf 7, subleaf 0, ECX bit 11): VPDPBUSD for the int8
 * kernel, on top of AVX512F. */
static int avx512_vnni(void) {
    unsigned a, b, c, d;
    return himae_isa_supported(HIMAE_ISA_AVX512) && __get_cpuid_count(7, 0, &a, &b, &c, &d) && ((c >> 11) & 1);
}
#endif

#ifdef HIMAE_ARM64
/* Bit `bit` of the auxiliary vector's entry `type` (AT_HWCAP, AT_HWCAP2):
 * the CPU features Linux reports. Elsewhere none is detected, so none of
 * the kernels that need one is used. */
#ifdef __linux__
#define HWCAP_BIT(type, bit) ((int)((getauxval(type) >> (bit)) & 1))
#else
#define HWCAP_BIT(type, bit) 0
#endif

/* FEAT_BF16 (HWCAP2_BF16, bit 14 of AT_HWCAP2): BFDOT and BFCVTN for the
 * bf16dot kernel. */
static int neon_bf16(void) { return HWCAP_BIT(AT_HWCAP2, 14); }

/* FEAT_DotProd (HWCAP_ASIMDDP, bit 20 of AT_HWCAP): SDOT for the int8 kernel. */
static int neon_dotprod(void) { return HWCAP_BIT(AT_HWCAP, 20); }
#endif

int himae_isa_supported(enum himae_isa isa) {
    switch (isa) {
    case HIMAE_ISA_SCALAR: return 1;
#ifdef HIMAE_X86
    case HIMAE_ISA_AVX2:
    case HIMAE_ISA_AVX512: {
        unsigned a, b, c, d;
        if (!__get_cpuid(1, &a, &b, &c, &d)) return 0;
        int osxsave = (c >> 27) & 1, fma = (c >> 12) & 1, avx = (c >> 28) & 1;
        if (!osxsave || !avx) return 0;
        unsigned long long xcr0 = xgetbv0();
        if ((xcr0 & 0x6) != 0x6) return 0; /* XMM and YMM state */
        if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return 0;
        if (isa == HIMAE_ISA_AVX2) return fma && ((b >> 5) & 1);
        return ((b >> 16) & 1) && (xcr0 & 0xE6) == 0xE6; /* AVX512F + opmask/ZMM state */
    }
#endif
#ifdef HIMAE_ARM64
    case HIMAE_ISA_NEON: return 1;
#endif
    default: return 0;
    }
}

static const himae_ukernel *ukernel(enum himae_isa isa, enum himae_precision precision) {
    switch (isa) {
    case HIMAE_ISA_SCALAR: return &himae_ukernel_scalar[precision];
#ifdef HIMAE_X86
    case HIMAE_ISA_AVX2:
        if (precision == HIMAE_INT8) return &himae_ukernel_avx2_int8;
        return &himae_ukernel_avx2[precision];
    case HIMAE_ISA_AVX512:
        if (precision == HIMAE_BF16DOT) return avx512_bf16() ? &himae_ukernel_avx512_bf16dot : NULL;
        if (precision == HIMAE_INT8) return avx512_vnni() ? &himae_ukernel_avx512_int8 : NULL;
        return &himae_ukernel_avx512[precision];
#endif
#ifdef HIMAE_ARM64
    case HIMAE_ISA_NEON:
        if (precision == HIMAE_BF16DOT) return neon_bf16() ? &himae_ukernel_neon_bf16dot : NULL;
        if (precision == HIMAE_INT8) return neon_dotprod() ? &himae_ukernel_neon_int8 : NULL;
        return &himae_ukernel_neon[precision];
#endif
    default: return NULL;
    }
}

const himae_ukernel *himae_ukernel_for(enum himae_isa isa, enum himae_precision precision) {
    if ((unsigned)precision >= HIMAE_PRECISION_COUNT) return NULL;
    const himae_ukernel *uk = ukernel(isa, precision);
    return uk && uk->fn ? uk : NULL;
}

int himae_precision_supported(enum himae_isa isa, enum himae_precision precision) {
    return himae_isa_supported(isa) && himae_ukernel_for(isa, precision) != NULL;
}

enum himae_isa himae_isa_best(void) {
    static const enum himae_isa order[] = {HIMAE_ISA_AVX512, HIMAE_ISA_AVX2, HIMAE_ISA_NEON};
    for (size_t i = 0; i < sizeof order / sizeof order[0]; i++)
        if (himae_isa_supported(order[i])) return order[i];
    return HIMAE_ISA_SCALAR;
}

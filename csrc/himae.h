/*
 * himae.h - public interface of the HiMAE C core (plain C11, no Python).
 *
 * A model is loaded from a flat model file (docs/model-format.md) into one
 * arena: BatchNorm-folded weights re-packed for the GEMM micro-kernels, plus
 * every activation buffer the window-mode encoder needs. Nothing is allocated
 * after load; himae_alloc_count() lets tests prove it.
 *
 * Extension points (how later engines plug in without rewrites):
 *  - Every convolution is one call of himae_conv1d_forward() (conv.c): a
 *    channels-last input whose im2col rows are strided views (no copy), a
 *    packed weight panel with the bias in front, and a fused epilogue
 *    (bias, optional residual add, optional GELU). A stream-mode engine keeps
 *    per-layer ring buffers in the same channels-last layout and calls it for
 *    just the new output columns (n_out = 1..thousands); the micro-kernels
 *    take any row count, so a few columns cost a few columns.
 *  - Narrow layers (2 cout <= the kernel's panel width) may be packed in row
 *    pairs (himae_pack_conv_pairs) to fill the panel; callers that do so
 *    keep `stride` extra zero rows after their buffers.
 *  - The decoder's transposed convolutions (stride 2) are packed at load as
 *    two phase convolutions (even and odd outputs), each an ordinary
 *    stride-1 himae_conv; concat with the skip is a wider channels-last row.
 *  - GEMM micro-kernels are per ISA (gemm_<isa>.c), listed in one table and
 *    picked by himae_isa_select() (dispatch.c).
 *
 * Threading: a model is not thread-safe (its activation buffers are shared
 * between calls); use one model per thread.
 */
#ifndef HIMAE_H
#define HIMAE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define HIMAE_MAX_LEVELS 8
#define HIMAE_ERR_LEN 256

enum himae_status {
    HIMAE_OK = 0,
    HIMAE_EFORMAT = 1, /* the model file is malformed */
    HIMAE_EIO = 2,     /* the file could not be read */
    HIMAE_ENOMEM = 3,  /* allocation failed */
    HIMAE_EINVAL = 4,  /* bad argument (e.g. unsupported ISA requested) */
};

enum himae_isa {
    HIMAE_ISA_SCALAR = 0,
    HIMAE_ISA_AVX2 = 1,
    HIMAE_ISA_AVX512 = 2,
    HIMAE_ISA_NEON = 3,
    HIMAE_ISA_COUNT = 4,
};

/* Precision of the arithmetic (docs/stream-mode.md, "Reduced precision").
 * bf16: weights rounded to bfloat16, halving the bytes a push reads; the
 * activations and every sum stay f32. bf16dot: weights and each GEMM's
 * inputs rounded to bfloat16, multiplied in pairs with f32 sums (AVX512-BF16
 * dot products: twice the multiply-adds per instruction of f32). int8:
 * weights as int8 with a scale per output channel, each GEMM input row as
 * int8 with a scale of its own, products summed exactly in int32
 * (AVX512-VNNI, ARM SDOT: four multiply-adds per lane and instruction,
 * twice bf16dot's); the decoder stays f32. */
enum himae_precision {
    HIMAE_F32 = 0,
    HIMAE_BF16 = 1,
    HIMAE_BF16DOT = 2,
    HIMAE_INT8 = 3,
    HIMAE_PRECISION_COUNT = 4,
};

typedef struct himae_config {
    uint32_t in_channels;
    uint32_t window;
    uint32_t n_levels;
    uint32_t kernel_size;
    uint32_t stride;
    float fs;
    uint32_t patch_size;
    float mask_ratio;
    uint32_t flags; /* bit 0: decoder present */
    uint32_t channels[HIMAE_MAX_LEVELS];
    uint32_t level_len[HIMAE_MAX_LEVELS]; /* ceil(window / 2^(l+1)) */
} himae_config;

typedef struct himae_model himae_model;

/* Default limit on a loaded model's activation buffers (all it allocates but
 * its packed weights; docs/model-format.md, "Memory"). */
#define HIMAE_DEFAULT_MAX_MEMORY ((size_t)256 << 20)

/* Load a model file (a regular file of at most 1 GiB). isa: NULL or "" =
 * best supported (or $HIMAE_ISA if set), else "scalar" | "avx2" | "avx512" |
 * "neon". precision: NULL, "" or "f32" = the file's f32 weights; "bf16" =
 * weights rounded to bfloat16 at load (half the bytes per push; activations
 * and sums stay f32); "bf16dot" = weights and GEMM inputs in bfloat16, sums
 * in f32 (ISA avx512 with AVX512-BF16, neon with FEAT_BF16, or scalar);
 * "int8" = encoder weights and GEMM inputs in int8, sums in int32 (ISA
 * avx512 with AVX512-VNNI, neon with FEAT_DotProd, or scalar). max_memory: the most bytes of activation buffers the
 * model may need (0 = HIMAE_DEFAULT_MAX_MEMORY); a model that needs more is
 * refused (HIMAE_EFORMAT) before anything is allocated for it. On failure
 * returns a status, writes a message (see docs/model-format.md) into err and
 * sets *out = NULL. */
int himae_load(const char *path, const char *isa, const char *precision, size_t max_memory,
               himae_model **out, char *err, size_t err_len);
/* Same, from a buffer in memory (the buffer is not kept). */
int himae_load_buffer(const uint8_t *buf, size_t size, const char *isa, const char *precision,
                      size_t max_memory, himae_model **out, char *err, size_t err_len);
void himae_free(himae_model *model);

const himae_config *himae_model_config(const himae_model *model);
/* The metadata JSON object, NUL-terminated, owned by the model. */
const char *himae_model_metadata(const himae_model *model);
enum himae_isa himae_model_isa(const himae_model *model);
enum himae_precision himae_model_precision(const himae_model *model);

/* Window-mode encoder on `batch` windows x (batch, in_channels, window),
 * C order. For each level l, levels[l] (batch, C_l, len_l) and means[l]
 * (batch, C_l) receive the level output and its time mean; either array, or
 * any entry, may be NULL. No allocation. */
int himae_encode(himae_model *model, const float *x, size_t batch, float *const *levels,
                 float *const *means, char *err, size_t err_len);

/* Window-mode reconstruction (encoder + decoder, tanh output) of `batch`
 * windows x (batch, in_channels, window) into out, same shape. Needs a model
 * file with the decoder (flags bit 0). No allocation. */
int himae_reconstruct(himae_model *model, const float *x, size_t batch, float *out, char *err,
                      size_t err_len);

/* ISA helpers: names, whether this CPU and OS support one, the best one. */
const char *himae_isa_name(enum himae_isa isa);
int himae_isa_from_name(const char *name, enum himae_isa *isa);
int himae_isa_supported(enum himae_isa isa);
enum himae_isa himae_isa_best(void);
/* Precision names: "f32", "bf16", "bf16dot", "int8". */
/* Whether this CPU runs a precision with an ISA's kernels (bf16dot: avx512
 * with AVX512-BF16, neon with FEAT_BF16, or scalar; int8: avx512 with
 * AVX512-VNNI, neon with FEAT_DotProd, or scalar). */
int himae_precision_supported(enum himae_isa isa, enum himae_precision precision);
const char *himae_precision_name(enum himae_precision precision);
int himae_precision_from_name(const char *name, enum himae_precision *precision);

/* Number of heap allocations the core has made since the process started. */
uint64_t himae_alloc_count(void);

/* CRC32 (zlib polynomial), exposed for tests and writers. */
uint32_t himae_crc32(uint32_t crc, const uint8_t *data, size_t n);

#ifdef __cplusplus
}
#endif
#endif

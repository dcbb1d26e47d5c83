/* model.c - load a model into one arena (packed weights + activation
 * buffers) and run the window-mode encoder without allocating. */
#define _POSIX_C_SOURCE 200809L /* open, fstat */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "decoder.h"
#include "fpmode.h"
#include "internal.h"
#include "modelfile.h"

#define ALIGN 64
#define SLACK 2 /* zero rows past the padding that row-paired convs read (their stride) */

static _Atomic uint64_t alloc_count;

void *himae_malloc(size_t n) {
    atomic_fetch_add(&alloc_count, 1);
    return malloc(n);
}

void himae_free_mem(void *p) { free(p); }

uint64_t himae_alloc_count(void) { return atomic_load(&alloc_count); }

typedef struct himae_level {
    himae_conv conv1, conv2, skip;
    /* conv1 and conv2 again as Winograd convs for window mode, where
     * use_winograd picks them (packed NULL elsewhere); the stream engine's
     * few rows per call keep the direct convs. */
    himae_wino conv1_wino, conv2_wino;
    float *act; /* input_rows x channels (the next level's input), channels-last; level output */
} himae_level;

struct himae_model {
    himae_config config;
    enum himae_isa isa;
    const himae_ukernel *uk;
    uint32_t file_crc;   /* the model file's CRC32 footer */
    size_t pad;          /* zero rows kept on each side of every buffer */
    char *metadata;      /* NUL-terminated JSON */
    float *input;        /* input_rows x in_channels */
    float *hidden;       /* conv1 output, largest level */
    float *wino_work;    /* himae_wino_forward's work, largest Winograd level */
    himae_level level[HIMAE_MAX_LEVELS];
    himae_stage stage[HIMAE_MAX_LEVELS - 1]; /* decoder, when flags bit 0 */
    himae_tconv head;
    float *decoder_work; /* himae_decoder_work_floats() floats */
    void *arena; /* the one allocation, freed by himae_free */
};

static size_t round_up(size_t n) { return (n + ALIGN - 1) / ALIGN * ALIGN; }

/* Bump allocator over the arena; a sizing pass runs it with base == NULL.
 * `weights` counts the packed weights' bytes among the bytes used. The
 * packers write f32; for a bf16 model they write into `scratch` (the
 * largest block's floats, measured as `scratch_floats` by the sizing pass)
 * and put_weights converts the block into the arena. */
typedef struct {
    uint8_t *base;
    size_t used, weights;
    float *scratch;
    size_t scratch_floats;
} bump;

static void *take(bump *b, size_t bytes) {
    void *p = b->base ? b->base + b->used : NULL;
    b->used += round_up(bytes);
    return p;
}

/* Where to pack a block of n weights as f32 (NULL in the sizing pass);
 * hand it to put_weights once packed. */
static float *pack_target(bump *b, const himae_ukernel *uk, size_t n) {
    if (uk->precision == HIMAE_F32) return b->base ? (float *)(b->base + b->used) : NULL;
    if (n > b->scratch_floats && !b->base) b->scratch_floats = n;
    return b->base ? b->scratch : NULL;
}

/* The block's place in the arena, its n weights (panels of kc rows) in the
 * kernel's precision. */
static const void *put_weights(bump *b, const himae_ukernel *uk, const float *packed, size_t n, size_t kc) {
    const size_t bytes = uk->precision == HIMAE_INT8 ? n / (uk->nr * (1 + kc)) * himae_panel_size(uk, kc)
                                                    : n * uk->wbytes;
    b->weights += round_up(bytes);
    void *dst = take(b, bytes);
    if (dst && uk->precision == HIMAE_BF16) himae_pack_bf16(dst, packed, n, uk->nr);
    if (dst && uk->precision == HIMAE_BF16DOT) himae_pack_bf16dot(dst, packed, n, uk->nr, kc);
    if (dst && uk->precision == HIMAE_INT8) himae_pack_int8(dst, packed, n, uk->nr, kc);
    return dst;
}

/* The kernel a conv with rows of kc inputs runs on: the model's, but f32
 * for an int8 row longer than its kernel's buffer (HIMAE_INT8_MAX_KC). */
static const himae_ukernel *conv_kernel(const himae_ukernel *uk, size_t kc) {
    return uk->precision == HIMAE_INT8 && kc > HIMAE_INT8_MAX_KC ? himae_ukernel_for(uk->isa, HIMAE_F32) : uk;
}

static void set_conv(bump *b, himae_conv *conv, const himae_ukernel *uk, const himae_tensor *w,
                     const himae_tensor *bias, size_t cin, size_t cout, size_t k, size_t stride,
                     size_t pad, ptrdiff_t s_out, ptrdiff_t s_in, ptrdiff_t k0, ptrdiff_t s_k) {
    uk = conv_kernel(uk, k * cin);
    *conv = (himae_conv){cin, cout, k, stride, pad, k * cin, NULL, 0, NULL, uk};
    const size_t n = himae_packed_size(cin, cout, k, uk->nr);
    float *dst = pack_target(b, uk, n);
    if (dst) himae_pack_conv(dst, w->data, bias->data, cin, cout, k, uk->nr, s_out, s_in, k0, s_k);
    conv->packed = put_weights(b, uk, dst, n, k * cin);
}

/* An encoder conv; narrow ones are packed in row pairs (their buffers keep
 * SLACK extra zero rows for it). */
static void set_encoder_conv(bump *b, himae_conv *conv, const himae_ukernel *uk, const himae_file *f,
                             uint32_t level, const char *part, size_t cin, size_t cout, size_t k,
                             size_t stride) {
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "encoder.%u.%s.weight", level, part);
    snprintf(bn, sizeof bn, "encoder.%u.%s.bias", level, part);
    const himae_tensor *w = himae_file_tensor(f, wn), *bias = himae_file_tensor(f, bn);
    if (2 * cout > uk->nr) {
        set_conv(b, conv, uk, w, bias, cin, cout, k, stride, k / 2, (ptrdiff_t)(cin * k), (ptrdiff_t)k, 0, 1);
        /* the stream engine splits these convs' rows (stream.c); an int8 row
         * is not split: its inputs share one scale */
        if (k > 1 && conv->uk->precision != HIMAE_INT8) {
            const size_t n = himae_packed_size(cin, cout, 1, conv->uk->nr);
            float *tail = pack_target(b, conv->uk, n);
            if (tail) himae_pack_conv_tail(tail, w->data, cin, cout, k, conv->uk->nr);
            conv->tail = put_weights(b, conv->uk, tail, n, cin);
        }
        return;
    }
    uk = conv_kernel(uk, (k + stride) * cin);
    *conv = (himae_conv){cin, cout, k, stride, k / 2, k * cin, NULL, 1, NULL, uk};
    const size_t n = himae_packed_size(cin, 2 * cout, k + stride, uk->nr);
    float *dst = pack_target(b, uk, n);
    if (dst) himae_pack_conv_pairs(dst, w->data, bias->data, cin, cout, k, stride, uk->nr);
    conv->packed = put_weights(b, uk, dst, n, (k + stride) * cin);
}

static void set_plain(bump *b, himae_conv *conv, const himae_ukernel *uk, const himae_file *f,
                      const char *prefix, size_t cin, size_t cout, size_t k, size_t stride) {
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "%s.weight", prefix);
    snprintf(bn, sizeof bn, "%s.bias", prefix);
    set_conv(b, conv, uk, himae_file_tensor(f, wn), himae_file_tensor(f, bn), cin, cout, k, stride,
             k / 2, (ptrdiff_t)(cin * k), (ptrdiff_t)k, 0, 1);
}

/* ConvTranspose1d (cin, cout, k), stride 2, padding k/2: output o = 2m + e
 * takes taps kk = e + p - 2d from input m + d; as a stride-1 conv its first
 * tap is the largest such kk. */
static void set_transposed(bump *b, himae_tconv *tc, const himae_ukernel *uk, const himae_file *f,
                           const char *prefix, size_t cin, size_t cout, size_t k) {
    char wn[64], bn[64];
    snprintf(wn, sizeof wn, "%s.weight", prefix);
    snprintf(bn, sizeof bn, "%s.bias", prefix);
    ptrdiff_t p = (ptrdiff_t)k / 2;
    for (int e = 0; e < 2; e++) {
        ptrdiff_t kmax = (ptrdiff_t)k - 1, kmin = 0;
        if ((kmax - e - p) % 2) kmax--;
        if ((kmin - e - p) % 2) kmin++;
        size_t taps = kmax >= kmin ? (size_t)(kmax - kmin) / 2 + 1 : 0;
        ptrdiff_t dmin = (e + p - kmax) / 2;
        set_conv(b, &tc->phase[e], uk, himae_file_tensor(f, wn), himae_file_tensor(f, bn), cin,
                 cout, taps, 1, (size_t)(dmin < 0 ? -dmin : 0), (ptrdiff_t)k,
                 (ptrdiff_t)(cout * k), kmax, -2);
    }
}

/* Winograd for the kernel-5 convs of window mode and the decoder: stride 1
 * (the encoder's conv2, the decoder's two) by F(2,5), the encoder's conv1
 * (stride 2) by F(4,3) over row pairs, where the GEMM's input rows are at
 * least 64 floats wide and hold at least min_floats floats in all. Per tile
 * the GEMMs do 6 multiply-adds per input float where the direct conv does
 * 10, while the input and output transforms and the separate bias/GELU
 * pass cost a fixed few operations per row and channel: the gain grows
 * with the width. Measured on one Zen 4 core (median of 5 x 1000 calls,
 * 2026-12-06): himae-100's window, every conv direct 620 us; conv2 of the
 * 128- and 256-channel levels 524; their conv1 too 478; the 64-channel
 * level's conv1 and conv2 too 462 (its 32-channel level gains nothing).
 * ENCODER_WINO_FLOATS keeps short windows on the direct convs: himae-25's
 * 64- and 128-channel levels (2,048 floats each) would take its window
 * from 82 to 68 us, but that window's encode time is the yardstick of its
 * stream mode (a 1-s push, 12 us engine and 13 us through Stream.push,
 * must stay within a sixth of it). The decoder has no such yardstick:
 * himae-25's reconstruct goes from 189 to 178 us with its 2,048-float
 * convs on F(2,5). Not for bf16 weights: rounding the transformed weights
 * G_t errs about 2.5 times more than rounding the conv's own, and window
 * mode would then differ from stream mode (the direct conv, same rounded
 * weights) by that much. */
#define ENCODER_WINO_FLOATS 8000
#define DECODER_WINO_FLOATS 2000
static int use_winograd(const himae_ukernel *uk, size_t k, size_t width, size_t rows, size_t min_floats) {
    return uk->precision == HIMAE_F32 && k == 5 && width >= 64 && rows * width >= min_floats;
}

/* The Winograd form of the conv `prefix` (its tensors prefix.weight and
 * prefix.bias) into *wino, if use_winograd picks it; grows *work to its
 * work floats. */
static void set_winograd(bump *b, himae_wino *wino, const himae_ukernel *uk, const himae_file *f,
                         const char *prefix, size_t cin, size_t cout, size_t k, size_t stride, size_t n_out,
                         size_t min_floats, size_t *work) {
    if (!use_winograd(uk, k, stride * cin, n_out, min_floats)) return;
    const size_t n = himae_wino_packed_size(cin, cout, stride, uk->nr);
    float *dst = pack_target(b, uk, n);
    if (dst) {
        char wn[64], bn[64];
        snprintf(wn, sizeof wn, "%s.weight", prefix);
        snprintf(bn, sizeof bn, "%s.bias", prefix);
        himae_wino_pack(dst, himae_file_tensor(f, wn)->data, himae_file_tensor(f, bn)->data, cin, cout, stride,
                        uk->nr);
    }
    *wino = (himae_wino){cin, cout, stride, put_weights(b, uk, dst, n, stride * cin)};
    const size_t w = himae_wino_work_floats(cin, cout, stride, n_out);
    if (w > *work) *work = w;
}

/* Rows of level l's input buffer (n rows with their padding): a Winograd
 * conv1 reads zero rows past them, up to 5 more than the direct conv. */
static size_t input_rows(const himae_config *c, uint32_t l, size_t n, size_t pad) {
    const size_t direct = n + 2 * pad + SLACK, wino = pad + himae_wino_rows_read(2, c->level_len[l]);
    return wino > direct ? wino : direct;
}

/* Level 0's kernel: f32 whatever the model's precision. Its convs hold a few
 * KB of weights (1 and 16 channels in, in the shipped models), so bf16 would
 * save no memory traffic there, while their rounding would move every
 * level's input and the finest level's per-channel statistics (a channel's
 * std by up to 2 %), which the quality head reads. */
static const himae_ukernel *level0_kernel(const himae_ukernel *uk) {
    return himae_ukernel_for(uk->isa, HIMAE_F32);
}

/* The decoder's kernel: f32 for an int8 model. Gap fill reads the decoder's
 * output sample by sample, where int8's rounding of every input row would
 * show; the model's int8 is for the encoder's embeddings. */
static const himae_ukernel *decoder_kernel(const himae_ukernel *uk) {
    return uk->precision == HIMAE_INT8 ? level0_kernel(uk) : uk;
}

/* Lay the model out in b's arena (or, with b->base == NULL, just measure
 * it: b->used bytes, of which b->weights are packed weights). */
static void layout(himae_model *m, bump *b, const himae_file *f) {
    take(b, sizeof(himae_model));
    const himae_config *c = &m->config;
    const size_t k = c->kernel_size, pad = m->pad;
    char *meta = take(b, f->meta_size + 1);
    if (meta) {
        memcpy(meta, f->meta, f->meta_size);
        meta[f->meta_size] = 0;
        m->metadata = meta;
    }
    m->input = take(b, input_rows(c, 0, c->window, pad) * c->in_channels * sizeof(float));
    size_t hidden = 0, wino_work = 0;
    for (uint32_t l = 0; l < c->n_levels; l++) {
        himae_level *lv = &m->level[l];
        size_t cin = l ? c->channels[l - 1] : c->in_channels, co = c->channels[l];
        const size_t rows = l + 1 < c->n_levels ? input_rows(c, l + 1, c->level_len[l], pad)
                                                : c->level_len[l] + 2 * pad + SLACK;
        const himae_ukernel *uk = l ? m->uk : level0_kernel(m->uk);
        set_encoder_conv(b, &lv->conv1, uk, f, l, "conv1", cin, co, k, 2);
        set_encoder_conv(b, &lv->conv2, uk, f, l, "conv2", co, co, k, 1);
        set_encoder_conv(b, &lv->skip, uk, f, l, "skip", cin, co, 1, 2);
        char name[48];
        snprintf(name, sizeof name, "encoder.%u.conv1", l);
        set_winograd(b, &lv->conv1_wino, m->uk, f, name, cin, co, k, 2, c->level_len[l], ENCODER_WINO_FLOATS,
                     &wino_work);
        snprintf(name, sizeof name, "encoder.%u.conv2", l);
        set_winograd(b, &lv->conv2_wino, m->uk, f, name, co, co, k, 1, c->level_len[l], ENCODER_WINO_FLOATS,
                     &wino_work);
        lv->act = take(b, rows * co * sizeof(float));
        if (rows * co > hidden) hidden = rows * co;
    }
    m->hidden = take(b, hidden * sizeof(float));
    if (c->flags & 1) {
        const himae_ukernel *uk = decoder_kernel(m->uk);
        for (uint32_t t = 0; t + 1 < c->n_levels; t++) {
            himae_stage *s = &m->stage[t];
            size_t ct = c->channels[t], cu = c->channels[t + 1];
            char name[48];
            snprintf(name, sizeof name, "decoder.%u.up", t);
            set_transposed(b, &s->up, uk, f, name, cu, ct, k);
            snprintf(name, sizeof name, "decoder.%u.conv1", t);
            set_plain(b, &s->conv1, uk, f, name, 2 * ct, ct, k, 1);
            set_winograd(b, &s->conv1_wino, uk, f, name, 2 * ct, ct, k, 1, c->level_len[t],
                         DECODER_WINO_FLOATS, &wino_work);
            snprintf(name, sizeof name, "decoder.%u.conv2", t);
            set_plain(b, &s->conv2, uk, f, name, ct, ct, k, 1);
            set_winograd(b, &s->conv2_wino, uk, f, name, ct, ct, k, 1, c->level_len[t],
                         DECODER_WINO_FLOATS, &wino_work);
        }
        set_transposed(b, &m->head, uk, f, "head", c->channels[0], c->in_channels, k);
        m->decoder_work = take(b, himae_decoder_work_floats(c, pad) * sizeof(float));
    }
    m->wino_work = take(b, wino_work * sizeof(float));
}

static int error(char *err, size_t err_len, int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && err_len) vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return code;
}

static int pick_precision(const char *name, enum himae_precision *precision, char *err, size_t err_len) {
    *precision = HIMAE_F32;
    if (name && *name && !himae_precision_from_name(name, precision))
        return error(err, err_len, HIMAE_EINVAL, "unknown precision '%s' (choose f32, bf16, bf16dot or int8)", name);
    return HIMAE_OK;
}

static int pick_isa(const char *isa_name, enum himae_isa *isa, char *err, size_t err_len) {
    *isa = himae_isa_best();
    if (!isa_name || !*isa_name) isa_name = getenv("HIMAE_ISA");
    if (isa_name && *isa_name) {
        if (!himae_isa_from_name(isa_name, isa))
            return error(err, err_len, HIMAE_EINVAL,
                         "unknown ISA '%s' (choose scalar, avx2, avx512 or neon)", isa_name);
        if (!himae_isa_supported(*isa) || !himae_ukernel_for(*isa, HIMAE_F32))
            return error(err, err_len, HIMAE_EINVAL, "ISA '%s' is not supported on this CPU",
                         isa_name);
    }
    return HIMAE_OK;
}

void himae_model_memory(const himae_file *f, enum himae_isa isa, enum himae_precision precision,
                        size_t *weights, size_t *buffers) {
    himae_model shape = {.config = f->config, .isa = isa, .uk = himae_ukernel_for(isa, precision),
                         .pad = f->config.kernel_size / 2};
    bump b = {0};
    layout(&shape, &b, f);
    *weights = b.weights;
    *buffers = b.used - b.weights;
}

int himae_load_buffer(const uint8_t *buf, size_t size, const char *isa_name, const char *precision_name,
                      size_t max_memory, himae_model **out, char *err, size_t err_len) {
    *out = NULL;
    enum himae_isa isa;
    enum himae_precision precision;
    int rc = pick_isa(isa_name, &isa, err, err_len);
    if (!rc) rc = pick_precision(precision_name, &precision, err, err_len);
    if (rc) return rc;
    if (!himae_ukernel_for(isa, precision))
        return error(err, err_len, HIMAE_EINVAL,
                     "precision '%s' has no %s kernel on this CPU (bf16dot needs AVX512-BF16 or ARM BF16, int8 AVX2, AVX512-VNNI or ARM DotProd; bf16 runs everywhere)",
                     himae_precision_name(precision), himae_isa_name(isa));
    himae_file f;
    rc = himae_parse(buf, size, &f, err, err_len);
    if (rc) return rc;
    himae_model shape = {.config = f.config, .isa = isa, .uk = himae_ukernel_for(isa, precision),
                         .pad = f.config.kernel_size / 2};
    bump sized = {0};
    layout(&shape, &sized, &f);
    const size_t bytes = sized.used;
    /* Checked before allocating: the packed weights are bounded by the file
     * (docs/model-format.md, "Memory"), the buffers by the caller's limit. */
    if (!max_memory) max_memory = HIMAE_DEFAULT_MAX_MEMORY;
    if (bytes - sized.weights > max_memory)
        return error(err, err_len, HIMAE_EFORMAT,
                     "too large to load: needs %zu bytes of activation buffers, more than max_memory = %zu",
                     bytes - sized.weights, max_memory);
    uint8_t *raw = himae_malloc(bytes + ALIGN);
    float *scratch = sized.scratch_floats ? himae_malloc(sized.scratch_floats * sizeof(float)) : NULL;
    if (!raw || (sized.scratch_floats && !scratch)) {
        himae_free_mem(raw);
        himae_free_mem(scratch);
        return error(err, err_len, HIMAE_ENOMEM, "out of memory: the model needs %zu bytes", bytes);
    }
    uint8_t *base = (uint8_t *)round_up((size_t)raw);
    memset(base, 0, bytes);
    himae_model *m = (himae_model *)base;
    *m = shape;
    m->arena = raw;
    memcpy(&m->file_crc, buf + size - 8, sizeof m->file_crc); /* footer, checked by himae_parse */
    bump b = {.base = base, .scratch = scratch, .scratch_floats = sized.scratch_floats};
    himae_fpmode saved = himae_fpmode_flush(); /* packing rounds (Winograd, int8): to nearest */
    layout(m, &b, &f);
    himae_fpmode_set(saved);
    himae_free_mem(scratch);
    *out = m;
    return HIMAE_OK;
}

int himae_load(const char *path, const char *isa, const char *precision, size_t max_memory,
               himae_model **out, char *err, size_t err_len) {
    *out = NULL;
    /* Non-blocking, so that opening a FIFO does not wait for a writer; only a
     * regular file, at most HIMAE_MAX_FILE bytes, is then read. */
    int fd = open(path, O_RDONLY | O_NONBLOCK);
    if (fd < 0) return error(err, err_len, HIMAE_EIO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    uint8_t *buf = NULL;
    size_t size = 0;
    int rc = HIMAE_OK;
    if (fstat(fd, &st) != 0)
        rc = error(err, err_len, HIMAE_EIO, "cannot read %s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode))
        rc = error(err, err_len, HIMAE_EFORMAT, "not a regular file");
    else if ((uint64_t)st.st_size > HIMAE_MAX_FILE)
        rc = error(err, err_len, HIMAE_EFORMAT, "too large: file has %llu bytes, more than the %llu-byte maximum",
                   (unsigned long long)st.st_size, (unsigned long long)HIMAE_MAX_FILE);
    else if (!(buf = himae_malloc((size_t)st.st_size + 1)))
        rc = error(err, err_len, HIMAE_ENOMEM, "out of memory reading %s", path);
    while (!rc && size <= (size_t)st.st_size) { /* one byte more than stat said: a file still growing is refused */
        ssize_t got = read(fd, buf + size, (size_t)st.st_size + 1 - size);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) rc = error(err, err_len, HIMAE_EIO, "cannot read %s: %s", path, strerror(errno));
        if (got <= 0) break;
        size += (size_t)got;
    }
    close(fd);
    if (!rc && size != (size_t)st.st_size)
        rc = error(err, err_len, HIMAE_EIO, "cannot read %s: it changed while being read", path);
    if (!rc) rc = himae_load_buffer(buf, size, isa, precision, max_memory, out, err, err_len);
    himae_free_mem(buf);
    return rc;
}

void himae_free(himae_model *m) {
    if (m) himae_free_mem(m->arena);
}

const himae_config *himae_model_config(const himae_model *m) { return &m->config; }
const char *himae_model_metadata(const himae_model *m) { return m->metadata; }
enum himae_isa himae_model_isa(const himae_model *m) { return m->isa; }
enum himae_precision himae_model_precision(const himae_model *m) { return m->uk->precision; }
const himae_ukernel *himae_model_ukernel(const himae_model *m) { return m->uk; }
uint32_t himae_model_file_crc(const himae_model *m) { return m->file_crc; }

const himae_conv *himae_model_encoder_conv(const himae_model *m, int level, enum himae_encoder_part part) {
    const himae_level *lv = &m->level[level];
    return part == HIMAE_CONV1 ? &lv->conv1 : part == HIMAE_CONV2 ? &lv->conv2 : &lv->skip;
}

/* One window: channels-first x (in_channels, window) -> every level's act. */
static void encode_one(himae_model *m, const float *x) {
    const himae_config *c = &m->config;
    const size_t pad = m->pad, cin0 = c->in_channels;
    float *in = m->input + pad * cin0;
    for (size_t ch = 0; ch < cin0; ch++)
        for (size_t i = 0; i < c->window; i++) in[i * cin0 + ch] = x[ch * c->window + i];
    const float *prev = in;
    for (uint32_t l = 0; l < c->n_levels; l++) {
        himae_level *lv = &m->level[l];
        size_t co = c->channels[l], n = c->level_len[l];
        float *act = lv->act + pad * co, *hid = m->hidden + pad * co;
        himae_conv1d_forward(&lv->skip, act, prev, n, NULL, 0);
        if (lv->conv1_wino.packed)
            himae_wino_forward(&lv->conv1_wino, m->uk, hid, prev, n, 0, 1, m->wino_work);
        else
            himae_conv1d_forward(&lv->conv1, hid, prev, n, NULL, 1);
        /* The hidden buffer is shared by levels of different widths: clear
         * the rows around this level's that conv2 reads as zero padding. */
        memset(m->hidden, 0, pad * co * sizeof(float));
        memset(hid + n * co, 0, (pad + SLACK) * co * sizeof(float));
        if (lv->conv2_wino.packed)
            himae_wino_forward(&lv->conv2_wino, m->uk, act, hid, n, 1, 1, m->wino_work);
        else
            himae_conv1d_forward(&lv->conv2, act, hid, n, act, 1);
        prev = act;
    }
}

/* dst (cols, rows) = src (rows, cols)^T. 4 x 4 blocks through a local
 * array, with constant trip counts, which compilers can turn into vector
 * loads, shuffles and stores; the ragged edges element by element. */
static void transpose(float *restrict dst, const float *restrict src, size_t rows, size_t cols) {
    const size_t rows4 = rows & ~(size_t)3, cols4 = cols & ~(size_t)3;
    for (size_t c0 = 0; c0 < cols4; c0 += 4) {
        for (size_t r0 = 0; r0 < rows4; r0 += 4) {
            float block[4][4];
            for (size_t r = 0; r < 4; r++)
                for (size_t c = 0; c < 4; c++) block[c][r] = src[(r0 + r) * cols + c0 + c];
            for (size_t c = 0; c < 4; c++)
                for (size_t r = 0; r < 4; r++) dst[(c0 + c) * rows + r0 + r] = block[c][r];
        }
        for (size_t c = c0; c < c0 + 4; c++)
            for (size_t r = rows4; r < rows; r++) dst[c * rows + r] = src[r * cols + c];
    }
    for (size_t c = cols4; c < cols; c++)
        for (size_t r = 0; r < rows; r++) dst[c * rows + r] = src[r * cols + c];
}

static void encode(himae_model *m, const float *x, size_t batch, float *const *levels,
                   float *const *means) {
    const himae_config *c = &m->config;
    for (size_t b = 0; b < batch; b++) {
        encode_one(m, x + b * c->in_channels * c->window);
        for (uint32_t l = 0; l < c->n_levels; l++) {
            size_t co = c->channels[l], n = c->level_len[l];
            const float *act = m->level[l].act + m->pad * co;
            if (levels && levels[l]) /* channels-last to the caller's channels-first */
                transpose(levels[l] + b * co * n, act, n, co);
            if (means && means[l]) {
                float *dst = means[l] + b * co;
                double sum[64];
                for (size_t c0 = 0; c0 < co; c0 += 64) {
                    size_t w = co - c0 < 64 ? co - c0 : 64;
                    for (size_t ch = 0; ch < w; ch++) sum[ch] = 0;
                    for (size_t i = 0; i < n; i++)
                        for (size_t ch = 0; ch < w; ch++) sum[ch] += act[i * co + c0 + ch];
                    for (size_t ch = 0; ch < w; ch++) dst[c0 + ch] = (float)(sum[ch] / (double)n);
                }
            }
        }
    }
}

int himae_encode(himae_model *m, const float *x, size_t batch, float *const *levels,
                 float *const *means, char *err, size_t err_len) {
    (void)err, (void)err_len;
    himae_fpmode saved = himae_fpmode_flush();
    encode(m, x, batch, levels, means);
    himae_fpmode_set(saved);
    return HIMAE_OK;
}

int himae_reconstruct(himae_model *m, const float *x, size_t batch, float *out, char *err,
                      size_t err_len) {
    const himae_config *c = &m->config;
    if (!(c->flags & 1)) {
        if (err && err_len) snprintf(err, err_len, "this model file has no decoder");
        return HIMAE_EINVAL;
    }
    const float *levels[HIMAE_MAX_LEVELS];
    for (uint32_t l = 0; l < c->n_levels; l++) levels[l] = m->level[l].act + m->pad * c->channels[l];
    const size_t n = (size_t)c->in_channels * c->window;
    himae_fpmode saved = himae_fpmode_flush();
    for (size_t b = 0; b < batch; b++) {
        encode_one(m, x + b * n);
        himae_decoder_forward(c, decoder_kernel(m->uk), m->pad, m->stage, &m->head, levels, m->decoder_work,
                              m->wino_work, out + b * n);
    }
    himae_fpmode_set(saved);
    return HIMAE_OK;
}

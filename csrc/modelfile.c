/* modelfile.c - the model file loader's checks, in the order and with the
 * messages docs/model-format.md lists. Every read is bounds-checked first. */
#include <math.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "json_check.h"
#include "modelfile.h"

#define HEADER_SIZE 256u
#define FOOTER_SIZE 8u
#define ENTRY_SIZE 96u
#define MIN_FILE (HEADER_SIZE + FOOTER_SIZE)
#define MAX_META (1u << 20)

static uint32_t rd32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static float rdf32(const uint8_t *p) {
    uint32_t u = rd32(p);
    float f;
    memcpy(&f, &u, 4);
    return f;
}

static int fail(char *err, size_t err_len, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && err_len) vsnprintf(err, err_len, fmt, ap);
    va_end(ap);
    return HIMAE_EFORMAT;
}

/* CRC-32 (zlib's: reflected polynomial 0xEDB88320), eight bytes a step
 * ("slicing by 8"): table[k][b] is the CRC of byte b followed by k zero
 * bytes, so the eight lookups of a step are independent. About five times
 * the byte-at-a-time loop; a load checks every tensor and the whole file,
 * twice the file's size. */
uint32_t himae_crc32(uint32_t crc, const uint8_t *data, size_t n) {
    static uint32_t table[8][256];
    static _Atomic int ready;
    if (!atomic_load_explicit(&ready, memory_order_acquire)) { /* racing fills write the same values */
        for (uint32_t i = 0; i < 256; i++) {
            uint32_t c = i;
            for (int k = 0; k < 8; k++) c = c & 1 ? 0xEDB88320u ^ (c >> 1) : c >> 1;
            table[0][i] = c;
        }
        for (int k = 1; k < 8; k++)
            for (uint32_t i = 0; i < 256; i++)
                table[k][i] = table[0][table[k - 1][i] & 0xFF] ^ (table[k - 1][i] >> 8);
        atomic_store_explicit(&ready, 1, memory_order_release);
    }
    crc = ~crc;
    for (; n >= 8; n -= 8, data += 8) {
        const uint32_t lo = crc ^ rd32(data), hi = rd32(data + 4);
        crc = table[7][lo & 0xFF] ^ table[6][lo >> 8 & 0xFF] ^ table[5][lo >> 16 & 0xFF] ^ table[4][lo >> 24] ^
              table[3][hi & 0xFF] ^ table[2][hi >> 8 & 0xFF] ^ table[1][hi >> 16 & 0xFF] ^ table[0][hi >> 24];
    }
    for (; n; n--) crc = table[0][(crc ^ *data++) & 0xFF] ^ (crc >> 8);
    return ~crc;
}

/* The tensors a configuration needs, in spec order. */
typedef struct {
    char name[48];
    uint32_t ndim, dims[4];
} spec_tensor;

static size_t expected_tensors(const himae_config *c, spec_tensor *out) {
    size_t n = 0;
    uint32_t k = c->kernel_size;
#define ADD(NDIM, D0, D1, D2, ...)                                  \
    do {                                                            \
        snprintf(out[n].name, sizeof out[n].name, __VA_ARGS__);     \
        out[n].ndim = NDIM;                                         \
        out[n].dims[0] = D0, out[n].dims[1] = D1, out[n].dims[2] = D2, out[n].dims[3] = 0; \
        n++;                                                        \
    } while (0)
    for (uint32_t l = 0; l < c->n_levels; l++) {
        uint32_t ci = l ? c->channels[l - 1] : c->in_channels, co = c->channels[l];
        ADD(3, co, ci, k, "encoder.%u.conv1.weight", l);
        ADD(1, co, 0, 0, "encoder.%u.conv1.bias", l);
        ADD(3, co, co, k, "encoder.%u.conv2.weight", l);
        ADD(1, co, 0, 0, "encoder.%u.conv2.bias", l);
        ADD(3, co, ci, 1, "encoder.%u.skip.weight", l);
        ADD(1, co, 0, 0, "encoder.%u.skip.bias", l);
    }
    if (c->flags & 1) {
        for (uint32_t t = c->n_levels - 1; t-- > 0;) {
            uint32_t ct = c->channels[t], cu = c->channels[t + 1];
            ADD(3, cu, ct, k, "decoder.%u.up.weight", t);
            ADD(1, ct, 0, 0, "decoder.%u.up.bias", t);
            ADD(3, ct, 2 * ct, k, "decoder.%u.conv1.weight", t);
            ADD(1, ct, 0, 0, "decoder.%u.conv1.bias", t);
            ADD(3, ct, ct, k, "decoder.%u.conv2.weight", t);
            ADD(1, ct, 0, 0, "decoder.%u.conv2.bias", t);
        }
        ADD(3, c->channels[0], c->in_channels, k, "head.weight");
        ADD(1, c->in_channels, 0, 0, "head.bias");
    }
#undef ADD
    return n;
}

static void format_shape(char *dst, size_t len, uint32_t ndim, const uint32_t *dims) {
    size_t used = (size_t)snprintf(dst, len, "[");
    for (uint32_t i = 0; i < ndim && used < len; i++)
        used += (size_t)snprintf(dst + used, len - used, i ? ", %u" : "%u", dims[i]);
    if (used < len) snprintf(dst + used, len - used, "]");
}

/* A float32 as Python prints float(str(numpy.float32(x))): the shortest
 * digits that round-trip, in repr's fixed or exponent form. */
static const char *py_float(char *dst, size_t len, float x) {
    if (isnan(x)) return "nan";
    if (isinf(x)) return x < 0 ? "-inf" : "inf";
    char sci[32];
    int prec = 1;
    for (; prec < 9; prec++) {
        snprintf(sci, sizeof sci, "%.*e", prec - 1, (double)x);
        if (strtof(sci, NULL) == x) break;
    }
    snprintf(sci, sizeof sci, "%.*e", prec - 1, (double)x);
    char digits[16];
    size_t nd = 0;
    const char *p = sci;
    int neg = *p == '-';
    if (neg) p++;
    for (; *p && *p != 'e'; p++)
        if (*p != '.') digits[nd++] = *p;
    int exp10 = atoi(p + 1);
    while (nd > 1 && digits[nd - 1] == '0') nd--;
    digits[nd] = 0;
    size_t used = (size_t)snprintf(dst, len, "%s", neg ? "-" : "");
    if (exp10 < -4 || exp10 >= 16) {
        used += (size_t)snprintf(dst + used, len - used, "%c", digits[0]);
        if (nd > 1) used += (size_t)snprintf(dst + used, len - used, ".%s", digits + 1);
        snprintf(dst + used, len - used, "e%c%02d", exp10 < 0 ? '-' : '+', abs(exp10));
    } else if (exp10 < 0) {
        used += (size_t)snprintf(dst + used, len - used, "0.");
        for (int i = -1; i > exp10; i--) used += (size_t)snprintf(dst + used, len - used, "0");
        snprintf(dst + used, len - used, "%s", digits);
    } else {
        for (int i = 0; i <= exp10; i++)
            used += (size_t)snprintf(dst + used, len - used, "%c", (size_t)i < nd ? digits[i] : '0');
        snprintf(dst + used, len - used, ".%s", (size_t)exp10 + 1 < nd ? digits + exp10 + 1 : "0");
    }
    return dst;
}

static int check_config(const uint8_t *h, himae_config *c, uint32_t tensor_count, char *err,
                        size_t err_len) {
    memset(c, 0, sizeof *c);
    uint32_t header_size = rd32(h + 12);
    c->in_channels = rd32(h + 68);
    c->window = rd32(h + 72);
    c->n_levels = rd32(h + 76);
    c->kernel_size = rd32(h + 80);
    c->stride = rd32(h + 84);
    c->fs = rdf32(h + 88);
    c->patch_size = rd32(h + 92);
    c->mask_ratio = rdf32(h + 96);
    c->flags = rd32(h + 100);
#define ABSURD(FIELD, FMT, VALUE) return fail(err, err_len, "absurd configuration: %s = " FMT, FIELD, VALUE)
    if (header_size != HEADER_SIZE) ABSURD("header_size", "%u", header_size);
    if (tensor_count < 1 || tensor_count > 1024) ABSURD("tensor_count", "%u", tensor_count);
    if (c->in_channels < 1 || c->in_channels > 64) ABSURD("in_channels", "%u", c->in_channels);
    if (c->window < 8 || c->window > 1048576) ABSURD("window", "%u", c->window);
    if (c->n_levels < 1 || c->n_levels > HIMAE_MAX_LEVELS) ABSURD("n_levels", "%u", c->n_levels);
    if (c->kernel_size < 1 || c->kernel_size > 15 || c->kernel_size % 2 == 0)
        ABSURD("kernel_size", "%u", c->kernel_size);
    if (c->stride != 2) ABSURD("stride", "%u", c->stride);
    if (!isfinite(c->fs) || !(c->fs > 0) || c->fs > 100000) {
        char v[32];
        ABSURD("fs", "%s", py_float(v, sizeof v, c->fs));
    }
    if (c->patch_size < 1 || c->patch_size > c->window) ABSURD("patch_size", "%u", c->patch_size);
    if (!isfinite(c->mask_ratio) || c->mask_ratio < 0 || c->mask_ratio >= 1)
    {
        char v[32];
        ABSURD("mask_ratio", "%s", py_float(v, sizeof v, c->mask_ratio));
    }
    if (c->flags & ~1u) ABSURD("flags", "%u", c->flags);
    for (uint32_t l = 0; l < HIMAE_MAX_LEVELS; l++) {
        uint32_t ch = rd32(h + 104 + 4 * l);
        c->channels[l] = ch;
        if (l < c->n_levels ? (ch < 1 || ch > 4096) : ch != 0) {
            char field[16];
            snprintf(field, sizeof field, "channels[%u]", l);
            ABSURD(field, "%u", ch);
        }
    }
    for (uint32_t i = 136; i < 252; i++)
        if (h[i] != 0) ABSURD("reserved", "%s", "nonzero");
    spec_tensor scratch[HIMAE_MAX_TENSORS];
    if (tensor_count != expected_tensors(c, scratch)) ABSURD("tensor_count", "%u", tensor_count);
#undef ABSURD
    uint64_t len = c->window;
    for (uint32_t l = 0; l < c->n_levels; l++) {
        len = (len + 1) / 2;
        c->level_len[l] = (uint32_t)len;
    }
    return HIMAE_OK;
}

/* The metadata keys the runtime relies on: a string name, in_channels
 * channel name strings, and a valid normaliser (himae_stream/normalize.py:
 * kind stream or minmax; stream fields, defaulted when absent, positive
 * finite numbers with highpass_hz < lowpass_hz, compared as doubles).
 * NULL when they are there, else what is missing (a format taking in_channels). */
static const char *meta_fields_problem(const uint8_t *s, size_t n, uint32_t in_channels) {
    himae_json_span root = {0, n}, v, items[64];
    while (s[root.start] != '{') root.start++;
    if (!himae_json_get(s, n, root, "name", &v) || himae_json_kind(s, v) != '"') return "no string 'name'";
    int names = himae_json_get(s, n, root, "channel_names", &v) && himae_json_kind(s, v) == '[' &&
                himae_json_array_items(s, n, v, items, 64) == in_channels;
    for (uint32_t i = 0; names && i < in_channels; i++) names = himae_json_kind(s, items[i]) == '"';
    if (!names) return "'channel_names' is not a list of %u strings";
    himae_json_span norm, kind;
    const char *bad_norm = "'normalizer' is not a valid normaliser";
    if (!himae_json_get(s, n, root, "normalizer", &norm) || himae_json_kind(s, norm) != '{') return bad_norm;
    if (!himae_json_get(s, n, norm, "kind", &kind)) return bad_norm;
    if (himae_json_string_equals(s, n, kind, "minmax")) return NULL;
    if (!himae_json_string_equals(s, n, kind, "stream")) return bad_norm;
    static const char *const keys[] = {"highpass_hz", "lowpass_hz", "tau_s", "scale_k", "clip"};
    static const double defaults[] = {0.5, 8.0, 5.0, 3.0, 1.0};
    double value[5];
    for (int k = 0; k < 5; k++) {
        value[k] = defaults[k];
        if (himae_json_get(s, n, norm, keys[k], &v) && !himae_json_number(s, v, &value[k])) return bad_norm;
        if (!isfinite(value[k]) || value[k] <= 0) return bad_norm;
    }
    return value[0] < value[1] ? NULL : bad_norm;
}

typedef struct {
    uint64_t offset, nbytes;
    size_t index;
} span;

static int span_cmp(const void *a, const void *b) {
    const span *x = a, *y = b;
    if (x->offset != y->offset) return x->offset < y->offset ? -1 : 1;
    if (x->nbytes != y->nbytes) return x->nbytes < y->nbytes ? -1 : 1;
    return x->index < y->index ? -1 : x->index > y->index;
}

int himae_parse(const uint8_t *buf, size_t size, himae_file *f, char *err, size_t err_len) {
    memset(f, 0, sizeof *f);
    if (size < MIN_FILE)
        return fail(err, err_len, "truncated: file has %zu bytes, less than the %u-byte minimum",
                    size, MIN_FILE);
    if (size > HIMAE_MAX_FILE)
        return fail(err, err_len, "too large: file has %zu bytes, more than the %llu-byte maximum", size,
                    (unsigned long long)HIMAE_MAX_FILE);
    if (memcmp(buf, "HIMAEMDL", 8) != 0) return fail(err, err_len, "bad magic: not a HiMAE model file");
    uint32_t version = rd32(buf + 8);
    if (version != 1)
        return fail(err, err_len, "unsupported format version %u (this reader supports 1)", version);
    if (himae_crc32(0, buf, 252) != rd32(buf + 252)) return fail(err, err_len, "header checksum mismatch");
    uint64_t file_size = rd64(buf + 16);
    if (file_size > size)
        return fail(err, err_len, "truncated: header says %llu bytes, file has %zu",
                    (unsigned long long)file_size, size);
    if (file_size < size)
        return fail(err, err_len, "trailing data: header says %llu bytes, file has %zu",
                    (unsigned long long)file_size, size);
    if (memcmp(buf + size - 4, "HEND", 4) != 0) return fail(err, err_len, "bad footer");

    uint32_t tensor_count = rd32(buf + 56);
    int rc = check_config(buf, &f->config, tensor_count, err, err_len);
    if (rc) return rc;

    uint64_t meta_offset = rd64(buf + 24), meta_size = rd64(buf + 32);
    uint64_t table_offset = rd64(buf + 40), data_offset = rd64(buf + 48);
    uint64_t end = size - FOOTER_SIZE, table_size = (uint64_t)ENTRY_SIZE * tensor_count;
    if (meta_offset < HEADER_SIZE || meta_offset % 64 || meta_size < 2 || meta_size > MAX_META ||
        meta_offset > end || meta_size > end - meta_offset)
        return fail(err, err_len, "section out of range: meta");
    if (table_offset % 64 || table_offset < meta_offset + meta_size || table_offset > end ||
        table_size > end - table_offset)
        return fail(err, err_len, "section out of range: table");
    if (data_offset % 64 || data_offset < table_offset + table_size || data_offset > end)
        return fail(err, err_len, "section out of range: data");

    const uint8_t *meta = buf + meta_offset, *table = buf + table_offset;
    if (himae_crc32(0, meta, meta_size) != rd32(buf + 64))
        return fail(err, err_len, "metadata checksum mismatch");
    size_t at;
    const char *why = himae_json_check_object(meta, meta_size, &at);
    if (why) return fail(err, err_len, "metadata is not a JSON object: %s at byte %zu", why, at);
    why = meta_fields_problem(meta, meta_size, f->config.in_channels);
    if (why) {
        char detail[96];
        snprintf(detail, sizeof detail, why, f->config.in_channels);
        return fail(err, err_len, "metadata is not a JSON object: %s", detail);
    }
    if (himae_crc32(0, table, table_size) != rd32(buf + 60))
        return fail(err, err_len, "tensor table checksum mismatch");
    f->meta = (const char *)meta;
    f->meta_size = meta_size;

    spec_tensor want[HIMAE_MAX_TENSORS];
    size_t n_want = expected_tensors(&f->config, want);
    int seen[HIMAE_MAX_TENSORS] = {0};
    size_t slot_of_entry[HIMAE_MAX_TENSORS];
    span spans[HIMAE_MAX_TENSORS];
    for (size_t i = 0; i < tensor_count; i++) {
        const uint8_t *e = table + i * ENTRY_SIZE;
        const uint8_t *nul = memchr(e, 0, 48);
        int ok = nul != NULL && nul != e;
        for (const uint8_t *p = e; ok && p < nul; p++) ok = *p > 0x20 && *p < 0x7F;
        for (const uint8_t *p = nul; ok && p < e + 48; p++) ok = *p == 0;
        if (!ok) return fail(err, err_len, "bad tensor name at entry %zu", i);
        const char *name = (const char *)e;
        size_t slot = n_want;
        for (size_t s = 0; s < n_want; s++)
            if (strcmp(want[s].name, name) == 0) slot = s;
        for (size_t j = 0; j < i; j++)
            if (memcmp(table + j * ENTRY_SIZE, e, 48) == 0)
                return fail(err, err_len, "duplicate tensor '%s'", name);
        if (slot == n_want) return fail(err, err_len, "unexpected tensor '%s'", name);
        uint32_t dtype = rd32(e + 48), ndim = rd32(e + 52);
        if (dtype != 1) return fail(err, err_len, "tensor '%s': unsupported dtype %u", name, dtype);
        uint32_t dims[4];
        uint64_t count = 1;
        int absurd = ndim < 1 || ndim > 4 || rd32(e + 92) != 0;
        for (uint32_t d = 0; d < 4; d++) {
            dims[d] = rd32(e + 56 + 4 * d);
            if (d < ndim) {
                absurd |= dims[d] == 0;
                if (!absurd) count *= dims[d]; /* each dim < 2^32, at most 4: no overflow past 2^64 checks below */
                absurd |= count > (1ull << 40);
            } else {
                absurd |= dims[d] != 0;
            }
        }
        uint64_t offset = rd64(e + 72), nbytes = rd64(e + 80);
        if (absurd || nbytes != 4 * count || nbytes > size) return fail(err, err_len, "tensor '%s': absurd size", name);
        int same = ndim == want[slot].ndim;
        for (uint32_t d = 0; same && d < ndim; d++) same = dims[d] == want[slot].dims[d];
        if (!same) {
            char have_s[64], want_s[64];
            format_shape(have_s, sizeof have_s, ndim, dims);
            format_shape(want_s, sizeof want_s, want[slot].ndim, want[slot].dims);
            return fail(err, err_len, "tensor '%s' has shape %s, configuration needs %s", name,
                        have_s, want_s);
        }
        if (offset % 64 || offset < data_offset || offset > end || nbytes > end - offset)
            return fail(err, err_len, "tensor '%s': data out of range", name);
        seen[slot] = 1;
        slot_of_entry[i] = slot;
        himae_tensor *t = &f->tensors[slot];
        memcpy(t->name, name, 48);
        t->ndim = ndim;
        memcpy(t->dims, dims, sizeof dims);
        t->data = (const float *)(buf + offset);
        t->offset = offset;
        t->nbytes = nbytes;
        spans[i] = (span){offset, nbytes, i};
    }
    for (size_t s = 0; s < n_want; s++)
        if (!seen[s]) return fail(err, err_len, "missing tensor '%s'", want[s].name);
    f->n_tensors = n_want;

    qsort(spans, tensor_count, sizeof spans[0], span_cmp);
    for (size_t i = 1; i < tensor_count; i++)
        if (spans[i - 1].offset + spans[i - 1].nbytes > spans[i].offset)
            return fail(err, err_len, "tensors '%s' and '%s' overlap",
                        f->tensors[slot_of_entry[spans[i - 1].index]].name,
                        f->tensors[slot_of_entry[spans[i].index]].name);
    for (size_t i = 0; i < tensor_count; i++) {
        const himae_tensor *t = &f->tensors[slot_of_entry[i]];
        if (himae_crc32(0, buf + t->offset, t->nbytes) != rd32(table + i * ENTRY_SIZE + 88))
            return fail(err, err_len, "tensor '%s' checksum mismatch", t->name);
    }
    for (size_t i = 0; i < tensor_count; i++) {
        const himae_tensor *t = &f->tensors[slot_of_entry[i]];
        for (uint64_t j = 0; j < t->nbytes / 4; j++)
            if (!isfinite(rdf32(buf + t->offset + 4 * j)))
                return fail(err, err_len, "tensor '%s' contains NaN or Inf at index %llu", t->name,
                            (unsigned long long)j);
    }
    if (himae_crc32(0, buf, size - FOOTER_SIZE) != rd32(buf + size - FOOTER_SIZE))
        return fail(err, err_len, "file checksum mismatch");
    return HIMAE_OK;
}

const himae_tensor *himae_file_tensor(const himae_file *f, const char *name) {
    for (size_t i = 0; i < f->n_tensors; i++)
        if (strcmp(f->tensors[i].name, name) == 0) return &f->tensors[i];
    return NULL;
}

/* fuzz_modelfile.c - libFuzzer harness of the model file loader (csrc/modelfile.c,
 * csrc/json_check.c, csrc/model.c): any bytes are loaded; a refusal must be
 * one of the messages docs/model-format.md lists, and a model that loads must
 * encode a window, run stream mode (state saved and restored) and, with its
 * decoder, reconstruct, all without a sanitizer report. The custom mutator
 * recomputes the checksums after most mutations, so mutants get past them to
 * the checks behind. Build and run: csrc/fuzz/run.sh (docs/fuzzing.md). */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../himae.h"
#include "../modelfile.h"
#include "../stream.h"

#define MAX_MEMORY ((size_t)32 << 20) /* keeps each run fast; the limit's own check is fuzzed too */

size_t LLVMFuzzerMutate(uint8_t *data, size_t size, size_t max_size);

static const char *const PREFIXES[] = {
    "truncated: ", "too large: file has ", "bad magic", "unsupported format version", "header checksum mismatch",
    "trailing data: ", "bad footer", "absurd configuration: ", "section out of range: ", "metadata checksum mismatch",
    "metadata is not a JSON object: ", "tensor table checksum mismatch", "bad tensor name at entry ",
    "duplicate tensor '", "unexpected tensor '", "tensor '", "missing tensor '", "tensors '",
    "file checksum mismatch", "too large to load: ",
};

static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }
static void wr32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void exercise(himae_model *m) {
    const himae_config *c = himae_model_config(m);
    size_t positions = 0;
    for (uint32_t l = 0; l < c->n_levels; l++) positions += (size_t)c->level_len[l] * c->channels[l];
    if ((size_t)c->window * c->in_channels > (1u << 16) || positions > (1u << 20)) return; /* time, not memory */
    size_t n = (size_t)c->in_channels * c->window;
    float *x = calloc(n, sizeof *x), *y = calloc(n, sizeof *y);
    for (size_t i = 0; i < n; i++) x[i] = (float)((i * 7919u) % 200) / 100.0f - 1.0f;
    char err[HIMAE_ERR_LEN];
    if (himae_encode(m, x, 1, NULL, NULL, err, sizeof err)) abort();
    if ((c->flags & 1) && himae_reconstruct(m, x, 1, y, err, sizeof err)) abort();
    himae_stream *s = NULL;
    if (himae_stream_create(m, &s, err, sizeof err) == 0) {
        float *out[HIMAE_STREAM_MAX_LEVELS];
        int64_t n_out[HIMAE_STREAM_MAX_LEVELS], counts[HIMAE_STREAM_MAX_LEVELS];
        int64_t push = c->window < 300 ? c->window : 300;
        himae_stream_pending(s, push, 1, counts);
        for (uint32_t l = 0; l < c->n_levels; l++) out[l] = malloc(((size_t)counts[l] + 1) * c->channels[l] * sizeof(float));
        if (himae_stream_push(s, x, c->window, push / 2, 0, out, n_out, err, sizeof err)) abort();
        size_t bytes = himae_stream_state_size(s);
        void *state = malloc(bytes);
        himae_stream_save(s, state);
        /* a state restores onto its own engine, unless the weights overflowed it to Inf */
        if (himae_stream_load(s, state, bytes, err, sizeof err) && strcmp(err, "stream state holds NaN or Inf") != 0) {
            fprintf(stderr, "saved stream state refused: %s\n", err);
            abort();
        }
        if (himae_stream_push(s, x + push / 2, c->window, push - push / 2, 1, out, n_out, err, sizeof err)) abort();
        free(state);
        for (uint32_t l = 0; l < c->n_levels; l++) free(out[l]);
        himae_stream_free(s);
    }
    free(x);
    free(y);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    himae_model *m = NULL;
    char err[HIMAE_ERR_LEN] = "";
    int rc = himae_load_buffer(data, size, "scalar", NULL, MAX_MEMORY, &m, err, sizeof err);
    if (rc == HIMAE_OK) {
        exercise(m);
        himae_free(m);
        return 0;
    }
    int known = rc == HIMAE_EFORMAT;
    for (size_t i = 0; known && i < sizeof PREFIXES / sizeof *PREFIXES; i++)
        if (strncmp(err, PREFIXES[i], strlen(PREFIXES[i])) == 0) return 0;
    fprintf(stderr, "refusal (status %d) with a message the spec does not list: '%s'\n", rc, err);
    abort();
}

/* Mutate, then (most of the time) recompute the checksums in dependency order:
 * each tensor's, the metadata's and the table's, the header's, the file's. */
size_t LLVMFuzzerCustomMutator(uint8_t *data, size_t size, size_t max_size, unsigned int seed) {
    size = LLVMFuzzerMutate(data, size, max_size);
    if (size < 264 || seed % 8 == 0) return size;
    if (seed % 4 != 1) wr32(data + 16, (uint32_t)size), wr32(data + 20, 0); /* file_size */
    uint64_t mo = rd64(data + 24), ms = rd64(data + 32), to = rd64(data + 40);
    uint32_t count = rd32(data + 56);
    if (mo <= size && ms <= size - mo) wr32(data + 64, himae_crc32(0, data + mo, ms));
    if (count <= 1024 && to <= size && 96ull * count <= size - to) {
        for (uint32_t i = 0; i < count; i++) {
            uint8_t *e = data + to + 96 * i;
            uint64_t off = rd64(e + 72), nbytes = rd64(e + 80);
            if (off <= size && nbytes <= size - off) wr32(e + 88, himae_crc32(0, data + off, nbytes));
        }
        wr32(data + 60, himae_crc32(0, data + to, 96ull * count));
    }
    memcpy(data, "HIMAEMDL", 8);
    wr32(data + 252, himae_crc32(0, data, 252));
    memcpy(data + size - 4, "HEND", 4);
    wr32(data + size - 8, himae_crc32(0, data, size - 8));
    return size;
}

/* modelfile.h - parse and validate a model file (docs/model-format.md). */
#ifndef HIMAE_MODELFILE_H
#define HIMAE_MODELFILE_H

#include "himae.h"

/* The largest model file either reader takes (1 GiB): a file is read whole. */
#define HIMAE_MAX_FILE ((size_t)1 << 30)

#define HIMAE_MAX_TENSORS (6 * HIMAE_MAX_LEVELS + 6 * (HIMAE_MAX_LEVELS - 1) + 2)

typedef struct himae_tensor {
    char name[48];
    uint32_t ndim;
    uint32_t dims[4];
    const float *data; /* into the file buffer, unaligned-safe reads via memcpy */
    uint64_t offset, nbytes;
} himae_tensor;

typedef struct himae_file {
    himae_config config;
    const char *meta; /* not NUL-terminated */
    size_t meta_size;
    size_t n_tensors;
    himae_tensor tensors[HIMAE_MAX_TENSORS]; /* in the order the spec lists them */
} himae_file;

/* Validate buf as a model file; on success fill *file (pointing into buf). */
int himae_parse(const uint8_t *buf, size_t size, himae_file *file, char *err, size_t err_len);

/* What loading a parsed file with `isa`'s kernels takes (model.c): packed
 * weights and everything else (activation buffers, metadata), in bytes. */
void himae_model_memory(const himae_file *file, enum himae_isa isa, enum himae_precision precision,
                        size_t *weights, size_t *buffers);

/* The tensor the spec names `name`, or NULL. */
const himae_tensor *himae_file_tensor(const himae_file *file, const char *name);

#endif

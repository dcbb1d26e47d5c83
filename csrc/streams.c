/* Groups of streams pushed together (see streams.h). The level-by-level
 * work is the stream engine's own (himae_stream_push_all, stream.c); this
 * file owns the streams and the scratch their gathered GEMMs need. */
#include "streams.h"

#include <stdio.h>

#include "stream_run.h"

/* Samples per block of a group push. A stream's buffers grow with its block,
 * so the group's streams take short ones (220 KB a stream for himae-100,
 * where a single stream's 2048-sample blocks take 1 MB); a live push of a
 * few hundred samples still runs as one block. */
#define GROUP_BLOCK 256
/* Floats of gathered im2col rows per GEMM (and of their outputs): 256 KB,
 * near a core's L2, so a tile stays in cache while every weight panel of
 * the conv passes over it (51 rows of himae-100's widest conv). */
#define TILE_FLOATS ((size_t)1 << 16)

struct himae_streams {
    int n;
    himae_stream **member;
    himae_stream_scratch scratch;
    /* A group of as many streams of the same model whose buffers a push
     * borrows when no other push holds them (himae_streams_share), or NULL;
     * `lent` is set on a group while a push borrows its buffers. */
    struct himae_streams *workspace;
    int lent;
    void *mem; /* member pointers, jobs and tiles: one allocation */
};

/* Floats a tile must hold: one row of the widest conv's im2col (kc) or output. */
static size_t widest_row(const himae_config *c) {
    size_t widest = c->in_channels, c_in = c->in_channels;
    for (uint32_t l = 0; l < c->n_levels; c_in = c->channels[l++]) {
        size_t k = c->kernel_size, ch = c->channels[l];
        size_t row = k * (c_in > ch ? c_in : ch);
        if (row > widest) widest = row;
        if (ch > widest) widest = ch;
    }
    return widest;
}

int himae_streams_create(const himae_model *model, int n, himae_streams **out, char *err, size_t errlen) {
    *out = NULL;
    if (n < 1 || n > HIMAE_STREAMS_MAX) {
        if (err && errlen) snprintf(err, errlen, "a group holds 1 to %d streams, not %d", HIMAE_STREAMS_MAX, n);
        return -1;
    }
    size_t widest = widest_row(himae_model_config(model));
    size_t tile = widest > TILE_FLOATS ? widest : TILE_FLOATS;
    size_t pointers = (size_t)n * sizeof(himae_stream *), jobs = (size_t)n * sizeof(himae_conv_job);
    himae_streams *g = himae_malloc(sizeof *g);
    char *mem = g ? himae_malloc(pointers + jobs + 2 * tile * sizeof(float)) : NULL;
    if (!mem) {
        himae_free_mem(g);
        if (err && errlen) snprintf(err, errlen, "out of memory for a group of %d streams", n);
        return -1;
    }
    /* pointers and jobs first: their sizes keep the tiles aligned for floats */
    *g = (himae_streams){n, (himae_stream **)mem,
                         {(himae_conv_job *)(mem + pointers), (float *)(mem + pointers + jobs),
                          (float *)(mem + pointers + jobs) + tile, tile},
                         NULL, 0, mem};
    for (int i = 0; i < n; i++) g->member[i] = NULL;
    for (int i = 0; i < n; i++)
        if (himae_stream_create_sized(model, GROUP_BLOCK, &g->member[i], err, errlen) != 0) {
            himae_streams_free(g);
            return -1;
        }
    *out = g;
    return 0;
}

void himae_streams_free(himae_streams *g) {
    if (!g) return;
    for (int i = 0; i < g->n; i++) himae_stream_free(g->member[i]);
    himae_free_mem(g->mem);
    himae_free_mem(g);
}

int himae_streams_count(const himae_streams *g) { return g->n; }

himae_stream *himae_streams_member(himae_streams *g, int i) { return g->member[i]; }

int himae_streams_share(himae_streams *g, himae_streams *workspace) {
    if (!workspace || workspace == g || workspace->workspace || workspace->n != g->n ||
        !himae_stream_alike(g->member[0], workspace->member[0]))
        return -1;
    g->workspace = workspace;
    return 0;
}

int himae_streams_push(himae_streams *g, const float *x, int64_t ldx, int64_t m, int flush, float *const *out,
                       int64_t *n_out, char *err, size_t errlen) {
    himae_streams *w = g->workspace;
    const int borrowed = w && himae_stream_worth_moving(g->member[0], m, flush) && himae_hold(&w->lent);
    if (borrowed)
        for (int i = 0; i < g->n; i++) himae_stream_move(g->member[i], w->member[i]);
    int rc = himae_stream_push_all(g->member, g->n, x, ldx, m, flush, out, n_out, &g->scratch, err, errlen);
    if (borrowed) {
        for (int i = 0; i < g->n; i++) himae_stream_move(g->member[i], NULL);
        himae_release(&w->lent);
    }
    return rc;
}

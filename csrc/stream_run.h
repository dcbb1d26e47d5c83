/* stream_run.h - what the stream engine (stream.c) shares with groups of
 * streams pushed together (streams.c); not public. */
#ifndef HIMAE_STREAM_RUN_H
#define HIMAE_STREAM_RUN_H

#include "internal.h"
#include "stream.h"

/* A group push's scratch: one conv job per stream, and the gathered im2col
 * rows (a) and their outputs (c), tile_floats floats each (see
 * himae_conv1d_gathered). */
typedef struct {
    himae_conv_job *jobs;
    float *a, *c;
    size_t tile_floats;
} himae_stream_scratch;

/* himae_stream_create for pushes processed in blocks of `block` samples:
 * every buffer grows with the block; results do not depend on it. */
int himae_stream_create_sized(const himae_model *model, int64_t block, himae_stream **out, char *err,
                              size_t errlen);

/* himae_stream_push of m samples into each of n streams of one model in
 * lockstep (same samples pushed, same flushed state; -1 otherwise): stream
 * i's channel c, sample j at x[(i·c_in + c)·ldx + j]; its level l rows go to
 * out[i·levels + l]; n_out is the same for all. Each
 * conv runs as one GEMM over all n streams' new rows, so results are the
 * bits of n separate unprepared pushes. scratch: NULL when n == 1. */
int himae_stream_push_all(himae_stream *const *ss, int n, const float *x, int64_t ldx, int64_t m, int flush,
                          float *const *out, int64_t *n_out, himae_stream_scratch *scratch, char *err,
                          size_t errlen);

/* Do two engines have the same layout (model, kernel, block), so that one
 * can push in the other's buffers? */
int himae_stream_alike(const himae_stream *a, const himae_stream *b);

/* Move the rows s keeps between pushes into the buffers of w (an engine
 * alike, whose buffers the caller holds, see himae_hold), where its next
 * pushes compute, or with w NULL back into s's own. */
void himae_stream_move(himae_stream *s, const himae_stream *w);

/* Does a push of n samples into s write more than twice the rows s keeps
 * between pushes? Only then is computing it in a workspace worth the two
 * moves: a live packet of a few samples writes less than a move copies. */
int himae_stream_worth_moving(const himae_stream *s, int64_t n, int flush);

/* A workspace's `lent` flag: set (1 returned) by the one push that gets it,
 * cleared by that push when done; 0 when another push holds it. */
static inline int himae_hold(int *lent) { return __atomic_exchange_n(lent, 1, __ATOMIC_ACQUIRE) == 0; }
static inline void himae_release(int *lent) { __atomic_store_n(lent, 0, __ATOMIC_RELEASE); }

#endif

/* Stream mode: the HiMAE encoder run incrementally over an unbounded signal.
 *
 * The encoder is treated as one convolution over the whole stream (zero
 * padding only at the true start and at flush), so every activation is
 * computed exactly once, as soon as the samples it depends on have arrived.
 * All memory is taken at creation; push and flush never allocate.
 */
#ifndef HIMAE_STREAM_H
#define HIMAE_STREAM_H

#include <stddef.h>
#include <stdint.h>

#include "himae.h"

#define HIMAE_STREAM_MAX_LEVELS 8

typedef struct himae_stream himae_stream;

/* Create a stream engine for `model`. It runs the model's own packed
 * encoder weights and micro-kernel (read only, so several engines may share
 * one model), so the model must outlive it. */
int himae_stream_create(const himae_model *model, himae_stream **out, char *err, size_t errlen);
void himae_stream_free(himae_stream *s);

/* Forget everything pushed: back to the state right after creation. */
void himae_stream_reset(himae_stream *s);

int himae_stream_levels(const himae_stream *s);
int himae_stream_channels(const himae_stream *s, int level);

/* Look-ahead of `level` in input samples: position p is emitted once sample
 * 2^(level+1)·p + delay has been pushed. */
int64_t himae_stream_delay(const himae_stream *s, int level);

/* Positions of each level emitted so far, and samples pushed so far. */
int64_t himae_stream_emitted(const himae_stream *s, int level);
int64_t himae_stream_pushed(const himae_stream *s);
int himae_stream_flushed(const himae_stream *s);

/* Samples [0, complete) whose positions at every level have all been
 * emitted: any window ending by then can be summarised. */
int64_t himae_stream_complete(const himae_stream *s);

/* How many new positions per level a push of `n` samples (then a flush when
 * `flush` is set) will emit; fills counts[0 .. levels-1]. */
void himae_stream_pending(const himae_stream *s, int64_t n, int flush, int64_t *counts);

/* Push `n` samples x[c·ldx + i] (normalised, masked samples already zero),
 * then end the stream with its zero padding when `flush` is set. Level l's
 * new positions, as many as himae_stream_pending counts, are stored in
 * n_out[l] and go out as rows of the level's C_l channels: the j-th new
 * position's channel c at out[l][j·C_l + c]. Rows are the engine's own
 * layout: copying them out is one memcpy. Returns 0 or -1 with a message
 * in err. */
int himae_stream_push(himae_stream *s, const float *x, int64_t ldx, int64_t n, int flush, float *const *out,
                      int64_t *n_out, char *err, size_t errlen);

/* Let s's pushes run in `workspace`'s buffers (an engine of the same model,
 * never pushed itself, that outlives s) whenever no other push holds them:
 * a push that writes more than twice the few rows s keeps between pushes
 * copies them there and back (a shorter one computes in place), so many
 * engines pushed in turn by one thread all compute in the same memory, which
 * stays in cache, instead of each in its own, which the others' pushes have
 * evicted. A push that finds the buffers held (another thread's push) uses
 * its own. Results are the same either way. Returns -1 (nothing changed)
 * for an engine of another model or block, or one that itself shares. */
int himae_stream_share(himae_stream *s, himae_stream *workspace);

/* Between pushes of a live stream: sum each level's next positions over all
 * but the newest input they wait for, so that the push that completes them
 * does only the rest (a fifth of the weight reads for kernel 5). Results
 * agree with unprepared pushes to rounding. Idempotent; a no-op once flushed. */
void himae_stream_prepare(himae_stream *s);

/* The engine's whole state as bytes, for resuming a stream later. */
size_t himae_stream_state_size(const himae_stream *s);
void himae_stream_save(const himae_stream *s, void *buf);
/* Restore a state saved by an engine over the same model; -1 if it does not fit. */
int himae_stream_load(himae_stream *s, const void *buf, size_t size, char *err, size_t errlen);

#endif

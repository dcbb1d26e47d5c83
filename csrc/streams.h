/* Many streams per core: n independent streams of one model pushed together.
 *
 * A short push of one stream is bound by weight reads: each deep level
 * computes a few new rows but reads all of its weights for them. A group
 * pushes the same number of samples into each of its streams in one call,
 * and runs each conv as one GEMM over every stream's new rows, so each
 * weight panel is read once per tile of rows instead of once per stream.
 * The streams are ordinary himae_stream engines (queries, reset, save and
 * load work on each), kept in step by the group; the results are the bits
 * of n separate engines pushed the same samples without himae_stream_prepare.
 * All memory is taken at creation; pushes never allocate.
 */
#ifndef HIMAE_STREAMS_H
#define HIMAE_STREAMS_H

#include <stddef.h>
#include <stdint.h>

#include "stream.h"

/* Most streams in one group. */
#define HIMAE_STREAMS_MAX (1 << 20)

typedef struct himae_streams himae_streams;

/* n streams over `model` (which must outlive the group), 1 <= n <= HIMAE_STREAMS_MAX. */
int himae_streams_create(const himae_model *model, int n, himae_streams **out, char *err, size_t errlen);
void himae_streams_free(himae_streams *g);

int himae_streams_count(const himae_streams *g);

/* Stream i, owned by the group. Everything but pushing and preparing may be
 * done on it directly; a push fails unless every stream has been pushed as
 * many samples and is flushed alike (reset or load them all together). */
himae_stream *himae_streams_member(himae_streams *g, int i);

/* Let g's pushes run in the buffers of `workspace` (a group of as many
 * streams of the same model, never pushed itself, that outlives g) whenever
 * no other push holds them, as himae_stream_share does for one engine.
 * Returns -1 (nothing changed) for a group of another size or model, or
 * one that itself shares. */
int himae_streams_share(himae_streams *g, himae_streams *workspace);

/* Push m samples into every stream: stream i's channel c, sample j at
 * x[(i·in_channels + c)·ldx + j] (normalised, lost samples zero); flush
 * ends every stream. Stream i's level l rows go where himae_stream_push
 * would put them, at out[i·levels + l]; n_out[l] new rows of each stream,
 * the same for all. Returns 0 or -1 with a message in err. */
int himae_streams_push(himae_streams *g, const float *x, int64_t ldx, int64_t m, int flush, float *const *out,
                       int64_t *n_out, char *err, size_t errlen);

#endif

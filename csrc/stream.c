/* Stream mode engine (see stream.h).
 *
 * Each encoder level keeps three linear buffers of time-major rows (one row
 * = all channels at one position), each holding only the history that future
 * outputs still need:
 *   x  the level's input x_{l-1}, from row 2·q1 - P (P = K/2), where q1 is
 *      the next conv1 output: conv1 output q reads rows 2q-P .. 2q+P;
 *   h  GELU(conv1) rows, from row q2 - P, where q2 is the next output:
 *      conv2 output q reads rows q-P .. q+P;
 *   s  skip rows (conv k1 stride 2 of x), from row q2.
 * Rows before the stream start are the zeros PyTorch pads with; flush
 * appends P zero rows after the end of x, then of h. Pushes are processed in
 * blocks of at most `block` input samples (BLOCK for a stream of its own,
 * fewer in a group: streams.c), which bounds every buffer, so all memory is
 * taken once at creation. The convs are the model's own packed
 * weights; the narrow ones, packed in row pairs, read up to SLACK rows past
 * the rows they need (with zero weights), so those rows are zeroed before
 * each call. After every block each level has
 * computed all it can, so the whole state follows from the number of samples
 * pushed and whether the stream is flushed (see set_counters).
 *
 * The level-by-level work runs over n streams in lockstep (n = 1 for a
 * stream pushed alone): having the same counters, they compute the same
 * rows, and a group (streams.c) runs each conv over all of them at once.
 *
 * Live, one position of a deep level completes when its conv's newest input
 * row arrives; himae_stream_prepare, called between pushes, sums each level's
 * next conv1 and conv2 rows over every tap but that last one (and computes
 * the skip row), so the push that completes them only adds the last tap: it
 * reads a k-th of the big convs' weights, and those reads are what a core
 * that idled between packets pays for most. Prepared sums are derived
 * state: not saved, and dropped by reset and load.
 */
#include "stream_run.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "fpmode.h"
#include "internal.h"

#define BLOCK 2048 /* samples per block of a single stream's push */
#define SLACK 2 /* rows past the input a pair-packed conv reads: its stride */
#define STATE_MAGIC 0x4d525453u /* "STRM" */
#define STATE_VERSION 2u

typedef struct {
    float *buf;
    int64_t base; /* absolute index of the first row held */
    int64_t end;  /* absolute index one past the last row held */
    int64_t cap;  /* rows */
    int width;    /* floats per row */
    float *home;  /* the engine's own buffer, where buf points between pushes */
} rows;

typedef struct {
    int c_in, c_out;
    const himae_conv *conv1, *conv2, *skip; /* the model's packed weights */
    rows x, h, s;
    int64_t n_in;    /* input rows received (the length of x_{l-1} once flushed) */
    int64_t emitted; /* outputs produced (q2); q1 is h.end less any flush padding */
    /* conv1 row pre1 (with its skip row, already in place in s) and conv2
     * row pre2 summed over all taps but the last (-1: none prepared) */
    int64_t pre1, pre2;
    float *part1, *part2;
} level;

struct himae_stream {
    const himae_ukernel *uk;
    uint32_t model_crc; /* the model file's checksum: states only load onto the same weights */
    int n_levels, k, p, c_in;
    int64_t block; /* samples per block: bounds every buffer */
    int64_t pushed;
    int flushed;
    level lv[HIMAE_STREAM_MAX_LEVELS];
    rows tail; /* the last level's outputs of one block, before they are copied out */
    /* An engine of the same model whose buffers a push borrows when no other
     * push holds them (himae_stream_share), or NULL; `lent` is set on an
     * engine while a push borrows its buffers. */
    struct himae_stream *workspace;
    int lent;
    void *mem; /* the one allocation */
};

static int fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return -1;
}

static int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

static float *row(const rows *r, int64_t index) { return r->buf + (index - r->base) * r->width; }

static size_t rows_bytes(const rows *r) { return (size_t)((r->end - r->base) * r->width) * sizeof(float); }

/* Drop the rows before `keep`. */
static void trim(rows *r, int64_t keep) {
    keep = min64(keep, r->end);
    if (keep <= r->base) return;
    memmove(r->buf, row(r, keep), (size_t)((r->end - keep) * r->width) * sizeof(float));
    r->base = keep;
}

/* Zero the SLACK rows after the last one held when a pair-packed conv reads
 * them next (with zero weights; stale bytes there could be NaN). Other convs
 * never read past their input. */
static void zero_slack(rows *r, int pair_packed) {
    if (pair_packed) memset(row(r, r->end), 0, (size_t)(SLACK * r->width) * sizeof(float));
}

static float *append(rows *r, int64_t n) {
    float *dst = row(r, r->end);
    r->end += n;
    return dst;
}

static int64_t half_up(int64_t n) { return (n + 1) / 2; }

/* conv1 outputs computable from n_in input rows (output q needs row 2q+P);
 * all ceil(n_in/2) of them once the stream is flushed. */
static int64_t conv1_done(int64_t n_in, int p, int flushed) {
    return flushed ? half_up(n_in) : max64(0, (n_in - p + 1) / 2);
}

/* Level outputs computable once q1 conv1 outputs exist (output q needs h row q+P). */
static int64_t outputs_done(int64_t q1, int p, int flushed) { return flushed ? q1 : max64(0, q1 - p); }

void himae_stream_pending(const himae_stream *s, int64_t n, int flush, int64_t *counts) {
    int64_t n_in = s->pushed + n;
    int done = s->flushed || flush;
    for (int l = 0; l < s->n_levels; l++) {
        int64_t total = outputs_done(conv1_done(n_in, s->p, done), s->p, done);
        counts[l] = total - s->lv[l].emitted;
        n_in = total;
    }
}

/* A conv's rows for every stream of a group: one job per stream (see
 * himae_conv1d_gathered); one stream's rows are computed in place. */
static void run_conv(const himae_conv *conv, const himae_conv_job *jobs, int n,
                     int64_t n_out, int gelu, himae_stream_scratch *scratch) {
    if (n == 1)
        himae_conv1d_forward(conv, jobs[0].out, jobs[0].in, (size_t)n_out, jobs[0].residual, gelu);
    else
        himae_conv1d_gathered(conv, jobs, (size_t)n, (size_t)n_out, gelu, scratch->a, scratch->c,
                              scratch->tile_floats);
}

/* Compute everything level l of n streams in lockstep can given its input
 * (their counters are equal, so each has the same rows to compute); outputs
 * go to the next level's x buffer (or the tail), and rows to out (stream
 * i's at index i·levels + l). A row prepared by
 * himae_stream_prepare is finished from its partial sum when the level runs
 * one stream alone; a group recomputes it whole. */
static void run_level(himae_stream *const *ss, int n, int l, int done, float *const *out, int64_t *n_out,
                      himae_stream_scratch *scratch) {
    const himae_stream *s0 = ss[0];
    const level *v0 = &s0->lv[l];
    const int p = s0->p, c = v0->c_out, nl = s0->n_levels;
    himae_conv_job one, *jobs = n == 1 ? &one : scratch->jobs;
    int64_t q1 = v0->h.end, q1_end = conv1_done(v0->n_in, p, done);
    int64_t n1 = q1_end - q1, first1 = n == 1 && v0->pre1 == q1 && n1 > 0;
    for (int i = 0; i < n; i++) {
        level *v = &ss[i]->lv[l];
        if (done) memset(append(&v->x, p), 0, (size_t)p * v->c_in * sizeof(float));
        if (n1 <= 0) continue;
        float *h_new = append(&v->h, n1);
        append(&v->s, n1);
        if (first1) himae_conv_row_tail(v->conv1, h_new, row(&v->x, 2 * q1 - p), v->part1, 1);
        zero_slack(&v->x, v->conv1->pair || v->skip->pair);
        jobs[i] = (himae_conv_job){row(&v->x, 2 * (q1 + first1)), h_new + first1 * c, NULL};
    }
    if (n1 > first1) {
        run_conv(v0->conv1, jobs, n, n1 - first1, 1, scratch);
        for (int i = 0; i < n; i++) jobs[i].out = row(&ss[i]->lv[l].s, q1 + first1);
        run_conv(v0->skip, jobs, n, n1 - first1, 0, scratch);
    }
    int64_t q2 = v0->emitted, n2 = outputs_done(q1_end, p, done) - q2;
    int64_t first2 = n == 1 && v0->pre2 == q2 && n2 > 0;
    for (int i = 0; i < n; i++) {
        level *v = &ss[i]->lv[l];
        if (n1 > 0) v->pre1 = -1;
        if (done) memset(append(&v->h, p), 0, (size_t)p * c * sizeof(float));
        if (n2 <= 0) continue;
        float *y = append(l + 1 < nl ? &ss[i]->lv[l + 1].x : &ss[i]->tail, n2);
        if (first2) himae_conv_row_tail(v->conv2, y, row(&v->h, q2 - p), v->part2, 1);
        zero_slack(&v->h, (int)v->conv2->pair);
        jobs[i] = (himae_conv_job){row(&v->h, q2 + first2), y + first2 * c, row(&v->s, q2 + first2)};
    }
    if (n2 > first2) run_conv(v0->conv2, jobs, n, n2 - first2, 1, scratch);
    for (int i = 0; i < n; i++) {
        himae_stream *s = ss[i];
        level *v = &s->lv[l];
        if (n2 > 0) {
            v->pre2 = -1;
            memcpy(out[i * nl + l] + *n_out * c, jobs[i].out - first2 * c, (size_t)(n2 * c) * sizeof(float));
            v->emitted += n2;
            if (l + 1 < nl) s->lv[l + 1].n_in += n2;
        }
        trim(&v->x, 2 * q1_end - p);
        trim(&v->h, v->emitted - p);
        trim(&v->s, v->emitted);
        s->tail.base = s->tail.end = 0;
    }
    if (n2 > 0) *n_out += n2;
}

int himae_stream_push_all(himae_stream *const *ss, int n, const float *x, int64_t ldx, int64_t m, int flush,
                          float *const *out, int64_t *n_out, himae_stream_scratch *scratch, char *err,
                          size_t errlen) {
    const himae_stream *s0 = ss[0];
    if (m < 0) return fail(err, errlen, "negative sample count %lld", (long long)m);
    for (int i = 1; i < n; i++)
        if (ss[i]->pushed != s0->pushed || ss[i]->flushed != s0->flushed)
            return fail(err, errlen, "stream %d is not in step with stream 0 (%lld samples pushed, not %lld)", i,
                        (long long)ss[i]->pushed, (long long)s0->pushed);
    if (s0->flushed && (m > 0 || flush))
        return fail(err, errlen, "stream already flushed; reset it to start a new one");
    for (int l = 0; l < s0->n_levels; l++) n_out[l] = 0;
    himae_fpmode saved = himae_fpmode_flush();
    int64_t j = 0;
    do {
        int64_t b = min64(m - j, s0->block);
        int done = flush && j + b == m;
        for (int i = 0; i < n; i++) {
            himae_stream *s = ss[i];
            const float *xi = x + (int64_t)i * s->c_in * ldx + j;
            float *dst = append(&s->lv[0].x, b);
            for (int64_t t = 0; t < b; t++)
                for (int c = 0; c < s->c_in; c++) dst[t * s->c_in + c] = xi[c * ldx + t];
            s->lv[0].n_in += b;
            s->pushed += b;
        }
        for (int l = 0; l < s0->n_levels; l++) run_level(ss, n, l, done, out, &n_out[l], scratch);
        j += b;
    } while (j < m);
    if (flush)
        for (int i = 0; i < n; i++) ss[i]->flushed = 1;
    himae_fpmode_set(saved);
    return 0;
}

/* The rows r holds (at the front of its buffer: trim keeps them there) and
 * `extra` rows after them into `to`, which then holds them. */
static void rows_move(rows *r, float *to, int64_t extra) {
    if (to != r->buf) memcpy(to, r->buf, rows_bytes(r) + (size_t)(extra * r->width) * sizeof(float));
    r->buf = to;
}

int himae_stream_alike(const himae_stream *a, const himae_stream *b) {
    return a->uk == b->uk && a->model_crc == b->model_crc && a->block == b->block && a->n_levels == b->n_levels;
}

/* A prepared conv1 row's skip row waits in s one row past the last held,
 * so it moves too. */
void himae_stream_move(himae_stream *s, const himae_stream *w) {
    for (int l = 0; l < s->n_levels; l++) {
        level *v = &s->lv[l];
        const level *wv = w ? &w->lv[l] : v;
        rows_move(&v->x, wv->x.home, 0);
        rows_move(&v->h, wv->h.home, 0);
        rows_move(&v->s, wv->s.home, v->pre1 >= 0);
    }
    rows_move(&s->tail, (w ? w : s)->tail.home, 0);
}

int himae_stream_worth_moving(const himae_stream *s, int64_t n, int flush) {
    int64_t counts[HIMAE_STREAM_MAX_LEVELS], written = n * s->c_in;
    size_t held = 0;
    himae_stream_pending(s, n, flush, counts);
    for (int l = 0; l < s->n_levels; l++) {
        const level *v = &s->lv[l];
        held += rows_bytes(&v->x) + rows_bytes(&v->h) + rows_bytes(&v->s);
        written += 3 * counts[l] * v->c_out; /* its conv1, skip and conv2 rows, about */
    }
    return (size_t)written * sizeof(float) > 2 * held;
}

int himae_stream_push(himae_stream *s, const float *x, int64_t ldx, int64_t n, int flush, float *const *out,
                      int64_t *n_out, char *err, size_t errlen) {
    himae_stream *w = s->workspace;
    const int borrowed = w && himae_stream_worth_moving(s, n, flush) && himae_hold(&w->lent);
    if (borrowed) himae_stream_move(s, w);
    int rc = himae_stream_push_all(&s, 1, x, ldx, n, flush, out, n_out, NULL, err, errlen);
    if (borrowed) {
        himae_stream_move(s, NULL);
        himae_release(&w->lent);
    }
    return rc;
}

int himae_stream_share(himae_stream *s, himae_stream *workspace) {
    if (!workspace || workspace == s || workspace->workspace || !himae_stream_alike(s, workspace)) return -1;
    s->workspace = workspace;
    return 0;
}

void himae_stream_prepare(himae_stream *s) {
    if (s->flushed) return;
    const int p = s->p;
    himae_fpmode saved = himae_fpmode_flush();
    for (int l = 0; l < s->n_levels; l++) {
        level *v = &s->lv[l];
        if (!v->conv1->tail || !v->conv2->tail) continue; /* narrow, pair-packed: cheap anyway */
        int64_t q1 = v->h.end, q2 = v->emitted;
        /* conv1 row q1 reads x rows 2 q1 - p .. 2 q1 + p, its skip row x row 2 q1 */
        if (v->pre1 != q1 && v->n_in >= 2 * q1 + p) {
            himae_conv_row_head(v->conv1, v->part1, row(&v->x, 2 * q1 - p), NULL);
            himae_conv1d_forward(v->skip, row(&v->s, q1), row(&v->x, 2 * q1), 1, NULL, 0);
            v->pre1 = q1;
        }
        /* conv2 row q2 reads h rows q2 - p .. q2 + p and skip row q2 */
        if (v->pre2 != q2 && v->h.end >= q2 + p) {
            himae_conv_row_head(v->conv2, v->part2, row(&v->h, q2 - p), row(&v->s, q2));
            v->pre2 = q2;
        }
    }
    himae_fpmode_set(saved);
}

/* Put every counter and buffer bound where a stream that was pushed `pushed`
 * samples (and flushed when `flushed`) has them; buffer contents untouched. */
static void set_counters(himae_stream *s, int64_t pushed, int flushed) {
    const int p = s->p;
    int64_t n_in = pushed;
    s->pushed = pushed;
    s->flushed = flushed;
    for (int l = 0; l < s->n_levels; l++) {
        level *v = &s->lv[l];
        int64_t q1 = conv1_done(n_in, p, flushed);
        v->n_in = n_in;
        v->emitted = outputs_done(q1, p, flushed);
        v->x.end = n_in + (flushed ? p : 0);
        v->x.base = max64(-p, min64(2 * q1 - p, v->x.end));
        v->h.end = q1 + (flushed ? p : 0);
        v->h.base = max64(-p, min64(v->emitted - p, v->h.end));
        v->s.end = q1;
        v->s.base = min64(v->emitted, q1);
        v->pre1 = v->pre2 = -1;
        n_in = v->emitted;
    }
    s->tail.base = s->tail.end = 0;
}

void himae_stream_reset(himae_stream *s) {
    set_counters(s, 0, 0);
    for (int l = 0; l < s->n_levels; l++) {
        level *v = &s->lv[l];
        memset(v->x.buf, 0, (size_t)s->p * v->c_in * sizeof(float));
        memset(v->h.buf, 0, (size_t)s->p * v->c_out * sizeof(float));
    }
}

int himae_stream_levels(const himae_stream *s) { return s->n_levels; }
int himae_stream_channels(const himae_stream *s, int level) { return s->lv[level].c_out; }
int64_t himae_stream_emitted(const himae_stream *s, int level) { return s->lv[level].emitted; }
int64_t himae_stream_pushed(const himae_stream *s) { return s->pushed; }
int himae_stream_flushed(const himae_stream *s) { return s->flushed; }

int64_t himae_stream_complete(const himae_stream *s) {
    int64_t complete = s->pushed;
    if (!s->flushed)
        for (int l = 0; l < s->n_levels; l++) complete = min64(complete, s->lv[l].emitted << (l + 1));
    return complete;
}

int64_t himae_stream_delay(const himae_stream *s, int level) {
    /* Output q of level l reads input row 2q + 3P of its level, so in input
     * samples the look-ahead is 3P·(2 + 4 + ... + 2^(l+1)) / 2 = 3P·(2^(l+1) - 1). */
    return 3 * (int64_t)s->p * (((int64_t)2 << level) - 1);
}

/* State bytes: header words, then per level its x, h and s rows;
 * crc is the CRC32 of all of it with the crc field zero. */
typedef struct {
    uint32_t magic, version, n_levels, c_in, k, flushed;
    int64_t pushed;
    uint32_t channels[HIMAE_STREAM_MAX_LEVELS];
    uint32_t crc, model_crc;
} state_header;

static uint32_t state_crc(const void *buf, size_t size) {
    state_header h;
    memcpy(&h, buf, sizeof h);
    h.crc = 0;
    uint32_t crc = himae_crc32(0, (const uint8_t *)&h, sizeof h);
    return himae_crc32(crc, (const uint8_t *)buf + sizeof h, size - sizeof h);
}

static size_t levels_bytes(const himae_stream *s) {
    size_t n = 0;
    for (int l = 0; l < s->n_levels; l++) {
        const level *v = &s->lv[l];
        n += rows_bytes(&v->x) + rows_bytes(&v->h) + rows_bytes(&v->s);
    }
    return n;
}

size_t himae_stream_state_size(const himae_stream *s) { return sizeof(state_header) + levels_bytes(s); }

static void header_of(const himae_stream *s, state_header *h) {
    memset(h, 0, sizeof *h);
    h->magic = STATE_MAGIC;
    h->version = STATE_VERSION;
    h->n_levels = (uint32_t)s->n_levels;
    h->c_in = (uint32_t)s->c_in;
    h->k = (uint32_t)s->k;
    h->flushed = (uint32_t)s->flushed;
    h->pushed = s->pushed;
    h->model_crc = s->model_crc;
    for (int l = 0; l < s->n_levels; l++) h->channels[l] = (uint32_t)s->lv[l].c_out;
}

void himae_stream_save(const himae_stream *s, void *buf) {
    state_header h;
    header_of(s, &h);
    char *const start = buf, *dst = buf;
    memcpy(dst, &h, sizeof h);
    dst += sizeof h;
    for (int l = 0; l < s->n_levels; l++) {
        const rows *rs[3] = {&s->lv[l].x, &s->lv[l].h, &s->lv[l].s};
        for (int i = 0; i < 3; i++) {
            memcpy(dst, rs[i]->buf, rows_bytes(rs[i]));
            dst += rows_bytes(rs[i]);
        }
    }
    h.crc = state_crc(start, (size_t)(dst - start));
    memcpy(start, &h, sizeof h);
}

/* Are the rows of a state (laid out as s's counters say, from src) all finite?
 * A checksum only proves the bytes are what was written, not that a writer was sane. */
static int state_finite(const himae_stream *s, const char *src) {
    for (int l = 0; l < s->n_levels; l++) {
        const rows *rs[3] = {&s->lv[l].x, &s->lv[l].h, &s->lv[l].s};
        for (int i = 0; i < 3; i++)
            for (size_t j = 0; j < rows_bytes(rs[i]); j += sizeof(float), src += sizeof(float)) {
                float f;
                memcpy(&f, src, sizeof f);
                if (!isfinite(f)) return 0;
            }
    }
    return 1;
}

int himae_stream_load(himae_stream *s, const void *buf, size_t size, char *err, size_t errlen) {
    state_header h, mine;
    if (size < sizeof h) return fail(err, errlen, "stream state truncated: %zu bytes", size);
    memcpy(&h, buf, sizeof h);
    header_of(s, &mine);
    if (h.magic != STATE_MAGIC || h.version != STATE_VERSION)
        return fail(err, errlen, "not a stream state (bad magic or version)");
    if (state_crc(buf, size) != h.crc) return fail(err, errlen, "stream state checksum mismatch");
    mine.flushed = h.flushed;
    mine.pushed = h.pushed;
    mine.crc = h.crc;
    if (h.model_crc != mine.model_crc) return fail(err, errlen, "stream state belongs to a different model");
    if (memcmp(&h, &mine, sizeof h) != 0 || h.flushed > 1 || h.pushed < 0)
        return fail(err, errlen, "stream state belongs to a different model configuration");
    himae_stream saved = *s;
    set_counters(s, h.pushed, (int)h.flushed);
    for (int l = 0; l < s->n_levels; l++) {
        const rows *rs[3] = {&s->lv[l].x, &s->lv[l].h, &s->lv[l].s};
        for (int i = 0; i < 3; i++) {
            if (rs[i]->end - rs[i]->base + SLACK > rs[i]->cap) {
                *s = saved;
                return fail(err, errlen, "stream state does not fit this engine");
            }
        }
    }
    if (size != himae_stream_state_size(s)) {
        *s = saved;
        return fail(err, errlen, "stream state has %zu bytes, expected %zu", size, himae_stream_state_size(s));
    }
    if (!state_finite(s, (const char *)buf + sizeof h)) {
        *s = saved;
        return fail(err, errlen, "stream state holds NaN or Inf");
    }
    const char *src = (const char *)buf + sizeof h;
    for (int l = 0; l < s->n_levels; l++) {
        rows *rs[3] = {&s->lv[l].x, &s->lv[l].h, &s->lv[l].s};
        for (int i = 0; i < 3; i++) {
            memcpy(rs[i]->buf, src, rows_bytes(rs[i]));
            src += rows_bytes(rs[i]);
        }
    }
    return 0;
}

/* Rows per block entering each level, for blocks of `block` input samples: a
 * level emits at most half its new input plus what flush releases. */
static int64_t block_rows(int64_t block, int l, int p) {
    return l == 0 ? block : block_rows(block, l - 1, p) / 2 + 2 * p + 2;
}

static int64_t x_cap(int64_t block, int l, int p) { return block_rows(block, l, p) + 3 * p + 2; }
static int64_t h_cap(int64_t block, int l, int p) { return block_rows(block, l, p) / 2 + 4 * p + 4; }

/* Bump allocator over the engine's one block; a sizing pass runs with base == NULL. */
typedef struct {
    float *base;
    size_t used; /* floats, each piece rounded up to 64 bytes */
} bump;

static float *take(bump *b, size_t floats) {
    float *r = b->base ? b->base + b->used : NULL;
    b->used += (floats + 15) & ~(size_t)15;
    return r;
}

static void rows_init(rows *r, int width, int64_t cap, bump *b) {
    r->width = width;
    r->cap = cap;
    r->buf = r->home = take(b, (size_t)(cap * width));
}

/* Lay the engine out from base (or, with base == NULL, only measure it): floats used. */
static size_t layout(himae_stream *s, float *base, const himae_model *model) {
    const himae_config *c = himae_model_config(model);
    const int nl = s->n_levels, p = s->p;
    bump b = {base, 0};
    for (int l = 0, c_prev = s->c_in; l < nl; c_prev = (int)c->channels[l++]) {
        level *v = &s->lv[l];
        const int ch = (int)c->channels[l];
        v->c_in = c_prev;
        v->c_out = ch;
        v->conv1 = himae_model_encoder_conv(model, l, HIMAE_CONV1);
        v->conv2 = himae_model_encoder_conv(model, l, HIMAE_CONV2);
        v->skip = himae_model_encoder_conv(model, l, HIMAE_SKIP);
        rows_init(&v->x, c_prev, x_cap(s->block, l, p) + SLACK, &b);
        rows_init(&v->h, ch, h_cap(s->block, l, p) + SLACK, &b);
        rows_init(&v->s, ch, h_cap(s->block, l, p) + SLACK, &b);
        v->part1 = take(&b, (size_t)ch);
        v->part2 = take(&b, (size_t)ch);
    }
    rows_init(&s->tail, (int)c->channels[nl - 1], block_rows(s->block, nl, p), &b);
    return b.used;
}

int himae_stream_create(const himae_model *model, himae_stream **out, char *err, size_t errlen) {
    return himae_stream_create_sized(model, BLOCK, out, err, errlen);
}

int himae_stream_create_sized(const himae_model *model, int64_t block, himae_stream **out, char *err,
                              size_t errlen) {
    *out = NULL;
    const himae_config *c = himae_model_config(model);
    if (c->n_levels > HIMAE_STREAM_MAX_LEVELS)
        return fail(err, errlen, "stream mode supports at most %d levels", HIMAE_STREAM_MAX_LEVELS);
    himae_stream shape = {.uk = himae_model_ukernel(model), .model_crc = himae_model_file_crc(model),
                          .n_levels = (int)c->n_levels, .k = (int)c->kernel_size,
                          .p = (int)c->kernel_size / 2, .c_in = (int)c->in_channels, .block = block};
    size_t floats = layout(&shape, NULL, model);
    himae_stream *s = himae_malloc(sizeof *s);
    void *raw = s ? himae_malloc(floats * sizeof(float) + 64) : NULL;
    if (!raw) {
        himae_free_mem(s);
        return fail(err, errlen, "out of memory for the stream engine");
    }
    *s = shape;
    s->mem = raw;
    layout(s, (float *)(((uintptr_t)raw + 63) & ~(uintptr_t)63), model);
    himae_stream_reset(s);
    *out = s;
    return 0;
}

void himae_stream_free(himae_stream *s) {
    if (!s) return;
    himae_free_mem(s->mem);
    himae_free_mem(s);
}

/* framing.h - the serial framing's byte work (docs/protocol.md): COBS both
 * ways and the check of one frame (COBS, then the CRC32 after the body). */
#ifndef HIMAE_FRAMING_H
#define HIMAE_FRAMING_H

#include <stddef.h>
#include <stdint.h>

#define HIMAE_FRAME_CRC_SIZE 4 /* bytes of the CRC32 after each body */

enum himae_frame_status {
    HIMAE_FRAME_OK = 0,
    HIMAE_FRAME_BAD_COBS = 1, /* not COBS, or no body before the CRC */
    HIMAE_FRAME_BAD_CRC = 2,   /* CRC mismatch */
};

/* out gets COBS(src) (at most n + n / 254 + 1 bytes, no zero byte); returns its length. */
size_t himae_cobs_encode(const uint8_t *src, size_t n, uint8_t *out);
/* out gets the decoding of src (at most n bytes); returns its length, or -1 if src is not COBS. */
ptrdiff_t himae_cobs_decode(const uint8_t *src, size_t n, uint8_t *out);
/* One frame (the bytes between two delimiters) decoded into out (at least n
 * bytes); on HIMAE_FRAME_OK its body is out[0, *body_len). */
enum himae_frame_status himae_frame_check(const uint8_t *frame, size_t n, uint8_t *out, size_t *body_len);

#endif

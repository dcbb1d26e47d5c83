/* framing.c - COBS and the frame check (see framing.h); the Python side
 * (himae_stream/_framing.pxi) finds the delimiters and keeps the counters. */
#include "framing.h"

#include "himae.h"

size_t himae_cobs_encode(const uint8_t *src, size_t n, uint8_t *out) {
    size_t code_at = 0, o = 1;
    uint8_t code = 1;
    for (size_t i = 0; i < n; i++) {
        if (src[i] == 0) {
            out[code_at] = code;
            code_at = o++;
            code = 1;
        } else {
            out[o++] = src[i];
            if (++code == 0xFF) { /* a full block of 254 non-zero bytes, no zero implied */
                out[code_at] = code;
                code_at = o++;
                code = 1;
            }
        }
    }
    out[code_at] = code;
    return o;
}

ptrdiff_t himae_cobs_decode(const uint8_t *src, size_t n, uint8_t *out) {
    size_t i = 0, o = 0;
    while (i < n) {
        size_t code = src[i], end = i + code;
        if (code == 0 || end > n) return -1;
        for (size_t j = i + 1; j < end; j++) {
            if (src[j] == 0) return -1;
            out[o++] = src[j];
        }
        if (code != 0xFF && end < n) out[o++] = 0;
        i = end;
    }
    return (ptrdiff_t)o;
}

static uint32_t u32le(const uint8_t *b) {
    return (uint32_t)b[0] | (uint32_t)b[1] << 8 | (uint32_t)b[2] << 16 | (uint32_t)b[3] << 24;
}

enum himae_frame_status himae_frame_check(const uint8_t *frame, size_t n, uint8_t *out, size_t *body_len) {
    ptrdiff_t size = himae_cobs_decode(frame, n, out);
    if (size <= HIMAE_FRAME_CRC_SIZE) return HIMAE_FRAME_BAD_COBS;
    size_t body = (size_t)size - HIMAE_FRAME_CRC_SIZE;
    if (himae_crc32(0, out, body) != u32le(out + body)) return HIMAE_FRAME_BAD_CRC;
    *body_len = body;
    return HIMAE_FRAME_OK;
}

/* fuzz_frame.c - libFuzzer harness of the serial frame decoder (csrc/framing.c):
 * the input is split at 0x00 delimiters as FrameDecoder splits a byte stream,
 * and every frame is checked into a buffer of exactly its size (so any
 * overrun is a sanitizer report). A frame that passes must carry a body whose
 * encoding decodes back to it; and any bytes must survive COBS both ways.
 * Build and run: csrc/fuzz/run.sh (docs/fuzzing.md). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../framing.h"
#include "../himae.h"

static void roundtrip(const uint8_t *body, size_t n) {
    uint8_t *enc = malloc(n + n / 254 + 1), *dec = malloc(n + n / 254 + 1);
    size_t len = himae_cobs_encode(body, n, enc);
    if (len > n + n / 254 + 1 || memchr(enc, 0, len)) abort();
    ptrdiff_t back = himae_cobs_decode(enc, len, dec);
    if (back != (ptrdiff_t)n || memcmp(dec, body, n) != 0) abort();
    free(enc);
    free(dec);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    size_t begin = 0;
    while (begin < size) {
        const uint8_t *zero = memchr(data + begin, 0, size - begin);
        size_t end = zero ? (size_t)(zero - data) : size;
        size_t n = end - begin;
        uint8_t *frame = malloc(n ? n : 1), *out = malloc(n ? n : 1);
        memcpy(frame, data + begin, n);
        size_t body = 0;
        enum himae_frame_status status = himae_frame_check(frame, n, out, &body);
        if (status == HIMAE_FRAME_OK) {
            if (body + HIMAE_FRAME_CRC_SIZE > n) abort();
            uint32_t crc = himae_crc32(0, out, body);
            uint8_t *again = malloc(body + HIMAE_FRAME_CRC_SIZE);
            memcpy(again, out, body);
            for (int i = 0; i < 4; i++) again[body + i] = (uint8_t)(crc >> (8 * i));
            roundtrip(again, body + HIMAE_FRAME_CRC_SIZE);
            free(again);
        } else if (status != HIMAE_FRAME_BAD_COBS && status != HIMAE_FRAME_BAD_CRC) {
            abort();
        }
        free(frame);
        free(out);
        begin = end + 1;
    }
    roundtrip(data, size);
    return 0;
}

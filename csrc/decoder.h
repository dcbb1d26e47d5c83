/* decoder.h - HiMAE's U-Net decoder in window mode (docs/model-format.md).
 *
 * Every operation is a himae_conv1d_forward() call on packed weights, so the
 * decoder runs on the same GEMM micro-kernels and ISA dispatch as the
 * encoder. A ConvTranspose1d (stride 2, padding k/2, output_padding 1) is
 * split at load into its even and odd output phases, each an ordinary
 * stride-1 convolution of the input (no scatter); the two phase outputs are
 * interleaved while they are copied next to the encoder skip, which that
 * concatenation needs anyway. Nothing is allocated: the caller hands in a
 * work area of himae_decoder_work_floats() floats taken from the arena.
 */
#ifndef HIMAE_DECODER_H
#define HIMAE_DECODER_H

#include "internal.h"

/* A transposed convolution (stride 2) as its even and odd output phases. */
typedef struct himae_tconv {
    himae_conv phase[2];
} himae_tconv;

/* Decoder stage t: upsample d_{t+1}, concat [up, x_t], two conv + GELU;
 * a conv whose Winograd form is packed (conv1_wino.packed, as the loader
 * picks them) runs in that form. */
typedef struct himae_stage {
    himae_tconv up;
    himae_conv conv1, conv2;
    himae_wino conv1_wino, conv2_wino;
} himae_stage;

/* Floats of work area the decoder of configuration `c` needs (one window). */
size_t himae_decoder_work_floats(const himae_config *c, size_t pad);

/* Reconstruct one window from its encoder levels. levels[l] points at row 0
 * of level l's channels-last activations (level_len[l] rows of channels[l]
 * floats, `pad` zero rows before and after). stage[t] and head hold the
 * packed decoder weights; out receives (in_channels, window), channels-first,
 * after tanh. work: himae_decoder_work_floats(c, pad) floats, any content;
 * wino_work: himae_wino_work_floats of the largest Winograd conv. */
void himae_decoder_forward(const himae_config *c, const himae_ukernel *uk, size_t pad,
                           const himae_stage *stage, const himae_tconv *head,
                           const float *const *levels, float *work, float *wino_work, float *out);

#endif

/* fobsgd native kernels: a handful of plain functions on raw pointers and lengths.
 *
 * Every function returns FOBSGD_OK (0) or a negative status. Kernels are compiled once per
 * instruction set (generic, AVX2, AVX-512) and chosen at run time; see fobsgd_set_isa().
 *
 * Block layout (all block-wise kernels): block b covers coordinates [offsets[b], offsets[b] +
 * 2^log_sizes[b]) of a zero-padded vector; coordinates at or past `d` are padding. Blocks are
 * contiguous, in order, and each is a multiple of 64 coordinates, so block b's packed bits start
 * at word offsets[b] / 64. Bits are little-endian within a uint64 word. Random streams are keyed
 * by (seed, step, block id, rank), so a subset of a layout's blocks, packed back to back, encodes
 * and decodes each block exactly as the whole layout does.
 */
#ifndef FOBSGD_H
#define FOBSGD_H

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

enum {
    FOBSGD_OK = 0,
    FOBSGD_EINVAL = -1,     /* bad length, layout or argument */
    FOBSGD_ENONFINITE = -2, /* input holds NaN or Inf */
    FOBSGD_EISA = -3        /* requested instruction set not supported by this CPU */
};

/* The scale of a block y (after the transform): ||y|| lambda_factor[b], max|y|, the smaller of the two, or the
 * MSE-optimal lam* (fobsgd_mse_scales), dithered with lam* and sent as lam* or as lam* m / (unclipped count);
 * the MSE rules take twice the work (n_threads * 2 * max block length floats). DRIVE does not dither: the bits
 * are the signs of y (an exact zero takes its dither draw's sign) and the scale is ||y||^2 / ||y||_1. */
enum {
    FOBSGD_LAMBDA_NORM = 0,
    FOBSGD_LAMBDA_MAX = 1,
    FOBSGD_LAMBDA_MIN = 2,
    FOBSGD_LAMBDA_MSE = 3,
    FOBSGD_LAMBDA_MSE_DEBIAS = 4,
    FOBSGD_LAMBDA_DRIVE = 5
};

/* What sign an exact zero (and a tied majority vote) takes: a seeded random +-1 from the block's
 * stream of (seed, step, block) that every rank shares, or + (as `x >= 0`, GRACE's rule). */
enum { FOBSGD_TIES_POSITIVE = 0, FOBSGD_TIES_RANDOM = 1 };

typedef struct {
    const int64_t *offsets;
    const int32_t *log_sizes;
    int64_t n_blocks;
    int64_t d;                /* real (unpadded) length */
    const int64_t *block_ids; /* key of block b's random streams; NULL: b (a shard names its blocks) */
} fobsgd_layout;

/* Instruction set: "avx512", "avx2" or "generic". fobsgd_set_isa(NULL) picks the best the CPU has. */
int fobsgd_set_isa(const char *name);
const char *fobsgd_isa(void);
int fobsgd_isa_supported(const char *name);

/* In-place Walsh-Hadamard transform of n_rows contiguous rows of length 2^log_n, each
 * multiplied by `scale` at the end (1/sqrt(2^log_n) gives the orthonormal transform). */
int fobsgd_fwht_f32(float *x, int64_t n_rows, int log_n, float scale);
int fobsgd_fwht_f64(double *x, int64_t n_rows, int log_n, double scale);
/* The schedule that runs rows of 2^log_n (f64: float64) on this CPU under the active instruction
 * set: fields = {r0, radix, c1, tile, strip} of native/src/fwht_plan.h, *isa = the instruction set
 * whose kernel runs (the plan may hand a size to a narrower one), *cpu_family / *cpu_model = the
 * CPUID family and model its entry was measured on (-1: any). */
int fobsgd_fwht_plan(int log_n, int f64, int *fields, const char **isa, int *cpu_family, int *cpu_model);

/* One-bit dithered encode (FO-SGD when rotate != 0, dithered sign when rotate == 0).
 * Per block: y = H D x / sqrt(m) (or y = x), lambda by rule (NORM: ||x||_2 * lambda_factor[b];
 * MAX: max|y|; MIN: the smaller of the two), bit_j = [y_j + tau_j >= 0] with tau_j ~ U(-lambda, lambda) from the stream of
 * (seed, step, block, rank). `work` holds n_threads * max block length floats. */
int fobsgd_encode_1bit(const float *x, fobsgd_layout layout, int rotate, int rule,
                       const double *lambda_factor, uint64_t seed, uint64_t step, uint64_t rank,
                       float *work, uint64_t *bits, float *scales, int n_threads);

/* Decode of the above: out[:d] (+)= weight * D H (lambda (2b - 1)) / sqrt(m). */
int fobsgd_decode_1bit(const uint64_t *bits, const float *scales, fobsgd_layout layout, int rotate,
                       uint64_t seed, uint64_t step, float weight, int accumulate, float *work,
                       float *out, int n_threads);

/* Server aggregation in the encoded domain: out[j] = sum_i weights[i] * scale_i[b] * (2 b_ij - 1)
 * over the padded length, for n payloads laid out `stride` bytes apart in `payloads`, each with
 * its bits at byte 0 and its scales at byte `scales_offset`. */
int fobsgd_aggregate_1bit(const uint8_t *payloads, int64_t n, int64_t stride,
                          int64_t scales_offset, const float *weights, fobsgd_layout layout,
                          float *out, int n_threads);

/* Scaled sign: bit = [x > 0], an exact zero by the `ties` rule (stream purpose 4), 0 past d;
 * scale = ||x_b||_1 / valid_b. With scales NULL, plain sign bits. `bits` holds n_words words: the
 * padded length's for the one-bit payload, ceil(d / 64) for plain sign (its words past are not
 * written). */
int fobsgd_scaled_sign_encode(const float *x, fobsgd_layout layout, int ties, uint64_t seed,
                              uint64_t step, uint64_t *bits, int64_t n_words, float *scales,
                              int n_threads);
/* out[:d] (+)= weight * scale_b * (2 b - 1); scales may be NULL (scale 1). */
int fobsgd_scaled_sign_decode(const uint64_t *bits, const float *scales, fobsgd_layout layout,
                              float weight, int accumulate, float *out, int n_threads);

/* Bitwise majority over n payloads of n_words words, `stride` words apart, laid out in `layout`'s
 * blocks: out bit = 1 where more than half of the inputs have it; a tie (n even) by the `ties`
 * rule (stream purpose 5). */
int fobsgd_majority_vote(const uint64_t *words, int64_t n, int64_t stride, int64_t n_words,
                         fobsgd_layout layout, int ties, uint64_t seed, uint64_t step, uint64_t *out);

/* QSGD (levels s, `width` = 1 + ceil(log2(s + 1)) bits a coordinate): norms[b] = ||x_b||_2 and
 * code_j = min(floor(s |x_j| / norms[b] + u_j), s) << 1 | [x_j < 0], u_j from the stream of
 * (seed, step, block, rank, purpose 3), packed coordinate-major, little-endian, over the padded
 * length: padded * width / 64 words. */
int fobsgd_qsgd_encode(const float *x, fobsgd_layout layout, int levels, int width, uint64_t seed,
                       uint64_t step, uint64_t rank, uint64_t *codes, float *norms, int n_threads);
/* out[:d] (+)= weight * (+-norms[b] * level / s). */
int fobsgd_qsgd_decode(const uint64_t *codes, const float *norms, fobsgd_layout layout, int levels,
                       int width, float weight, int accumulate, float *out, int n_threads);

/* Scales per segment (the model's tensors): segment s covers coordinates [starts[s], starts[s + 1]),
 * starts[n_segments] being the vector's length. means[s] = the mean |x_j| over it (summed in
 * double), and the decode out[j] (+)= weight * scales[s] * (2 b_j - 1) with b_j bit j of the
 * little-endian words. */
int fobsgd_segment_abs_means(const float *x, const int64_t *starts, int64_t n_segments, float *means,
                             int n_threads);
int fobsgd_segment_sign_decode(const uint64_t *bits, const int64_t *starts, int64_t n_segments,
                               const float *scales, float weight, int accumulate, float *out, int n_threads);
/* The server's sum of n per-segment scaled-sign payload rows of `stride` bytes (bits from byte 0,
 * n_segments float32 scales from scales_offset): out[j] = sum_i weights[i] * scale_i[s] * (2 b_ij - 1),
 * rows added in order, bit-equal to segment_sign_decode of row 0 then accumulating the others. */
int fobsgd_segment_sign_aggregate(const uint8_t *payloads, int64_t n, int64_t stride, int64_t scales_offset,
                                  const float *weights, const int64_t *starts, int64_t n_segments, float *out,
                                  int n_threads);

/* The FO-SGD server's scale (--server-scale mse*), per block of v (padded length, every coordinate
 * real): lams[b] = the lam >= 0 minimizing the expected squared error of quantizing v_b with scale lam
 * and dither U(-lam, lam), unclipped[b] = #{j : |v_j| <= lams[b] (1 + 1e-9)}, norms[b] = ||v_b||_2.
 * `work` holds n_threads * max block length floats. */
int fobsgd_mse_scales(const float *v, fobsgd_layout layout, float *work, double *lams, int64_t *unclipped,
                      double *norms, int n_threads);

#ifdef __cplusplus
}
#endif
#endif

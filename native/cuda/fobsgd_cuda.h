/* CUDA versions of the FWHT and one-bit codec kernels (see ../include/fobsgd.h for the maths and
 * layout). Data pointers are device pointers. The layout's offsets and log_sizes stay on the host,
 * where the calls walk the runs of equal-size blocks, one launch per run; its block_ids (NULL: b)
 * are on the device. Every call is asynchronous on `stream` and returns a cudaError_t cast to int
 * (0 = success). Results are bit-identical to the CPU kernels: same stage order, same random
 * streams, no fused multiply-add (built with -fmad=false); only the float64 sums of squares add
 * in another order. */
#ifndef FOBSGD_CUDA_H
#define FOBSGD_CUDA_H
#include <cuda_runtime.h>
#include <stdint.h>

#include "../include/fobsgd.h"

#ifdef __cplusplus
extern "C" {
#endif

/* In place over n_rows rows of 2^log_n floats, each multiplied by `scale` at the end. */
int fobsgd_cuda_fwht_f32(float *x, int64_t n_rows, int log_n, float scale, cudaStream_t stream);

/* `lambda_factor` (n_blocks doubles) on the device; `work` holds the padded length in floats and
 * `sumsq` one double per block: the caller checks sumsq for NaN / Inf (a non-finite x) after the
 * call, the GPU cannot return that status without a synchronization. */
int fobsgd_cuda_encode_1bit(const float *x, fobsgd_layout layout, int rotate, int rule,
                            const double *lambda_factor, uint64_t seed, uint64_t step, uint64_t rank,
                            float *work, double *sumsq, uint64_t *bits, float *scales, cudaStream_t stream);
/* `work` holds the padded length in floats. */
int fobsgd_cuda_decode_1bit(const uint64_t *bits, const float *scales, fobsgd_layout layout, int rotate,
                            uint64_t seed, uint64_t step, float weight, int accumulate, float *work,
                            float *out, cudaStream_t stream);
/* n payload rows `stride` bytes apart (bits at byte 0, float32 scales at `scales_offset`);
 * weights: n floats on the device. out: the padded length. */
int fobsgd_cuda_aggregate_1bit(const uint8_t *payloads, int64_t n, int64_t stride, int64_t scales_offset,
                               const float *weights, fobsgd_layout layout, float *out, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif

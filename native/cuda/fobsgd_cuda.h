/* CUDA versions of the FWHT and one-bit codec kernels (see ../include/fobsgd.h for the maths and
 * layout). All pointers are device pointers; every call runs on `stream` and returns a
 * cudaError_t cast to int (0 = success). The results are bit-identical to the CPU kernels: same
 * stage order, same random streams, and no fused multiply-add where the CPU has none. */
#ifndef FOBSGD_CUDA_H
#define FOBSGD_CUDA_H
#include <cuda_runtime.h>
#include <stdint.h>

#include "../include/fobsgd.h"

#ifdef __cplusplus
extern "C" {
#endif

int fobsgd_cuda_fwht_f32(float *x, int64_t n_rows, int log_n, float scale, cudaStream_t stream);

/* layout arrays (offsets, log_sizes) live on the host; `work` holds the padded length in floats
 * and `sumsq` one double per block, both on the device. */
int fobsgd_cuda_encode_1bit(const float *x, fobsgd_layout layout, int rotate, int rule,
                            const double *lambda_factor_host, uint64_t seed, uint64_t step,
                            uint64_t rank, float *work, double *sumsq, uint64_t *bits, float *scales,
                            cudaStream_t stream);
int fobsgd_cuda_decode_1bit(const uint64_t *bits, const float *scales, fobsgd_layout layout,
                            int rotate, uint64_t seed, uint64_t step, float weight, int accumulate,
                            float *work, float *out, cudaStream_t stream);
/* offsets_dev: the layout's offsets copied to the device (int64, n_blocks). */
int fobsgd_cuda_aggregate_1bit(const uint8_t *payloads, int64_t n, int64_t stride,
                               int64_t scales_offset, const float *weights, fobsgd_layout layout,
                               const int64_t *offsets_dev, float *out, cudaStream_t stream);

#ifdef __cplusplus
}
#endif
#endif

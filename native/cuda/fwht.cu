// Walsh-Hadamard transform on the GPU: rows up to 4096 floats in shared memory, longer rows
// finish with one global pass per remaining stage. Stages run in the CPU kernels' order.
#include "fobsgd_cuda.h"

namespace fobsgd_cuda {

constexpr int kSharedLog = 12;

// Stages [0, min(log_n, kSharedLog)) of each 2^kSharedLog chunk (or whole short row).
__global__ void fwht_shared(float *x, int log_chunk, int scale_here, float scale) {
    extern __shared__ float s[];
    const int n = 1 << log_chunk;
    float *row = x + (int64_t)blockIdx.x * n;
    for (int i = threadIdx.x; i < n; i += blockDim.x) s[i] = row[i];
    __syncthreads();
    for (int h = 1; h < n; h *= 2) {
        for (int t = threadIdx.x; t < n / 2; t += blockDim.x) {
            const int i = (t / h) * 2 * h + (t % h);
            const float a = s[i], b = s[i + h];
            s[i] = __fadd_rn(a, b);
            s[i + h] = __fsub_rn(a, b);
        }
        __syncthreads();
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) row[i] = scale_here ? __fmul_rn(s[i], scale) : s[i];
}

__global__ void fwht_stage(float *x, int64_t n_pairs, int64_t h, int scale_here, float scale) {
    const int64_t t = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (t >= n_pairs) return;
    const int64_t i = (t / h) * 2 * h + (t % h);
    const float a = x[i], b = x[i + h];
    x[i] = scale_here ? __fmul_rn(__fadd_rn(a, b), scale) : __fadd_rn(a, b);
    x[i + h] = scale_here ? __fmul_rn(__fsub_rn(a, b), scale) : __fsub_rn(a, b);
}

int fwht_rows(float *x, int64_t n_rows, int log_n, float scale, cudaStream_t stream) {
    if (log_n < 0 || log_n > 30 || n_rows < 0) return (int)cudaErrorInvalidValue;
    const bool sc = scale != 1.0f;
    const int log_chunk = log_n < kSharedLog ? log_n : kSharedLog;
    const int64_t n = (int64_t)1 << log_n, chunks = n_rows * (n >> log_chunk);
    if (chunks) {
        const int half = (1 << log_chunk) / 2, threads = half < 1 ? 1 : (half < 256 ? half : 256);
        fwht_shared<<<(unsigned)chunks, threads, sizeof(float) << log_chunk, stream>>>(x, log_chunk, sc && log_n == log_chunk, scale);
    }
    for (int s = log_chunk; s < log_n; ++s) {
        const int64_t pairs = n_rows * n / 2;
        fwht_stage<<<(unsigned)((pairs + 255) / 256), 256, 0, stream>>>(x, pairs, (int64_t)1 << s, sc && s == log_n - 1, scale);
    }
    return (int)cudaGetLastError();
}

}  // namespace fobsgd_cuda

extern "C" int fobsgd_cuda_fwht_f32(float *x, int64_t n_rows, int log_n, float scale, cudaStream_t stream) {
    return fobsgd_cuda::fwht_rows(x, n_rows, log_n, scale, stream);
}

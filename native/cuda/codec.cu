// One-bit dithered encode / decode and server aggregation on the GPU (maths in fobsgd.h).
#include "fobsgd_cuda.h"

namespace fobsgd_cuda {
#define FOBSGD_HD __host__ __device__ inline
#include "../src/stream.inl"

int fwht_rows(float *x, int64_t n_rows, int log_n, float scale, cudaStream_t stream);

constexpr int kThreads = 256;

// Deterministic tree reduction (fixed order, so lambda is the same on every run).
template <class T, class Op> __device__ T block_reduce(T v, Op op) {
    __shared__ T part[kThreads];
    part[threadIdx.x] = v;
    __syncthreads();
    for (int s = kThreads / 2; s > 0; s /= 2) {
        if (threadIdx.x < s) part[threadIdx.x] = op(part[threadIdx.x], part[threadIdx.x + s]);
        __syncthreads();
    }
    return part[0];
}

// One CUDA block per coding block: y = D x (zero-padded) into work, and sum x^2 into sumsq[b].
__global__ void flip_copy(const float *x, int64_t d, int64_t off, int64_t m, int rotate, uint64_t sign_key,
                          float *y, double *sumsq) {
    double acc = 0;
    for (int64_t j = threadIdx.x; j < m; j += blockDim.x) {
        const float v = off + j < d ? x[off + j] : 0.0f;
        acc += (double)v * (double)v;
        const bool flip = rotate && ((stream_word(sign_key, (uint64_t)(j / 64)) >> (j % 64)) & 1);
        y[off + j] = flip ? -v : v;
    }
    const double total = block_reduce(acc, [](double a, double b) { return a + b; });
    if (threadIdx.x == 0) *sumsq = total;
}

// One CUDA block per coding block: lambda, then one warp ballot per 32 coordinates.
__global__ void quantize(const float *y, int64_t off, int64_t m, int rule, double factor, const double *sumsq,
                         uint64_t dither_key, uint64_t *bits, float *scale_out) {
    float mx = 0;
    if (rule != FOBSGD_LAMBDA_NORM)
        for (int64_t j = threadIdx.x; j < m; j += blockDim.x) mx = fmaxf(mx, fabsf(y[off + j]));
    mx = block_reduce(mx, [](float a, float b) { return fmaxf(a, b); });
    const float by_norm = (float)(sqrt(*sumsq) * factor);
    const float lambda = rule == FOBSGD_LAMBDA_NORM ? by_norm : (rule == FOBSGD_LAMBDA_MAX || mx < by_norm ? mx : by_norm);
    if (threadIdx.x == 0) *scale_out = lambda;
    const int lane = threadIdx.x % 32;
    for (int64_t base = (threadIdx.x / 32) * 64; base < m; base += (blockDim.x / 32) * 64) {
        uint64_t word = 0;
        for (int half = 0; half < 2; ++half) {
            const int64_t j = base + half * 32 + lane;
            const uint64_t r = stream_word(dither_key, (uint64_t)(j / 2));
            const float tau = __fmul_rn(lambda, centred_uniform((uint32_t)(j % 2 ? r >> 32 : r)));
            const unsigned vote = __ballot_sync(0xFFFFFFFFu, __fadd_rn(y[off + j], tau) >= 0.0f);
            word |= (uint64_t)vote << (32 * half);
        }
        if (lane == 0) bits[(off + base) / 64] = word;
    }
}

__global__ void unpack_pm1(const uint64_t *bits, int64_t off, int64_t m, float a, float *y) {
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < m; j += (int64_t)gridDim.x * blockDim.x)
        y[off + j] = ((bits[(off + j) / 64] >> ((off + j) % 64)) & 1) ? a : -a;
}

__global__ void flip_store(const float *y, int64_t off, int64_t valid, int rotate, uint64_t sign_key, int accumulate,
                           float *out) {
    for (int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; j < valid; j += (int64_t)gridDim.x * blockDim.x) {
        const bool flip = rotate && ((stream_word(sign_key, (uint64_t)(j / 64)) >> (j % 64)) & 1);
        const float v = flip ? -y[off + j] : y[off + j];
        out[off + j] = accumulate ? __fadd_rn(out[off + j], v) : v;
    }
}

__global__ void aggregate(const uint8_t *payloads, int64_t n, int64_t stride, int64_t scales_offset,
                          const float *weights, const int64_t *offsets, int64_t n_blocks, int64_t padded, float *out) {
    const int64_t j = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j >= padded) return;
    int64_t lo = 0, hi = n_blocks - 1;  // block of coordinate j
    while (lo < hi) {
        const int64_t mid = (lo + hi + 1) / 2;
        if (offsets[mid] <= j) lo = mid;
        else hi = mid - 1;
    }
    float acc = 0.0f;
    for (int64_t i = 0; i < n; ++i) {
        const uint8_t *p = payloads + i * stride;
        const float c = __fmul_rn(weights[i], ((const float *)(p + scales_offset))[lo]);
        const bool bit = (((const uint64_t *)p)[j / 64] >> (j % 64)) & 1;
        acc = __fadd_rn(acc, bit ? c : -c);
    }
    out[j] = acc;
}

struct BlockGeom {
    int64_t off, m, valid;
    int log_m;
};
inline BlockGeom geom(const fobsgd_layout &lay, int64_t b) {
    BlockGeom g{lay.offsets[b], (int64_t)1 << lay.log_sizes[b], 0, lay.log_sizes[b]};
    g.valid = lay.d - g.off < g.m ? (lay.d > g.off ? lay.d - g.off : 0) : g.m;
    return g;
}
inline uint64_t block_id(const fobsgd_layout &lay, int64_t b) { return (uint64_t)(lay.block_ids ? lay.block_ids[b] : b); }
inline unsigned grid_for(int64_t m) { return (unsigned)((m + kThreads - 1) / kThreads < 1024 ? (m + kThreads - 1) / kThreads : 1024); }

}  // namespace fobsgd_cuda

using namespace fobsgd_cuda;

extern "C" int fobsgd_cuda_encode_1bit(const float *x, fobsgd_layout lay, int rotate, int rule,
                                       const double *lambda_factor_host, uint64_t seed, uint64_t step, uint64_t rank,
                                       float *work, double *sumsq, uint64_t *bits, float *scales, cudaStream_t stream) {
    for (int64_t b = 0; b < lay.n_blocks; ++b) {
        const BlockGeom g = geom(lay, b);
        const uint64_t sign_key = stream_key(seed, step, block_id(lay, b), kSharedRank, kPurposeSign);
        flip_copy<<<1, kThreads, 0, stream>>>(x, lay.d, g.off, g.m, rotate, sign_key, work, sumsq + b);
        if (rotate) {
            const int rc = fwht_rows(work + g.off, 1, g.log_m, (float)(1.0 / sqrt((double)g.m)), stream);
            if (rc) return rc;
        }
        quantize<<<1, kThreads, 0, stream>>>(work, g.off, g.m, rule, lambda_factor_host[b], sumsq + b,
                                            stream_key(seed, step, block_id(lay, b), rank, kPurposeDither), bits, scales + b);
    }
    return (int)cudaGetLastError();
}

extern "C" int fobsgd_cuda_decode_1bit(const uint64_t *bits, const float *scales, fobsgd_layout lay, int rotate,
                                       uint64_t seed, uint64_t step, float weight, int accumulate, float *work,
                                       float *out, cudaStream_t stream) {
    for (int64_t b = 0; b < lay.n_blocks; ++b) {
        const BlockGeom g = geom(lay, b);
        float scale_host;
        cudaError_t err = cudaMemcpyAsync(&scale_host, scales + b, sizeof(float), cudaMemcpyDeviceToHost, stream);
        if (err == cudaSuccess) err = cudaStreamSynchronize(stream);
        if (err != cudaSuccess) return (int)err;
        const float a = rotate ? 1.0f : weight * scale_host;
        unpack_pm1<<<grid_for(g.m), kThreads, 0, stream>>>(bits, g.off, g.m, a, work);
        if (rotate) {
            const int rc = fwht_rows(work + g.off, 1, g.log_m, (float)((double)weight * scale_host / sqrt((double)g.m)), stream);
            if (rc) return rc;
        }
        flip_store<<<grid_for(g.valid), kThreads, 0, stream>>>(work, g.off, g.valid, rotate,
                                                                stream_key(seed, step, block_id(lay, b), kSharedRank, kPurposeSign),
                                                                accumulate, out);
    }
    return (int)cudaGetLastError();
}

extern "C" int fobsgd_cuda_aggregate_1bit(const uint8_t *payloads, int64_t n, int64_t stride, int64_t scales_offset,
                                          const float *weights, fobsgd_layout lay, const int64_t *offsets_dev,
                                          float *out, cudaStream_t stream) {
    const BlockGeom last = geom(lay, lay.n_blocks - 1);
    const int64_t padded = last.off + last.m;
    aggregate<<<(unsigned)((padded + kThreads - 1) / kThreads), kThreads, 0, stream>>>(
        payloads, n, stride, scales_offset, weights, offsets_dev, lay.n_blocks, padded, out);
    return (int)cudaGetLastError();
}

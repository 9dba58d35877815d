// One-bit dithered encode / decode and server aggregation on the GPU (maths in fobsgd.h). The host
// walks the layout's runs of equal-size consecutive blocks; each kernel covers a whole run.
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

// Blocks b0, b0 + 1, ... of 2^log_m coordinates each, the first at coordinate off0; block_ids (on
// the device, or NULL for b) key their random streams.
struct Run {
    int64_t b0, n_blocks, off0;
    int log_m;
    const int64_t *block_ids;
    __host__ __device__ int64_t m() const { return (int64_t)1 << log_m; }
    __host__ __device__ int64_t length() const { return n_blocks << log_m; }
    __device__ uint64_t id(int64_t b) const { return (uint64_t)(block_ids ? block_ids[b] : b); }
};

__device__ inline bool flipped(uint64_t sign_key, int64_t j) {
    return (stream_word(sign_key, (uint64_t)(j / 64)) >> (j % 64)) & 1;
}

// One CUDA block per coding block: y = D x (zero past d) into work, sum of x^2 into sumsq[b].
__global__ void flip_copy(const float *x, int64_t d, Run run, int rotate, uint64_t seed, uint64_t step, float *work,
                          double *sumsq) {
    const int64_t b = run.b0 + blockIdx.x, off = run.off0 + ((int64_t)blockIdx.x << run.log_m);
    const uint64_t sign_key = stream_key(seed, step, run.id(b), kSharedRank, kPurposeSign);
    double acc = 0;
    for (int64_t j = threadIdx.x; j < run.m(); j += blockDim.x) {
        const float v = off + j < d ? x[off + j] : 0.0f;
        acc += (double)v * (double)v;
        work[off + j] = rotate && flipped(sign_key, j) ? -v : v;
    }
    const double total = block_reduce(acc, [](double a, double c) { return a + c; });
    if (threadIdx.x == 0) sumsq[b] = total;
}

// One CUDA block per coding block: lambda by `rule`, then one warp ballot per 32 coordinates.
__global__ void quantize(const float *y, Run run, int rule, const double *lambda_factor, const double *sumsq,
                         uint64_t seed, uint64_t step, uint64_t rank, uint64_t *bits, float *scales) {
    const int64_t b = run.b0 + blockIdx.x, off = run.off0 + ((int64_t)blockIdx.x << run.log_m), m = run.m();
    float peak = 0;
    if (rule != FOBSGD_LAMBDA_NORM)
        for (int64_t j = threadIdx.x; j < m; j += blockDim.x) peak = fmaxf(peak, fabsf(y[off + j]));
    peak = block_reduce(peak, [](float a, float c) { return fmaxf(a, c); });
    const float by_norm = (float)(sqrt(sumsq[b]) * lambda_factor[b]);
    const float lambda = rule == FOBSGD_LAMBDA_NORM ? by_norm
                         : (rule == FOBSGD_LAMBDA_MAX || peak < by_norm ? peak : by_norm);
    if (threadIdx.x == 0) scales[b] = lambda;
    const uint64_t dither_key = stream_key(seed, step, run.id(b), rank, kPurposeDither);
    const int lane = threadIdx.x % 32;
    for (int64_t base = (threadIdx.x / 32) * 64; base < m; base += (blockDim.x / 32) * 64) {
        uint64_t word = 0;
        for (int half = 0; half < 2; ++half) {
            const int64_t j = base + half * 32 + lane;
            const uint64_t r = stream_word(dither_key, (uint64_t)(j / 2));  // coordinate 2k: low half of word k
            const float tau = __fmul_rn(lambda, centred_uniform((uint32_t)(j % 2 ? r >> 32 : r)));
            const unsigned vote = __ballot_sync(0xFFFFFFFFu, __fadd_rn(y[off + j], tau) >= 0.0f);
            word |= (uint64_t)vote << (32 * half);
        }
        if (lane == 0) bits[(off + base) / 64] = word;
    }
}

// work[j] = +-1 from bit j, over a run.
__global__ void unpack_pm1(const uint64_t *bits, Run run, float *work) {
    const int64_t j = run.off0 + (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (j < run.off0 + run.length()) work[j] = ((bits[j / 64] >> (j % 64)) & 1) ? 1.0f : -1.0f;
}

// out[j] (+)= D (a_b work[j]) for the run's coordinates below d: a_b = weight * scale_b, or with
// rotation weight * scale_b / sqrt(m) rounded once from float64 (the CPU kernels' multiply of the
// exact integer transform).
__global__ void scale_store(const float *work, Run run, int64_t valid, const float *scales, float weight, int rotate,
                            uint64_t seed, uint64_t step, int accumulate, float *out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= valid) return;
    const int64_t b = run.b0 + (i >> run.log_m), j = run.off0 + i;
    const float a = rotate ? (float)((double)weight * (double)scales[b] / sqrt((double)run.m()))
                           : __fmul_rn(weight, scales[b]);
    float v = __fmul_rn(work[j], a);
    if (rotate && flipped(stream_key(seed, step, run.id(b), kSharedRank, kPurposeSign), i & (run.m() - 1))) v = -v;
    out[j] = accumulate ? __fadd_rn(out[j], v) : v;
}

// out[j] = sum_i weights[i] scale_i[b] (2 bit_ij - 1), payloads added in rank order (as the CPU).
__global__ void aggregate(const uint8_t *payloads, int64_t n, int64_t stride, int64_t scales_offset,
                          const float *weights, Run run, float *out) {
    const int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x;
    if (i >= run.length()) return;
    const int64_t b = run.b0 + (i >> run.log_m), j = run.off0 + i;
    float acc = 0.0f;
    for (int64_t r = 0; r < n; ++r) {
        const uint8_t *p = payloads + r * stride;  // rows need not be 8-byte aligned: read bytes
        const float c = __fmul_rn(weights[r], ((const float *)(p + scales_offset))[b]);
        acc = __fadd_rn(acc, (p[j / 8] >> (j % 8)) & 1 ? c : -c);
    }
    out[j] = acc;
}

inline unsigned grid_for(int64_t n) { return (unsigned)((n + kThreads - 1) / kThreads); }

// Calls visit(run) for each run of equal-size consecutive blocks of the layout.
template <class Visit> int for_each_run(const fobsgd_layout &lay, Visit visit) {
    for (int64_t b = 0; b < lay.n_blocks;) {
        int64_t e = b + 1;
        while (e < lay.n_blocks && lay.log_sizes[e] == lay.log_sizes[b]) ++e;
        const int rc = visit(Run{b, e - b, lay.offsets[b], lay.log_sizes[b], lay.block_ids});
        if (rc) return rc;
        b = e;
    }
    return (int)cudaGetLastError();
}

}  // namespace fobsgd_cuda

using namespace fobsgd_cuda;

extern "C" int fobsgd_cuda_encode_1bit(const float *x, fobsgd_layout lay, int rotate, int rule,
                                       const double *lambda_factor, uint64_t seed, uint64_t step, uint64_t rank,
                                       float *work, double *sumsq, uint64_t *bits, float *scales, cudaStream_t stream) {
    return for_each_run(lay, [&](const Run &run) {
        flip_copy<<<(unsigned)run.n_blocks, kThreads, 0, stream>>>(x, lay.d, run, rotate, seed, step, work, sumsq);
        if (rotate) {
            const int rc = fwht_rows(work + run.off0, run.n_blocks, run.log_m, (float)(1.0 / sqrt((double)run.m())),
                                     stream);
            if (rc) return rc;
        }
        quantize<<<(unsigned)run.n_blocks, kThreads, 0, stream>>>(work, run, rule, lambda_factor, sumsq, seed, step,
                                                                  rank, bits, scales);
        return (int)cudaGetLastError();
    });
}

extern "C" int fobsgd_cuda_decode_1bit(const uint64_t *bits, const float *scales, fobsgd_layout lay, int rotate,
                                       uint64_t seed, uint64_t step, float weight, int accumulate, float *work,
                                       float *out, cudaStream_t stream) {
    return for_each_run(lay, [&](const Run &run) {
        const int64_t valid = lay.d - run.off0 < run.length() ? lay.d - run.off0 : run.length();
        if (valid <= 0) return 0;
        unpack_pm1<<<grid_for(run.length()), kThreads, 0, stream>>>(bits, run, work);
        if (rotate) {
            const int rc = fwht_rows(work + run.off0, run.n_blocks, run.log_m, 1.0f, stream);
            if (rc) return rc;
        }
        scale_store<<<grid_for(valid), kThreads, 0, stream>>>(work, run, valid, scales, weight, rotate, seed, step,
                                                              accumulate, out);
        return (int)cudaGetLastError();
    });
}

extern "C" int fobsgd_cuda_aggregate_1bit(const uint8_t *payloads, int64_t n, int64_t stride, int64_t scales_offset,
                                          const float *weights, fobsgd_layout lay, float *out, cudaStream_t stream) {
    return for_each_run(lay, [&](const Run &run) {
        aggregate<<<grid_for(run.length()), kThreads, 0, stream>>>(payloads, n, stride, scales_offset, weights, run,
                                                                   out);
        return (int)cudaGetLastError();
    });
}

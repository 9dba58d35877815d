// The kernels, written once over GCC/Clang vector extensions and compiled once per instruction
// set: isa_*.cpp include this file inside their own namespace with their own -m flags and
// FOBSGD_VBYTES (vector width in bytes). Nothing here may use std:: templates: an inline
// function emitted by an AVX-512 translation unit must never be picked by the linker for the
// generic one.
//
// The Walsh-Hadamard transform (fwht_row, fwht) lives in fwht.inl.

#include "stream.inl"

constexpr int VB = FOBSGD_VBYTES;
typedef float vf __attribute__((vector_size(VB)));
typedef double vd __attribute__((vector_size(VB)));
typedef int32_t vi32 __attribute__((vector_size(VB)));
typedef uint32_t vu32 __attribute__((vector_size(VB)));
typedef uint64_t vu64 __attribute__((vector_size(VB)));

constexpr int WF = VB / 4;  // float lanes
constexpr int WD = VB / 8;  // double lanes

template <class T> struct Lanes;
template <> struct Lanes<float> { typedef vf V; static constexpr int W = WF; };
template <> struct Lanes<double> { typedef vd V; static constexpr int W = WD; };

template <int... Is> struct seq {};
template <int N, int... Is> struct make_seq : make_seq<N - 1, N - 1, Is...> {};
template <int... Is> struct make_seq<0, Is...> { typedef seq<Is...> type; };

template <class V, class T> inline V vload(const T *p) {
    V v;
    __builtin_memcpy(&v, p, sizeof v);
    return v;
}
template <class V, class T> inline void vstore(T *p, const V &v) { __builtin_memcpy(p, &v, sizeof v); }

constexpr int ilog2(int n) { return n <= 1 ? 0 : 1 + ilog2(n / 2); }
inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }

// ---------------------------------------------------------------- bit masks <-> lanes (float)
inline vu32 lane_bits() {
    vu32 b;
    for (int l = 0; l < WF; ++l) b[l] = 1u << l;
    return b;
}

#if defined(__AVX512F__)
inline uint32_t ge_mask(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GE_OQ); }
inline uint32_t gt_mask(vf a, vf b) { return _mm512_cmp_ps_mask(a, b, _CMP_GT_OQ); }
inline vf select_bits(uint64_t bits, vf on, vf off) {
    return _mm512_mask_blend_ps((__mmask16)bits, off, on);
}
#elif defined(__AVX2__)
inline uint32_t ge_mask(vf a, vf b) { return (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GE_OQ)); }
inline uint32_t gt_mask(vf a, vf b) { return (uint32_t)_mm256_movemask_ps(_mm256_cmp_ps(a, b, _CMP_GT_OQ)); }
inline vf select_bits(uint64_t bits, vf on, vf off) {
    vu32 m = ((vu32){} + (uint32_t)bits) & lane_bits();
    return m != 0 ? on : off;
}
#else
inline uint32_t ge_mask(vf a, vf b) {
    uint32_t m = 0;
    for (int l = 0; l < WF; ++l) m |= (uint32_t)(a[l] >= b[l]) << l;
    return m;
}
inline uint32_t gt_mask(vf a, vf b) {
    uint32_t m = 0;
    for (int l = 0; l < WF; ++l) m |= (uint32_t)(a[l] > b[l]) << l;
    return m;
}
inline vf select_bits(uint64_t bits, vf on, vf off) {
    vu32 m = ((vu32){} + (uint32_t)bits) & lane_bits();
    return m != 0 ? on : off;
}
#endif

inline vf negate(vf x) { return -x; }

// Lanes of +c where the low WF `bits` are 1 and -c where 0. AVX-512 blends by a mask register; the
// narrower sets multiply c by a row of +-1 from a table indexed by those bits (a load and a multiply
// where a mask from bits would take a broadcast, an and, a compare and a blend), the same floats.
#if defined(__AVX512F__)
inline vf signed_lanes(uint64_t bits, vf c) { return select_bits(bits, c, negate(c)); }
#else
struct SignRows {
    alignas(VB) float row[1 << WF][WF];
    constexpr SignRows() : row() {
        for (int k = 0; k < (1 << WF); ++k)
            for (int l = 0; l < WF; ++l) row[k][l] = (k >> l & 1) ? 1.0f : -1.0f;
    }
};
constexpr SignRows kSignRows{};
inline vf signed_lanes(uint64_t bits, vf c) { return c * vload<vf>(kSignRows.row[bits & ((1u << WF) - 1)]); }
#endif

// Outputs of 32 MiB and more (past a last-level cache) are written by stores that bypass the
// caches: a normal store of a line not yet cached reads it first, and that read takes as long as
// the write (aggregating 8 payloads of 2^24 on a Zen 3: 12 -> 6.5 ms). A store that streams
// needs an address aligned to VB (an unaligned one is stored normally), and a fence before another
// thread may read it: each OpenMP thread fences its own after each block.
constexpr int64_t kStreamBytes = 32 << 20;
inline bool streams(int64_t n_floats) { return 4 * n_floats >= kStreamBytes; }
inline void vput(float *p, vf v, bool stream) {
    stream = stream && (uintptr_t)p % VB == 0;
#if defined(__AVX512F__)
    if (stream) return _mm512_stream_ps(p, (__m512)v);
#elif defined(__AVX__)
    if (stream) return _mm256_stream_ps(p, (__m256)v);
#elif defined(__SSE__)
    if (stream) return _mm_stream_ps(p, (__m128)v);
#endif
    vstore(p, v);
}
inline void fence_streams(bool stream) {
#if defined(__SSE__)
    if (stream) _mm_sfence();
#endif
}

// ---------------------------------------------------------------- Walsh-Hadamard transform
#include "fwht.inl"

// ---------------------------------------------------------------- block helpers
struct Block {
    int64_t off, m, valid;
    int log_m;
};
inline Block block_at(const fobsgd_layout &lay, int64_t b) {
    Block k;
    k.off = lay.offsets[b];
    k.log_m = lay.log_sizes[b];
    k.m = (int64_t)1 << k.log_m;
    k.valid = lay.d - k.off < k.m ? (lay.d - k.off > 0 ? lay.d - k.off : 0) : k.m;
    return k;
}
inline uint64_t block_id(const fobsgd_layout &lay, int64_t b) { return (uint64_t)(lay.block_ids ? lay.block_ids[b] : b); }

inline int64_t max_block(const fobsgd_layout &lay) {
    int64_t m = 0;
    for (int64_t b = 0; b < lay.n_blocks; ++b) m = m < ((int64_t)1 << lay.log_sizes[b]) ? (int64_t)1 << lay.log_sizes[b] : m;
    return m;
}
inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

inline vf abs_v(vf x) { return (vf)((vu32)x & 0x7FFFFFFFu); }

// x[0, valid) as floats, zero past valid.
inline vf load_padded(const float *x, int64_t j, int64_t valid) {
    if (j + WF <= valid) return vload<vf>(x + j);
    vf v = {};
    for (int l = 0; j + l < valid; ++l) v[l] = x[j + l];
    return v;
}

// Sums of squares and of absolute values run in double lanes (float32 squares are exact there).
template <int... Is> inline vd widen_lo(vf x, seq<Is...>) {
    return __builtin_convertvector(__builtin_shufflevector(x, x, Is...), vd);
}
template <int... Is> inline vd widen_hi(vf x, seq<Is...>) {
    return __builtin_convertvector(__builtin_shufflevector(x, x, (Is + WD)...), vd);
}
inline vd add_squares(vd acc, vf x) {
    const vd lo = widen_lo(x, make_seq<WD>::type()), hi = widen_hi(x, make_seq<WD>::type());
    return acc + lo * lo + hi * hi;
}
inline vd add_abs(vd acc, vf x) {
    return acc + widen_lo(abs_v(x), make_seq<WD>::type()) + widen_hi(abs_v(x), make_seq<WD>::type());
}
inline double lane_sum(vd v) {
    double s = 0;
    for (int l = 0; l < WD; ++l) s += v[l];
    return s;
}

// Dither tau_j for coordinates j .. j + WF - 1 (j even) of the stream `key`, scaled by lambda.
// key + c * golden as one scalar product and a vector of constants (c * golden mod 2^64 is linear in c): AVX2 has
// no 64-bit vector multiply, and this saves one of the three it would emulate.
inline vf dither(uint64_t key, int64_t j, float lambda) {
    vu64 lane_steps;
    for (int k = 0; k < WF / 2; ++k) lane_steps[k] = (uint64_t)k * kGolden;
    vu64 z = (key + (uint64_t)(j / 2 + 1) * kGolden) + lane_steps;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z = z ^ (z >> 31);
    vu32 r = (vu32)z;
    vi32 odd = (vi32)((r >> 8) * 2u + 1u) - (1 << 24);
    return lambda * (__builtin_convertvector(odd, vf) * (1.0f / 16777216.0f));
}

// ---------------------------------------------------------------- the MSE-optimal scale (server, and workers' --worker-scale)
// lam* of one block of m coordinates (reference.mse_lambda) is the root of F'(lam) / 2 = m lam - S(lam), with S(lam)
// the sum of the |v_j| above lam: nondecreasing, linear between the |v_j| and jumping up at them. mse_root searches
// the candidates a[0, n), which all lie in (lo, hi) while `clipped` sums the |v_j| at or above hi. The interval
// (lo, hi) keeps F'(lo) < 0 <= F'(hi) and shrinks by probes, each a vectorized pass over the candidates that also
// finds the smallest and largest candidate left inside. A probe is S(lo) / m, which lies at or above the root, or
// S(hi) / m, at or below it (each closes in by the slope of S / m, about 0.4 for a Gaussian block), or a bisection
// when they stall, always moved into [smallest, largest] candidate inside, so that a block of a few repeated values
// (a server's sum) ends in a probe or two. Once no candidate lies inside, S is constant there and the root is
// S(lo) / m clamped to [lo, hi]: the exact root, as the reference's sort finds it.
struct Probe {
    double above;                          // clipped + the candidates above t
    int64_t n_below, n_above;              // candidates in (lo, t) and in (t, hi)
    float below_min, below_max, above_min, above_max;
};
inline float lanes_min(vf x) {
    float r = x[0];
    for (int l = 1; l < WF; ++l) r = x[l] < r ? x[l] : r;
    return r;
}
inline float lanes_max(vf x) {
    float r = x[0];
    for (int l = 1; l < WF; ++l) r = x[l] > r ? x[l] : r;
    return r;
}
inline Probe probe_at(const float *a, int64_t n, float lo, float t, float hi, double clipped) {
    const vf lov = (vf){} + lo, tv = (vf){} + t, hiv = (vf){} + hi, zero = {}, inf = zero + __builtin_inff();
    vf bmin = inf, bmax = zero, amin = inf, amax = zero;
    vd sum = {};
    vi32 n_below = {}, n_above = {};  // a true lane of a comparison is -1
    for (int64_t j = 0; j < n; j += WF) {
        const vf x = load_padded(a, j, n);  // the padding, 0, lies at or below lo
        sum = add_abs(sum, x > tv ? x : zero);
        const vi32 below = (x > lov) & (tv > x), above = (x > tv) & (hiv > x);
        n_below -= below;
        n_above -= above;
        bmin = below && x < bmin ? x : bmin;
        bmax = below && x > bmax ? x : bmax;
        amin = above && x < amin ? x : amin;
        amax = above && x > amax ? x : amax;
    }
    int64_t below = 0, above = 0;
    for (int l = 0; l < WF; ++l) {
        below += n_below[l];
        above += n_above[l];
    }
    return Probe{clipped + lane_sum(sum), below, above, lanes_min(bmin), lanes_max(bmax), lanes_min(amin),
                 lanes_max(amax)};
}
inline float float_up(double x) {
    const float f = (float)x;
    return (double)f < x ? __builtin_nextafterf(f, __builtin_inff()) : f;
}
inline float float_down(double x) {
    const float f = (float)x;
    return (double)f > x ? __builtin_nextafterf(f, 0.0f) : f;
}
inline float float_midpoint(float lo, float hi) {  // both >= 0: the float order is the order of their bits
    uint32_t l, h;
    __builtin_memcpy(&l, &lo, 4);
    __builtin_memcpy(&h, &hi, 4);
    const uint32_t mid = l + (h - l) / 2;
    float f;
    __builtin_memcpy(&f, &mid, 4);
    return f;
}

// The root in [lo, hi] (0 <= lo < hi, hi may be infinite), or -1 when F'(lo) >= 0: the root lies at or below lo.
inline double mse_root(const float *a, int64_t n, int64_t m, float lo, float hi, double clipped) {
    const Probe first = probe_at(a, n, lo, lo, hi, clipped);
    double s_lo = first.above, s_hi = clipped;
    if ((double)m * lo >= s_lo) return lo == 0 ? 0.0 : -1.0;  // at lo = 0 that means an all-zero block
    int64_t inside = first.n_above, checked = inside;
    float in_min = first.above_min, in_max = first.above_max;  // the candidates inside (lo, hi) span these
    for (int step = 0; inside > 0; ++step) {
        float t = step % 2 == 0 ? float_up(s_lo / (double)m) : float_down(s_hi / (double)m);
        if (step % 2 == 0 && step > 0) {
            if (2 * inside > checked) t = float_midpoint(in_min, in_max);  // two probes did not halve them
            checked = inside;
        }
        t = t < in_min ? in_min : (t > in_max ? in_max : t);
        const Probe p = probe_at(a, n, lo, t, hi, clipped);
        if ((double)m * t >= p.above) {
            hi = t;
            s_hi = p.above;
            inside = p.n_below;
            in_min = p.below_min;
            in_max = p.below_max;
        } else {
            lo = t;
            s_lo = p.above;
            inside = p.n_above;
            in_min = p.above_min;
            in_max = p.above_max;
        }
    }
    const double vertex = s_lo / (double)m;
    return vertex < lo ? lo : (vertex > hi ? hi : vertex);
}

constexpr int64_t kMseSample = 4096;  // blocks above this first bracket lam* from a strided sample

// The largest float at or below lam (1 + 1e-9): |v_j| <= it is reference.unclipped_count's test (its allowance lets a
// block of equal |v_j|, one worker's payload, count as unclipped), done in float.
inline float unclipped_bound(double lam) { return float_down(lam * (1 + 1e-9)); }

// One block's MSE statistics (reference.mse_scales): lam*, how many |v_j| it leaves unclipped, and sum v_j^2.
struct MseRoot {
    double lam;
    int64_t unclipped;
    double sumsq;
};

// The statistics of block k of v, with `a` (k.m floats) as scratch, in one pass over v in most blocks. A strided
// sample's own root, widened by 1/32 (then 1/8) each way, brackets lam* in most blocks (a 4096-coordinate sample of a
// Gaussian block misses the 1/32 bracket in about 3 % of blocks); the pass checks F'(hi) >= 0, keeps the coordinates
// inside (lo, hi) as candidates and counts those at or above hi, so lam* (mse_root checks F'(lo) < 0) and the
// unclipped count follow from the candidates alone. A bracket that misses (a sparse or spiky block) falls back to all.
inline MseRoot block_mse_root(const float *vb, const Block &k, float *a) {
    static const double kWidths[] = {1.0 / 32, 1.0 / 8};
    vd acc_sq = {};
    if (k.m > kMseSample) {
        const int64_t stride = k.m / kMseSample;
        for (int64_t s = 0; s < kMseSample; ++s) a[s] = s * stride < k.valid ? __builtin_fabsf(vb[s * stride]) : 0.0f;
        const double guess = mse_root(a, kMseSample, kMseSample, 0, __builtin_inff(), 0);
        for (int attempt = 0; attempt < 2 && guess > 0; ++attempt) {
            const float lo = (float)(guess * (1 - kWidths[attempt])), hi = (float)(guess * (1 + kWidths[attempt]));
            const vf lov = (vf){} + lo, hiv = (vf){} + hi, zero = {};
            vd above_hi = {};
            acc_sq = (vd){};
            int64_t n = 0, n_above_hi = 0, n_from_hi = 0;
            for (int64_t j = 0; j < k.m; j += WF) {
                const vf v = load_padded(vb, j, k.valid), x = abs_v(v);
                acc_sq = add_squares(acc_sq, v);
                above_hi = add_abs(above_hi, x > hiv ? x : zero);
                n_above_hi += __builtin_popcount(gt_mask(x, hiv));
                n_from_hi += __builtin_popcount(ge_mask(x, hiv));
                for (uint32_t inside = gt_mask(x, lov) & gt_mask(hiv, x); inside; inside &= inside - 1)
                    a[n++] = x[__builtin_ctz(inside)];
            }
            if ((double)k.m * hi < lane_sum(above_hi)) continue;  // F'(hi) < 0: the root lies above hi
            const double clipped = lane_sum(above_hi) + (double)(n_from_hi - n_above_hi) * hi;
            const double lam = mse_root(a, n, k.m, lo, hi, clipped);
            if (lam < 0) continue;
            const float bound = unclipped_bound(lam);  // in [lo, hi]: what lies outside (lo, hi) is counted
            int64_t n_clipped = bound < hi ? n_from_hi : n_above_hi;
            for (int64_t i = 0; i < n; ++i) n_clipped += a[i] > bound;
            return MseRoot{lam, k.m - n_clipped, lane_sum(acc_sq)};
        }
        acc_sq = (vd){};
    }
    for (int64_t j = 0; j < k.m; j += WF) {
        const vf v = load_padded(vb, j, k.valid);
        acc_sq = add_squares(acc_sq, v);
        vstore(a + j, abs_v(v));
    }
    const double lam = mse_root(a, k.m, k.m, 0, __builtin_inff(), 0);
    const float bound = unclipped_bound(lam);
    int64_t unclipped = 0;
    for (int64_t i = 0; i < k.m; ++i) unclipped += a[i] <= bound;
    return MseRoot{lam, unclipped, lane_sum(acc_sq)};
}

// The MSE rules on block y (k.m coordinates, all real: a flattened block or a server's sum), with `a` (k.m floats)
// as scratch: the dither's scale lam* as the "norm" rule gives it for the factor lam* / ||y|| (so the float is the
// one reference.server_scales and encode_flat give), and the float sent, lam* times the debias gain m / unclipped.
struct MseScale {
    float lambda, scale;
};
inline MseScale block_mse_scale(const float *y, const Block &k, float *a, bool debias) {
    const MseRoot r = block_mse_root(y, k, a);
    const double norm = __builtin_sqrt(r.sumsq);
    const float lambda = (float)(norm * (norm > 0 ? r.lam / norm : 0.0));
    const int64_t unclipped = debias && r.lam > 0 ? r.unclipped : k.m;
    const double gain = (double)k.m / (double)(unclipped > 0 ? unclipped : 1);
    return MseScale{lambda, (float)((double)lambda * gain)};
}

// ---------------------------------------------------------------- one-bit dithered codec
// The bits of block y: b_j = [y_j + tau_j >= 0], tau_j = lambda U(-1, 1) from the dither stream `key`.
inline void quantize_block(const float *y, const Block &k, float lambda, uint64_t key, uint64_t *wb) {
    const vf zero = {};
    for (int64_t j = 0; j < k.m; j += 64) {
        uint64_t word = 0;
        for (int l = 0; l < 64; l += WF) word |= (uint64_t)ge_mask(vload<vf>(y + j + l) + dither(key, j + l, lambda), zero) << l;
        wb[j / 64] = word;
    }
}

// DRIVE (Vargaftik et al., NeurIPS 2021): the signs of the flattened block, sent with the scale ||y||^2 / ||y||_1,
// so that <x_hat, x> = ||x||^2 exactly and the rest of the error is orthogonal to x (about (pi/2 - 1) ||x||^2 for
// a Gaussian block). No dither; an exact zero takes the sign of its dither draw, not +, so it adds no bias.
inline float drive_block(const float *y, const Block &k, uint64_t key, uint64_t *wb) {
    const vf zero = {};
    vd acc_l1 = {}, acc_sq = {};
    for (int64_t j = 0; j < k.m; j += 64) {
        uint64_t pos = 0, nonneg = 0;
        for (int l = 0; l < 64; l += WF) {
            const vf v = vload<vf>(y + j + l);
            acc_l1 = add_abs(acc_l1, v);
            acc_sq = add_squares(acc_sq, v);
            pos |= (uint64_t)gt_mask(v, zero) << l;
            nonneg |= (uint64_t)ge_mask(v, zero) << l;
        }
        const uint64_t ties = nonneg & ~pos;
        if (ties) {  // rare: hash the dither only for a word that holds a zero
            uint64_t draws = 0;
            for (int l = 0; l < 64; l += WF) draws |= (uint64_t)ge_mask(dither(key, j + l, 1.0f), zero) << l;
            pos |= ties & draws;
        }
        wb[j / 64] = pos;
    }
    // ||y||^2 summed over the block as quantized (not the caller's sum over x), so a server's rule matches a worker's
    const double l1 = lane_sum(acc_l1);
    return l1 > 0 ? (float)(lane_sum(acc_sq) / l1) : 0.0f;
}

int encode_1bit(const float *x, fobsgd_layout lay, int rotate, int rule, const double *lambda_factor,
                uint64_t seed, uint64_t step, uint64_t rank, float *work, uint64_t *bits,
                float *scales, int n_threads) {
    const int64_t wstride = max_block(lay);
    int status = FOBSGD_OK;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) if (n_threads > 1)
    for (int64_t b = 0; b < lay.n_blocks; ++b) {
        const Block k = block_at(lay, b);
        float *y = work + thread_id() * wstride;
        const float *xb = x + k.off;
        vd acc_sq = {};
        if (rotate) {
            const uint64_t key = stream_key(seed, step, block_id(lay, b), kSharedRank, kPurposeSign);
            for (int64_t j = 0; j < k.m; j += 64) {
                const uint64_t s = stream_word(key, (uint64_t)(j / 64));
                for (int l = 0; l < 64; l += WF) {
                    vf v = load_padded(xb, j + l, k.valid);
                    acc_sq = add_squares(acc_sq, v);
                    vstore(y + j + l, select_bits(s >> l, negate(v), v));
                }
            }
            fwht_row(y, k.log_m, (float)(1.0 / __builtin_sqrt((double)k.m)));
        } else {
            for (int64_t j = 0; j < k.m; j += WF) {
                vf v = load_padded(xb, j, k.valid);
                acc_sq = add_squares(acc_sq, v);
                vstore(y + j, v);
            }
        }
        const double sumsq = lane_sum(acc_sq);
        if (!__builtin_isfinite(sumsq)) {
#pragma omp atomic write
            status = FOBSGD_ENONFINITE;
            continue;
        }
        if (rule == FOBSGD_LAMBDA_MSE || rule == FOBSGD_LAMBDA_MSE_DEBIAS) {
            const Block all = {k.off, k.m, k.m, k.log_m};  // after the transform every coordinate is real
            const MseScale s = block_mse_scale(y, all, work + (n_threads + thread_id()) * wstride,
                                               rule == FOBSGD_LAMBDA_MSE_DEBIAS);
            scales[b] = s.scale;
            quantize_block(y, k, s.lambda, stream_key(seed, step, block_id(lay, b), rank, kPurposeDither),
                           bits + k.off / 64);
            continue;
        }
        if (rule == FOBSGD_LAMBDA_DRIVE) {
            const uint64_t key = stream_key(seed, step, block_id(lay, b), rank, kPurposeDither);
            scales[b] = drive_block(y, k, key, bits + k.off / 64);
            continue;
        }
        const float by_norm = (float)(__builtin_sqrt(sumsq) * lambda_factor[b]);
        float lambda = by_norm;
        if (rule != FOBSGD_LAMBDA_NORM) {
            vf mx = {};
            for (int64_t j = 0; j < k.m; j += WF) {
                vf a = abs_v(vload<vf>(y + j));
                mx = a > mx ? a : mx;
            }
            float by_max = 0;
            for (int l = 0; l < WF; ++l) by_max = mx[l] > by_max ? mx[l] : by_max;
            lambda = rule == FOBSGD_LAMBDA_MAX || by_max < by_norm ? by_max : by_norm;
        }
        scales[b] = lambda;
        quantize_block(y, k, lambda, stream_key(seed, step, block_id(lay, b), rank, kPurposeDither), bits + k.off / 64);
    }
    return status;
}

int decode_1bit(const uint64_t *bits, const float *scales, fobsgd_layout lay, int rotate,
                uint64_t seed, uint64_t step, float weight, int accumulate, float *work,
                float *out, int n_threads) {
    const int64_t wstride = max_block(lay);
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) if (n_threads > 1)
    for (int64_t b = 0; b < lay.n_blocks; ++b) {
        const Block k = block_at(lay, b);
        const uint64_t *wb = bits + k.off / 64;
        float *ob = out + k.off;
        float *y = work + thread_id() * wstride;
        uint64_t sign_key = 0;
        const vf zero = {}, ones = zero + 1.0f;
        if (rotate) {
            for (int64_t j = 0; j < k.m; j += 64)
                for (int l = 0; l < 64; l += WF)
                    vstore(y + j + l, select_bits(wb[j / 64] >> l, ones, negate(ones)));
            fwht_row(y, k.log_m, (float)((double)weight * scales[b] / __builtin_sqrt((double)k.m)));
            sign_key = stream_key(seed, step, block_id(lay, b), kSharedRank, kPurposeSign);
        } else {
            const vf av = zero + weight * scales[b];
            for (int64_t j = 0; j < k.m; j += 64)
                for (int l = 0; l < 64; l += WF)
                    vstore(y + j + l, select_bits(wb[j / 64] >> l, av, negate(av)));
        }
        for (int64_t j = 0; j < k.valid; j += 64) {
            const uint64_t s = rotate ? stream_word(sign_key, (uint64_t)(j / 64)) : 0;
            for (int l = 0; l < 64 && j + l < k.valid; l += WF) {
                vf v = vload<vf>(y + j + l);
                v = select_bits(s >> l, negate(v), v);
                if (j + l + WF <= k.valid) {
                    vstore(ob + j + l, accumulate ? vload<vf>(ob + j + l) + v : v);
                } else {
                    for (int t = 0; j + l + t < k.valid; ++t) ob[j + l + t] = accumulate ? ob[j + l + t] + v[t] : v[t];
                }
            }
        }
    }
    return FOBSGD_OK;
}

int aggregate_1bit(const uint8_t *payloads, int64_t n, int64_t stride, int64_t scales_offset,
                   const float *weights, fobsgd_layout lay, float *out, int n_threads) {
    const bool stream = streams(lay.d);
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) if (n_threads > 1)
    for (int64_t b = 0; b < lay.n_blocks; ++b) {
        const Block k = block_at(lay, b);
        for (int64_t j = 0; j < k.m; j += 64) {
            vf acc[64 / WF] = {};  // one word's 64 sums stay in registers while the payloads stream by
            for (int64_t i = 0; i < n; ++i) {
                const uint8_t *p = payloads + i * stride;
                float s;
                __builtin_memcpy(&s, p + scales_offset + 4 * b, 4);
                uint64_t w;
                __builtin_memcpy(&w, p + 8 * ((k.off + j) / 64), 8);
                const vf c = (vf){} + weights[i] * s;
#pragma GCC unroll 16
                for (int q = 0; q < 64 / WF; ++q) acc[q] += signed_lanes(w >> (q * WF), c);
            }
            for (int q = 0; q < 64 / WF; ++q) vput(out + k.off + j + q * WF, acc[q], stream);
        }
        fence_streams(stream);
    }
    return FOBSGD_OK;
}

// ---------------------------------------------------------------- scaled sign, plain sign, vote
// The bits of a word of 64 sign bits or votes that went neither way (an exact zero, a tied
// vote): all + for FOBSGD_TIES_POSITIVE, else word `i` of the block's shared stream `purpose`.
inline uint64_t tie_word(int ties, uint64_t key, int64_t i) {
    return ties == FOBSGD_TIES_POSITIVE ? ~(uint64_t)0 : stream_word(key, (uint64_t)i);
}
inline uint64_t tie_key(const fobsgd_layout &lay, int64_t b, uint64_t seed, uint64_t step, uint64_t purpose) {
    return stream_key(seed, step, block_id(lay, b), kSharedRank, purpose);
}
// Words of block k that the payload holds: up to its end, or to n_words for a shorter payload.
inline int64_t block_words(const Block &k, int64_t n_words) { return min64(k.m, 64 * n_words - k.off) / 64; }

int scaled_sign_encode(const float *x, fobsgd_layout lay, int ties, uint64_t seed, uint64_t step,
                       uint64_t *bits, int64_t n_words, float *scales, int n_threads) {
    int status = FOBSGD_OK;
    const vf zero = {};
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) if (n_threads > 1)
    for (int64_t b = 0; b < lay.n_blocks; ++b) {
        const Block k = block_at(lay, b);
        const float *xb = x + k.off;
        const uint64_t key = tie_key(lay, b, seed, step, kPurposeZeroSign);
        vd acc_l1 = {};
        for (int64_t i = 0; i < block_words(k, n_words); ++i) {
            const int64_t j = 64 * i;
            uint64_t pos = 0, nonneg = 0;
            for (int l = 0; l < 64; l += WF) {
                vf v = load_padded(xb, j + l, k.valid);
                acc_l1 = add_abs(acc_l1, v);
                pos |= (uint64_t)gt_mask(v, zero) << l;
                nonneg |= (uint64_t)ge_mask(v, zero) << l;
            }
            uint64_t word = pos | (nonneg & ~pos & tie_word(ties, key, i));
            if (k.valid - j < 64) word &= k.valid > j ? ((uint64_t)1 << (k.valid - j)) - 1 : 0;
            bits[(k.off + j) / 64] = word;
        }
        const double l1 = lane_sum(acc_l1);
        if (!__builtin_isfinite(l1)) {
#pragma omp atomic write
            status = FOBSGD_ENONFINITE;
        }
        if (scales) scales[b] = k.valid ? (float)(l1 / (double)k.valid) : 0.0f;
    }
    return status;
}

int scaled_sign_decode(const uint64_t *bits, const float *scales, fobsgd_layout lay, float weight,
                       int accumulate, float *out, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) if (n_threads > 1)
    for (int64_t b = 0; b < lay.n_blocks; ++b) {
        const Block k = block_at(lay, b);
        const float a = weight * (scales ? scales[b] : 1.0f);
        const vf av = (vf){} + a;
        float *ob = out + k.off;
        for (int64_t j = 0; j < k.valid; j += WF) {
            const uint64_t w = bits[(k.off + j) / 64] >> (j % 64);
            const vf v = select_bits(w, av, negate(av));
            if (j + WF <= k.valid) {
                vstore(ob + j, accumulate ? vload<vf>(ob + j) + v : v);
            } else {
                for (int t = 0; j + t < k.valid; ++t) ob[j + t] = accumulate ? ob[j + t] + v[t] : v[t];
            }
        }
    }
    return FOBSGD_OK;
}

// QSGD: per coordinate level = floor(levels |x| / ||x_b||_2 + u), u from the rank's stream
// (purpose 3, word j >> 11 times 2^-53), code = min(level, levels) << 1 | [x < 0] in `width` bits,
// coordinate-major and little-endian over the padded length (padding codes 0). A block starts on
// a word (offsets are multiples of 64) and 64 codes fill exactly `width` words, so blocks write
// disjoint words. The arithmetic is fobsgd_mpi/reference.py's, operation for operation in double.
int qsgd_encode(const float *x, fobsgd_layout lay, int levels, int width, uint64_t seed, uint64_t step,
                uint64_t rank, uint64_t *codes, float *norms, int n_threads) {
    int status = FOBSGD_OK;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) if (n_threads > 1)
    for (int64_t b = 0; b < lay.n_blocks; ++b) {
        const Block k = block_at(lay, b);
        const float *xb = x + k.off;
        vd acc = {};
        for (int64_t j = 0; j < k.valid; j += WF) acc = add_squares(acc, load_padded(xb, j, k.valid));
        const double sum_sq = lane_sum(acc);
        if (!__builtin_isfinite(sum_sq)) {
#pragma omp atomic write
            status = FOBSGD_ENONFINITE;
            continue;
        }
        const float norm = (float)__builtin_sqrt(sum_sq);
        norms[b] = norm;
        const uint64_t key = stream_key(seed, step, block_id(lay, b), rank, kPurposeQSGD);
        uint64_t *wb = codes + k.off / 64 * width;
        for (int64_t i = 0; i < k.m / 64 * width; ++i) wb[i] = 0;
        for (int64_t j = 0; j < k.valid; ++j) {
            const double xj = (double)xb[j];
            uint64_t level = 0;
            if (norm > 0) {
                const double u = (double)(stream_word(key, (uint64_t)j) >> 11) * 0x1p-53;
                const double l = __builtin_floor((double)levels * __builtin_fabs(xj) / (double)norm + u);
                level = l < (double)levels ? (uint64_t)l : (uint64_t)levels;
            }
            const uint64_t code = level << 1 | (uint64_t)(xj < 0);
            const int64_t pos = j * width;
            wb[pos / 64] |= code << (pos % 64);
            if (pos % 64 + width > 64) wb[pos / 64 + 1] |= code >> (64 - pos % 64);
        }
    }
    return status;
}

int qsgd_decode(const uint64_t *codes, const float *norms, fobsgd_layout lay, int levels, int width, float weight,
                int accumulate, float *out, int n_threads) {
    const uint64_t mask = ((uint64_t)1 << width) - 1;
    const float levels_f = (float)levels;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) if (n_threads > 1)
    for (int64_t b = 0; b < lay.n_blocks; ++b) {
        const Block k = block_at(lay, b);
        const uint64_t *wb = codes + k.off / 64 * width;
        float *ob = out + k.off;
        for (int64_t j = 0; j < k.valid; ++j) {
            const int64_t pos = j * width;
            uint64_t code = wb[pos / 64] >> (pos % 64);
            if (pos % 64 + width > 64) code |= wb[pos / 64 + 1] << (64 - pos % 64);
            code &= mask;
            float v = (float)(code >> 1) / levels_f;
            v = weight * ((code & 1 ? -v : v) * norms[b]);
            ob[j] = accumulate ? ob[j] + v : v;
        }
    }
    return FOBSGD_OK;
}

// Bit-sliced counters: planes[p] holds bit p of the per-position count; one add ripples a carry.
// Then + where count > n/2, and where count == n/2 (a tie, n even) the tie rule decides.
int majority_vote(const uint64_t *words, int64_t n, int64_t stride, int64_t n_words, fobsgd_layout lay,
                  int ties, uint64_t seed, uint64_t step, uint64_t *out) {
    if (n <= 0 || n >= ((int64_t)1 << 31)) return FOBSGD_EINVAL;
    const int n_planes = ilog2((int)n) + 1;
    const uint64_t half = (uint64_t)n / 2;
    for (int64_t b = 0; b < lay.n_blocks; ++b) {
        const Block k = block_at(lay, b);
        const uint64_t key = tie_key(lay, b, seed, step, kPurposeVoteTie);
        for (int64_t i = 0; i < block_words(k, n_words); ++i) {
            const int64_t w = k.off / 64 + i;
            uint64_t planes[32] = {};
            for (int64_t r = 0; r < n; ++r) {
                uint64_t carry = words[r * stride + w];
                for (int p = 0; p < n_planes && carry; ++p) {
                    const uint64_t sum = planes[p] ^ carry;
                    carry &= planes[p];
                    planes[p] = sum;
                }
            }
            uint64_t gt = 0, eq = ~(uint64_t)0;  // count > half, count == half
            for (int p = n_planes - 1; p >= 0; --p) {
                if ((half >> p) & 1) {
                    eq &= planes[p];
                } else {
                    gt |= eq & planes[p];
                    eq &= ~planes[p];
                }
            }
            out[w] = gt | (n % 2 ? 0 : eq & tie_word(ties, key, i));
        }
    }
    return FOBSGD_OK;
}

// ---------------------------------------------------------------- scales per segment (a model's tensors)
// Segment s covers coordinates [starts[s], starts[s + 1]); starts[n_segments] is the vector's length.
int segment_abs_means(const float *x, const int64_t *starts, int64_t n_segments, float *means, int n_threads) {
    int status = FOBSGD_OK;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) if (n_threads > 1)
    for (int64_t s = 0; s < n_segments; ++s) {
        const int64_t end = starts[s + 1];
        vd acc = {};
        int64_t j = starts[s];
        for (; j + WF <= end; j += WF) acc = add_abs(acc, vload<vf>(x + j));
        double sum = lane_sum(acc);
        for (; j < end; ++j) sum += __builtin_fabsf(x[j]);
        if (!__builtin_isfinite(sum)) {
#pragma omp atomic write
            status = FOBSGD_ENONFINITE;
        }
        means[s] = end > starts[s] ? (float)(sum / (double)(end - starts[s])) : 0.0f;
    }
    return status;
}

// out[j] (+)= weight * scales[s] * (2 b_j - 1) over segment s, b_j bit j of the little-endian words.
int segment_sign_decode(const uint64_t *bits, const int64_t *starts, int64_t n_segments, const float *scales,
                        float weight, int accumulate, float *out, int n_threads) {
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) if (n_threads > 1)
    for (int64_t s = 0; s < n_segments; ++s) {
        const float a = weight * scales[s];
        const vf pos = (vf){} + a, neg = (vf){} - a;
        const int64_t end = starts[s + 1];
        int64_t j = starts[s];
        for (; j < end && (j % WF || j + WF > end); ++j) {  // up to a whole vector of WF (which divides 64)
            const float v = (bits[j / 64] >> (j % 64)) & 1 ? a : -a;
            out[j] = accumulate ? out[j] + v : v;
        }
        for (; j + WF <= end; j += WF) {
            const vf v = select_bits(bits[j / 64] >> (j % 64), pos, neg);
            vstore(out + j, accumulate ? vload<vf>(out + j) + v : v);
        }
        for (; j < end; ++j) {
            const float v = (bits[j / 64] >> (j % 64)) & 1 ? a : -a;
            out[j] = accumulate ? out[j] + v : v;
        }
    }
    return FOBSGD_OK;
}

// out[j] = sum_i weights[i] * scale_i[s] * (2 b_ij - 1) over segment s, from n payload rows of `stride` bytes
// (bits from byte 0, float32 scales from scales_offset), rows added in order as segment_sign_decode row by row
// adds them (the first row stored, not added to zero: -0.0 stays -0.0). Whole words keep their 64 sums in
// registers while the rows stream by; a segment's partial words at its ends go coordinate by coordinate.
inline float row_scale(const uint8_t *row, int64_t scales_offset, int64_t s) {
    float scale;
    __builtin_memcpy(&scale, row + scales_offset + 4 * s, 4);
    return scale;
}
inline uint64_t row_word(const uint8_t *row, int64_t j) {
    uint64_t w;
    __builtin_memcpy(&w, row + 8 * (j / 64), 8);
    return w;
}
inline float segment_coordinate_sum(const uint8_t *payloads, int64_t n, int64_t stride, int64_t scales_offset,
                                    const float *weights, int64_t s, int64_t j) {
    float acc = 0;
    for (int64_t i = 0; i < n; ++i) {
        const uint8_t *row = payloads + i * stride;
        const float a = weights[i] * row_scale(row, scales_offset, s);
        const float v = (row_word(row, j) >> (j % 64)) & 1 ? a : -a;
        acc = i ? acc + v : v;
    }
    return acc;
}

int segment_sign_aggregate(const uint8_t *payloads, int64_t n, int64_t stride, int64_t scales_offset,
                           const float *weights, const int64_t *starts, int64_t n_segments, float *out,
                           int n_threads) {
    const bool stream = streams(starts[n_segments]);
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) if (n_threads > 1)
    for (int64_t s = 0; s < n_segments; ++s) {
        const int64_t end = starts[s + 1];
        const int64_t words_from = min64(end, (starts[s] + 63) / 64 * 64);
        const int64_t words_to = words_from + (end - words_from) / 64 * 64;
        for (int64_t j = starts[s]; j < words_from; ++j)
            out[j] = segment_coordinate_sum(payloads, n, stride, scales_offset, weights, s, j);
        for (int64_t j = words_from; j < words_to; j += 64) {
            const uint64_t w0 = row_word(payloads, j);
            const vf c0 = (vf){} + weights[0] * row_scale(payloads, scales_offset, s);
            vf acc[64 / WF];
            for (int q = 0; q < 64 / WF; ++q) acc[q] = signed_lanes(w0 >> (q * WF), c0);
            for (int64_t i = 1; i < n; ++i) {
                const uint8_t *row = payloads + i * stride;
                const uint64_t w = row_word(row, j);
                const vf c = (vf){} + weights[i] * row_scale(row, scales_offset, s);
#pragma GCC unroll 16
                for (int q = 0; q < 64 / WF; ++q) acc[q] += signed_lanes(w >> (q * WF), c);
            }
            for (int q = 0; q < 64 / WF; ++q) vput(out + j + q * WF, acc[q], stream);
        }
        for (int64_t j = words_to; j < end; ++j)
            out[j] = segment_coordinate_sum(payloads, n, stride, scales_offset, weights, s, j);
        fence_streams(stream);
    }
    return FOBSGD_OK;
}

int mse_scales(const float *v, fobsgd_layout lay, float *work, double *lams, int64_t *unclipped, double *norms,
               int n_threads) {
    const int64_t wstride = max_block(lay);
    int status = FOBSGD_OK;
#pragma omp parallel for num_threads(n_threads) schedule(dynamic, 1) if (n_threads > 1)
    for (int64_t b = 0; b < lay.n_blocks; ++b) {
        const Block k = block_at(lay, b);
        const MseRoot r = block_mse_root(v + k.off, k, work + thread_id() * wstride);
        if (!__builtin_isfinite(r.sumsq)) {
#pragma omp atomic write
            status = FOBSGD_ENONFINITE;
            continue;
        }
        norms[b] = __builtin_sqrt(r.sumsq);
        lams[b] = r.lam;
        unclipped[b] = r.unclipped;
    }
    return status;
}

extern const KernelTable table = {
    FOBSGD_ISA_NAME, fwht<float>,       fwht<double>,       fwht_plan,    encode_1bit,  decode_1bit,
    aggregate_1bit,  scaled_sign_encode, scaled_sign_decode, majority_vote, qsgd_encode,
    qsgd_decode,     mse_scales,        segment_abs_means, segment_sign_decode, segment_sign_aggregate,
};

// Walsh-Hadamard transform, included by kernels.inl inside an instruction-set namespace (after
// its vector types, vload/vstore, seq/make_seq and ilog2).
//
// Bit-exactness with the numpy reference: every element goes through the stages in the same
// order (stride 1, 2, 4, ...) with the same a+b / a-b operations (a-b may run as the exact FMA
// a + (-1)*b), and the scale multiplies the finished result; the schedules below only change the
// memory order, not the arithmetic.
//
// Schedule of one row of 2^L elements, chosen per (instruction set, CPU model, log_n) from the
// measured table in fwht_plan.h (python benchmarks/fwht.py --tune writes it):
//   L < log2(W):          scalar loop;
//   L <= log2(W) + 4:     the whole row in registers (AVX2: up to 128 floats in 16 ymm);
//   otherwise             base pass (in-vector stages + r0 cross-vector stages on 2^r0
//                         registers), then radix passes of up to `radix` stages on L1 chunks
//                         of 2^c1, then on L2 tiles of 2^tile; the stages above the tile run
//                         on column strips (2^S rows of `strip` elements gathered into a
//                         per-thread buffer: the first pass reads the rows, the last writes
//                         them back with the scale), so a row bigger than L2 costs two passes
//                         over memory instead of one per radix pass.

struct FwhtPlan {
    int8_t r0;     // cross-vector stages of the base pass (1..4)
    int8_t radix;  // most stages per later pass (1..4)
    int8_t c1;     // log2 of the L1 chunk
    int8_t tile;   // log2 of the L2 tile; stages above it run on strips
    int8_t strip;  // log2 of the strip width in elements
    int8_t narrower;  // 1: the next narrower instruction set's kernel runs this size (measured faster here)
};

// Plans measured per CPU model (a hall of fame, as FFHT keeps one): CPUs of one instruction set
// differ (on a Zen 4 the Zen 5's avx512 plan for 2^24 took 13.5 ms against its own plan's 12.3 ms
// in the tuner, benchmarks/fwht_tune.txt), so each tuned CPU keeps its rows and a retune on one
// machine does not overwrite another's.
struct FwhtPlans {
    const char *vendor;     // CPUID vendor string, "AuthenticAMD" / "GenuineIntel"
    int family, model;      // CPUID display family and model; model -1: any model of the family
    FwhtPlan plan[2][31];   // [float64][log2 n]
};

#include "fwht_plan.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#endif

// The entry measured on this CPU model, else on its family, else the table's first.
inline const FwhtPlans &cpu_plans() {
    static const FwhtPlans *chosen = [] {
        const int n = (int)(sizeof kFwhtPlans / sizeof kFwhtPlans[0]);
        char vendor[13] = {};
        int family = -1, model = -1;
#if defined(__x86_64__) || defined(__i386__)
        unsigned a, b, c, d;
        if (__get_cpuid(0, &a, &b, &c, &d)) {
            __builtin_memcpy(vendor, &b, 4), __builtin_memcpy(vendor + 4, &d, 4), __builtin_memcpy(vendor + 8, &c, 4);
            __get_cpuid(1, &a, &b, &c, &d);
            family = (int)((a >> 8) & 15), model = (int)((a >> 4) & 15);
            if (family == 15) family += (int)((a >> 20) & 255);
            if (family == 6 || family >= 15) model += (int)((a >> 12) & 240);
        }
#endif
        const FwhtPlans *same_family = nullptr;
        for (int i = 0; i < n; ++i) {
            const FwhtPlans &e = kFwhtPlans[i];
            if (__builtin_strcmp(e.vendor, vendor) || e.family != family) continue;
            if (e.model == model) return &e;
            if (e.model < 0 && !same_family) same_family = &e;
        }
        return same_family ? same_family : &kFwhtPlans[0];
    }();
    return *chosen;
}

// t + s * x with s = +-1: exact (s * x is), so an FMA gives the same bits as add/sub.
inline vf sign_add(vf t, vf s, vf x) {
#if defined(__AVX512F__)
    return _mm512_fmadd_ps(s, x, t);
#elif defined(__FMA__)
    return _mm256_fmadd_ps(s, x, t);
#else
    return t + s * x;
#endif
}
inline vd sign_add(vd t, vd s, vd x) {
#if defined(__AVX512F__)
    return _mm512_fmadd_pd(s, x, t);
#elif defined(__FMA__)
    return _mm256_fmadd_pd(s, x, t);
#else
    return t + s * x;
#endif
}

// a - b computed as a + (-1) * b where an FMA exists: the same bits (the product is exact), but on
// the FMA pipes. AMD's Zen cores add on two pipes and multiply-add on two others, so a butterfly
// split across them runs the cross-vector stages on four (Zen 4, avx2, a radix-3 pass over a 2^12
// row in L1: 208 -> 158 ns, README "FWHT kernel"); Intel's cores add on the FMA pipes anyway.
template <class V> inline void butterfly(V &a, V &b) {
    V s = a + b;
#if defined(__FMA__) || defined(__AVX512F__)
    b = sign_add(a, V{} - 1, b);
#else
    b = a - b;
#endif
    a = s;
}

// One stage of stride H inside a vector: lane i pairs with lane i^H; the lower lane gets a + b,
// the upper b' - a' written as partner - self, i.e. partner + (-1) * self.
template <class V, int H, int... Is> inline V lane_stage(V x, seq<Is...>) {
    const V t = __builtin_shufflevector(x, x, (Is ^ H)...);
    const V s = {((Is & H) ? -1 : 1)...};
    return sign_add(t, s, x);
}
template <class V, int W, int H> struct LaneStages {
    static inline V run(V x) {
        return LaneStages<V, W, H * 2>::run(lane_stage<V, H>(x, typename make_seq<W>::type()));
    }
};
template <class V, int W> struct LaneStages<V, W, W> {
    static inline V run(V x) { return x; }
};

// R stages across 2^R vectors v[k], v[k + 2^t], stride order low to high.
// Fully unrolled, so v[] stays in registers (GCC's default heuristics keep it on the stack).
template <class V, int R> inline void cross_stages(V *v) {
#pragma GCC unroll 8
    for (int t = 0; t < R; ++t)
#pragma GCC unroll 16
        for (int k = 0; k < (1 << R); ++k)
            if (!(k & (1 << t))) butterfly(v[k], v[k | (1 << t)]);
}

// The first log2(W) + R stages on consecutive runs of 2^R vectors (R = L - log2 W: the whole row).
// Software-pipelined: the in-vector stages of the next run (shuffles and FMAs, a long dependent
// chain per vector) are issued beside the cross-vector stages of this one (adds), which the
// out-of-order window alone does not overlap (Zen 4, avx2, r0 = 2 over a 2^12 row in L1: 537 ->
// 374 ns).
template <class V, int W, int NV, class T> inline void load_lane_stages(V *v, const T *x) {
    #pragma GCC unroll 16
    for (int k = 0; k < NV; ++k) v[k] = LaneStages<V, W, 1>::run(vload<V>(x + k * W));
}
template <class T, int R> void base_pass(T *x, int64_t n, bool do_scale, T scale) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W, NV = 1 << R;
    V v[NV], next[NV] = {};
    load_lane_stages<V, W, NV>(v, x);
    for (int64_t i = 0; i < n; i += NV * W) {
        if (i + NV * W < n) load_lane_stages<V, W, NV>(next, x + i + NV * W);
        cross_stages<V, R>(v);
        if (do_scale)
            #pragma GCC unroll 16
            for (int k = 0; k < NV; ++k) v[k] *= scale;
        #pragma GCC unroll 16
        for (int k = 0; k < NV; ++k) vstore(x + i + k * W, v[k]);
        #pragma GCC unroll 16
        for (int k = 0; k < NV; ++k) v[k] = next[k];
    }
}
template <class T> void base_stages(T *x, int64_t n, int r, bool do_scale, T scale) {
    switch (r) {
    case 0: return base_pass<T, 0>(x, n, do_scale, scale);
    case 1: return base_pass<T, 1>(x, n, do_scale, scale);
    case 2: return base_pass<T, 2>(x, n, do_scale, scale);
    case 3: return base_pass<T, 3>(x, n, do_scale, scale);
    default: return base_pass<T, 4>(x, n, do_scale, scale);
    }
}

// R stages of row stride h on rows of `width` elements (width a multiple of W): row i of src
// is src + i * srs, of dst dst + i * drs (src == dst: in place). n_rows rows in all.
template <class T, int R>
void rows_pass(const T *src, int64_t srs, T *dst, int64_t drs, int64_t n_rows, int64_t h, int64_t width,
               bool do_scale, T scale) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    for (int64_t g = 0; g < n_rows; g += h << R)
        for (int64_t i = g; i < g + h; ++i)
            for (int64_t c = 0; c < width; c += W) {
                V v[1 << R];
                #pragma GCC unroll 16
                for (int k = 0; k < (1 << R); ++k) v[k] = vload<V>(src + (i + k * h) * srs + c);
                cross_stages<V, R>(v);
                if (do_scale)
                    #pragma GCC unroll 16
                    for (int k = 0; k < (1 << R); ++k) v[k] *= scale;
                #pragma GCC unroll 16
                for (int k = 0; k < (1 << R); ++k) vstore(dst + (i + k * h) * drs + c, v[k]);
            }
}
template <class T>
void rows_stages(int r, const T *src, int64_t srs, T *dst, int64_t drs, int64_t n_rows, int64_t h, int64_t width,
                 bool do_scale, T scale) {
    switch (r) {
    case 1: return rows_pass<T, 1>(src, srs, dst, drs, n_rows, h, width, do_scale, scale);
    case 2: return rows_pass<T, 2>(src, srs, dst, drs, n_rows, h, width, do_scale, scale);
    case 3: return rows_pass<T, 3>(src, srs, dst, drs, n_rows, h, width, do_scale, scale);
    default: return rows_pass<T, 4>(src, srs, dst, drs, n_rows, h, width, do_scale, scale);
    }
}

// R consecutive stages starting at stride h (h >= W), one pass over x[0, n) in place.
template <class T, int R> void radix_pass(T *x, int64_t n, int64_t h, bool do_scale, T scale) {
    typedef typename Lanes<T>::V V;
    constexpr int W = Lanes<T>::W;
    const int64_t span = h << R;
    for (int64_t g = 0; g < n; g += span)
        for (int64_t j = 0; j < h; j += W) {
            T *p = x + g + j;
            V v[1 << R];
            #pragma GCC unroll 16
            for (int k = 0; k < (1 << R); ++k) v[k] = vload<V>(p + k * h);
            cross_stages<V, R>(v);
            if (do_scale)
                #pragma GCC unroll 16
                for (int k = 0; k < (1 << R); ++k) v[k] *= scale;
            #pragma GCC unroll 16
            for (int k = 0; k < (1 << R); ++k) vstore(p + k * h, v[k]);
        }
}

// Stages [s_lo, s_hi) of x[0, n), s_lo >= log2 W, in place, in passes of up to `radix` stages
// split evenly (no lone radix-2 pass). Past a 2 KiB stride, 16 streams would crowd more than 8
// of them into one set of the L1 (measured: radix-16 at large strides ran 2x slower), so those
// passes take at most 8 streams.
template <class T> void radix_stages(T *x, int64_t n, int s_lo, int s_hi, int radix, bool do_scale, T scale) {
    while (s_lo < s_hi) {
        const int rmax = ((int64_t)sizeof(T) << s_lo) <= 2048 ? radix : (radix < 3 ? radix : 3);
        const int left = s_hi - s_lo, passes = (left + rmax - 1) / rmax;
        const int r = (left + passes - 1) / passes;
        const bool last = do_scale && s_lo + r == s_hi;
        const int64_t h = (int64_t)1 << s_lo;
        if (r == 4) radix_pass<T, 4>(x, n, h, last, scale);
        else if (r == 3) radix_pass<T, 3>(x, n, h, last, scale);
        else if (r == 2) radix_pass<T, 2>(x, n, h, last, scale);
        else radix_pass<T, 1>(x, n, h, last, scale);
        s_lo += r;
    }
}

// Stages [s_lo, s_hi) of x[0, 2^L) on strips: for each block of 2^s_hi elements and each column
// block of `sw` elements, the 2^S rows (S = s_hi - s_lo, row length 2^s_lo) of that column block
// go through buf (2^S * sw elements): first pass row -> buf, middle passes in buf, last buf -> row.
template <class T>
void strip_stages(T *x, int L, int s_lo, int s_hi, int64_t sw, int radix, T *buf, bool do_scale, T scale) {
    const int S = s_hi - s_lo;
    const int passes = (S + radix - 1) / radix;
    const int64_t rs = (int64_t)1 << s_lo, n_rows = (int64_t)1 << S;
    for (int64_t hi = 0; hi < ((int64_t)1 << L); hi += (int64_t)1 << s_hi)
        for (int64_t col = 0; col < rs; col += sw) {
            T *base = x + hi + col;
            int done = 0;
            for (int p = 0; p < passes; ++p) {
                const int r = (S - done + (passes - p) - 1) / (passes - p);
                const bool first = p == 0, last = p == passes - 1;
                const T *src = first ? base : buf;
                T *dst = last ? base : buf;
                rows_stages<T>(r, src, first ? rs : sw, dst, last ? rs : sw, n_rows, (int64_t)1 << done, sw,
                               last && do_scale, scale);
                done += r;
            }
        }
}

template <class T> void fwht_scalar(T *x, int64_t n, T scale) {
    for (int64_t h = 1; h < n; h *= 2)
        for (int64_t i = 0; i < n; i += 2 * h)
            for (int64_t j = i; j < i + h; ++j) {
                T a = x[j], b = x[j + h];
                x[j] = a + b;
                x[j + h] = a - b;
            }
    if (scale != T(1))
        for (int64_t j = 0; j < n; ++j) x[j] *= scale;
}

// Wide strips read each row as a long contiguous run that the hardware prefetchers follow
// (measured on Zen 5 at 2^24: strips of 1024 floats took 0.80x the time of strips of 64), so
// the strip buffer is sized for L2, not L1. It lives on the stack of the calling thread (256 KiB
// of the megabytes a thread gets), out of line so that small rows do not reserve it.
constexpr int64_t kStripBuf = 1 << 18;

template <class T>
__attribute__((noinline)) void above_tile(T *x, int L, int tile, const FwhtPlan &p, bool sc, T scale) {
    alignas(64) T buf[kStripBuf / sizeof(T)];
    int64_t sw = (int64_t)1 << (p.strip > ilog2(Lanes<T>::W) ? p.strip : ilog2(Lanes<T>::W));
    if (sw > ((int64_t)1 << tile)) sw = (int64_t)1 << tile;
    const int smax = ilog2((int)(kStripBuf / (int64_t)sizeof(T) / sw));
    const int S = L - tile, groups = (S + smax - 1) / smax;
    int s_lo = tile;
    for (int g = 0; g < groups; ++g) {
        const int s_hi = s_lo + (L - s_lo + (groups - g) - 1) / (groups - g);
        strip_stages<T>(x, L, s_lo, s_hi, sw, p.radix, buf, sc && s_hi == L, scale);
        s_lo = s_hi;
    }
}

template <class T> void fwht_row_plan(T *x, int L, T scale, const FwhtPlan &p) {
    constexpr int lw = ilog2(Lanes<T>::W);
    const int64_t n = (int64_t)1 << L;
    const bool sc = scale != T(1);
    if (L < lw) return fwht_scalar(x, n, scale);
    if (L <= lw + 4) return base_stages<T>(x, n, L - lw, sc, scale);
    const int r0 = p.r0 < 1 ? 1 : p.r0 > 4 ? 4 : p.r0, base = lw + r0;
    FwhtPlan q = p;
    q.radix = p.radix < 1 ? 1 : p.radix > 4 ? 4 : p.radix;
    int c1 = p.c1 < L ? p.c1 : L;
    c1 = c1 > base ? c1 : base;
    int tile = p.tile < L ? p.tile : L;
    tile = tile > c1 ? tile : c1;
    for (int64_t o2 = 0; o2 < n; o2 += (int64_t)1 << tile) {
        for (int64_t o1 = o2; o1 < o2 + ((int64_t)1 << tile); o1 += (int64_t)1 << c1) {
            base_stages<T>(x + o1, (int64_t)1 << c1, r0, sc && L == base, scale);
            radix_stages<T>(x + o1, (int64_t)1 << c1, base, c1, q.radix, sc && L == c1, scale);
        }
        radix_stages<T>(x + o2, (int64_t)1 << tile, c1, tile, q.radix, sc && L == tile, scale);
    }
    if (L > tile) above_tile<T>(x, L, tile, q, sc, scale);
}

// FOBSGD_NARROWER (isa_*.cpp) names the instruction set one step down, whose kernel a plan may
// hand a size to: on Zen 4, AVX-512 runs on 256-bit units and its 4 in-vector stages per 16 floats
// cost more than AVX2's 3 per 8 at some sizes.
#ifdef FOBSGD_NARROWER
inline const KernelTable &narrower_table() { return ::fobsgd::FOBSGD_NARROWER::table; }
inline void narrower_fwht(float *x, int L, float scale) { narrower_table().fwht_f32(x, 1, L, scale); }
inline void narrower_fwht(double *x, int L, double scale) { narrower_table().fwht_f64(x, 1, L, scale); }
#endif

template <class T> inline void fwht_row(T *x, int L, T scale) {
    const FwhtPlan &p = cpu_plans().plan[sizeof(T) == 8][L];
#ifdef FOBSGD_NARROWER
    if (p.narrower) return narrower_fwht(x, L, scale);
#endif
    fwht_row_plan(x, L, scale, p);
}

// The plan that runs rows of 2^log_n (f64: float64) on this CPU, the instruction set whose kernel
// runs them, and the family and model its entry was measured on (-1: any).
inline int fwht_plan(int log_n, int f64, int *fields, const char **isa, int *family, int *model) {
    if (log_n < 0 || log_n > 30) return FOBSGD_EINVAL;
    const FwhtPlans &e = cpu_plans();
    const FwhtPlan &p = e.plan[f64 != 0][log_n];
#ifdef FOBSGD_NARROWER
    if (p.narrower) return narrower_table().fwht_plan(log_n, f64, fields, isa, family, model);
#endif
    const int v[5] = {p.r0, p.radix, p.c1, p.tile, p.strip};
    for (int i = 0; i < 5; ++i) fields[i] = v[i];
    *isa = FOBSGD_ISA_NAME, *family = e.family, *model = e.model;
    return FOBSGD_OK;
}

template <class T> int fwht(T *x, int64_t n_rows, int log_n, T scale) {
    if (log_n < 0 || log_n > 30 || n_rows < 0) return FOBSGD_EINVAL;
    const int64_t n = (int64_t)1 << log_n;
    for (int64_t r = 0; r < n_rows; ++r) fwht_row(x + r * n, log_n, scale);
    return FOBSGD_OK;
}

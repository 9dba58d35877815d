// Run-time choice of instruction set and the C API on top of it.
#include <cstdlib>
#include <cstring>

#include "table.h"

namespace fobsgd {
namespace {

bool cpu_has(const char *isa) {
    if (!std::strcmp(isa, "generic")) return true;
#if defined(FOBSGD_X86_ISAS)
    __builtin_cpu_init();
    if (!std::strcmp(isa, "avx2")) return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    if (!std::strcmp(isa, "avx512"))
        return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
               __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl");
#endif
    return false;
}

const KernelTable *table_named(const char *isa) {
#if defined(FOBSGD_X86_ISAS)
    if (!std::strcmp(isa, "avx512")) return &avx512::table;
    if (!std::strcmp(isa, "avx2")) return &avx2::table;
#endif
    if (!std::strcmp(isa, "generic")) return &generic::table;
    return nullptr;
}

const KernelTable *best_table() {
    static const char *const preference[] = {"avx512", "avx2", "generic"};
    for (const char *isa : preference)
        if (cpu_has(isa) && table_named(isa)) return table_named(isa);
    return &generic::table;
}

// FOBSGD_ISA in the environment forces a level (tests use it to run every path the CPU offers).
const KernelTable *initial_table() {
    const char *forced = std::getenv("FOBSGD_ISA");
    if (forced && *forced && cpu_has(forced) && table_named(forced)) return table_named(forced);
    return best_table();
}

const KernelTable *active = initial_table();

}  // namespace
}  // namespace fobsgd

using fobsgd::active;

extern "C" {

int fobsgd_isa_supported(const char *name) {
    return name && fobsgd::cpu_has(name) && fobsgd::table_named(name) != nullptr;
}

int fobsgd_set_isa(const char *name) {
    if (!name) {
        active = fobsgd::best_table();
        return FOBSGD_OK;
    }
    if (!fobsgd_isa_supported(name)) return FOBSGD_EISA;
    active = fobsgd::table_named(name);
    return FOBSGD_OK;
}

const char *fobsgd_isa(void) { return active->name; }

int fobsgd_fwht_f32(float *x, int64_t n_rows, int log_n, float scale) {
    return active->fwht_f32(x, n_rows, log_n, scale);
}
int fobsgd_fwht_f64(double *x, int64_t n_rows, int log_n, double scale) {
    return active->fwht_f64(x, n_rows, log_n, scale);
}
int fobsgd_fwht_plan(int log_n, int f64, int *fields, const char **isa, int *cpu_family, int *cpu_model) {
    return active->fwht_plan(log_n, f64, fields, isa, cpu_family, cpu_model);
}
int fobsgd_encode_1bit(const float *x, fobsgd_layout layout, int rotate, int rule,
                       const double *lambda_factor, uint64_t seed, uint64_t step, uint64_t rank,
                       float *work, uint64_t *bits, float *scales, int n_threads) {
    return active->encode_1bit(x, layout, rotate, rule, lambda_factor, seed, step, rank, work, bits,
                               scales, n_threads);
}
int fobsgd_decode_1bit(const uint64_t *bits, const float *scales, fobsgd_layout layout, int rotate,
                       uint64_t seed, uint64_t step, float weight, int accumulate, float *work,
                       float *out, int n_threads) {
    return active->decode_1bit(bits, scales, layout, rotate, seed, step, weight, accumulate, work, out,
                               n_threads);
}
int fobsgd_aggregate_1bit(const uint8_t *payloads, int64_t n, int64_t stride,
                          int64_t scales_offset, const float *weights, fobsgd_layout layout,
                          float *out, int n_threads) {
    return active->aggregate_1bit(payloads, n, stride, scales_offset, weights, layout, out, n_threads);
}
int fobsgd_scaled_sign_encode(const float *x, fobsgd_layout layout, int ties, uint64_t seed,
                              uint64_t step, uint64_t *bits, int64_t n_words, float *scales,
                              int n_threads) {
    return active->scaled_sign_encode(x, layout, ties, seed, step, bits, n_words, scales, n_threads);
}
int fobsgd_scaled_sign_decode(const uint64_t *bits, const float *scales, fobsgd_layout layout,
                              float weight, int accumulate, float *out, int n_threads) {
    return active->scaled_sign_decode(bits, scales, layout, weight, accumulate, out, n_threads);
}
int fobsgd_majority_vote(const uint64_t *words, int64_t n, int64_t stride, int64_t n_words,
                         fobsgd_layout layout, int ties, uint64_t seed, uint64_t step, uint64_t *out) {
    return active->majority_vote(words, n, stride, n_words, layout, ties, seed, step, out);
}
int fobsgd_qsgd_encode(const float *x, fobsgd_layout layout, int levels, int width, uint64_t seed, uint64_t step,
                       uint64_t rank, uint64_t *codes, float *norms, int n_threads) {
    return active->qsgd_encode(x, layout, levels, width, seed, step, rank, codes, norms, n_threads);
}
int fobsgd_qsgd_decode(const uint64_t *codes, const float *norms, fobsgd_layout layout, int levels, int width,
                       float weight, int accumulate, float *out, int n_threads) {
    return active->qsgd_decode(codes, norms, layout, levels, width, weight, accumulate, out, n_threads);
}
int fobsgd_mse_scales(const float *v, fobsgd_layout layout, float *work, double *lams, int64_t *unclipped,
                      double *norms, int n_threads) {
    return active->mse_scales(v, layout, work, lams, unclipped, norms, n_threads);
}
int fobsgd_segment_abs_means(const float *x, const int64_t *starts, int64_t n_segments, float *means,
                             int n_threads) {
    return active->segment_abs_means(x, starts, n_segments, means, n_threads);
}
int fobsgd_segment_sign_decode(const uint64_t *bits, const int64_t *starts, int64_t n_segments,
                               const float *scales, float weight, int accumulate, float *out, int n_threads) {
    return active->segment_sign_decode(bits, starts, n_segments, scales, weight, accumulate, out, n_threads);
}
int fobsgd_segment_sign_aggregate(const uint8_t *payloads, int64_t n, int64_t stride, int64_t scales_offset,
                                  const float *weights, const int64_t *starts, int64_t n_segments, float *out,
                                  int n_threads) {
    return active->segment_sign_aggregate(payloads, n, stride, scales_offset, weights, starts, n_segments, out,
                                          n_threads);
}

}  // extern "C"

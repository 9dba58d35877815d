// One entry of function pointers per instruction set; isa_*.cpp fill them, dispatch.cpp picks one.
#ifndef FOBSGD_TABLE_H
#define FOBSGD_TABLE_H
#include "fobsgd.h"

namespace fobsgd {
struct KernelTable {
    const char *name;
    int (*fwht_f32)(float *, int64_t, int, float);
    int (*fwht_f64)(double *, int64_t, int, double);
    int (*fwht_plan)(int, int, int *, const char **, int *, int *);
    int (*encode_1bit)(const float *, fobsgd_layout, int, int, const double *, uint64_t, uint64_t,
                       uint64_t, float *, uint64_t *, float *, int);
    int (*decode_1bit)(const uint64_t *, const float *, fobsgd_layout, int, uint64_t, uint64_t, float,
                       int, float *, float *, int);
    int (*aggregate_1bit)(const uint8_t *, int64_t, int64_t, int64_t, const float *, fobsgd_layout,
                          float *, int);
    int (*scaled_sign_encode)(const float *, fobsgd_layout, int, uint64_t, uint64_t, uint64_t *, int64_t, float *,
                              int);
    int (*scaled_sign_decode)(const uint64_t *, const float *, fobsgd_layout, float, int, float *, int);
    int (*majority_vote)(const uint64_t *, int64_t, int64_t, int64_t, fobsgd_layout, int, uint64_t, uint64_t,
                         uint64_t *);
    int (*qsgd_encode)(const float *, fobsgd_layout, int, int, uint64_t, uint64_t, uint64_t, uint64_t *, float *,
                       int);
    int (*qsgd_decode)(const uint64_t *, const float *, fobsgd_layout, int, int, float, int, float *, int);
    int (*mse_scales)(const float *, fobsgd_layout, float *, double *, int64_t *, double *, int);
    int (*segment_abs_means)(const float *, const int64_t *, int64_t, float *, int);
    int (*segment_sign_decode)(const uint64_t *, const int64_t *, int64_t, const float *, float, int, float *, int);
    int (*segment_sign_aggregate)(const uint8_t *, int64_t, int64_t, int64_t, const float *, const int64_t *, int64_t,
                                  float *, int);
};
namespace generic { extern const KernelTable table; }
namespace avx2 { extern const KernelTable table; }
namespace avx512 { extern const KernelTable table; }
}  // namespace fobsgd
#endif

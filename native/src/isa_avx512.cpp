// Kernels for avx512; setup.py compiles this file with -mavx512f -mavx512dq -mavx512bw -mavx512vl.
#include "isa_prelude.h"
#define FOBSGD_VBYTES 64
#define FOBSGD_ISA_NAME "avx512"
#define FOBSGD_NARROWER avx2
namespace fobsgd {
namespace avx512 {
#include "kernels.inl"
}
}

// Kernels for avx2; setup.py compiles this file with -mavx2 -mfma.
#include "isa_prelude.h"
#define FOBSGD_VBYTES 32
#define FOBSGD_ISA_NAME "avx2"
#define FOBSGD_NARROWER generic
namespace fobsgd {
namespace avx2 {
#include "kernels.inl"
}
}

// Kernels for generic; setup.py compiles this file with none (the compiler's baseline: SSE2 on x86-64).
#include "isa_prelude.h"
#define FOBSGD_VBYTES 16
#define FOBSGD_ISA_NAME "generic"
namespace fobsgd {
namespace generic {
#include "kernels.inl"
}
}

// pybind11 shim of the CUDA kernels (fobsgd_cuda.h). Tensors arrive as device addresses (Python
// ints from tensor.data_ptr()) and the stream as torch's cudaStream_t handle, so this module needs
// no torch headers; fobsgd_mpi/native.py checks devices, dtypes and sizes before calling. The
// layout's offsets and log sizes are host arrays, its block ids a device address (0: block b).
// Importing launches nothing.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <stdexcept>

#include "fobsgd_cuda.h"

namespace py = pybind11;

template <class T> using arr = py::array_t<T, py::array::c_style | py::array::forcecast>;
template <class T> T *dev(uintptr_t address) { return reinterpret_cast<T *>(address); }
static cudaStream_t stream_of(uintptr_t handle) { return reinterpret_cast<cudaStream_t>(handle); }

static fobsgd_layout layout_of(const arr<int64_t> &offsets, const arr<int32_t> &log_sizes, int64_t d,
                               uintptr_t block_ids) {
    if (offsets.size() != log_sizes.size()) throw std::invalid_argument("offsets and log_sizes differ in length");
    return fobsgd_layout{offsets.data(), log_sizes.data(), (int64_t)offsets.size(), d, dev<const int64_t>(block_ids)};
}

PYBIND11_MODULE(_native_cuda, m) {
    m.doc() = "fobsgd CUDA kernels (see native/cuda/fobsgd_cuda.h); every call returns a cudaError_t (0: success)";
    m.def("error_string", [](int code) { return std::string(cudaGetErrorString((cudaError_t)code)); });
    m.def("fwht_f32", [](uintptr_t x, int64_t n_rows, int log_n, float scale, uintptr_t stream) {
        py::gil_scoped_release nogil;
        return fobsgd_cuda_fwht_f32(dev<float>(x), n_rows, log_n, scale, stream_of(stream));
    });
    m.def("encode_1bit", [](uintptr_t x, const arr<int64_t> &offsets, const arr<int32_t> &log_sizes, int64_t d,
                            uintptr_t block_ids, int rotate, int rule, uintptr_t lambda_factor, uint64_t seed,
                            uint64_t step, uint64_t rank, uintptr_t work, uintptr_t sumsq, uintptr_t bits,
                            uintptr_t scales, uintptr_t stream) {
        const fobsgd_layout lay = layout_of(offsets, log_sizes, d, block_ids);
        py::gil_scoped_release nogil;
        return fobsgd_cuda_encode_1bit(dev<const float>(x), lay, rotate, rule, dev<const double>(lambda_factor), seed,
                                       step, rank, dev<float>(work), dev<double>(sumsq), dev<uint64_t>(bits),
                                       dev<float>(scales), stream_of(stream));
    });
    m.def("decode_1bit", [](uintptr_t bits, uintptr_t scales, const arr<int64_t> &offsets,
                            const arr<int32_t> &log_sizes, int64_t d, uintptr_t block_ids, int rotate, uint64_t seed,
                            uint64_t step, float weight, bool accumulate, uintptr_t work, uintptr_t out,
                            uintptr_t stream) {
        const fobsgd_layout lay = layout_of(offsets, log_sizes, d, block_ids);
        py::gil_scoped_release nogil;
        return fobsgd_cuda_decode_1bit(dev<const uint64_t>(bits), dev<const float>(scales), lay, rotate, seed, step,
                                       weight, accumulate, dev<float>(work), dev<float>(out), stream_of(stream));
    });
    m.def("aggregate_1bit", [](uintptr_t payloads, int64_t n, int64_t stride, int64_t scales_offset, uintptr_t weights,
                               const arr<int64_t> &offsets, const arr<int32_t> &log_sizes, int64_t d, uintptr_t out,
                               uintptr_t stream) {
        const fobsgd_layout lay = layout_of(offsets, log_sizes, d, 0);
        py::gil_scoped_release nogil;
        return fobsgd_cuda_aggregate_1bit(dev<const uint8_t>(payloads), n, stride, scales_offset,
                                          dev<const float>(weights), lay, dev<float>(out), stream_of(stream));
    });
}

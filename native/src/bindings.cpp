// pybind11 shim: checks array kinds and sizes, releases the GIL, returns the kernel's status.
// Argument meaning is documented in fobsgd.h; fobsgd_mpi/native.py is the Python face.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <algorithm>
#include <stdexcept>
#include <string>

#include "fobsgd.h"

namespace py = pybind11;

template <class T> using arr = py::array_t<T, py::array::c_style>;

template <class T> T *data_of(arr<T> &a, const char *name, int64_t min_size) {
    if (a.size() < min_size)
        throw std::invalid_argument(std::string(name) + " holds " + std::to_string(a.size()) +
                                    " elements, needs at least " + std::to_string(min_size));
    return a.mutable_data();
}

static fobsgd_layout layout_of(arr<int64_t> &offsets, arr<int32_t> &log_sizes, int64_t d) {
    if (offsets.size() != log_sizes.size()) throw std::invalid_argument("offsets and log_sizes differ in length");
    return fobsgd_layout{offsets.data(), log_sizes.data(), (int64_t)offsets.size(), d, nullptr};
}

static fobsgd_layout layout_of(arr<int64_t> &offsets, arr<int32_t> &log_sizes, int64_t d, arr<int64_t> &block_ids) {
    fobsgd_layout lay = layout_of(offsets, log_sizes, d);
    lay.block_ids = data_of(block_ids, "block_ids", lay.n_blocks);
    return lay;
}

// Bits a QSGD code takes: a sign and ceil(log2(levels + 1)) level bits (compressors/qsgd.py).
static int qsgd_width(int levels) {
    if (levels < 1 || levels > (1 << 15) - 1) throw std::invalid_argument("qsgd levels must lie in 1..32767");
    int bits = 0;
    while ((1 << bits) < levels + 1) ++bits;
    return 1 + bits;
}

// The number of segments `starts` (n + 1 ascending offsets from 0) describes within a vector of `size` elements.
static int64_t segments_of(arr<int64_t> &starts, int64_t size) {
    const int64_t n = starts.size() - 1;
    const int64_t *p = starts.data();
    if (n < 1 || p[0] != 0 || p[n] > size)
        throw std::invalid_argument("starts must run from 0 to at most the vector's length");
    for (int64_t s = 0; s < n; ++s)
        if (p[s + 1] < p[s]) throw std::invalid_argument("starts must not decrease");
    return n;
}

static int64_t padded_length(const fobsgd_layout &lay) {
    if (!lay.n_blocks) return 0;
    return lay.offsets[lay.n_blocks - 1] + ((int64_t)1 << lay.log_sizes[lay.n_blocks - 1]);
}

template <class T> int fwht(arr<T> x, int log_n, T scale) {
    const int64_t n = (int64_t)1 << log_n;
    if (log_n < 0 || log_n > 30 || x.size() % n) throw std::invalid_argument("length is not a multiple of 2^log_n");
    T *p = x.mutable_data();
    const int64_t rows = x.size() / n;
    py::gil_scoped_release nogil;
    return sizeof(T) == 4 ? fobsgd_fwht_f32((float *)p, rows, log_n, (float)scale)
                          : fobsgd_fwht_f64((double *)p, rows, log_n, (double)scale);
}

#include "fwht_binding.inl"

PYBIND11_MODULE(_native, m) {
    m.doc() = "fobsgd native kernels (see native/include/fobsgd.h)";
    m.def("isa", &fobsgd_isa);
    m.def("isa_supported", [](const std::string &s) { return (bool)fobsgd_isa_supported(s.c_str()); });
    m.def("set_isa", [](py::object name) {
        return name.is_none() ? fobsgd_set_isa(nullptr) : fobsgd_set_isa(name.cast<std::string>().c_str());
    });
    m.def("fwht_f32", &fwht<float>, py::arg("x").noconvert(), py::arg("log_n"), py::arg("scale"));
    m.def("fwht_f64", &fwht<double>, py::arg("x").noconvert(), py::arg("log_n"), py::arg("scale"));
    def_fwht_inplace(m);
    m.def("fwht_plan", [](int log_n, bool f64) {
        int f[5], family, model;
        const char *isa;
        if (fobsgd_fwht_plan(log_n, f64, f, &isa, &family, &model)) throw py::value_error("log_n outside 0..30");
        return py::make_tuple(py::make_tuple(f[0], f[1], f[2], f[3], f[4]), isa, family, model);
    });

    m.def("encode_1bit", [](arr<float> x, arr<int64_t> offsets, arr<int32_t> log_sizes, int64_t d,
                            arr<int64_t> block_ids, int rotate, int rule, arr<double> factors, uint64_t seed,
                            uint64_t step, uint64_t rank, arr<float> work, arr<uint64_t> bits, arr<float> scales,
                            int n_threads) {
        fobsgd_layout lay = layout_of(offsets, log_sizes, d, block_ids);
        const float *px = data_of(x, "x", d);
        const double *pf = data_of(factors, "lambda_factor", lay.n_blocks);
        const int64_t work_rows = rule == FOBSGD_LAMBDA_MSE || rule == FOBSGD_LAMBDA_MSE_DEBIAS ? 2 : 1;
        int64_t max_block = 0;
        for (int64_t b = 0; b < lay.n_blocks; ++b) max_block = std::max(max_block, (int64_t)1 << lay.log_sizes[b]);
        float *pw = data_of(work, "work", work_rows * std::max(n_threads, 1) * max_block);
        uint64_t *pb = data_of(bits, "bits", padded_length(lay) / 64);
        float *ps = data_of(scales, "scales", lay.n_blocks);
        py::gil_scoped_release nogil;
        return fobsgd_encode_1bit(px, lay, rotate, rule, pf, seed, step, rank, pw, pb, ps, n_threads);
    }, py::arg("x").noconvert(), py::arg("offsets").noconvert(), py::arg("log_sizes").noconvert(), py::arg("d"),
       py::arg("block_ids").noconvert(), py::arg("rotate"), py::arg("rule"), py::arg("lambda_factor").noconvert(),
       py::arg("seed"), py::arg("step"), py::arg("rank"), py::arg("work").noconvert(), py::arg("bits").noconvert(),
       py::arg("scales").noconvert(), py::arg("n_threads"));

    m.def("decode_1bit", [](arr<uint64_t> bits, arr<float> scales, arr<int64_t> offsets, arr<int32_t> log_sizes,
                            int64_t d, arr<int64_t> block_ids, int rotate, uint64_t seed, uint64_t step, float weight,
                            bool accumulate, arr<float> work, arr<float> out, int n_threads) {
        fobsgd_layout lay = layout_of(offsets, log_sizes, d, block_ids);
        const uint64_t *pb = data_of(bits, "bits", padded_length(lay) / 64);
        const float *ps = data_of(scales, "scales", lay.n_blocks);
        float *pw = data_of(work, "work", 0);
        float *po = data_of(out, "out", d);
        py::gil_scoped_release nogil;
        return fobsgd_decode_1bit(pb, ps, lay, rotate, seed, step, weight, accumulate, pw, po, n_threads);
    }, py::arg("bits").noconvert(), py::arg("scales").noconvert(), py::arg("offsets").noconvert(),
       py::arg("log_sizes").noconvert(), py::arg("d"), py::arg("block_ids").noconvert(), py::arg("rotate"),
       py::arg("seed"), py::arg("step"), py::arg("weight"), py::arg("accumulate"), py::arg("work").noconvert(),
       py::arg("out").noconvert(), py::arg("n_threads"));

    m.def("aggregate_1bit", [](arr<uint8_t> payloads, int64_t scales_offset, arr<float> weights,
                               arr<int64_t> offsets, arr<int32_t> log_sizes, int64_t d, arr<float> out,
                               int n_threads) {
        fobsgd_layout lay = layout_of(offsets, log_sizes, d);
        if (payloads.ndim() != 2) throw std::invalid_argument("payloads must be 2-D (n, nbytes)");
        const int64_t n = payloads.shape(0), stride = payloads.shape(1);
        if (scales_offset + 4 * lay.n_blocks > stride || padded_length(lay) / 8 > scales_offset)
            throw std::invalid_argument("payload rows are too short for this layout");
        const float *pw = data_of(weights, "weights", n);
        float *po = data_of(out, "out", padded_length(lay));
        const uint8_t *pp = payloads.data();
        py::gil_scoped_release nogil;
        return fobsgd_aggregate_1bit(pp, n, stride, scales_offset, pw, lay, po, n_threads);
    }, py::arg("payloads").noconvert(), py::arg("scales_offset"), py::arg("weights").noconvert(),
       py::arg("offsets").noconvert(), py::arg("log_sizes").noconvert(), py::arg("d"), py::arg("out").noconvert(),
       py::arg("n_threads"));

    m.def("scaled_sign_encode", [](arr<float> x, arr<int64_t> offsets, arr<int32_t> log_sizes, int64_t d,
                                   arr<int64_t> block_ids, int ties, uint64_t seed, uint64_t step, arr<uint64_t> bits,
                                   py::object scales, int n_threads) {
        fobsgd_layout lay = layout_of(offsets, log_sizes, d, block_ids);
        const float *px = data_of(x, "x", d);
        float *ps = nullptr;
        arr<float> s;
        if (!scales.is_none()) {
            s = scales.cast<arr<float>>();
            ps = data_of(s, "scales", lay.n_blocks);
        }
        uint64_t *pb = data_of(bits, "bits", ps ? padded_length(lay) / 64 : (d + 63) / 64);
        const int64_t n_words = bits.size();
        py::gil_scoped_release nogil;
        return fobsgd_scaled_sign_encode(px, lay, ties, seed, step, pb, n_words, ps, n_threads);
    }, py::arg("x").noconvert(), py::arg("offsets").noconvert(), py::arg("log_sizes").noconvert(), py::arg("d"),
       py::arg("block_ids").noconvert(), py::arg("ties"), py::arg("seed"), py::arg("step"),
       py::arg("bits").noconvert(), py::arg("scales"), py::arg("n_threads"));

    m.def("scaled_sign_decode", [](arr<uint64_t> bits, py::object scales, arr<int64_t> offsets,
                                   arr<int32_t> log_sizes, int64_t d, float weight, bool accumulate,
                                   arr<float> out, int n_threads) {
        fobsgd_layout lay = layout_of(offsets, log_sizes, d);
        const uint64_t *pb = data_of(bits, "bits", (d + 63) / 64);  // decode reads bits below d only
        const float *ps = nullptr;
        arr<float> s;
        if (!scales.is_none()) {
            s = scales.cast<arr<float>>();
            ps = data_of(s, "scales", lay.n_blocks);
        }
        float *po = data_of(out, "out", d);
        py::gil_scoped_release nogil;
        return fobsgd_scaled_sign_decode(pb, ps, lay, weight, accumulate, po, n_threads);
    }, py::arg("bits").noconvert(), py::arg("scales"), py::arg("offsets").noconvert(),
       py::arg("log_sizes").noconvert(), py::arg("d"), py::arg("weight"), py::arg("accumulate"),
       py::arg("out").noconvert(), py::arg("n_threads"));

    m.def("majority_vote", [](arr<uint64_t> words, arr<int64_t> offsets, arr<int32_t> log_sizes, int64_t d,
                              arr<int64_t> block_ids, int ties, uint64_t seed, uint64_t step, arr<uint64_t> out) {
        if (words.ndim() != 2) throw std::invalid_argument("words must be 2-D (n, n_words)");
        fobsgd_layout lay = layout_of(offsets, log_sizes, d, block_ids);
        const int64_t n = words.shape(0), n_words = words.shape(1);
        if (n_words < (d + 63) / 64) throw std::invalid_argument("vote rows are too short for this layout");
        const uint64_t *pw = words.data();
        uint64_t *po = data_of(out, "out", n_words);
        py::gil_scoped_release nogil;
        return fobsgd_majority_vote(pw, n, n_words, n_words, lay, ties, seed, step, po);
    }, py::arg("words").noconvert(), py::arg("offsets").noconvert(), py::arg("log_sizes").noconvert(),
       py::arg("d"), py::arg("block_ids").noconvert(), py::arg("ties"), py::arg("seed"), py::arg("step"),
       py::arg("out").noconvert());

    m.def("qsgd_encode", [](arr<float> x, arr<int64_t> offsets, arr<int32_t> log_sizes, int64_t d,
                            arr<int64_t> block_ids, int levels, uint64_t seed, uint64_t step, uint64_t rank,
                            arr<uint64_t> codes, arr<float> norms, int n_threads) {
        fobsgd_layout lay = layout_of(offsets, log_sizes, d, block_ids);
        const int width = qsgd_width(levels);
        const float *px = data_of(x, "x", d);
        uint64_t *pc = data_of(codes, "codes", padded_length(lay) / 64 * width);
        float *pn = data_of(norms, "norms", lay.n_blocks);
        py::gil_scoped_release nogil;
        return fobsgd_qsgd_encode(px, lay, levels, width, seed, step, rank, pc, pn, n_threads);
    }, py::arg("x").noconvert(), py::arg("offsets").noconvert(), py::arg("log_sizes").noconvert(), py::arg("d"),
       py::arg("block_ids").noconvert(), py::arg("levels"), py::arg("seed"), py::arg("step"), py::arg("rank"),
       py::arg("codes").noconvert(), py::arg("norms").noconvert(), py::arg("n_threads"));

    m.def("qsgd_decode", [](arr<uint64_t> codes, arr<float> norms, arr<int64_t> offsets, arr<int32_t> log_sizes,
                            int64_t d, int levels, float weight, bool accumulate, arr<float> out, int n_threads) {
        fobsgd_layout lay = layout_of(offsets, log_sizes, d);
        const int width = qsgd_width(levels);
        const uint64_t *pc = data_of(codes, "codes", padded_length(lay) / 64 * width);
        const float *pn = data_of(norms, "norms", lay.n_blocks);
        float *po = data_of(out, "out", d);
        py::gil_scoped_release nogil;
        return fobsgd_qsgd_decode(pc, pn, lay, levels, width, weight, accumulate, po, n_threads);
    }, py::arg("codes").noconvert(), py::arg("norms").noconvert(), py::arg("offsets").noconvert(),
       py::arg("log_sizes").noconvert(), py::arg("d"), py::arg("levels"), py::arg("weight"), py::arg("accumulate"),
       py::arg("out").noconvert(), py::arg("n_threads"));

    m.def("mse_scales", [](arr<float> v, arr<int64_t> offsets, arr<int32_t> log_sizes, int64_t d, arr<float> work,
                           arr<double> lams, arr<int64_t> unclipped, arr<double> norms, int n_threads) {
        fobsgd_layout lay = layout_of(offsets, log_sizes, d);
        const float *pv = data_of(v, "v", d);
        int64_t largest = 0;
        for (int64_t b = 0; b < lay.n_blocks; ++b) largest = std::max(largest, (int64_t)1 << lay.log_sizes[b]);
        float *pw = data_of(work, "work", n_threads * largest);
        double *pl = data_of(lams, "lams", lay.n_blocks);
        int64_t *pu = data_of(unclipped, "unclipped", lay.n_blocks);
        double *pn = data_of(norms, "norms", lay.n_blocks);
        py::gil_scoped_release nogil;
        return fobsgd_mse_scales(pv, lay, pw, pl, pu, pn, n_threads);
    }, py::arg("v").noconvert(), py::arg("offsets").noconvert(), py::arg("log_sizes").noconvert(), py::arg("d"),
       py::arg("work").noconvert(), py::arg("lams").noconvert(), py::arg("unclipped").noconvert(),
       py::arg("norms").noconvert(), py::arg("n_threads"));

    m.def("segment_abs_means", [](arr<float> x, arr<int64_t> starts, arr<float> means, int n_threads) {
        const int64_t n = segments_of(starts, x.size());
        const float *px = x.data();
        const int64_t *pst = starts.data();
        float *pm = data_of(means, "means", n);
        py::gil_scoped_release nogil;
        return fobsgd_segment_abs_means(px, pst, n, pm, n_threads);
    }, py::arg("x").noconvert(), py::arg("starts").noconvert(), py::arg("means").noconvert(), py::arg("n_threads"));

    m.def("segment_sign_decode", [](arr<uint64_t> bits, arr<int64_t> starts, arr<float> scales, float weight,
                                    bool accumulate, arr<float> out, int n_threads) {
        const int64_t n = segments_of(starts, out.size());
        const int64_t *pst = starts.data();
        const uint64_t *pb = data_of(bits, "bits", (pst[n] + 63) / 64);
        const float *ps = data_of(scales, "scales", n);
        float *po = out.mutable_data();
        py::gil_scoped_release nogil;
        return fobsgd_segment_sign_decode(pb, pst, n, ps, weight, accumulate, po, n_threads);
    }, py::arg("bits").noconvert(), py::arg("starts").noconvert(), py::arg("scales").noconvert(), py::arg("weight"),
       py::arg("accumulate"), py::arg("out").noconvert(), py::arg("n_threads"));

    m.def("segment_sign_aggregate", [](arr<uint8_t> payloads, int64_t scales_offset, arr<float> weights,
                                       arr<int64_t> starts, arr<float> out, int n_threads) {
        const int64_t n_segments = segments_of(starts, out.size());
        if (payloads.ndim() != 2 || payloads.shape(0) < 1)
            throw std::invalid_argument("payloads must be 2-D (n >= 1, nbytes)");
        const int64_t n = payloads.shape(0), stride = payloads.shape(1);
        const int64_t *pst = starts.data();
        if (scales_offset < 8 * ((pst[n_segments] + 63) / 64) || scales_offset + 4 * n_segments > stride)
            throw std::invalid_argument("payload rows are too short for these segments");
        const float *pw = data_of(weights, "weights", n);
        float *po = out.mutable_data();
        const uint8_t *pp = payloads.data();
        py::gil_scoped_release nogil;
        return fobsgd_segment_sign_aggregate(pp, n, stride, scales_offset, pw, pst, n_segments, po, n_threads);
    }, py::arg("payloads").noconvert(), py::arg("scales_offset"), py::arg("weights").noconvert(),
       py::arg("starts").noconvert(), py::arg("out").noconvert(), py::arg("n_threads"));
}

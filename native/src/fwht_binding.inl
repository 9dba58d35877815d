// fwht_(x, normalize): the whole Python face of the transform in one C call (included by
// bindings.cpp). Small transforms take well under a microsecond, so the checks of
// reference.check_fwht_input (same messages) run here rather than in Python, the call skips
// pybind11's argument dispatch (METH_FASTCALL) and rows under 2^15 elements keep the GIL.
#include <math.h>

static PyObject *fwht_inplace_fast(PyObject *, PyObject *const *args, Py_ssize_t nargs) {
    try {
        if (nargs < 1 || nargs > 2) throw py::type_error("fwht_(x, normalize=True)");
        const bool normalize = nargs < 2 || PyObject_IsTrue(args[1]) == 1;
        py::handle h(args[0]);
        if (!py::array::check_(h))
            throw py::value_error(std::string("fwht_ needs a numpy array, got ") + Py_TYPE(args[0])->tp_name);
        py::array x = py::reinterpret_borrow<py::array>(h);
        const char kind = x.dtype().char_();
        if (kind != 'f' && kind != 'd')
            throw py::value_error("fwht_ needs float32 or float64, got " + std::string(py::str(x.dtype())));
        if (!(x.flags() & py::array::c_style) || !x.writeable())
            throw py::value_error("fwht_ works in place: pass a C-contiguous, writeable array (np.ascontiguousarray)");
        const int64_t n = x.ndim() ? (int64_t)x.shape(x.ndim() - 1) : 0;
        if (n < 1 || (n & (n - 1)) || n > ((int64_t)1 << 30))
            throw py::value_error("fwht_ needs a power-of-two last axis up to 2^30, got length " + std::to_string(n));
        int log_n = 0;
        while (((int64_t)1 << log_n) < n) ++log_n;
        const int64_t rows = (int64_t)x.size() / n;
        const double scale = normalize ? 1.0 / sqrt((double)n) : 1.0;
        void *p = x.mutable_data();
        int status;
        if (rows * n < (1 << 15)) {
            status = kind == 'f' ? fobsgd_fwht_f32((float *)p, rows, log_n, (float)scale)
                                 : fobsgd_fwht_f64((double *)p, rows, log_n, scale);
        } else {
            py::gil_scoped_release nogil;
            status = kind == 'f' ? fobsgd_fwht_f32((float *)p, rows, log_n, (float)scale)
                                 : fobsgd_fwht_f64((double *)p, rows, log_n, scale);
        }
        if (status) throw py::value_error("fwht_: bad arguments (status " + std::to_string(status) + ")");
        Py_INCREF(args[0]);
        return args[0];
    } catch (py::error_already_set &e) {
        e.restore();
    } catch (py::builtin_exception &e) {
        e.set_error();
    } catch (std::exception &e) {
        PyErr_SetString(PyExc_RuntimeError, e.what());
    }
    return nullptr;
}

static void def_fwht_inplace(py::module_ &m) {
    static PyMethodDef def = {"fwht_", (PyCFunction)(void (*)(void))fwht_inplace_fast, METH_FASTCALL,
                              "fwht_(x, normalize=True): in-place Walsh-Hadamard transform over the last axis; "
                              "returns x (see fobsgd_mpi.native.fwht_)"};
    m.add_object("fwht_", py::reinterpret_steal<py::object>(PyCFunction_NewEx(&def, nullptr, m.attr("__name__").ptr())));
}

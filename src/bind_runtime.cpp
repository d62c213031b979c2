// Bindings: ISA dispatch and the thread setting.
#include <omp.h>

#include <optional>

#include "bindings.h"
#include "convcore/buffer_cache.h"
#include "convcore/dispatch.h"
#include "convcore/threads.h"

using namespace convcore;

namespace {
// A ThreadSetting from a with-block's __enter__ to its __exit__ (convcore.threads): it holds on the thread that
// entered, and __exit__ may run on any thread.
class ScopedSetting {
 public:
  explicit ScopedSetting(int n) : n_(n) {}
  void enter() {
    if (scope_) throw std::runtime_error("entered twice");
    scope_.emplace(n_);
  }
  void exit() {
    if (!scope_) throw std::runtime_error("exited without being entered");
    scope_.reset();
  }

 private:
  int n_;
  std::optional<ThreadSetting> scope_;
};

// convcore.ThreadChoice's blocks (_runtime.py) over the engine's ThreadChoice: __enter__ picks the block's count
// under the calling thread's setting and caps that thread; __exit__ ends the cap and, unless the block raised,
// records its time on `clock` (Python's time.perf_counter). Each is one native call, atomic between Python threads
// (the GIL is held, the clock read first): a KeyboardInterrupt, which Python raises only between bytecodes, cannot
// land between a block's opening and the with statement holding its __exit__, nor inside __exit__ (in Python code, one
// there left the block open for good: every later block refused, the thread capped).
class ChoiceBlocks {
 public:
  explicit ChoiceBlocks(py::object clock) : clock_(std::move(clock)) {}
  void enter() {
    const double start = clock_().cast<double>();
    if (cap_)
      throw std::runtime_error("this ThreadChoice has a block open already: it times one block at a time (use one "
                               "ThreadChoice per thread, and do not enter it inside its own block)");
    setting_ = num_threads();
    threads_ = choice_.pick(setting_);
    cap_.emplace(threads_);
    start_ = start;
  }
  void exit(bool raised) {
    if (!cap_) throw std::runtime_error("ThreadChoice.__exit__ without an open block (its __enter__ was not called)");
    double end;
    try {
      end = clock_().cast<double>();
    } catch (...) {  // a clock that raises (a stand-in's KeyboardInterrupt) still closes the block, uncounted
      cap_.reset();
      throw;
    }
    cap_.reset();
    if (!raised) choice_.record(setting_, threads_, end - start_);
  }
  int last_threads() const { return threads_; }

 private:
  py::object clock_;
  ThreadChoice choice_;
  std::optional<ThreadCap> cap_;  // the open block's
  int setting_ = 0, threads_ = 0;
  double start_ = 0.0;
};

}  // namespace

void bind_runtime(py::module_& m) {
  m.def("detected_isa", [] { return std::string(isa_name(detected_isa())); });
  m.def("selected_isa", [] { return std::string(isa_name(selected_isa())); });
  m.def("compiled_isas", [] { return std::vector<std::string>{"scalar", "avx2", "avx512"}; });
  m.def("select_isa", [](const std::string& name) {
    Isa isa;
    if (!parse_isa(name, &isa)) throw py::value_error("unknown ISA '" + name + "'; expected scalar, avx2 or avx512");
    return select_isa(isa);
  });
  m.def("gemm_kernel_name", [] { return std::string(kernels().gemm.name); });
  // The selected ISA's register tiles as "MRxNR", the general one first, and the one an M x N product uses.
  m.def("gemm_tiles", [] {
    std::vector<std::string> tiles;
    const GemmKernels& g = kernels().gemm;
    for (int i = 0; i < g.count; ++i) tiles.push_back(std::to_string(g.tiles[i].mr) + "x" + std::to_string(g.tiles[i].nr));
    return tiles;
  });
  m.def(
      "gemm_tile_for",
      [](int64_t M, int64_t N, bool a_in_place) {
        const GemmTile& t = choose_tile(kernels().gemm, M, N, a_in_place);
        return std::to_string(t.mr) + "x" + std::to_string(t.nr);
      },
      py::arg("M"), py::arg("N"), py::arg("a_in_place") = false);
  // The selected ISA's FMA peak of one core, GFLOP/s, measured on the calling thread (~0.1 s; the benchmarks' share
  // of peak).
  m.def("fma_peak_gflops", &fma_peak_gflops, py::call_guard<py::gil_scoped_release>());
  m.def("pool_kernel_name", [] { return std::string(kernels().pool.name); });
  m.def("get_num_threads", [] { return num_threads(); });
  m.def("thread_setting", [] { return thread_setting(); });
  m.def("set_num_threads", [](int n) { set_num_threads(n); });
  m.attr("max_threads") = kMaxThreads;
  py::class_<ChoiceBlocks>(m, "ThreadChoice")
      .def(py::init<py::object>(), py::arg("clock"))
      .def("__enter__",
           [](py::object self) {
             self.cast<ChoiceBlocks&>().enter();
             return self;
           })
      .def("__exit__",
           [](ChoiceBlocks& c, const py::object& kind, const py::object&, const py::object&) {
             c.exit(!kind.is_none());
             return false;
           })
      .def_property_readonly("last_threads", &ChoiceBlocks::last_threads);
  py::class_<ScopedSetting>(m, "ThreadSetting")
      .def(py::init<int>(), py::arg("threads"))
      .def("__enter__", &ScopedSetting::enter)
      .def("__exit__", [](ScopedSetting& c, const py::args&) { c.exit(); });
  m.def("in_forked_child", [] { return in_forked_child(); });
  m.def("omp_max_threads", [] { return omp_get_max_threads(); });
  m.def("set_buffer_cache_limit", [](int64_t bytes) { set_buffer_limits(static_cast<size_t>(bytes)); });
  m.def("buffer_cache_info", [] {
    const BufferCacheStats s = buffer_stats();
    py::dict d;
    d["idle_bytes"] = s.idle_bytes;
    d["limit_bytes"] = s.limit_bytes;
    d["reused"] = s.reused;
    d["allocated"] = s.allocated;
    return d;
  });
}

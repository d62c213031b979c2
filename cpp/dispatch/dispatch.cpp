// CPU feature detection and the one table of kernel variants.
#include "convcore/dispatch.h"

#include <atomic>

namespace convcore {
namespace {

Isa detect() {
  __builtin_cpu_init();
  // libgcc checks XCR0 too, so these report what the OS lets us use.
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("fma"))
    return Isa::avx512;
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
  return Isa::scalar;
}

const KernelTable& table_for(Isa isa) {
  static const KernelTable tables[3] = {
      {Isa::scalar, gemm_kernels_scalar(), pool_kernels_scalar(), conv2d_direct_forward_scalar,
       conv2d_direct_backward_weight_scalar, conv2d_filter_vector_forward_scalar,
       conv2d_filter_vector_weight_scalar, conv2d_channel_vector_backward_scalar,
       conv2d_forward_winograd_scalar, nullptr, conv2d_backward_weight_winograd_scalar, nullptr,
       batch_norm_row_kernels_scalar(), optim_kernels_scalar()},
      {Isa::avx2, gemm_kernels_avx2(), pool_kernels_avx2(), conv2d_direct_forward_avx2,
       conv2d_direct_backward_weight_avx2, conv2d_filter_vector_forward_avx2,
       conv2d_filter_vector_weight_avx2, conv2d_channel_vector_backward_avx2,
       conv2d_forward_winograd_avx2, conv2d_forward_winograd_fused_avx2,
       conv2d_backward_weight_winograd_avx2, conv2d_backward_weight_winograd_fused_avx2,
       batch_norm_row_kernels_avx2(), optim_kernels_avx2()},
      {Isa::avx512, gemm_kernels_avx512(), pool_kernels_avx512(), conv2d_direct_forward_avx512,
       conv2d_direct_backward_weight_avx512, conv2d_filter_vector_forward_avx512,
       conv2d_filter_vector_weight_avx512, conv2d_channel_vector_backward_avx512,
       conv2d_forward_winograd_avx512, conv2d_forward_winograd_fused_avx512,
       conv2d_backward_weight_winograd_avx512, conv2d_backward_weight_winograd_fused_avx512,
       batch_norm_row_kernels_avx512(), optim_kernels_avx512()},
  };
  return tables[static_cast<int>(isa)];
}

std::atomic<int>& selected() {
  static std::atomic<int> s{static_cast<int>(detected_isa())};
  return s;
}

}  // namespace

const char* isa_name(Isa isa) {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
  }
  return "unknown";
}

bool parse_isa(const std::string& name, Isa* out) {
  for (Isa isa : {Isa::scalar, Isa::avx2, Isa::avx512}) {
    if (name == isa_name(isa)) {
      *out = isa;
      return true;
    }
  }
  return false;
}

Isa detected_isa() {
  static const Isa isa = detect();
  return isa;
}

Isa selected_isa() { return static_cast<Isa>(selected().load(std::memory_order_relaxed)); }

bool select_isa(Isa isa) {
  if (static_cast<int>(isa) > static_cast<int>(detected_isa())) return false;
  selected().store(static_cast<int>(isa), std::memory_order_relaxed);
  return true;
}

const KernelTable& kernels() { return table_for(selected_isa()); }

}  // namespace convcore

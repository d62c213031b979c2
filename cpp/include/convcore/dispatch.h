// Runtime ISA dispatch: which kernel variants this CPU can run, which were compiled, which are selected.
// One table of variants (KernelTable) is chosen once at start-up; CONVCORE_ISA caps the choice.
#pragma once
#include <string>

#include "convcore/conv.h"
#include "convcore/gemm.h"
#include "convcore/ops.h"
#include "convcore/optim.h"
#include "convcore/pool.h"

namespace convcore {

enum class Isa : int { scalar = 0, avx2 = 1, avx512 = 2 };

const char* isa_name(Isa isa);
// Parses "scalar" / "avx2" / "avx512"; returns false for anything else.
bool parse_isa(const std::string& name, Isa* out);

Isa detected_isa();  // best ISA the CPU (and OS, via XGETBV) supports
Isa selected_isa();  // the variant in use

// Selects `isa` (tests force each variant in turn). Returns false, selecting nothing, when the CPU lacks it.
bool select_isa(Isa isa);

// The one table of kernel variants. Each ISA's entries live in their own translation unit
// (*_scalar.cpp, *_avx2.cpp, *_avx512.cpp), compiled with that ISA's flags.
struct KernelTable {
  Isa isa;
  GemmKernels gemm;
  PoolKernels pool;
  ConvDirectKernel conv_direct;
  ConvDirectWeightKernel conv_direct_weight;
  ConvFilterVectorForwardKernel conv_filter_vector_forward;
  ConvFilterVectorWeightKernel conv_filter_vector_weight;
  ConvChannelVectorBackwardKernel conv_channel_vector_backward;
  ConvWinogradKernel conv_winograd;
  ConvWinogradFusedKernel conv_winograd_fused;  // null for the portable kernels
  ConvWinogradWeightKernel conv_winograd_weight;
  ConvWinogradFusedWeightKernel conv_winograd_fused_weight;  // null for the portable kernels
  BatchNormRowKernels batch_norm_rows;
  OptimKernels optim;
};

const KernelTable& kernels();  // the selected table

}  // namespace convcore

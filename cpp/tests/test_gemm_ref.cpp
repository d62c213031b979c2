// Reference GEMM: transposes, leading dimensions, alpha/beta on a hand-computed case.
#include "check.h"
#include "convcore/gemm.h"

using convcore::Trans;

int main() {
  // A (2x3) = [[1,2,3],[4,5,6]], B (3x2) = [[1,0],[0,1],[1,1]]: A B = [[4,5],[10,11]]
  const float A[6] = {1, 2, 3, 4, 5, 6};
  const float At[6] = {1, 4, 2, 5, 3, 6};
  const float B[6] = {1, 0, 0, 1, 1, 1};
  const float Bt[6] = {1, 0, 1, 0, 1, 1};
  const float want[4] = {4, 5, 10, 11};
  float C[6];
  convcore::gemm_ref<float>(Trans::no, Trans::no, 2, 2, 3, 1.0f, A, 3, B, 2, 0.0f, C, 2);
  for (int i = 0; i < 4; ++i) CHECK(C[i] == want[i]);
  convcore::gemm_ref<float>(Trans::yes, Trans::yes, 2, 2, 3, 1.0f, At, 2, Bt, 3, 0.0f, C, 2);
  for (int i = 0; i < 4; ++i) CHECK(C[i] == want[i]);
  // ldc 3 with a guard column; beta 1 and alpha 2: C = 2 A B + C
  float Cg[6] = {1, 1, -7, 1, 1, -7};
  convcore::gemm_ref<float>(Trans::no, Trans::no, 2, 2, 3, 2.0f, A, 3, B, 2, 1.0f, Cg, 3);
  CHECK(Cg[0] == 9 && Cg[1] == 11 && Cg[3] == 21 && Cg[4] == 23);
  CHECK(Cg[2] == -7 && Cg[5] == -7);
  return convcore_test::failures;
}

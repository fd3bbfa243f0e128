// CUDA device built-ins for g++, so that the exact source MLX builds for a
// `mx.fast.cuda_kernel` runs on the CPU emulator (emulator.hpp).
//
// - `__shared__` declarations become function-scope statics, shared by the
//   threads of a block because the emulator runs one block at a time.
// - threadIdx, blockIdx, blockDim and gridDim read the running thread's place.
// - Warp shuffles exchange values among the 32 lanes of a warp and require
//   every lane (a full mask).
// - __half and __nv_bfloat16 have explicit conversions only, and only float
//   math functions exist: computing in 16 bits or in double is a compile error.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "emulator.hpp"
#include "half_types.hpp"

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __shared__ static
#define __grid_constant__
#define __restrict__

typedef emu::Half __half;
typedef emu::BFloat16 __nv_bfloat16;

namespace emu::cuda {
struct Index {
  unsigned x, y, z;
};
inline Index thread_idx() {
  const ThreadInfo& t = current();
  return {t.position_in_group.x, t.position_in_group.y, t.position_in_group.z};
}
inline Index block_idx() {
  const ThreadInfo& t = current();
  return {t.group_position.x, t.group_position.y, t.group_position.z};
}
inline Index block_dim() {
  const ThreadInfo& t = current();
  return {t.group_size.x, t.group_size.y, t.group_size.z};
}
inline Index grid_dim() {
  const ThreadInfo& t = current();
  return {t.groups_per_grid.x, t.groups_per_grid.y, t.groups_per_grid.z};
}
}  // namespace emu::cuda

#define threadIdx (::emu::cuda::thread_idx())
#define blockIdx (::emu::cuda::block_idx())
#define blockDim (::emu::cuda::block_dim())
#define gridDim (::emu::cuda::grid_dim())
#define warpSize 32

inline void __syncthreads() { emu::wait(emu::Wait::group); }

inline float __shfl_xor_sync(unsigned mask, float value, int lane_mask, int width = 32) {
  if (mask != 0xffffffffu || width != 32 || emu::simd_lanes() != 32) emu::fail("__shfl_xor_sync: only full warps are emulated");
  return emu::simd(emu::SimdOp::shuffle_xor, value, static_cast<unsigned>(lane_mask));
}

inline float __shfl_down_sync(unsigned mask, float value, unsigned delta, int width = 32) {
  if (mask != 0xffffffffu || width != 32 || emu::simd_lanes() != 32) emu::fail("__shfl_down_sync: only full warps are emulated");
  return emu::simd(emu::SimdOp::shuffle_down, value, delta);
}

inline float __int_as_float(int bits) {
  float value;
  std::memcpy(&value, &bits, 4);
  return value;
}

inline int __float_as_int(float value) {
  int bits;
  std::memcpy(&bits, &value, 4);
  return bits;
}

// The float math of CUDA's device library (C's float functions, plus rsqrtf).
using ::expf;
using ::logf;
using ::log1pf;
using ::expm1f;
using ::erff;
using ::fabsf;
using ::sqrtf;
using ::powf;
using ::tanhf;
using ::coshf;
using ::sinhf;
using ::sinf;
using ::cosf;
using ::atanf;
using ::fmaxf;
using ::fminf;
using ::floorf;
using ::fmodf;
inline float rsqrtf(float x) { return 1.0f / ::sqrtf(x); }
inline bool isfinite(float x) { return std::isfinite(x); }

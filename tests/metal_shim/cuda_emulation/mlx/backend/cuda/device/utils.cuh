// Stands in for MLX's CUDA device header when a custom kernel is run on the
// CPU emulator: the CUDA built-ins for g++, and the Shape/Strides types MLX
// passes (by value) for `<input>_shape` and `<input>_strides`.
#pragma once

#include <array>

#include "cuda_emulation.h"

namespace mlx::core::cu {
using Shape = std::array<int32_t, 10>;
using Strides = std::array<int64_t, 10>;
}  // namespace mlx::core::cu

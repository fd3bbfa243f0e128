// Stands in for MLX's CUDA device header when nvcc compiles a custom kernel
// here (MLX's own header is not installed with the CPU build): the CUDA types
// that header brings in and the Shape/Strides types MLX passes by value.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda/std/array>
#include <cuda/std/limits>
#include <cuda/std/tuple>

namespace mlx::core::cu {
using Shape = cuda::std::array<int32_t, 10>;
using Strides = cuda::std::array<int64_t, 10>;
}  // namespace mlx::core::cu

// The first include of a CUDA kernel driver (precompiled once per test session).
#pragma once
#include <array>
#include <cstdlib>

#include <cooperative_groups.h>  // the kernels include these again, inside their namespaces
#include "mlx/backend/cuda/device/utils.cuh"
#include "driver.hpp"

// The first include of a CUDA kernel driver (precompiled once per test session).
#pragma once
#include <array>

#include "cuda_emulation.h"
#include "driver.hpp"

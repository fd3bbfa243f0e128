// The first include of a Metal kernel driver (precompiled once per test session).
#pragma once
#include "metal_stdlib.h"
#include "driver.hpp"

#include <cstdlib>

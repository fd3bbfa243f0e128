// The CUDA emulator has no cooperative groups; MLX's prelude only names the namespace.
#pragma once
namespace cooperative_groups {}

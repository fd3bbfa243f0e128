"""Run GPU kernel source on the CPU: a metal_stdlib and CUDA stand-in, an emulator, float64 references."""

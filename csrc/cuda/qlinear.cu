// CUDA qlinear kernels (to be written).

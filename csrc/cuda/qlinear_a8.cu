// CUDA kernels of the qlinear_a8 family (filled in by the qlinear_a8 kernel work).

// CUDA kernels of the linear_block family (filled in by the linear_block kernel work).

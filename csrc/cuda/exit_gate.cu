// CUDA kernels of the exit_gate family (filled in by the exit_gate kernel work).

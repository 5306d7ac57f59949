// CUDA quant kernels (to be written).

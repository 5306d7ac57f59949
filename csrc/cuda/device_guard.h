// Makes a device current for the lifetime of the guard and restores the caller's device afterwards.
//
// Every CUDA runtime in the process - this module's static one and torch's - ends up making the device's
// primary context current on the calling thread through the driver, so a device switched here without being
// restored would also switch torch's "current device" under the caller's feet.
#pragma once

#include <cuda_runtime.h>

namespace tcompress {

class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    if (cudaGetDevice(&previous_) != cudaSuccess) {
      cudaGetLastError();
      previous_ = -1;
    }
    if (previous_ != device) error_ = cudaSetDevice(device);
  }
  ~DeviceGuard() {
    if (previous_ >= 0 && error_ == cudaSuccess) cudaSetDevice(previous_);
  }
  DeviceGuard(const DeviceGuard&) = delete;
  DeviceGuard& operator=(const DeviceGuard&) = delete;

  // cudaSuccess, or why the device could not be made current.
  cudaError_t error() const { return error_; }

 private:
  int previous_ = -1;
  cudaError_t error_ = cudaSuccess;
};

}  // namespace tcompress

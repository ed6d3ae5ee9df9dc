// What the PyTorch bindings of the CUDA kernels share.

#pragma once

#include <cuda_runtime.h>
#include <torch/extension.h>

#include "kernel_dtype.h"

namespace kernel_binding {

// The kernels' dtype code of `t`; a clear error for dtypes the kernels do not take.
inline kernel_dtype::DType dtype_of(const torch::Tensor& t, const char* op) {
    switch (t.scalar_type()) {
        case torch::kFloat32: return kernel_dtype::FLOAT32;
        case torch::kFloat16: return kernel_dtype::FLOAT16;
        case torch::kBFloat16: return kernel_dtype::BFLOAT16;
        default: TORCH_CHECK(false, op, ": the CUDA kernel takes float32, float16 or bfloat16, got ", t.scalar_type());
    }
}

// The strides of a 4-D tensor, in elements, NCHW order.
inline void strides_of(const torch::Tensor& t, int64_t* strides) {
    for (int d = 0; d < 4; ++d)
        strides[d] = t.stride(d);
}

// A clear error when a kernel launch failed.
inline void check_launch(cudaError_t status, const char* op) {
    TORCH_CHECK(status == cudaSuccess, op, ": kernel launch failed: ", cudaGetErrorString(status));
}

}  // namespace kernel_binding

// Interface between the general upfirdn2d kernel (upfirdn2d_kernel.cu, which includes nothing from
// PyTorch but c10's Half and BFloat16) and its PyTorch binding (upfirdn2d.cpp).

#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#include "kernel_dtype.h"
#include "upfirdn2d_math.h"

namespace upfirdn2d {

using kernel_dtype::DType;

// x [N, C, in_h, in_w] and out [N, C, out_h, out_w] with arbitrary element strides (any layout);
// filter: float32 [filter_h, filter_w], contiguous, on the device.
struct Params {
    const void* x;
    const float* filter;
    void* out;
    Geometry geometry;
    int64_t batch, channels;
    int out_w, out_h;
    int64_t x_stride[4];    // strides of x in elements, in NCHW order
    int64_t out_stride[4];  // strides of out in elements, in NCHW order
};

// Runs the kernel on `stream`; returns the launch status.
cudaError_t launch(const Params& p, DType dtype, cudaStream_t stream);

}  // namespace upfirdn2d

// Interface between the fused filtered_lrelu kernel (filtered_lrelu_kernel.cu, which includes nothing
// from PyTorch but c10's Half and BFloat16) and its PyTorch binding (filtered_lrelu.cpp).

#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#include "kernel_dtype.h"

#include "filtered_lrelu_math.h"

namespace filtered_lrelu {

using kernel_dtype::DType;

// x [N, C, in_h, in_w], out [N, C, out_h, out_w]: any strides (elements, NCHW order). bias: [C] of x's
// dtype or null. fu, fd: float32 2-D filters, contiguous, on the device. bits: int32
// [N, C, hi_h, words_per_row(hi_w)], zero-filled, or null when the backward is not needed.
struct Params {
    const void* x;
    const void* bias;
    const float* fu;
    const float* fd;
    void* out;
    uint32_t* bits;
    Plan plan;
    int64_t batch, channels;
    int out_w, out_h;
    int64_t x_stride[4];
    int64_t out_stride[4];
};

// Runs the kernel on `stream`; returns the launch status (cudaErrorInvalidValue when even a 1 x 1
// output tile does not fit in shared memory).
cudaError_t launch(const Params& p, DType dtype, cudaStream_t stream);

}  // namespace filtered_lrelu

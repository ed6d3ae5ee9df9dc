// Interface between the bias_act kernels (bias_act_kernel.cu, which includes nothing from PyTorch but
// c10's Half and BFloat16) and their PyTorch binding (bias_act.cpp).

#pragma once

#include <cstdint>
#include <cuda_runtime.h>

#include "kernel_dtype.h"

namespace bias_act {

using kernel_dtype::DType;

// Pointers to dense tensors of `n` elements sharing one memory layout (any dense permutation, e.g.
// contiguous or channels-last); element i of the layout sits on index (i / bias_stride) % bias_size
// of the bias dimension. Unused inputs are null.
struct Params {
    const void* x;      // input (FORWARD), or the saved input (GRAD modes of pre-activation activations)
    const void* b;      // bias [bias_size], or null
    const void* y;      // the saved forward output (GRAD modes)
    const void* dy;     // the incoming gradient (GRAD modes)
    void* out;
    int64_t n;
    int64_t bias_stride;
    int64_t bias_size;
    int act;            // bias_act::Activation
    int mode;           // bias_act::Mode
    float alpha;
    float gain;
    float clamp;        // < 0: no clamping
};

// Runs one kernel on `stream`; returns the launch status.
cudaError_t launch(const Params& p, DType dtype, cudaStream_t stream);

}  // namespace bias_act

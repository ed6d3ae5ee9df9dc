// The tensor dtypes the CUDA kernels take (arithmetic is float32 for all), shared by the kernel files,
// which dispatch on them with c10's Half and BFloat16, and by their PyTorch bindings.

#pragma once

#if defined(__CUDACC__)
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cuda_runtime.h>
#endif

namespace kernel_dtype {

enum DType { FLOAT32 = 0, FLOAT16 = 1, BFLOAT16 = 2 };

#if defined(__CUDACC__)
// Calls launch(T{}) with the element type of `dtype`; cudaErrorInvalidValue for anything else.
template <typename Launch>
cudaError_t dispatch(DType dtype, const Launch& launch) {
    switch (dtype) {
        case FLOAT32: return launch(float{});
        case FLOAT16: return launch(c10::Half{});
        case BFLOAT16: return launch(c10::BFloat16{});
        default: return cudaErrorInvalidValue;
    }
}
#endif

}  // namespace kernel_dtype

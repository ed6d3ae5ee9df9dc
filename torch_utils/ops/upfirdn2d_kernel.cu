// General upfirdn2d kernel: one thread per output sample in a grid-stride loop, arithmetic in
// float32 for float32, float16 and bfloat16 tensors of any memory layout. The per-sample work (only
// the filter taps that meet input samples) is upfirdn2d_math.h, shared with the host-side tests.
//
// Includes nothing from PyTorch but c10's Half and BFloat16, so that `nvcc -c` compiles this file on
// machines without a GPU (tests/torch_utils/ops/test_upfirdn2d_cuda.py).

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include "upfirdn2d.h"

namespace upfirdn2d {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65535;

template <typename T>
__global__ void upfirdn2d_kernel(Params p) {
    const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
    const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t index = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; index < total; index += step) {
        // Output coordinates in NCHW order (whatever the memory layout).
        const int ox = static_cast<int>(index % p.out_w);
        const int oy = static_cast<int>((index / p.out_w) % p.out_h);
        const int64_t c = (index / (static_cast<int64_t>(p.out_w) * p.out_h)) % p.channels;
        const int64_t n = index / (static_cast<int64_t>(p.out_w) * p.out_h * p.channels);
        const T* x = static_cast<const T*>(p.x) + n * p.x_stride[0] + c * p.x_stride[1];
        const int64_t sy = p.x_stride[2], sx = p.x_stride[3];
        const float value = output_sample(p.geometry, p.filter, ox, oy, [&](int ix, int iy) {
            return static_cast<float>(x[iy * sy + ix * sx]);
        });
        T* out = static_cast<T*>(p.out);
        out[n * p.out_stride[0] + c * p.out_stride[1] + oy * p.out_stride[2] + ox * p.out_stride[3]] = static_cast<T>(value);
    }
}

template <typename T>
cudaError_t launch_typed(const Params& p, cudaStream_t stream) {
    const int64_t total = p.batch * p.channels * p.out_h * p.out_w;
    if (total == 0)
        return cudaSuccess;
    const int64_t wanted = (total + kThreads - 1) / kThreads;
    const dim3 blocks(static_cast<unsigned>(wanted < kMaxBlocks ? wanted : kMaxBlocks));
    upfirdn2d_kernel<T><<<blocks, kThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch(const Params& p, DType dtype, cudaStream_t stream) {
    switch (dtype) {
        case FLOAT32: return launch_typed<float>(p, stream);
        case FLOAT16: return launch_typed<c10::Half>(p, stream);
        case BFLOAT16: return launch_typed<c10::BFloat16>(p, stream);
        default: return cudaErrorInvalidValue;
    }
}

}  // namespace upfirdn2d

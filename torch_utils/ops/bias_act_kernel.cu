// Fused bias + activation + gain + clamp, and its first and second derivatives, for float32,
// float16 and bfloat16 tensors (arithmetic in float32). One thread per element in a grid-stride
// loop; the activation is a template parameter so each kernel compiles to straight-line code.
//
// Reaches nothing from PyTorch but c10's Half and BFloat16 (kernel_dtype.h), so that `nvcc -c` compiles it on
// machines without a GPU (tests/torch_utils/ops/test_cuda_sources.py).

#include "bias_act.h"
#include "bias_act_math.h"

namespace bias_act {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65535;

template <typename T> __device__ __forceinline__ float load(const void* p, int64_t i) {
    return static_cast<float>(static_cast<const T*>(p)[i]);
}

template <typename T, int A>
__global__ void bias_act_kernel(Params p) {
    const int64_t step = static_cast<int64_t>(gridDim.x) * blockDim.x;
    for (int64_t i = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; i < p.n; i += step) {
        float s = 0.0f, y = 0.0f, dy = 0.0f;
        if (p.mode == FORWARD || uses_pre_activation(A)) {
            s = load<T>(p.x, i);
            if (p.b)
                s += load<T>(p.b, (i / p.bias_stride) % p.bias_size);
        }
        if (p.mode != FORWARD) {
            dy = load<T>(p.dy, i);
            if (!uses_pre_activation(A))
                y = load<T>(p.y, i);
        }
        static_cast<T*>(p.out)[i] = static_cast<T>(element(p.mode, A, s, y, dy, p.alpha, p.gain, p.clamp));
    }
}

template <typename T>
cudaError_t launch_typed(const Params& p, cudaStream_t stream) {
    if (p.n == 0)
        return cudaSuccess;
    const int64_t wanted = (p.n + kThreads - 1) / kThreads;
    const dim3 blocks(static_cast<unsigned>(wanted < kMaxBlocks ? wanted : kMaxBlocks));
    switch (p.act) {
        case LINEAR: bias_act_kernel<T, LINEAR><<<blocks, kThreads, 0, stream>>>(p); break;
        case RELU: bias_act_kernel<T, RELU><<<blocks, kThreads, 0, stream>>>(p); break;
        case LRELU: bias_act_kernel<T, LRELU><<<blocks, kThreads, 0, stream>>>(p); break;
        case TANH: bias_act_kernel<T, TANH><<<blocks, kThreads, 0, stream>>>(p); break;
        case SIGMOID: bias_act_kernel<T, SIGMOID><<<blocks, kThreads, 0, stream>>>(p); break;
        case ELU: bias_act_kernel<T, ELU><<<blocks, kThreads, 0, stream>>>(p); break;
        case SELU: bias_act_kernel<T, SELU><<<blocks, kThreads, 0, stream>>>(p); break;
        case SOFTPLUS: bias_act_kernel<T, SOFTPLUS><<<blocks, kThreads, 0, stream>>>(p); break;
        case SWISH: bias_act_kernel<T, SWISH><<<blocks, kThreads, 0, stream>>>(p); break;
        default: return cudaErrorInvalidValue;
    }
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch(const Params& p, DType dtype, cudaStream_t stream) {
    return kernel_dtype::dispatch(dtype, [&](auto tag) { return launch_typed<decltype(tag)>(p, stream); });
}

}  // namespace bias_act

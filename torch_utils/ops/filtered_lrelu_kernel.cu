// Fused filtered_lrelu: one block per output tile of one channel computes bias + upsample + leaky ReLU
// + clamp + downsample in shared memory and writes only the output tile and, for the backward pass,
// 2 sign bits per upsampled sample. Arithmetic in float32 for float32, float16 and bfloat16 tensors
// of any memory layout; the per-tile work is filtered_lrelu_math.h, shared with the host-side tests.
//
// Reaches nothing from PyTorch but c10's Half and BFloat16 (kernel_dtype.h), so that `nvcc -c` compiles it on
// machines without a GPU (tests/torch_utils/ops/test_cuda_sources.py).

#include "filtered_lrelu.h"

namespace filtered_lrelu {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65535;
constexpr int kSharedBytes = 40 * 1024;  // under the 48 KB every GPU gives a block without opting in

template <typename T>
__global__ void filtered_lrelu_kernel(Params p, int tile_w, int tile_h, int tiles_x, int tiles_y) {
    extern __shared__ float shared[];
    const Plan& plan = p.plan;
    const int fu_size = plan.up_pass.filter_w * plan.up_pass.filter_h;
    const int fd_size = plan.down_pass.filter_w * plan.down_pass.filter_h;
    float* fu = shared;
    float* fd = fu + fu_size;
    float* regions = fd + fd_size;
    for (int i = threadIdx.x; i < fu_size; i += blockDim.x)
        fu[i] = p.fu[i];
    for (int i = threadIdx.x; i < fd_size; i += blockDim.x)
        fd[i] = p.fd[i];
    const int row_words = words_per_row(plan.down_pass.in_w);
    const int64_t tiles = static_cast<int64_t>(tiles_x) * tiles_y;
    for (int64_t work = blockIdx.x; work < p.batch * p.channels * tiles; work += gridDim.x) {
        const int64_t plane = work / tiles;
        const int tile_index = static_cast<int>(work % tiles);
        const int64_t n = plane / p.channels, c = plane % p.channels;
        const Tiles t = make_tiles(plan, p.out_w, p.out_h, tile_w, tile_h, tile_index % tiles_x, tile_index / tiles_x);
        const T* x = static_cast<const T*>(p.x) + n * p.x_stride[0] + c * p.x_stride[1];
        const float bias = p.bias ? static_cast<float>(static_cast<const T*>(p.bias)[c]) : 0.0f;
        T* out = static_cast<T*>(p.out) + n * p.out_stride[0] + c * p.out_stride[1];
        uint32_t* bits = p.bits ? p.bits + plane * plan.down_pass.in_h * row_words : nullptr;
        float* hi = regions;
        float* input = regions + t.down.in_w * t.down.in_h;
        __syncthreads();  // filters staged; the previous tile's regions are no longer read
        upfirdn2d::stage_input(plan.up_pass, t.up, input, threadIdx.x, blockDim.x, [&](int ix, int iy) {
            return static_cast<float>(x[iy * p.x_stride[2] + ix * p.x_stride[3]]) + bias;
        });
        __syncthreads();
        upsample_activate(plan, t, fu, input, hi, threadIdx.x, blockDim.x, [&](int word, unsigned value) {
            if (bits)
                atomicOr(bits + word, value);
        });
        __syncthreads();
        downsample(plan, t, fd, hi, threadIdx.x, blockDim.x, [&](int ox, int oy, float value) {
            out[oy * p.out_stride[2] + ox * p.out_stride[3]] = static_cast<T>(value);
        });
    }
}

template <typename T>
cudaError_t launch_typed(const Params& p, cudaStream_t stream) {
    if (p.batch * p.channels * p.out_w * p.out_h == 0)
        return cudaSuccess;
    const Plan& plan = p.plan;
    const int filters = plan.up_pass.filter_w * plan.up_pass.filter_h + plan.down_pass.filter_w * plan.down_pass.filter_h;
    // The largest tile (up to 32 x 32 outputs) whose filters and regions fit in shared memory.
    int tile_w = 32, tile_h = 32;
    auto bytes = [&]() { return (filters + max_regions(plan, tile_w, tile_h)) * 4; };
    while (bytes() > kSharedBytes && (tile_w > 1 || tile_h > 1)) {
        if (tile_w >= tile_h) tile_w = (tile_w + 1) / 2; else tile_h = (tile_h + 1) / 2;
    }
    if (bytes() > kSharedBytes)
        return cudaErrorInvalidValue;
    const int tiles_x = (p.out_w + tile_w - 1) / tile_w, tiles_y = (p.out_h + tile_h - 1) / tile_h;
    const int64_t work = p.batch * p.channels * tiles_x * tiles_y;
    const dim3 blocks(static_cast<unsigned>(work < kMaxBlocks ? work : kMaxBlocks));
    filtered_lrelu_kernel<T><<<blocks, kThreads, bytes(), stream>>>(p, tile_w, tile_h, tiles_x, tiles_y);
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch(const Params& p, DType dtype, cudaStream_t stream) {
    return kernel_dtype::dispatch(dtype, [&](auto tag) { return launch_typed<decltype(tag)>(p, stream); });
}

}  // namespace filtered_lrelu

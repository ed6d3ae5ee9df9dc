// upfirdn2d kernels, arithmetic in float32 for float32, float16 and bfloat16 tensors of any memory
// layout. The per-sample and per-tile work is upfirdn2d_math.h, shared with the host-side tests.
// - Tiled (filters up to kMaxTiledTaps taps per axis, the networks' case): a block stages the filter
//   and the input region of an output tile of one channel in shared memory, then computes the tile.
// - General (any filter): one thread per output sample reading global memory.
// Both visit only the filter taps that meet input samples (never the inserted zeros).
//
// Reaches nothing from PyTorch but c10's Half and BFloat16 (kernel_dtype.h), so that `nvcc -c` compiles it on
// machines without a GPU (tests/torch_utils/ops/test_cuda_sources.py).

#include "upfirdn2d.h"

namespace upfirdn2d {
namespace {

constexpr int kThreads = 256;
constexpr int kMaxBlocks = 65535;
constexpr int kMaxTiledTaps = 24;
constexpr int kSharedBytes = 40 * 1024;  // under the 48 KB every GPU gives a block without opting in

template <typename T>
__global__ void upfirdn2d_tiled_kernel(Params p, int tile_w, int tile_h, int tiles_x, int tiles_y) {
    extern __shared__ float shared[];
    const Geometry& g = p.geometry;
    float* filter = shared;
    float* region = shared + g.filter_w * g.filter_h;
    for (int i = threadIdx.x; i < g.filter_w * g.filter_h; i += blockDim.x)
        filter[i] = p.filter[i];
    const int64_t planes = p.batch * p.channels;
    for (int64_t work = blockIdx.x; work < planes * tiles_x * tiles_y; work += gridDim.x) {
        const int64_t plane = work / (static_cast<int64_t>(tiles_x) * tiles_y);
        const int tile_index = static_cast<int>(work % (static_cast<int64_t>(tiles_x) * tiles_y));
        const int64_t n = plane / p.channels, c = plane % p.channels;
        const Tile t = make_tile(g, p.out_w, p.out_h, tile_w, tile_h, tile_index % tiles_x, tile_index / tiles_x);
        const T* x = static_cast<const T*>(p.x) + n * p.x_stride[0] + c * p.x_stride[1];
        T* out = static_cast<T*>(p.out) + n * p.out_stride[0] + c * p.out_stride[1];
        __syncthreads();  // the filter is staged; the previous tile's region is no longer read
        stage_input(g, t, region, threadIdx.x, blockDim.x, [&](int ix, int iy) {
            return static_cast<float>(x[iy * p.x_stride[2] + ix * p.x_stride[3]]);
        });
        __syncthreads();
        tile_output(g, t, filter, region, threadIdx.x, blockDim.x, [&](int ox, int oy, float value) {
            out[oy * p.out_stride[2] + ox * p.out_stride[3]] = static_cast<T>(value);
        });
    }
}

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
    const Geometry& g = p.geometry;
    if (g.filter_w <= kMaxTiledTaps && g.filter_h <= kMaxTiledTaps) {
        // The largest tile (up to 32 x 32 outputs) whose filter and input region fit in shared memory.
        int tile_w = 32, tile_h = 32;
        auto bytes = [&]() { return (g.filter_w * g.filter_h + max_region(g, tile_w, tile_h)) * 4; };
        while (bytes() > kSharedBytes && (tile_w > 1 || tile_h > 1)) {
            if (tile_w >= tile_h) tile_w = (tile_w + 1) / 2; else tile_h = (tile_h + 1) / 2;
        }
        if (bytes() <= kSharedBytes) {
            const int tiles_x = (p.out_w + tile_w - 1) / tile_w, tiles_y = (p.out_h + tile_h - 1) / tile_h;
            const int64_t work = p.batch * p.channels * tiles_x * tiles_y;
            const dim3 blocks(static_cast<unsigned>(work < kMaxBlocks ? work : kMaxBlocks));
            upfirdn2d_tiled_kernel<T><<<blocks, kThreads, bytes(), stream>>>(p, tile_w, tile_h, tiles_x, tiles_y);
            return cudaGetLastError();
        }
    }
    const int64_t wanted = (total + kThreads - 1) / kThreads;
    const dim3 blocks(static_cast<unsigned>(wanted < kMaxBlocks ? wanted : kMaxBlocks));
    upfirdn2d_kernel<T><<<blocks, kThreads, 0, stream>>>(p);
    return cudaGetLastError();
}

}  // namespace

cudaError_t launch(const Params& p, DType dtype, cudaStream_t stream) {
    return kernel_dtype::dispatch(dtype, [&](auto tag) { return launch_typed<decltype(tag)>(p, stream); });
}

}  // namespace upfirdn2d

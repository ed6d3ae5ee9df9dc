// Per-output-pixel arithmetic of the general upfirdn2d kernel: upsample by zero insertion, pad
// (negative padding crops), FIR-filter, downsample, for one output sample.
//
// Plain C++ with no dependency, compiled for the GPU by upfirdn2d_kernel.cu and for the host by the
// CPU tests (tests/torch_utils/ops/test_upfirdn2d_cuda.py), which compare it with the reference path.
//
// Output sample (ox, oy) reads the upsampled, padded input at (ox * down_x + i, oy * down_y + j) for
// the filter taps (i, j); that point is an input sample only where it lies on the upsampling grid:
// (ox * down_x + i - pad_x0) divisible by up_x, and inside the input. The loops visit only those taps
// (polyphase), never the inserted zeros. Convolution flips the filter; flip_filter = correlation.

#pragma once

#if defined(__CUDACC__)
#define UPFIRDN2D_HD __host__ __device__ __forceinline__
#else
#define UPFIRDN2D_HD inline
#endif

namespace upfirdn2d {

struct Geometry {
    int in_w, in_h;         // input size
    int up_x, up_y, down_x, down_y;
    int pad_x0, pad_y0;     // leading padding (trailing padding only decides the output size)
    int filter_w, filter_h; // taps of the 2-D filter, row-major [filter_h][filter_w], float32
    bool flip_filter;
    float gain;
};

// Smallest t >= 0 with (a + t) divisible by m (m >= 1; a may be negative).
UPFIRDN2D_HD int first_aligned(int a, int m) {
    const int r = a % m;
    return r == 0 ? 0 : (r > 0 ? m - r : -r);
}

// The output sample (ox, oy) of one channel; `load(ix, iy)` returns input sample (ix, iy) as float.
template <typename Load>
UPFIRDN2D_HD float output_sample(const Geometry& g, const float* filter, int ox, int oy, const Load& load) {
    const int base_x = ox * g.down_x - g.pad_x0;  // upsampled-grid coordinate of tap 0
    const int base_y = oy * g.down_y - g.pad_y0;
    float sum = 0.0f;
    for (int j = first_aligned(base_y, g.up_y); j < g.filter_h; j += g.up_y) {
        const int iy = (base_y + j) / g.up_y;
        if (iy < 0 || iy >= g.in_h)
            continue;
        const int row = g.flip_filter ? j : g.filter_h - 1 - j;
        for (int i = first_aligned(base_x, g.up_x); i < g.filter_w; i += g.up_x) {
            const int ix = (base_x + i) / g.up_x;
            if (ix < 0 || ix >= g.in_w)
                continue;
            const int col = g.flip_filter ? i : g.filter_w - 1 - i;
            sum += filter[row * g.filter_w + col] * load(ix, iy);
        }
    }
    return sum * g.gain;
}

// Tiling (the shared-memory kernel): a block computes the output samples [x0, x0 + w) x [y0, y0 + h)
// of one channel from the input region [in_x0, in_x0 + in_w) x [in_y0, in_y0 + in_h) staged in shared
// memory; input samples outside the image are staged as zeros.
struct Tile {
    int x0, y0, w, h;        // output samples (clipped to the output)
    int in_x0, in_y0;        // first input sample of the staged region (may lie outside the image)
    int in_w, in_h;          // size of the staged region
};

// Input index range [first, last] that output samples [o0, o0 + count) read along one axis.
UPFIRDN2D_HD void input_range(int o0, int count, int down, int up, int pad0, int taps, int* first, int* last) {
    const int u_first = o0 * down - pad0;                          // upsampled-grid coordinate of the first tap
    const int u_last = (o0 + count - 1) * down - pad0 + taps - 1;  // ... of the last tap
    // floor / ceil division by up for possibly negative numerators
    *first = u_first >= 0 ? (u_first + up - 1) / up : -((-u_first) / up);
    *last = u_last >= 0 ? u_last / up : -((-u_last + up - 1) / up);
}

UPFIRDN2D_HD Tile make_tile(const Geometry& g, int out_w, int out_h, int tile_w, int tile_h, int tile_x, int tile_y) {
    Tile t;
    t.x0 = tile_x * tile_w;
    t.y0 = tile_y * tile_h;
    t.w = out_w - t.x0 < tile_w ? out_w - t.x0 : tile_w;
    t.h = out_h - t.y0 < tile_h ? out_h - t.y0 : tile_h;
    int last;
    input_range(t.x0, t.w, g.down_x, g.up_x, g.pad_x0, g.filter_w, &t.in_x0, &last);
    t.in_w = last - t.in_x0 + 1;
    input_range(t.y0, t.h, g.down_y, g.up_y, g.pad_y0, g.filter_h, &t.in_y0, &last);
    t.in_h = last - t.in_y0 + 1;
    return t;
}

// Largest staged region of any tile of this size (the shared memory a block needs, in samples).
UPFIRDN2D_HD int max_region(const Geometry& g, int tile_w, int tile_h) {
    const int w = (tile_w - 1) * g.down_x / g.up_x + (g.filter_w + g.up_x - 1) / g.up_x + 2;
    const int h = (tile_h - 1) * g.down_y / g.up_y + (g.filter_h + g.up_y - 1) / g.up_y + 2;
    return w * h;
}

// Phase 1 of a tile, for thread `thread` of `threads`: stage the input region (zeros outside the image).
template <typename Load>
UPFIRDN2D_HD void stage_input(const Geometry& g, const Tile& t, float* region, int thread, int threads, const Load& load) {
    for (int i = thread; i < t.in_w * t.in_h; i += threads) {
        const int ix = t.in_x0 + i % t.in_w, iy = t.in_y0 + i / t.in_w;
        region[i] = (ix >= 0 && ix < g.in_w && iy >= 0 && iy < g.in_h) ? load(ix, iy) : 0.0f;
    }
}

// Phase 2: the tile's output samples from the staged region; `store(ox, oy, value)` writes one.
template <typename Store>
UPFIRDN2D_HD void tile_output(const Geometry& g, const Tile& t, const float* filter, const float* region, int thread,
                              int threads, const Store& store) {
    for (int i = thread; i < t.w * t.h; i += threads) {
        const int ox = t.x0 + i % t.w, oy = t.y0 + i / t.w;
        store(ox, oy, output_sample(g, filter, ox, oy, [&](int ix, int iy) {
            return region[(iy - t.in_y0) * t.in_w + (ix - t.in_x0)];
        }));
    }
}

}  // namespace upfirdn2d

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

}  // namespace upfirdn2d

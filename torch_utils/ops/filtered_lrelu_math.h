// Per-tile arithmetic of the fused filtered_lrelu kernel: for one output tile of one channel,
// stage the input (plus bias), compute the upsampled signal the tile needs (upfirdn2d up pass), apply
// leaky ReLU and clamp to it while recording 2 sign bits per sample for the backward pass, then
// filter and downsample it (down pass). Only the output and the bits reach global memory.
//
// Plain C++ over upfirdn2d_math.h, compiled for the GPU by filtered_lrelu_kernel.cu and for the
// host by the CPU tests (tests/torch_utils/ops/test_filtered_lrelu_cuda.py). The phase functions
// take (thread, threads): a block runs them with its threads and a barrier between phases; the
// host runs them one thread after another.
//
// The two passes are those of the reference path: the up pass maps x (in_w x in_h) to the
// upsampled signal (hi_w x hi_h) with all of the padding and the gain up^2 * gain; the down pass has
// no padding, up = 1, gain 1. Sign bits of upsampled sample (hx, hy): bit 0 = positive after the
// activation, bit 1 = cut by the clamp; 16 samples per 32-bit word along x, rows of words_per_row.

#pragma once

#include "upfirdn2d_math.h"

namespace filtered_lrelu {

using upfirdn2d::Geometry;
using upfirdn2d::Tile;

constexpr int kSamplesPerWord = 16;

struct Plan {
    Geometry up_pass, down_pass;  // up_pass.in_* = x size; down_pass.in_* = upsampled size
    float slope, clamp;           // clamp < 0: off
};

UPFIRDN2D_HD int words_per_row(int hi_w) { return (hi_w + kSamplesPerWord - 1) / kSamplesPerWord; }

// The tiles of one output tile: `down` (its upsampled region) and `up` (that region as up-pass output,
// with its input region).
struct Tiles {
    Tile down, up;
};

UPFIRDN2D_HD Tiles make_tiles(const Plan& p, int out_w, int out_h, int tile_w, int tile_h, int tile_x, int tile_y) {
    Tiles t;
    t.down = upfirdn2d::make_tile(p.down_pass, out_w, out_h, tile_w, tile_h, tile_x, tile_y);
    // Without padding in the down pass, the region lies inside the upsampled signal.
    t.up.x0 = t.down.in_x0;
    t.up.y0 = t.down.in_y0;
    t.up.w = t.down.in_w;
    t.up.h = t.down.in_h;
    int last;
    upfirdn2d::input_range(t.up.x0, t.up.w, p.up_pass.down_x, p.up_pass.up_x, p.up_pass.pad_x0, p.up_pass.filter_w,
                           &t.up.in_x0, &last);
    t.up.in_w = last - t.up.in_x0 + 1;
    upfirdn2d::input_range(t.up.y0, t.up.h, p.up_pass.down_y, p.up_pass.up_y, p.up_pass.pad_y0, p.up_pass.filter_h,
                           &t.up.in_y0, &last);
    t.up.in_h = last - t.up.in_y0 + 1;
    return t;
}

// Shared memory (floats) for the regions of any tile of this size, filters excluded.
UPFIRDN2D_HD int max_regions(const Plan& p, int tile_w, int tile_h) {
    const int hi_w = (tile_w - 1) * p.down_pass.down_x + p.down_pass.filter_w;
    const int hi_h = (tile_h - 1) * p.down_pass.down_y + p.down_pass.filter_h;
    return hi_w * hi_h + upfirdn2d::max_region(p.up_pass, hi_w, hi_h);
}

// Leaky ReLU and clamp of one upsampled sample; `bits` gets its 2 sign bits.
UPFIRDN2D_HD float activate(float v, float slope, float clamp, unsigned* bits) {
    v = v > 0.0f ? v : v * slope;
    unsigned b = v > 0.0f ? 1u : 0u;
    if (clamp >= 0.0f && (v > clamp || v < -clamp)) {
        v = v > clamp ? clamp : -clamp;
        b |= 2u;
    }
    *bits = b;
    return v;
}

// Phase 2 (after upfirdn2d::stage_input of t.up's input region, x + b): the activated upsampled
// region into `hi` ([t.up.h][t.up.w]); `set_bits(word_index, value)` ORs the sign bits into the
// plane's bit rows (several tiles may set the same bits: they compute the same values).
template <typename SetBits>
UPFIRDN2D_HD void upsample_activate(const Plan& p, const Tiles& t, const float* fu, const float* input, float* hi,
                                    int thread, int threads, const SetBits& set_bits) {
    const int row_words = words_per_row(p.down_pass.in_w);
    upfirdn2d::tile_output(p.up_pass, t.up, fu, input, thread, threads, [&](int hx, int hy, float value) {
        unsigned bits;
        hi[(hy - t.up.y0) * t.up.w + (hx - t.up.x0)] = activate(value, p.slope, p.clamp, &bits);
        if (bits)
            set_bits(hy * row_words + hx / kSamplesPerWord, bits << (2 * (hx % kSamplesPerWord)));
    });
}

// Phase 3: the output tile from the activated region; `store(ox, oy, value)` writes one sample.
template <typename Store>
UPFIRDN2D_HD void downsample(const Plan& p, const Tiles& t, const float* fd, const float* hi, int thread, int threads,
                             const Store& store) {
    upfirdn2d::tile_output(p.down_pass, t.down, fd, hi, thread, threads, store);
}

}  // namespace filtered_lrelu

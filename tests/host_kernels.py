"""Host builds of the CUDA kernels' arithmetic headers, as callables over numpy arrays and as stand-ins
for the built plugins, so that the CUDA paths' Python and autograd code runs on the CPU in tests."""

import ctypes

import numpy as np
import torch

import cuda_sources
from torch_utils.ops import upfirdn2d as upfirdn2d_module

UPFIRDN2D_SHIM = r'''
#include "upfirdn2d_math.h"
extern "C" void plane(const float* x, int in_w, int in_h, const float* f, int fw, int fh, int up_x, int up_y,
                      int down_x, int down_y, int pad_x0, int pad_y0, int flip, float gain, float* out, int out_w,
                      int out_h) {
    const upfirdn2d::Geometry g{in_w, in_h, up_x, up_y, down_x, down_y, pad_x0, pad_y0, fw, fh, flip != 0, gain};
    for (int oy = 0; oy < out_h; ++oy)
        for (int ox = 0; ox < out_w; ++ox)
            out[oy * out_w + ox] = upfirdn2d::output_sample(g, f, ox, oy, [&](int ix, int iy) { return x[iy * in_w + ix]; });
}

// The tiled kernel's algorithm on one plane, one tile at a time (3 threads run in turn, so that the
// strided thread loops are exercised); returns -1 if a staged region exceeded max_region.
extern "C" int tiled_plane(const float* x, int in_w, int in_h, const float* f, int fw, int fh, int up_x, int up_y,
                           int down_x, int down_y, int pad_x0, int pad_y0, int flip, float gain, float* out, int out_w,
                           int out_h, int tile_w, int tile_h) {
    const upfirdn2d::Geometry g{in_w, in_h, up_x, up_y, down_x, down_y, pad_x0, pad_y0, fw, fh, flip != 0, gain};
    const int capacity = upfirdn2d::max_region(g, tile_w, tile_h);
    float* region = new float[capacity];
    int status = 0;
    for (int ty = 0; ty * tile_h < out_h; ++ty)
        for (int tx = 0; tx * tile_w < out_w; ++tx) {
            const upfirdn2d::Tile t = upfirdn2d::make_tile(g, out_w, out_h, tile_w, tile_h, tx, ty);
            if (t.in_w * t.in_h > capacity) { status = -1; continue; }
            for (int thread = 0; thread < 3; ++thread)
                upfirdn2d::stage_input(g, t, region, thread, 3, [&](int ix, int iy) { return x[iy * in_w + ix]; });
            for (int thread = 0; thread < 3; ++thread)
                upfirdn2d::tile_output(g, t, f, region, thread, 3, [&](int ox, int oy, float v) { out[oy * out_w + ox] = v; });
        }
    delete[] region;
    return status;
}
'''


def load_upfirdn2d(out_dir):
    """(x [N, C, H, W], f2d, up, down, padding, flip, gain) -> float32 output, plane by plane."""
    lib = cuda_sources.host_library(UPFIRDN2D_SHIM, str(out_dir))
    ptr = ctypes.POINTER(ctypes.c_float)
    lib.plane.argtypes = [ptr, ctypes.c_int, ctypes.c_int, ptr] + [ctypes.c_int] * 9 + [ctypes.c_float, ptr,
                                                                                        ctypes.c_int, ctypes.c_int]
    lib.tiled_plane.argtypes = lib.plane.argtypes + [ctypes.c_int, ctypes.c_int]

    def run(x, f2d, up, down, padding, flip, gain, tile=None):
        """`tile` = (w, h): the tiled kernel's algorithm with that tile size; None: the general kernel's."""
        n, c, h, w = x.shape
        out_w = (w * up[0] + padding[0] + padding[1] - f2d.shape[1] + down[0]) // down[0]
        out_h = (h * up[1] + padding[2] + padding[3] - f2d.shape[0] + down[1]) // down[1]
        f = np.ascontiguousarray(f2d, dtype=np.float32)
        out = np.empty([n, c, out_h, out_w], np.float32)
        for i in range(n):
            for j in range(c):
                xp = np.ascontiguousarray(x[i, j], dtype=np.float32)
                result = np.empty([out_h, out_w], np.float32)
                args = (xp.ctypes.data_as(ptr), w, h, f.ctypes.data_as(ptr), f.shape[1], f.shape[0], up[0], up[1],
                        down[0], down[1], padding[0], padding[2], int(flip), gain, result.ctypes.data_as(ptr), out_w, out_h)
                if tile is None:
                    lib.plane(*args)
                else:
                    assert lib.tiled_plane(*args, *tile) == 0, "a staged region exceeded max_region()"
                out[i, j] = result
        return out
    return run


class UpfirdnHostPlugin:
    """Stands in for the built module: the binding's output size and layout over the host arithmetic."""

    def __init__(self, run):
        self.run = run
        self.calls = 0

    def upfirdn2d(self, x, f, up_x, up_y, down_x, down_y, pad_x0, pad_x1, pad_y0, pad_y1, flip_filter, gain):
        assert f.dtype == torch.float32 and f.ndim == 2  # 1-D filters arrive as their outer product
        self.calls += 1
        out = self.run(x.detach().float().numpy(), f.numpy(), (up_x, up_y), (down_x, down_y),
                       (pad_x0, pad_x1, pad_y0, pad_y1), flip_filter, gain)
        return torch.from_numpy(out).to(x.dtype).contiguous(memory_format=upfirdn2d_module._memory_format(x))


FILTERED_LRELU_SHIM = r'''
#include "filtered_lrelu_math.h"
// The fused kernel's algorithm on one plane, one output tile at a time (3 threads run in turn);
// returns -1 if a tile's regions exceeded max_regions.
extern "C" int fused_plane(const float* x, int in_w, int in_h, float bias, const float* fu, int fu_w, int fu_h,
                           const float* fd, int fd_w, int fd_h, int up, int down, int pad_x0, int pad_y0, int hi_w,
                           int hi_h, int flip, float up_gain, float slope, float clamp, float* out, int out_w, int out_h,
                           unsigned* bits, int tile_w, int tile_h) {
    filtered_lrelu::Plan p;
    p.up_pass = upfirdn2d::Geometry{in_w, in_h, up, up, 1, 1, pad_x0, pad_y0, fu_w, fu_h, flip != 0, up_gain};
    p.down_pass = upfirdn2d::Geometry{hi_w, hi_h, 1, 1, down, down, 0, 0, fd_w, fd_h, flip != 0, 1.0f};
    p.slope = slope;
    p.clamp = clamp;
    const int capacity = filtered_lrelu::max_regions(p, tile_w, tile_h);
    float* shared = new float[capacity];
    int status = 0;
    const int threads = 3;
    for (int ty = 0; ty * tile_h < out_h; ++ty)
        for (int tx = 0; tx * tile_w < out_w; ++tx) {
            const filtered_lrelu::Tiles t = filtered_lrelu::make_tiles(p, out_w, out_h, tile_w, tile_h, tx, ty);
            if (t.down.in_w * t.down.in_h + t.up.in_w * t.up.in_h > capacity) { status = -1; continue; }
            float* hi = shared;
            float* input = shared + t.down.in_w * t.down.in_h;
            for (int i = 0; i < threads; ++i)
                upfirdn2d::stage_input(p.up_pass, t.up, input, i, threads, [&](int ix, int iy) { return x[iy * in_w + ix] + bias; });
            for (int i = 0; i < threads; ++i)
                filtered_lrelu::upsample_activate(p, t, fu, input, hi, i, threads, [&](int word, unsigned b) { bits[word] |= b; });
            for (int i = 0; i < threads; ++i)
                filtered_lrelu::downsample(p, t, fd, hi, i, threads, [&](int ox, int oy, float v) { out[oy * out_w + ox] = v; });
        }
    delete[] shared;
    return status;
}
'''


def load_filtered_lrelu(out_dir):
    """fused(x [N, C, H, W], bias [C] or None, fu2d, fd2d, up, down, pad_x0, pad_y0, hi_w, hi_h, flip, up_gain,
    slope, clamp (< 0: off), tile) -> (out float32 [N, C, oh, ow], bits uint32 [N, C, hi_h, words])."""
    lib = cuda_sources.host_library(FILTERED_LRELU_SHIM, str(out_dir))
    f32, u32, i, f = ctypes.POINTER(ctypes.c_float), ctypes.POINTER(ctypes.c_uint32), ctypes.c_int, ctypes.c_float
    lib.fused_plane.argtypes = [f32, i, i, f, f32, i, i, f32, i, i, i, i, i, i, i, i, i, f, f, f, f32, i, i, u32, i, i]

    def fused(x, bias, fu, fd, up, down, pad_x0, pad_y0, hi_w, hi_h, flip, up_gain, slope, clamp, tile=(32, 32)):
        n, c, h, w = x.shape
        out_w, out_h = (hi_w - fd.shape[1]) // down + 1, (hi_h - fd.shape[0]) // down + 1
        fu, fd = (np.ascontiguousarray(a, dtype=np.float32) for a in (fu, fd))
        out = np.zeros([n, c, out_h, out_w], np.float32)
        bits = np.zeros([n, c, hi_h, (hi_w + 15) // 16], np.uint32)
        for k in range(n):
            for j in range(c):
                xp = np.ascontiguousarray(x[k, j], dtype=np.float32)
                o = np.zeros([out_h, out_w], np.float32)
                bp = np.zeros([hi_h, (hi_w + 15) // 16], np.uint32)
                status = lib.fused_plane(xp.ctypes.data_as(f32), w, h, 0.0 if bias is None else float(bias[j]),
                                         fu.ctypes.data_as(f32), fu.shape[1], fu.shape[0], fd.ctypes.data_as(f32),
                                         fd.shape[1], fd.shape[0], up, down, pad_x0, pad_y0, hi_w, hi_h, int(flip),
                                         up_gain, slope, clamp, o.ctypes.data_as(f32), out_w, out_h,
                                         bp.ctypes.data_as(u32), *tile)
                assert status == 0, 'a tile exceeded max_regions()'
                out[k, j], bits[k, j] = o, bp
        return out, bits
    return fused


class FilteredLReLUHostPlugin:
    """Stands in for the built filtered_lrelu module over the host build of its tile algorithm."""

    def __init__(self, fused):
        self.fused = fused
        self.calls = 0

    def filtered_lrelu(self, x, b, fu, fd, up, down, pad_x0, pad_y0, hi_w, hi_h, up_gain, slope, clamp, flip_filter,
                       want_bits):
        assert fu.dtype == fd.dtype == torch.float32 and fu.ndim == fd.ndim == 2
        self.calls += 1
        out, bits = self.fused(x.detach().float().numpy(), b.detach().float().numpy() if b.numel() else None,
                               fu.numpy(), fd.numpy(), up, down, pad_x0, pad_y0, hi_w, hi_h, flip_filter, up_gain,
                               slope, clamp)
        out = torch.from_numpy(out).to(x.dtype).contiguous(memory_format=upfirdn2d_module._memory_format(x))
        bits = torch.from_numpy(bits.view(np.int32)) if want_bits else torch.empty([0], dtype=torch.int32)
        return out, bits

"""Upsample, FIR-filter and downsample a batch of 2-D images (the official `upfirdn2d` op).

Semantics, per channel of an NCHW tensor, exactly as in the official op and in `scipy.signal.upfirdn`:
insert `up - 1` zeros after every sample, pad with zeros (negative padding crops), convolve with the
FIR filter `f` (true convolution; `flip_filter=True` gives correlation), keep every `down`-th sample.

The reference path never materialises the zero-stuffed image and never computes samples that the
decimation throws away:
  * upsampling runs as a strided transposed convolution, which is the polyphase form of
    "zero-stuff then filter" (each output phase is a short sub-filter applied to the original input);
  * downsampling runs as a strided convolution, so only the kept outputs are computed;
  * separable (1-D) filters run as two 1-D passes.
On CPU the batch is processed in small chunks, in the layout oneDNN is fastest at (see "Execution
strategy" below; measured with bench/ops_cpu.py). Gradients of any order w.r.t. `x` come from
`_Upfirdn2dFunction`, whose backward is again this op (up/down swapped, filter flip toggled).

The CUDA path (upfirdn2d_kernel.cu, arithmetic and tiling in upfirdn2d_math.h) visits only the
filter taps that meet input samples, in any memory layout, for float32 / float16 / bfloat16: filters
of up to 24 taps per axis run tiled (a block stages the filter and an output tile's input region in
shared memory), larger ones one thread per output sample. Its gradients come from the same Function, so they run the kernel too. It is
built on first use through `torch_utils.custom_ops` and is opt-in (`custom_ops.cuda_kernels_enabled()`)
until verified on a GPU; `selected_impl()` says which path a call takes.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

from torch_utils import custom_ops

# ----------------------------------------------------------------------------------------------
# Argument parsing helpers. Other modules (conv2d_resample, filtered_lrelu) import these by name.


def _parse_scaling(scaling):
    """Up/down factor given as int or [x, y] -> (sx, sy)."""
    if isinstance(scaling, (int, np.integer)):
        scaling = [scaling, scaling]
    assert isinstance(scaling, (list, tuple)) and len(scaling) == 2
    sx, sy = int(scaling[0]), int(scaling[1])
    assert sx >= 1 and sy >= 1
    return sx, sy


def _parse_padding(padding):
    """Padding given as int, [px, py] or [x0, x1, y0, y1] -> (px0, px1, py0, py1). Numpy integers
    (as computed by the StyleGAN3 layers) are accepted anywhere."""
    if isinstance(padding, np.ndarray):
        padding = padding.tolist()
    if isinstance(padding, (int, np.integer)):
        padding = [padding, padding]
    assert isinstance(padding, (list, tuple)) and len(padding) in (2, 4)
    if len(padding) == 2:
        padx, pady = padding
        padding = [padx, padx, pady, pady]
    px0, px1, py0, py1 = (int(p) for p in padding)
    return px0, px1, py0, py1


def _get_filter_size(f):
    """Filter taps as (fw, fh); an absent filter is a single-tap impulse."""
    if f is None:
        return 1, 1
    assert isinstance(f, torch.Tensor) and f.ndim in (1, 2)
    fw = int(f.shape[-1])
    fh = int(f.shape[0])
    assert fw >= 1 and fh >= 1
    return fw, fh


# ----------------------------------------------------------------------------------------------


def setup_filter(f, device=torch.device('cpu'), normalize=True, flip_filter=False, gain=1, separable=None):
    """Turn a filter given as list/array/tensor (or None) into the float32 tensor the ops expect.

    The separable rule decides buffer shapes inside official pickles, so it must not change:
    a 1-D filter stays 1-D only when it has at least 8 taps (unless `separable` says otherwise);
    shorter ones become their 2-D outer product, e.g. [1,3,3,1] -> 4x4.
    """
    if f is None:
        f = 1
    f = torch.as_tensor(f, dtype=torch.float32)
    assert f.ndim in (0, 1, 2)
    assert f.numel() > 0
    if f.ndim == 0:
        f = f.reshape(1)
    if separable is None:
        separable = f.ndim == 1 and f.numel() >= 8
    if f.ndim == 1 and not separable:
        f = torch.outer(f, f)
    assert f.ndim == (1 if separable else 2)
    if normalize:
        f = f / f.sum()
    if flip_filter:
        f = f.flip(list(range(f.ndim)))
    f = f * (gain ** (f.ndim / 2))
    return f.to(device=device)


# ----------------------------------------------------------------------------------------------
# Public ops.


def upfirdn2d(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Upsample by `up`, pad, FIR-filter with `f`, downsample by `down`; see the module docstring."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    use_kernel = selected_impl(x, impl) == 'cuda'
    return _upfirdn2d_ref(x, f, up=up, down=down, padding=padding, flip_filter=flip_filter, gain=gain,
                          use_kernel=use_kernel)


def selected_impl(x, impl='cuda'):
    """'cuda' when upfirdn2d on `x` runs the CUDA kernel, else 'ref': impl='cuda', a non-empty
    float32/float16/bfloat16 CUDA tensor, CUDA kernels enabled and the plugin built (a failed build
    warns once)."""
    assert impl in ('ref', 'cuda')
    if (impl != 'cuda' or x.device.type != 'cuda' or x.numel() == 0
            or x.dtype not in (torch.float32, torch.float16, torch.bfloat16)):
        return 'ref'
    if _plugin() is None:
        custom_ops.note_reference_path()  # once per process, while the kernels are disabled
        return 'ref'
    return 'cuda'


_PLUGIN_SOURCES = dict(sources=['upfirdn2d.cpp', 'upfirdn2d_kernel.cu'],
                       headers=['upfirdn2d.h', 'upfirdn2d_math.h', 'kernel_dtype.h', 'kernel_binding.h'],
                       source_dir=os.path.dirname(os.path.abspath(__file__)))


def _plugin():
    """The built kernel module, or None (kernels disabled, or the build failed: one warning)."""
    return custom_ops.try_get_kernel_plugin('upfirdn2d_plugin', **_PLUGIN_SOURCES)


def _filter_2d(f, device):
    """The float32 2-D filter the CUDA kernels take: a 1-D filter as its outer product, None as one unit tap."""
    if f is None:
        return torch.ones([1, 1], dtype=torch.float32, device=device)
    f = f.to(device=device, dtype=torch.float32)
    return (f[:, None] * f[None, :]) if f.ndim == 1 else f.contiguous()


def _resample_kernel(x, f, up, down, padding, flip_filter, gain):
    """The CUDA kernel on parsed arguments."""
    return _plugin().upfirdn2d(x, _filter_2d(f, x.device), up[0], up[1], down[0], down[1], *padding, flip_filter, gain)


def filter2d(x, f, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Filter without changing the image size; `padding` is added on top of the centring padding."""
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [px0 + fw // 2, px1 + (fw - 1) // 2, py0 + fh // 2, py1 + (fh - 1) // 2]
    return upfirdn2d(x, f, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


def upsample2d(x, f, up=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Upsample by `up` with filter `f`; the output is exactly `up` times the input size."""
    upx, upy = _parse_scaling(up)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        px0 + (fw + upx - 1) // 2,
        px1 + (fw - upx) // 2,
        py0 + (fh + upy - 1) // 2,
        py1 + (fh - upy) // 2,
    ]
    # Zero insertion divides the DC level by upx*upy; the gain restores it.
    return upfirdn2d(x, f, up=up, padding=p, flip_filter=flip_filter, gain=gain * upx * upy, impl=impl)


def downsample2d(x, f, down=2, padding=0, flip_filter=False, gain=1, impl='cuda'):
    """Filter with `f` and downsample by `down`; `padding` is w.r.t. the input."""
    downx, downy = _parse_scaling(down)
    px0, px1, py0, py1 = _parse_padding(padding)
    fw, fh = _get_filter_size(f)
    p = [
        px0 + (fw - downx + 1) // 2,
        px1 + (fw - downx) // 2,
        py0 + (fh - downy + 1) // 2,
        py1 + (fh - downy) // 2,
    ]
    return upfirdn2d(x, f, down=down, padding=p, flip_filter=flip_filter, gain=gain, impl=impl)


# ----------------------------------------------------------------------------------------------
# Dispatch.


def _upfirdn2d_ref(x, f, up=1, down=1, padding=0, flip_filter=False, gain=1, use_kernel=False):
    """Reference path: exact on every device, fast on CPU, differentiable to any order w.r.t. x
    (`use_kernel`: the same with the CUDA kernel doing the arithmetic, gradients included)."""
    if f is not None:
        assert isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.is_floating_point()
    up = _parse_scaling(up)
    down = _parse_scaling(down)
    padding = _parse_padding(padding)
    _output_size(x.shape, f, up, down, padding)  # fail early on impossible sizes
    return _upfirdn2d_autograd(x, f, up, down, padding, bool(flip_filter), float(gain), use_kernel)


def _output_size(shape, f, up, down, padding):
    fw, fh = _get_filter_size(f)
    out_w = (shape[3] * up[0] + padding[0] + padding[1] - fw + down[0]) // down[0]
    out_h = (shape[2] * up[1] + padding[2] + padding[3] - fh + down[1]) // down[1]
    if out_w < 1 or out_h < 1:
        raise ValueError(f'upfirdn2d: filter {fw}x{fh} does not fit the padded, upsampled input '
                         f'{tuple(shape[2:])} with up={up}, padding={padding}')
    return out_h, out_w


# ----------------------------------------------------------------------------------------------
# Execution strategy on CPU (choices measured with bench/ops_cpu.py on 2 cores).
#
# 1. Chunking: every step is per channel, so the work is split into (sample, channel group) chunks
#    of a few MB, each processed and copied straight into the caller-layout output. Full-size
#    temporaries cost more than the arithmetic here: glibc hands allocations above 32 MB to mmap,
#    so each one is page-faulted in afresh (~90 ms for 320 MB), while small chunks are recycled
#    from the heap and stay in cache. This alone made the ops 2-4x faster.
# 2. Layout: oneDNN's depthwise kernels are fast on NCHW for 2-D filters and strided (down)
#    passes, but its transposed 1-D passes are 2-3x faster on channels-last, which then pays for
#    converting each chunk; filtered_lrelu's chain of passes always runs channels-last.
# 3. Half precision has no fast CPU kernels: fp16/bf16 chunks are computed in float32.

# Target size of a chunk's largest intermediate. oneDNN's NCHW kernels carry more per-call
# overhead, so they get bigger chunks.
_CHUNK_BYTES_CHANNELS_LAST = 4 << 20
_CHUNK_BYTES_NCHW = 16 << 20
_SIMD_CHANNELS = 16  # channel groups are multiples of this, so channels-last vectorises fully


def _compute_dtype(x):
    if x.device.type == 'cpu' and x.dtype in (torch.float16, torch.bfloat16):
        return torch.float32
    return x.dtype


def _use_channels_last(x):
    """Whether channels-last can help at all: CPU float32 compute with more than one channel."""
    return x.device.type == 'cpu' and _compute_dtype(x) == torch.float32 and x.shape[1] > 1


def _prefers_channels_last(x, f, up):
    """Layout for a standalone upfirdn2d call (see the strategy notes above)."""
    if not _use_channels_last(x):
        return False
    if _is_channels_last(x):
        return True  # already there: no conversion to pay
    return f is not None and f.ndim == 1 and up != (1, 1)


def _to_compute_layout(x, channels_last=None):
    """A compute-ready copy or view of x: compute dtype, channels-last if requested (default: when
    it can help)."""
    x = x.to(_compute_dtype(x))
    if channels_last is None:
        channels_last = _use_channels_last(x)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    return x


def _is_channels_last(x):
    return x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()


def _memory_format(x):
    return torch.channels_last if _is_channels_last(x) else torch.contiguous_format


def _chunks(x, work_elems_per_channel, channels_last=True):
    """Split [N, C] into (sample slice, channel slice) pairs so that a chunk's largest
    intermediate (work_elems_per_channel values per channel) has about the target size.
    Channels-last chunks keep whole SIMD widths of channels, as oneDNN vectorises over channels
    there. Other devices have caching allocators and wide parallelism: one chunk."""
    n, c = x.shape[:2]
    if x.device.type != 'cpu':
        return [(slice(0, n), slice(0, c))]
    target = _CHUNK_BYTES_CHANNELS_LAST if channels_last else _CHUNK_BYTES_NCHW
    budget = max(1, target // (4 * max(1, work_elems_per_channel)))
    if budget >= c:
        step = max(1, budget // c)
        return [(slice(i, min(i + step, n)), slice(0, c)) for i in range(0, n, step)]
    group = budget
    if channels_last:
        group = c if c <= _SIMD_CHANNELS else max(_SIMD_CHANNELS, budget // _SIMD_CHANNELS * _SIMD_CHANNELS)
    return [(slice(i, i + 1), slice(j, min(j + group, c))) for i in range(n) for j in range(0, c, group)]


def _resample_chunked(x, f, up, down, padding, flip_filter, gain):
    """_resample over the whole batch, chunk by chunk, output in x's layout and dtype."""
    out_h, out_w = _output_size(x.shape, f, up, down, padding)
    work = max(out_h * out_w, x.shape[2] * x.shape[3] * up[0] * up[1])  # largest per-channel temporary
    channels_last = _prefers_channels_last(x, f, up)
    chunks = _chunks(x, work, channels_last)
    if len(chunks) == 1:  # small enough to skip the copy into a preallocated output
        y = _resample(_to_compute_layout(x, channels_last), f, up, down, padding, flip_filter, gain)
        return y.to(x.dtype).contiguous(memory_format=_memory_format(x))
    out = torch.empty([x.shape[0], x.shape[1], out_h, out_w], dtype=x.dtype, device=x.device,
                      memory_format=_memory_format(x))
    for ns, cs in chunks:
        xc = _to_compute_layout(x[ns, cs], channels_last)
        out[ns, cs].copy_(_resample(xc, f, up, down, padding, flip_filter, gain))
    return out


# ----------------------------------------------------------------------------------------------
# Autograd: the backward of upfirdn2d is upfirdn2d of the gradient with up/down swapped, the filter
# flipped and the padding chosen so that the result has exactly the input's size.


class _Upfirdn2dFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, f, up, down, padding, flip_filter, gain, use_kernel):
        resample = _resample_kernel if use_kernel else _resample_chunked
        y = resample(x, f, up, down, padding, flip_filter, gain)
        if y._base is not None:
            # Callers (the official networks among them) add into the result in place, which
            # autograd forbids on a view returned by a custom Function.
            y = y.clone(memory_format=_memory_format(y))
        ctx.f = f  # an input, never modified; no gradient is produced for it
        ctx.args = (up, down, padding, flip_filter, gain)
        ctx.use_kernel = use_kernel
        ctx.in_hw = tuple(x.shape[2:])
        ctx.out_hw = tuple(y.shape[2:])
        return y

    @staticmethod
    def backward(ctx, dy):
        dx = None
        if ctx.needs_input_grad[0]:
            t_up, t_down, t_pad, t_flip, gain = _transposed_args(ctx.f, ctx.in_hw, ctx.out_hw, *ctx.args)
            dx = _upfirdn2d_autograd(dy, ctx.f, t_up, t_down, t_pad, t_flip, gain, ctx.use_kernel)
        return dx, None, None, None, None, None, None, None


def _upfirdn2d_autograd(x, f, up, down, padding, flip_filter, gain, use_kernel=False):
    """Differentiable upfirdn2d on already-parsed arguments; output in x's layout and dtype."""
    return _Upfirdn2dFunction.apply(x, f, up, down, padding, flip_filter, gain, use_kernel)


def _transposed_args(f, in_hw, out_hw, up, down, padding, flip_filter, gain):
    """Arguments of the op whose matrix is the transpose of this one (used for gradients)."""
    fw, fh = _get_filter_size(f)
    ux, uy = up
    dx, dy = down
    px0, px1, py0, py1 = padding
    in_h, in_w = in_hw
    out_h, out_w = out_hw
    t_pad = (
        fw - px0 - 1,
        in_w * ux - out_w * dx + px0 - ux + 1,
        fh - py0 - 1,
        in_h * uy - out_h * dy + py0 - uy + 1,
    )
    return down, up, t_pad, not flip_filter, gain


# ----------------------------------------------------------------------------------------------
# The computation itself (no autograd), shared with filtered_lrelu.


def _resample(x, f, up, down, padding, flip_filter, gain):
    """upfirdn2d on parsed arguments; keeps x's layout; never returns x itself (callers may write
    into the result in place)."""
    if f is None and up == (1, 1):
        return _pad_crop_decimate(x, down, padding, gain)
    if f is None:
        f = torch.ones([1, 1], dtype=x.dtype, device=x.device)
    w = f.to(device=x.device, dtype=x.dtype) * (gain ** (f.ndim / 2))
    # Correlation kernel: the official op is a true convolution unless flip_filter is set.
    if not flip_filter:
        w = w.flip(list(range(w.ndim)))
    if w.ndim == 1:
        ux, uy = up
        dx, dy = down
        px0, px1, py0, py1 = padding
        x = _fir(x, w.reshape(1, -1), (ux, 1), (dx, 1), (px0, px1, 0, 0))
        return _fir(x, w.reshape(-1, 1), (1, uy), (1, dy), (0, 0, py0, py1))
    return _fir(x, w, up, down, padding)


def _pad_crop_decimate(x, down, padding, gain):
    """Impulse filter without upsampling: only padding/cropping, decimation and gain remain."""
    px0, px1, py0, py1 = padding
    y = _pad_or_crop(x, [px0, px1, py0, py1])
    y = y[:, :, ::down[1], ::down[0]]
    if gain != 1:
        return y * gain
    if y.untyped_storage().data_ptr() == x.untyped_storage().data_ptr():
        return y.clone(memory_format=_memory_format(x))
    return y


def _pad_or_crop(x, pads):
    """Pad, then crop ([x0, x1, y0, y1], negative = crop), as the official op does; the crop is a free
    view. (F.pad with mixed signs crops first, which fails when a crop exceeds the unpadded size.)"""
    if any(p > 0 for p in pads):
        x = F.pad(x, [max(p, 0) for p in pads])
    x0, x1, y0, y1 = (max(-p, 0) for p in pads)
    return x[:, :, y0:x.shape[2] - y1, x0:x.shape[3] - x1] if x0 or x1 or y0 or y1 else x


def _depthwise_conv(conv, x, k, **kwargs):
    """conv2d / conv_transpose2d of every channel with the same 2-D kernel k (broadcast, not
    copied: the backends repack weights anyway)."""
    c = x.shape[1]
    return conv(x, k.reshape(1, 1, *k.shape).expand(c, 1, *k.shape), groups=c, **kwargs)


def _fir(x, k, up, down, padding):
    """One filtering pass with 2-D correlation kernel k ([kh, kw]); per-axis up/down/padding."""
    if up == (1, 1):
        return _strided_fir(x, k, down, padding)
    y = _transposed_fir(x, k, up, padding)
    if down != (1, 1):
        # Up and down in the same pass never occurs in the networks; decimating the full-rate
        # result keeps this rare case simple.
        y = y[:, :, ::down[1], ::down[0]]
    return y


def _strided_fir(x, k, down, padding):
    """Filter + decimate as one strided depthwise convolution: only the kept samples are computed."""
    kh, kw = k.shape
    plan_x = _strided_axis_plan(x.shape[3], kw, down[0], padding[0], padding[1])
    plan_y = _strided_axis_plan(x.shape[2], kh, down[1], padding[2], padding[3])
    (cx, ex, qx, nx), (cy, ey, qy, ny) = plan_x, plan_y
    if cx or cy:
        x = x[:, :, cy:, cx:]
    if ex or ey:
        x = F.pad(x, [0, ex, 0, ey])
    y = _depthwise_conv(F.conv2d, x, k, stride=(down[1], down[0]), padding=(qy, qx))
    return y[:, :, :ny, :nx]


def _strided_axis_plan(n, k, d, p0, p1):
    """How to realise padding (p0, p1) around a strided convolution along one axis.

    Returns (front crop of the input, extra zeros after the input, symmetric conv padding,
    output length). The conv pads both ends by the front padding; any surplus at the end only
    produces outputs past the requested length, which are sliced off.
    """
    out_len = (n + p0 + p1 - k) // d + 1
    crop = max(-p0, 0)
    q = max(p0, 0)
    need = (out_len - 1) * d + k  # padded samples read by the last kept output
    extra = max(0, need - (q + (n - crop) + q))
    return crop, extra, q, out_len


def _transposed_fir(x, k, up, padding):
    """Zero-stuff + filter as one strided depthwise transposed convolution (polyphase: the
    inserted zeros are never multiplied)."""
    kh, kw = k.shape
    plan_x = _transposed_axis_plan(x.shape[3], kw, up[0], padding[0], padding[1])
    plan_y = _transposed_axis_plan(x.shape[2], kh, up[1], padding[2], padding[3])
    (qx, ox, fx, bx), (qy, oy, fy, by) = plan_x, plan_y
    # The transposed convolution applies its kernel flipped, so flip the correlation kernel back.
    y = _depthwise_conv(F.conv_transpose2d, x, k.flip([0, 1]), stride=(up[1], up[0]), padding=(qy, qx),
                        output_padding=(oy, ox))
    if fx or bx or fy or by:
        y = _pad_or_crop(y, [fx, bx, fy, by])
    return y


def _transposed_axis_plan(n, k, u, p0, p1):
    """How to cut the requested window out of a transposed convolution along one axis.

    The transposed conv yields t in [0, (n-1)*u + k); the op's output o is t = o + k - 1 - p0 for
    (n*u + p0 + p1 - k + 1) samples. The conv's own padding crops both ends symmetrically and its
    output_padding (< u) extends the end; whatever remains is padded/cropped afterwards.
    Returns (conv padding, output padding, residual front pad, residual back pad).
    """
    length = n * u + p0 + p1 - k + 1
    start = k - 1 - p0
    natural = (n - 1) * u + k
    end_crop = natural - (start + length)
    q = max(0, min(start, end_crop + u - 1, k - 1))
    op = min(u - 1, max(0, q - end_crop))
    front = q - start
    back = (start + length) - (natural - q + op)
    return q, op, front, back

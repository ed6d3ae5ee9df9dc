"""Filtered leaky ReLU (the official `filtered_lrelu` op of StyleGAN3).

Per channel: add bias -> upsample by `up` with filter `fu` (zero insertion, padding, FIR, gain up**2)
-> multiply by `gain` -> leaky ReLU with `slope` -> clamp to +-`clamp` -> FIR with `fd` and keep every
`down`-th sample.

The reference path reuses the polyphase/strided internals of upfirdn2d, so it never multiplies
inserted zeros nor computes discarded samples, and wraps everything in one autograd Function that
keeps only a boolean sign mask of the upsampled signal (plus a clamp mask when clamping actually
happened) instead of the chain of full-size intermediates plain autograd would store. Its backward
is built from differentiable ops, so second-order gradients w.r.t. x and b (R1) work.

The CUDA path is one fused kernel (filtered_lrelu_kernel.cu, arithmetic in filtered_lrelu_math.h):
each block computes an output tile of one channel through shared memory and writes only the output
and 2 sign bits per upsampled sample (positive, clamped), 16 samples per 32-bit word — all the
backward keeps. The backward is the transposed down pass, the sign masks and the transposed up pass
on the upfirdn2d CUDA kernel, built from differentiable ops as above. The path is opt-in
(`custom_ops.cuda_kernels_enabled()`) until verified on a GPU; `selected_impl()` says which path a
call takes.
"""

import os

import numpy as np
import torch

from torch_utils import custom_ops

from . import upfirdn2d as _u


def filtered_lrelu(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None,
                   flip_filter=False, impl='cuda'):
    """Bias, upsample, leaky ReLU, clamp, downsample; see the module docstring."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    if selected_impl(x, impl) == 'cuda':
        cfg = _config(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)
        return _FilteredLReLUCuda.apply(x, b, cfg, _records_graph(x, b))
    return _filtered_lrelu_ref(x, fu=fu, fd=fd, b=b, up=up, down=down, padding=padding, gain=gain, slope=slope,
                               clamp=clamp, flip_filter=flip_filter)


def selected_impl(x, impl='cuda'):
    """'cuda' when filtered_lrelu on `x` runs the fused kernel, else 'ref': impl='cuda', a non-empty
    float32/float16/bfloat16 CUDA tensor, CUDA kernels enabled, and both this plugin and upfirdn2d's
    (the backward's) built (a failed build warns once)."""
    assert impl in ('ref', 'cuda')
    if _u.selected_impl(x, impl) != 'cuda':
        return 'ref'
    if _plugin() is None:
        custom_ops.note_reference_path()  # once per process, while the kernels are disabled
        return 'ref'
    return 'cuda'


_PLUGIN_SOURCES = dict(sources=['filtered_lrelu.cpp', 'filtered_lrelu_kernel.cu'],
                       headers=['filtered_lrelu.h', 'filtered_lrelu_math.h', 'upfirdn2d_math.h', 'kernel_dtype.h',
                                'kernel_binding.h'],
                       source_dir=os.path.dirname(os.path.abspath(__file__)))


def _plugin():
    """The built kernel module, or None (kernels disabled, or the build failed: one warning)."""
    return custom_ops.try_get_kernel_plugin('filtered_lrelu_plugin', **_PLUGIN_SOURCES)


def _records_graph(x, b):
    # Inside Function.forward, needs_input_grad is set even under no_grad; decide here instead so
    # that inference never builds the masks.
    return torch.is_grad_enabled() and (x.requires_grad or (b is not None and b.requires_grad))


def _config(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter):
    """Validated arguments as a _Config."""
    assert isinstance(x, torch.Tensor) and x.ndim == 4
    for f in (fu, fd):
        assert f is None or (isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.is_floating_point())
    assert isinstance(up, (int, np.integer)) and up >= 1
    assert isinstance(down, (int, np.integer)) and down >= 1
    assert gain > 0 and slope >= 0
    assert clamp is None or clamp >= 0
    if b is not None:
        assert isinstance(b, torch.Tensor) and b.shape == (x.shape[1],)
    cfg = _Config(fu, fd, int(up), int(down), _u._parse_padding(padding), float(gain), float(slope),
                  None if clamp is None else float(clamp), bool(flip_filter))
    _check_output_size(x, cfg)
    return cfg


def _filtered_lrelu_ref(x, fu=None, fd=None, b=None, up=1, down=1, padding=0, gain=np.sqrt(2), slope=0.2, clamp=None,
                        flip_filter=False):
    """Reference path: exact on every device, differentiable twice w.r.t. x and b."""
    cfg = _config(x, fu, fd, b, up, down, padding, gain, slope, clamp, flip_filter)
    return _FilteredLReLUFunction.apply(x, b, cfg, _records_graph(x, b))


class _Config:
    """Everything but x and b; passed through autograd as one opaque argument."""

    def __init__(self, fu, fd, up, down, padding, gain, slope, clamp, flip_filter):
        self.fu, self.fd = fu, fd
        self.up, self.down = up, down
        self.padding = padding
        self.gain, self.slope, self.clamp = gain, slope, clamp
        self.flip_filter = flip_filter

    def up_pass(self):
        # lrelu(g*v) == g*lrelu(v) for g > 0, so the output gain rides along with the filter gain.
        return dict(f=self.fu, up=(self.up, self.up), down=(1, 1), padding=self.padding,
                    flip_filter=self.flip_filter, gain=self.up ** 2 * self.gain)

    def down_pass(self):
        return dict(f=self.fd, up=(1, 1), down=(self.down, self.down), padding=(0, 0, 0, 0),
                    flip_filter=self.flip_filter, gain=1.0)


def _check_output_size(x, cfg):
    out_h, out_w = _output_shape(x.shape, cfg)[2:]
    if out_w < 1 or out_h < 1:
        raise ValueError(f'filtered_lrelu: filters do not fit the padded, upsampled input {tuple(x.shape[2:])} '
                         f'with up={cfg.up}, padding={cfg.padding}')


# ----------------------------------------------------------------------------------------------


class _FilteredLReLUFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, cfg, want_masks):
        out = torch.empty(_output_shape(x.shape, cfg), dtype=x.dtype, device=x.device,
                          memory_format=_u._memory_format(x))
        chunks = _u._chunks(x, _hi_res_elems(x.shape, cfg))
        masks = []
        for ns, cs in chunks:
            xc = _biased_chunk(x[ns, cs], None if b is None else b[cs])
            y, pos, keep = _forward(xc, cfg, want_masks)
            out[ns, cs].copy_(y)
            masks += [pos, keep]
        ctx.cfg, ctx.chunks = cfg, chunks
        ctx.x_shape, ctx.x_dtype, ctx.x_format = tuple(x.shape), x.dtype, _u._memory_format(x)
        ctx.b_dtype = None if b is None else b.dtype
        ctx.mask_present = [m is not None for m in masks]
        ctx.save_for_backward(*(m for m in masks if m is not None))
        return out

    @staticmethod
    def backward(ctx, dy):
        saved = iter(ctx.saved_tensors)
        masks = [next(saved) if present else None for present in ctx.mask_present]
        pos_masks, keep_masks = masks[0::2], masks[1::2]
        if torch.is_grad_enabled():
            # A graph is being recorded (double backward, e.g. R1): use differentiable ops.
            dx = _backward_differentiable(dy, ctx, pos_masks, keep_masks)
        else:
            dx = _backward_chunked(dy, ctx, pos_masks, keep_masks)
        grad_x = dx if ctx.needs_input_grad[0] else None
        grad_b = dx.sum(dim=[0, 2, 3]).to(ctx.b_dtype) if ctx.needs_input_grad[1] else None
        return grad_x, grad_b, None, None


def _output_shape(shape, cfg):
    """Equals the official (in*up + p0 + p1 - (fu-1) - (fd-1) + (down-1)) // down per axis."""
    hi_h, hi_w = _hi_res_size(shape[2:], cfg)
    fd_w, fd_h = _u._get_filter_size(cfg.fd)
    return [shape[0], shape[1], (hi_h - fd_h) // cfg.down + 1, (hi_w - fd_w) // cfg.down + 1]


def _hi_res_size(in_hw, cfg):
    """Size of the upsampled, filtered signal the nonlinearity runs on."""
    fu_w, fu_h = _u._get_filter_size(cfg.fu)
    px0, px1, py0, py1 = cfg.padding
    return (in_hw[0] * cfg.up + py0 + py1 - fu_h + 1, in_hw[1] * cfg.up + px0 + px1 - fu_w + 1)


def _hi_res_elems(shape, cfg):
    hi_h, hi_w = _hi_res_size(shape[2:], cfg)
    return hi_h * hi_w


def _biased_chunk(x, b):
    """x + b in the compute layout and dtype, written in one pass (the add doubles as the layout
    conversion)."""
    dtype = _u._compute_dtype(x)
    fmt = torch.channels_last if _u._use_channels_last(x) else torch.contiguous_format
    out = torch.empty(x.shape, dtype=dtype, device=x.device, memory_format=fmt)
    if b is None:
        return out.copy_(x)
    return torch.add(x, b.to(dtype).reshape(1, -1, 1, 1), out=out)


def _forward(x, cfg, want_masks):
    """The op on a biased, compute-layout chunk. Returns (output, positive mask, keep mask)."""
    y = _u._resample(x, **cfg.up_pass())
    pos, keep = _activate_(y, cfg.slope, cfg.clamp, want_masks)
    z = _u._resample(y, **cfg.down_pass())
    return z, pos, keep


def _activate_(y, slope, clamp, want_masks):
    """In-place leaky ReLU and clamp on the upsampled signal (gain is already applied).

    The positive mask (y > 0 after the activation) is all the backward needs from the
    nonlinearity: it matches torch's leaky_relu derivative convention (slope at exactly 0) for
    every slope >= 0. Values beyond the clamp are rare, so the keep mask (False where the clamp
    cut the value and hence the gradient) is only built when a min/max scan finds any.
    """
    pos = keep = None
    if slope != 1:
        torch.nn.functional.leaky_relu_(y, slope)
        if want_masks:
            pos = y > 0
    if clamp is not None:
        lo, hi = torch.aminmax(_flat(y))
        if hi.item() > clamp or lo.item() < -clamp:
            if want_masks:
                keep = (y >= -clamp) & (y <= clamp)
            y.clamp_(-clamp, clamp)
    return pos, keep


def _flat(y):
    """A 1-D view of a dense tensor in either layout (reductions on a channels-last 4-D tensor
    would first copy it to NCHW)."""
    if y.is_contiguous():
        return y.view(-1)
    if y.is_contiguous(memory_format=torch.channels_last):
        return y.permute(0, 2, 3, 1).reshape(-1)
    return y


def _backward_chunked(dy, ctx, pos_masks, keep_masks):
    """Plain backward, chunk by chunk: transposed down pass, masks, transposed up pass."""
    cfg = ctx.cfg
    dx = torch.empty(ctx.x_shape, dtype=ctx.x_dtype, device=dy.device, memory_format=ctx.x_format)
    hi_hw = _hi_res_size(ctx.x_shape[2:], cfg)
    down_t = _transposed_pass(cfg.down_pass(), hi_hw, dy.shape[2:])
    up_t = _transposed_pass(cfg.up_pass(), ctx.x_shape[2:], hi_hw)
    for (ns, cs), pos, keep in zip(ctx.chunks, pos_masks, keep_masks):
        g = _u._resample(_u._to_compute_layout(dy[ns, cs]), **down_t)
        g = _apply_masks_(g, pos, keep, cfg.slope)
        dx[ns, cs].copy_(_u._resample(g, **up_t))
    return dx


def _backward_differentiable(dy, ctx, pos_masks, keep_masks):
    """The same computation on whole tensors with differentiable ops, for double backward.
    Its derivative w.r.t. x and b is zero almost everywhere (piecewise-linear op); what matters is
    that it is linear in dy, so gradients flow to whatever produced dy."""
    cfg = ctx.cfg
    hi_hw = _hi_res_size(ctx.x_shape[2:], cfg)
    g = _transposed_autograd(dy, cfg.down_pass(), hi_hw)
    pos = _assemble(pos_masks, ctx.chunks, g)
    keep = _assemble(keep_masks, ctx.chunks, g)
    if pos is not None:
        g = torch.where(pos, g, g * cfg.slope)
    if keep is not None:
        g = g * keep
    dx = _transposed_autograd(g, cfg.up_pass(), ctx.x_shape[2:])
    return dx.to(ctx.x_dtype).contiguous(memory_format=ctx.x_format)


def _assemble(masks, chunks, like):
    """Full-size mask from per-chunk masks (chunks without a mask are all True)."""
    if all(m is None for m in masks):
        return None
    full = torch.ones(like.shape, dtype=torch.bool, device=like.device)
    for (ns, cs), m in zip(chunks, masks):
        if m is not None:
            full[ns, cs].copy_(m)
    return full


def _transposed_pass(p, in_hw, out_hw):
    """Keyword arguments of _resample for the transpose of pass p (which mapped in_hw to out_hw)."""
    t_up, t_down, t_pad, t_flip, gain = _u._transposed_args(
        p['f'], tuple(in_hw), tuple(out_hw), p['up'], p['down'], p['padding'], p['flip_filter'], p['gain'])
    return dict(f=p['f'], up=t_up, down=t_down, padding=t_pad, flip_filter=t_flip, gain=gain)


def _transposed_autograd(dy, p, in_hw, use_kernel=False):
    t = _transposed_pass(p, in_hw, dy.shape[2:])
    return _u._upfirdn2d_autograd(dy, t['f'], t['up'], t['down'], t['padding'], t['flip_filter'], t['gain'],
                                  use_kernel)


def _apply_masks_(g, pos, keep, slope):
    """Multiply the upsampled gradient by the activation derivative, in place (g is a fresh
    chunk temporary: _resample never returns its input)."""
    if pos is not None:
        if slope == 0:
            g.mul_(pos)
        else:
            # g * (slope + (1 - slope) * pos) without a float temporary.
            g.addcmul_(g, pos, value=(1 - slope) / slope).mul_(slope)
    if keep is not None:
        g.mul_(keep)
    return g


# ----------------------------------------------------------------------------------------------
# CUDA path.

_SAMPLES_PER_WORD = 16


class _FilteredLReLUCuda(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, b, cfg, want_bits):
        hi_h, hi_w = _hi_res_size(x.shape[2:], cfg)
        px0, _, py0, _ = cfg.padding
        empty = torch.empty([0], dtype=x.dtype, device=x.device)
        out, bits = _plugin().filtered_lrelu(
            x, empty if b is None else b.contiguous(), _u._filter_2d(cfg.fu, x.device), _u._filter_2d(cfg.fd, x.device),
            cfg.up, cfg.down, px0, py0, hi_w, hi_h, cfg.up_pass()['gain'], cfg.slope,
            -1.0 if cfg.clamp is None else cfg.clamp, cfg.flip_filter, bool(want_bits))
        ctx.cfg = cfg
        ctx.x_shape, ctx.x_dtype, ctx.x_format = tuple(x.shape), x.dtype, _u._memory_format(x)
        ctx.b_dtype = None if b is None else b.dtype
        ctx.save_for_backward(bits)
        return out

    @staticmethod
    def backward(ctx, dy):
        bits, = ctx.saved_tensors
        cfg = ctx.cfg
        hi_hw = _hi_res_size(ctx.x_shape[2:], cfg)
        positive, clamped = _unpack_sign_bits(bits, hi_hw[1])
        # Differentiable ops on dy, so a double backward (R1) flows through; the masks are constants.
        g = _transposed_autograd(dy, cfg.down_pass(), hi_hw, use_kernel=True)
        if cfg.slope != 1:
            g = torch.where(positive, g, g * cfg.slope)
        if cfg.clamp is not None:
            g = torch.where(clamped, torch.zeros_like(g), g)
        dx = _transposed_autograd(g, cfg.up_pass(), ctx.x_shape[2:], use_kernel=True)
        dx = dx.to(ctx.x_dtype).contiguous(memory_format=ctx.x_format)
        grad_x = dx if ctx.needs_input_grad[0] else None
        grad_b = dx.sum(dim=[0, 2, 3]).to(ctx.b_dtype) if ctx.needs_input_grad[1] else None
        return grad_x, grad_b, None, None


def _unpack_sign_bits(bits, hi_w):
    """(positive, clamped) bool masks [N, C, hi_h, hi_w] from the kernel's packed int32 words."""
    shifts = torch.arange(_SAMPLES_PER_WORD, device=bits.device, dtype=torch.int32) * 2
    pairs = (bits.unsqueeze(-1) >> shifts) & 3
    pairs = pairs.reshape(*bits.shape[:3], -1)[..., :hi_w]
    return (pairs & 1).bool(), (pairs & 2).bool()

"""Fused bias + activation + gain + clamp: `bias_act(x, b, act=..., gain=..., clamp=...)`.

Computes `clamp(act(x + b, alpha) * gain, -clamp, +clamp)` with `b` broadcast along `dim`.
The reference path is plain differentiable PyTorch (gradients of every order) and runs on every
device. The CUDA path is one fused kernel per pass (bias_act_kernel.cu; the arithmetic is in
bias_act_math.h): forward, first derivative and second derivative, in float32, float16 or
bfloat16, for dense tensors of any memory layout. The backward keeps only the output y (the input
x for swish), as the official kernel does. It is built on first use through
`torch_utils.custom_ops` and is opt-in (`custom_ops.cuda_kernels_enabled()`) until verified on a
GPU; `selected_impl()` says which path a call takes.
"""

import os

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib
from torch_utils import custom_ops


def _swish(x, alpha):
    return torch.sigmoid(x) * x


# `ref` says which saved tensor the fused backward needs ('x' = pre-activation, 'y' = output);
# `has_2nd_grad` says whether the second derivative is non-zero somewhere (False for piecewise-linear
# activations). Networks read `def_gain` from here, so the values are part of the public surface.
activation_funcs = {
    'linear':   dnnlib.EasyDict(func=lambda x, alpha: x,                          def_alpha=0,   def_gain=1,          cuda_idx=1, ref='',  has_2nd_grad=False),
    'relu':     dnnlib.EasyDict(func=lambda x, alpha: F.relu(x),                  def_alpha=0,   def_gain=np.sqrt(2), cuda_idx=2, ref='y', has_2nd_grad=False),
    'lrelu':    dnnlib.EasyDict(func=lambda x, alpha: F.leaky_relu(x, alpha),     def_alpha=0.2, def_gain=np.sqrt(2), cuda_idx=3, ref='y', has_2nd_grad=False),
    'tanh':     dnnlib.EasyDict(func=lambda x, alpha: torch.tanh(x),              def_alpha=0,   def_gain=1,          cuda_idx=4, ref='y', has_2nd_grad=True),
    'sigmoid':  dnnlib.EasyDict(func=lambda x, alpha: torch.sigmoid(x),           def_alpha=0,   def_gain=1,          cuda_idx=5, ref='y', has_2nd_grad=True),
    'elu':      dnnlib.EasyDict(func=lambda x, alpha: F.elu(x),                   def_alpha=0,   def_gain=1,          cuda_idx=6, ref='y', has_2nd_grad=True),
    'selu':     dnnlib.EasyDict(func=lambda x, alpha: F.selu(x),                  def_alpha=0,   def_gain=1,          cuda_idx=7, ref='y', has_2nd_grad=True),
    'softplus': dnnlib.EasyDict(func=lambda x, alpha: F.softplus(x),              def_alpha=0,   def_gain=1,          cuda_idx=8, ref='y', has_2nd_grad=True),
    'swish':    dnnlib.EasyDict(func=_swish,                                      def_alpha=0,   def_gain=np.sqrt(2), cuda_idx=9, ref='x', has_2nd_grad=True),
}

def bias_act(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl='cuda'):
    r"""Add bias `b` to `x` along dimension `dim`, apply activation `act`, scale by `gain`, clamp.

    Args:
        x:      Input tensor of any rank and floating-point dtype.
        b:      Bias, a 1-D tensor of the same dtype as `x` with `x.shape[dim]` elements, or None.
        dim:    The dimension of `x` that `b` runs along.
        act:    Name of the activation, a key of `activation_funcs`.
        alpha:  Shape parameter of the activation (the negative slope of 'lrelu'); None = its default.
        gain:   Factor applied after the activation; None = the activation's default gain.
        clamp:  Clamp the output to [-clamp, +clamp]; None disables clamping. Must be >= 0.
        impl:   'cuda' (the fused kernel when `selected_impl` says so: a CUDA tensor, CUDA kernels
                enabled with RAYCOND_CUDA_KERNELS=1, and the plugin builds; otherwise the
                reference path) or 'ref'.

    Returns:
        Tensor of the same shape and dtype as `x`.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'bias_act: x must be a torch.Tensor, got {type(x).__name__}')
    if selected_impl(x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp, impl=impl) == 'cuda':
        spec, dim, alpha, gain, clamp = _resolve_params(x, b, dim, act, alpha, gain, clamp)
        return _bias_act_cuda(dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp).apply(x, b)
    return _bias_act_ref(x=x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


def selected_impl(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None, impl='cuda'):
    """'cuda' when `bias_act` with these arguments runs the fused kernel, else 'ref'.

    The kernel runs for impl='cuda' on a non-empty float32/float16/bfloat16 CUDA tensor with a
    positive gain, when CUDA kernels are enabled and the plugin builds (a failed build warns once).
    """
    if impl not in ('ref', 'cuda'):
        raise ValueError(f"bias_act: impl must be 'ref' or 'cuda', got {impl!r}")
    if (impl != 'cuda' or x.device.type != 'cuda' or x.numel() == 0
            or x.dtype not in (torch.float32, torch.float16, torch.bfloat16)):
        return 'ref'
    _, _, _, gain, _ = _resolve_params(x, b, dim, act, alpha, gain, clamp)
    if gain <= 0:
        return 'ref'
    if _plugin() is None:
        custom_ops.note_reference_path()  # once per process, while the kernels are disabled
        return 'ref'
    return 'cuda'


_PLUGIN_SOURCES = dict(sources=['bias_act.cpp', 'bias_act_kernel.cu'],
                       headers=['bias_act.h', 'bias_act_math.h', 'kernel_dtype.h', 'kernel_binding.h'],
                       source_dir=os.path.dirname(os.path.abspath(__file__)))


def _plugin():
    """The built kernel module, or None (kernels disabled, or the build failed: one warning)."""
    return custom_ops.try_get_kernel_plugin('bias_act_plugin', **_PLUGIN_SOURCES)


def _resolve_params(x, b, dim, act, alpha, gain, clamp):
    """Validate the arguments and fill in the per-activation defaults."""
    if act not in activation_funcs:
        raise ValueError(f'bias_act: unknown activation {act!r}; expected one of {sorted(activation_funcs)}')
    spec = activation_funcs[act]
    alpha = float(alpha if alpha is not None else spec.def_alpha)
    gain = float(gain if gain is not None else spec.def_gain)
    if clamp is not None:
        clamp = float(clamp)
        if not clamp >= 0:
            raise ValueError(f'bias_act: clamp must be None or >= 0, got {clamp}')
    if b is not None:
        if not isinstance(b, torch.Tensor) or b.ndim != 1:
            raise ValueError('bias_act: b must be a 1-D tensor')
        if not -x.ndim <= dim < x.ndim:
            raise ValueError(f'bias_act: dim={dim} is out of range for a {x.ndim}-D input')
        dim = dim % x.ndim
        if b.shape[0] != x.shape[dim]:
            raise ValueError(f'bias_act: b has {b.shape[0]} elements but x.shape[{dim}] is {x.shape[dim]}')
        if b.dtype != x.dtype:
            raise ValueError(f'bias_act: b has dtype {b.dtype} but x has dtype {x.dtype}')
    return spec, dim, alpha, gain, clamp


def _bias_act_ref(x, b=None, dim=1, act='linear', alpha=None, gain=None, clamp=None):
    """Reference implementation from ordinary differentiable PyTorch ops."""
    spec, dim, alpha, gain, clamp = _resolve_params(x, b, dim, act, alpha, gain, clamp)
    if b is not None:
        x = x + b.reshape([-1 if i == dim else 1 for i in range(x.ndim)])
    x = spec.func(x, alpha=alpha)
    if gain != 1:
        x = x * gain
    if clamp is not None:
        x = x.clamp(-clamp, clamp)
    return x


# ----------------------------------------------------------------------------------------------
# CUDA path: two autograd Functions per parameter set, the forward and its gradient (whose own
# backward gives the second derivative).

_FORWARD, _GRAD1, _GRAD2 = 0, 1, 2
_cuda_functions = dict()


def _is_dense(t):
    """Contiguous in one of the layouts the networks use (the kernel takes any dense layout)."""
    formats = {4: torch.channels_last, 5: torch.channels_last_3d}
    return t.is_contiguous() or (t.ndim in formats and t.is_contiguous(memory_format=formats[t.ndim]))


def _dense_like(t, like):
    """`t` with the memory layout of `like` (the kernels index every tensor of a call identically)."""
    return t if t.stride() == like.stride() else torch.empty_like(like).copy_(t)


def _reduce_to_bias(dx, dim):
    return dx.sum([i for i in range(dx.ndim) if i != dim])


def _bias_act_cuda(dim, act, alpha, gain, clamp):
    """autograd.Function for fixed parameters (cached, as a Function's behaviour is fixed per class)."""
    key = (dim, act, alpha, gain, clamp)
    if key in _cuda_functions:
        return _cuda_functions[key]
    spec = activation_funcs[act]
    pre_activation = spec.ref == 'x'
    # The gradient's own backward returns d/dx of act'(x + b), so x is an input of it whenever that is
    # not zero (as in the official kernel); the first derivative alone needs only y (or x for swish).
    keep_input = pre_activation or spec.has_2nd_grad
    clamp_arg = -1.0 if clamp is None else clamp
    empty = torch.empty([0])

    def kernel(like, mode, x=None, b=None, y=None, dy=None):
        e = empty.to(like.device, like.dtype)
        return _plugin().bias_act(like, e if x is None else x, e if b is None else b, e if y is None else y,
                                  e if dy is None else dy, dim, spec.cuda_idx, mode, alpha, gain, clamp_arg)

    class BiasActCuda(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, b):
            if not _is_dense(x):
                x = x.contiguous()
            b = None if b is None else b.contiguous()
            y = kernel(x, _FORWARD, x=x, b=b)
            ctx.save_for_backward(x if keep_input else None, b if keep_input else None, None if pre_activation else y)
            ctx.has_bias = b is not None
            return y

        @staticmethod
        def backward(ctx, dy):
            x, b, y = ctx.saved_tensors
            like = x if pre_activation else y
            dx = BiasActCudaGrad.apply(_dense_like(dy, like), x, b, y)
            db = _reduce_to_bias(dx, dim) if ctx.has_bias and ctx.needs_input_grad[1] else None
            return dx, db

    class BiasActCudaGrad(torch.autograd.Function):
        """dx = dy * gain * act'(x + b), zero where the output was clamped."""
        @staticmethod
        def forward(ctx, dy, x, b, y):
            ctx.save_for_backward(dy, x, b, y)
            return kernel(dy, _GRAD1, x=x, b=b, y=y, dy=dy)

        @staticmethod
        def backward(ctx, d_dx):
            dy, x, b, y = ctx.saved_tensors
            d_dx = _dense_like(d_dx, dy)
            d_dy = kernel(dy, _GRAD1, x=x, b=b, y=y, dy=d_dx) if ctx.needs_input_grad[0] else None
            d_x = d_b = None
            if spec.has_2nd_grad and (ctx.needs_input_grad[1] or ctx.needs_input_grad[2]):
                # d(dx)/d(x + b) = dy * gain * act''(x + b); y is a function of x, and this is its whole effect.
                d_x = kernel(dy, _GRAD2, x=x, b=b, y=y, dy=_dense_like(d_dx * dy, dy))
                d_b = _reduce_to_bias(d_x, dim) if b is not None and ctx.needs_input_grad[2] else None
            return d_dy, d_x, d_b, None

    _cuda_functions[key] = BiasActCuda
    return BiasActCuda

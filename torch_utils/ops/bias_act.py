"""Fused bias + activation + gain + clamp: `bias_act(x, b, act=..., gain=..., clamp=...)`.

Computes `clamp(act(x + b, alpha) * gain, -clamp, +clamp)` with `b` broadcast along `dim`.
The reference path below is plain differentiable PyTorch (gradients of every order) and runs
on every device. A fused CUDA kernel is a later addition; `bias_act()` is the one place where it
will plug in.
"""

import numpy as np
import torch
import torch.nn.functional as F

import dnnlib


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
        impl:   'cuda' (fused kernel when `x` is on a CUDA device and the kernel is available,
                otherwise the reference path) or 'ref'.

    Returns:
        Tensor of the same shape and dtype as `x`.
    """
    if not isinstance(x, torch.Tensor):
        raise TypeError(f'bias_act: x must be a torch.Tensor, got {type(x).__name__}')
    if impl not in ('ref', 'cuda'):
        raise ValueError(f"bias_act: impl must be 'ref' or 'cuda', got {impl!r}")
    # A fused CUDA kernel (a later issue) plugs in here; until then every device takes the reference path.
    return _bias_act_ref(x=x, b=b, dim=dim, act=act, alpha=alpha, gain=gain, clamp=clamp)


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

"""Drop-in `conv2d` / `conv_transpose2d` whose weight gradients can be switched off.

Modern PyTorch differentiates convolutions to any order natively, so when `enabled` is False
these are plain `torch.nn.functional` calls. When `enabled` is True they go through a custom
autograd Function whose backward, written in differentiable public ops, skips the weight
gradient while `no_weight_gradients()` is active. Regularisers that differentiate only w.r.t.
the input (R1, path length) use that to save the unused weight-gradient work; the flag is read
when the backward runs, so the forward may happen outside the context.
"""

import contextlib

import torch
import torch.nn.functional as F

enabled = False                     # Route convolutions through the custom Function (training enables it).
weight_gradients_disabled = False   # Set inside `no_weight_gradients()`; read at backward time.


@contextlib.contextmanager
def no_weight_gradients(disable=True):
    """Within this context, backward passes through `conv2d`/`conv_transpose2d` give the weight no gradient."""
    global weight_gradients_disabled
    previous = weight_gradients_disabled
    if disable:
        weight_gradients_disabled = True
    try:
        yield
    finally:
        weight_gradients_disabled = previous


def conv2d(input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    if not enabled:
        return F.conv2d(input=input, weight=weight, bias=bias, stride=stride, padding=padding, dilation=dilation, groups=groups)
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, output_padding=0)
    return _Conv2dFunction.apply(input, weight, bias, False, params)


def conv_transpose2d(input, weight, bias=None, stride=1, padding=0, output_padding=0, groups=1, dilation=1):
    if not enabled:
        return F.conv_transpose2d(input=input, weight=weight, bias=bias, stride=stride, padding=padding,
                                  output_padding=output_padding, groups=groups, dilation=dilation)
    params = dict(stride=stride, padding=padding, dilation=dilation, groups=groups, output_padding=output_padding)
    return _Conv2dFunction.apply(input, weight, bias, True, params)


def _run_conv(input, weight, bias, transpose, p):
    if transpose:
        return F.conv_transpose2d(input, weight, bias, stride=p['stride'], padding=p['padding'],
                                  output_padding=p['output_padding'], groups=p['groups'], dilation=p['dilation'])
    return F.conv2d(input, weight, bias, stride=p['stride'], padding=p['padding'], dilation=p['dilation'], groups=p['groups'])


class _Conv2dFunction(torch.autograd.Function):
    """conv2d (transpose=False) or conv_transpose2d (transpose=True) with a switchable weight gradient.

    The backward uses only natively differentiable ops, so gradients of any order flow through it
    (a convolution's input gradient is the adjoint convolution with the same weight).
    """

    @staticmethod
    def forward(ctx, input, weight, bias, transpose, params):
        ctx.save_for_backward(input, weight)
        ctx.transpose = transpose
        ctx.params = params
        ctx.has_bias = bias is not None
        return _run_conv(input, weight, bias, transpose, params)

    @staticmethod
    def backward(ctx, grad_output):
        input, weight = ctx.saved_tensors
        p = ctx.params
        conv_args = dict(stride=p['stride'], padding=p['padding'], dilation=p['dilation'], groups=p['groups'])
        grad_input = grad_weight = grad_bias = None

        if ctx.needs_input_grad[0]:
            if ctx.transpose:
                # Adjoint of conv_transpose2d is conv2d; output_padding only added rows/cols that conv2d drops again.
                grad_input = F.conv2d(grad_output, weight, None, **conv_args)
            else:
                grad_input = torch.nn.grad.conv2d_input(input.shape, weight, grad_output, **conv_args)

        if ctx.needs_input_grad[1] and not weight_gradients_disabled:
            if ctx.transpose:
                # conv_transpose2d(x, w) is the adjoint of conv2d(., w) mapping output-shaped maps back to x's shape.
                grad_weight = torch.nn.grad.conv2d_weight(grad_output, weight.shape, input, **conv_args)
            else:
                grad_weight = torch.nn.grad.conv2d_weight(input, weight.shape, grad_output, **conv_args)

        if ctx.has_bias and ctx.needs_input_grad[2]:
            grad_bias = grad_output.sum(dim=[0, 2, 3])

        return grad_input, grad_weight, grad_bias, None, None

"""2-D convolution with optional FIR up/downsampling, computed by the cheapest equivalent route.

`conv2d_resample(x, w, f, up, down, padding, ...)` is defined as the composition

    upfirdn2d(x, f if up > 1 else None, up=up, padding=P, gain=up**2, flip_filter=flip_filter)
    -> conv2d with w ('valid': no padding of its own; groups; correlation if flip_weight else true convolution)
    -> upfirdn2d(., f, down=down, flip_filter=flip_filter)   (only when down > 1)

where P is the caller's `padding` (given w.r.t. the upsampled image) plus the amount that makes a
filter of `f`'s size keep the image centred: ((fw + up - 1) // 2, (fw - up) // 2) per axis when
upsampling, ((fw - down + 1) // 2, (fw - down) // 2) when downsampling. So a k×k kernel with padding
k // 2 maps H to H * up / down exactly.

Because the FIR filter acts on every channel alike, it commutes with the convolution, and the
implementation reorders the stages to touch as few pixels as possible (see the branches below).
"""

import torch

from . import conv2d_gradfix
from . import upfirdn2d
from .upfirdn2d import _parse_padding, _get_filter_size


def _conv2d_wrapper(x, w, stride=1, padding=0, groups=1, transpose=False, flip_weight=True):
    """conv2d or conv_transpose2d; flip_weight=False flips the kernel (true convolution for conv2d)."""
    if not flip_weight and (w.shape[2] > 1 or w.shape[3] > 1):
        w = w.flip([2, 3])
    if transpose:
        return conv2d_gradfix.conv_transpose2d(x, w, stride=stride, padding=padding, groups=groups)
    return conv2d_gradfix.conv2d(x, w, stride=stride, padding=padding, groups=groups)


def _transpose_weight_per_group(w, groups):
    """[Cout, Cin/g, kh, kw] conv2d layout -> [Cin, Cout/g, kh, kw] conv_transpose2d layout."""
    out_channels, in_per_group, kh, kw = w.shape
    w = w.reshape(groups, out_channels // groups, in_per_group, kh, kw)
    return w.transpose(1, 2).reshape(groups * in_per_group, out_channels // groups, kh, kw)


def _validate(x, w, f, up, down, groups):
    if not (isinstance(x, torch.Tensor) and x.ndim == 4):
        raise ValueError('conv2d_resample: x must be a 4-D tensor [N, C, H, W]')
    if not (isinstance(w, torch.Tensor) and w.ndim == 4 and w.dtype == x.dtype):
        raise ValueError('conv2d_resample: w must be a 4-D tensor [Cout, Cin/groups, kh, kw] with the dtype of x')
    if f is not None and not (isinstance(f, torch.Tensor) and f.ndim in (1, 2) and f.dtype == torch.float32):
        raise ValueError('conv2d_resample: f must be None or a 1-D/2-D float32 tensor (see upfirdn2d.setup_filter)')
    for name, value in (('up', up), ('down', down), ('groups', groups)):
        if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
            raise ValueError(f'conv2d_resample: {name} must be an integer >= 1, got {value!r}')
    if w.shape[0] % groups != 0 or x.shape[1] != w.shape[1] * groups:
        raise ValueError(f'conv2d_resample: x has {x.shape[1]} channels, incompatible with w of shape '
                         f'{tuple(w.shape)} and groups={groups}')


def conv2d_resample(x, w, f=None, up=1, down=1, padding=0, groups=1, flip_weight=True, flip_filter=False):
    r"""2-D convolution with optional up/downsampling by an FIR filter.

    Args:
        x:           Input [N, in_channels, H, W].
        w:           Weights [out_channels, in_channels // groups, kh, kw], same dtype as x.
        f:           float32 FIR filter from `upfirdn2d.setup_filter()` ([taps] separable or [fh, fw]),
                     or None (identity).
        up:          Integer upsampling factor.
        down:        Integer downsampling factor.
        padding:     Padding w.r.t. the upsampled image: int, [x, y] or [x0, x1, y0, y1].
        groups:      Number of channel groups.
        flip_weight: False = true convolution (kernel flipped), True = correlation like `torch.nn.functional.conv2d`.
        flip_filter: False = convolve with `f` (flipped), True = correlate with it.

    Returns:
        Tensor [N, out_channels, H', W'].
    """
    _validate(x, w, f, up, down, groups)
    kh, kw = w.shape[2], w.shape[3]
    fw, fh = _get_filter_size(f)
    px0, px1, py0, py1 = _parse_padding(padding)

    # Centre the filtered signal: padding that a filter of size (fw, fh) needs around the resampling.
    if up > 1:
        px0 += (fw + up - 1) // 2
        px1 += (fw - up) // 2
        py0 += (fh + up - 1) // 2
        py1 += (fh - up) // 2
    if down > 1:
        px0 += (fw - down + 1) // 2
        px1 += (fw - down) // 2
        py0 += (fh - down + 1) // 2
        py1 += (fh - down) // 2

    # 1x1 kernel, downsampling only: a 1x1 conv commutes with resampling, so shrink the image first.
    if kw == 1 and kh == 1 and down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x=x, f=f, down=down, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d_wrapper(x=x, w=w, groups=groups, flip_weight=flip_weight)

    # 1x1 kernel, upsampling only: convolve at low resolution, then upsample.
    if kw == 1 and kh == 1 and up > 1 and down == 1:
        x = _conv2d_wrapper(x=x, w=w, groups=groups, flip_weight=flip_weight)
        return upfirdn2d.upfirdn2d(x=x, f=f, up=up, padding=[px0, px1, py0, py1], gain=up ** 2, flip_filter=flip_filter)

    # Downsampling only: pad + filter, then a strided convolution does conv + subsample in one go.
    if down > 1 and up == 1:
        x = upfirdn2d.upfirdn2d(x=x, f=f, padding=[px0, px1, py0, py1], flip_filter=flip_filter)
        return _conv2d_wrapper(x=x, w=w, stride=down, groups=groups, flip_weight=flip_weight)

    # Upsampling (optionally followed by downsampling): a transposed strided convolution performs
    # zero-insertion + full convolution; the FIR filter then takes the remaining padding.
    if up > 1:
        w = _transpose_weight_per_group(w, groups)
        # conv_transpose2d realises a full convolution of the zero-inserted signal ((H-1)*up+1 samples)
        # i.e. kernel-1 samples of implicit padding per side, and lacks the up-1 trailing zeros.
        px0 -= kw - 1
        px1 -= kw - up
        py0 -= kh - 1
        py1 -= kh - up
        # Crop shared by both sides can happen inside the transposed conv (saves work); padding cannot,
        # since zeros must be added after the full convolution, not before it.
        pxt = max(min(-px0, -px1), 0)
        pyt = max(min(-py0, -py1), 0)
        # conv_transpose2d is itself a true convolution, so the flip sense is inverted.
        x = _conv2d_wrapper(x=x, w=w, stride=up, padding=[pyt, pxt], groups=groups, transpose=True,
                            flip_weight=(not flip_weight))
        x = upfirdn2d.upfirdn2d(x=x, f=f, padding=[px0 + pxt, px1 + pxt, py0 + pyt, py1 + pyt],
                                gain=up ** 2, flip_filter=flip_filter)
        if down > 1:
            x = upfirdn2d.upfirdn2d(x=x, f=f, down=down, flip_filter=flip_filter)
        return x

    # No resampling and padding that conv2d can express directly.
    if up == 1 and down == 1:
        if px0 == px1 and py0 == py1 and px0 >= 0 and py0 >= 0:
            return _conv2d_wrapper(x=x, w=w, padding=[py0, px0], groups=groups, flip_weight=flip_weight)

    # Generic route (asymmetric or negative padding): the defining composition.
    x = upfirdn2d.upfirdn2d(x=x, f=(f if up > 1 else None), up=up, padding=[px0, px1, py0, py1],
                            gain=up ** 2, flip_filter=flip_filter)
    x = _conv2d_wrapper(x=x, w=w, groups=groups, flip_weight=flip_weight)
    if down > 1:
        x = upfirdn2d.upfirdn2d(x=x, f=f, down=down, flip_filter=flip_filter)
    return x

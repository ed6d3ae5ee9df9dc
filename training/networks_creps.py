"""CREPS generator (Column-Row Entangled Pixel Synthesis, CVPR 2023).

Constructor arguments, parameter and buffer names, shapes and order follow the official CREPS release
(tests/data/spec/creps_official_tensors.json), so official weights transfer by name, and the function
is the official one (tests/training/test_creps_official_parity.py checks it against outputs recorded
from the official code). The code is our own: the official source is AGPL.

How an image is made. The trunk works on "thick lines": for each image axis, L samples of the
coordinate along that axis times R slots ([N, C, L, R]). Its layers are modulated fully-connected
layers, pointwise in the sample and the slot (no spatial kernel), so their cost grows with L, not
L^2. After each block (from the second on: the first block's ToRes does not run, officially) the
accumulated 32-channel skip line pair (A along the height, B along the width) becomes a rank-R 2D map
by an outer product; the maps of successive blocks are fused by small per-pixel MLPs ("layer-wise feature composition"), decoded to RGB, and refined by two per-pixel
modulated blocks.

The official code keeps both lines in one tensor [N, C, L, 2R] (R slots of A, then R of B), which
forces both to the same length. Here the two lines are stacked along the sample axis instead
([N, C, H + W, R]), which is the same arithmetic, since every trunk layer is pointwise, and lets the
lines differ: the output may be non-square, translated or zoomed (`G.synthesis(ws, size=, translate=,
zoom=)`), and `scale=s` renders side int(img_resolution * s) from linspace(0, 1, side) on both axes,
exactly what the official code gives after overwriting its `coords` buffer. Nothing is mutated: the
buffer stays, for compatibility, and is used at the trained size.

The per-pixel stage (composition, decoders, head) dominates at high resolution, so it runs in bands
of rows of at most `tile_pixels` pixels (all samples of the batch together): memory is bounded by the
band, not by the image. A band is a whole number of chunks of rows of one fixed shape per image
size, and every per-pixel layer is pointwise, so the result is bit for bit the same for any band
size (see `render_pixels`).

Speed: each modulated or dense layer is one batched matmul with the bias added in the same call and
the activation gain folded into the weights (lrelu(g z) = g lrelu(z) for g > 0), then an in-place
activation and clamp; the official layers run a matmul followed by the separate steps of bias_act.

Mixed precision: the two per-pixel refinement blocks (block0, block1) run in float16 on CUDA, as in
the official code; the trunk runs in float16 only for the top `num_fp16_res` resolutions (default 0).
Deliberate departure: on any other device everything runs in float32 (the official code would run
float16 on the CPU too).

Self-contained on purpose: a pickle embeds this file's source, and it must load where only dnnlib
and torch_utils import, so it imports nothing from `training` (the small layers are written here).
"""

import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import bias_act

# ----------------------------------------------------------------------------------------------

_LRELU_SLOPE = 0.2
_DEFAULT_TILE_PIXELS = 2 ** 15  # Per band of the per-pixel stage: 128 channels x 4 bytes -> 16 MiB a tensor,
                                # under glibc's mmap threshold, so band buffers are reused, not faulted in anew.
_CHUNK_PIXELS = 4096            # Pixels (whole rows) per matmul column block of the per-pixel stage.


@misc.profiled_function
def normalize_2nd_moment(x, dim=1, eps=1e-8):
    """Scale `x` to unit mean square along `dim`."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def _modulated_weights(weight, styles, demodulate):
    """W''[n,o,i] = W[o,i] s[n,i], divided by its norm over i when demodulating; float32 [N, O, I]."""
    w = weight.to(torch.float32).unsqueeze(0) * styles.to(torch.float32).unsqueeze(1)
    if demodulate:
        w = w * (w.square().sum(dim=2, keepdim=True) + 1e-8).rsqrt()
    return w


def _activate(x, activation, clamp):
    """Activation (its gain already folded into the weights) and clamp, in place when no gradient is kept."""
    inplace = not torch.is_grad_enabled()
    if activation == 'lrelu':
        x = torch.nn.functional.leaky_relu(x, _LRELU_SLOPE, inplace=inplace)
    else:
        assert activation == 'linear', activation
    if clamp is not None:
        x = x.clamp_(-clamp, clamp) if inplace else x.clamp(-clamp, clamp)
    return x


def _pointwise_linear(x, weight, bias, activation='linear', clamp=None):
    """act(weight @ x + bias) per position: x [N, I, *S], weight [O, I] or per sample [N, O, I], bias [O].

    One batched matmul with the bias added in the same call. `weight` and `bias` already carry the
    activation gain; they are cast to x's dtype.
    """
    n, spatial = x.shape[0], x.shape[2:]
    weight = weight.to(x.dtype)
    if weight.ndim == 2:
        weight = weight.unsqueeze(0).expand(n, -1, -1)
    elif weight.shape[0] != n:  # Per-sample weights, x holding several chunks of each sample in turn.
        weight = weight.repeat_interleave(n // weight.shape[0], dim=0)
    bias = bias.to(x.dtype).reshape(1, -1, 1)
    y = torch.baddbmm(bias, weight, x.reshape(n, x.shape[1], -1))
    return _activate(y, activation, clamp).reshape(n, -1, *spatial)


@misc.profiled_function
def modulated_fc(
    x,                  # Input activations [N, I, H, W] (any two trailing axes: lines or an image).
    weight,             # Shared weights [O, I].
    styles,             # Per-sample input scales [N, I].
    demodulate=True,    # Normalise each output's per-sample weights to unit norm?
):
    """y[n,o,h,w] = sum_i x[n,i,h,w] * W''[n,o,i], with W'[n,o,i] = W[o,i] s[n,i], demodulated.

    A per-sample 1x1 convolution: no spatial kernel, so it applies alike to lines and images.
    (Official name and signature; the layers call _pointwise_linear with the bias fused.)
    """
    misc.assert_shape(x, [None, weight.shape[1], None, None])
    misc.assert_shape(styles, [x.shape[0], weight.shape[1]])
    w = _modulated_weights(weight, styles, demodulate)
    return _pointwise_linear(x, w, torch.zeros([w.shape[1]], device=x.device))


def _compose_rows(a, b, rows, k):
    """The composed map at image rows `rows` (k chunks of equal height, in turn), as [N * k, C, rows/k * W].

    a [N, R, C, H] (line A per slot), b [N, R, C, W]. F[n,c,i,j] = 1/2 sum_r a[n,r,c,i] b[n,r,c,j], summed
    slot by slot in a fixed order with elementwise products (no matmul), so a pixel's value does not
    depend on the band it is computed in.
    """
    n, rank, channels = a.shape[:3]
    a = a[..., rows].reshape(n, rank, channels, k, -1).transpose(2, 3)  # [N, R, k, C, h]
    b = b[:, :, None, :, None, :]                                          # [N, R, 1, C, 1, W]
    out = a[:, 0, ..., None] * b[:, 0]
    for r in range(1, rank):
        out = out.addcmul_(a[:, r, ..., None], b[:, r]) if not torch.is_grad_enabled() else out.addcmul(a[:, r, ..., None], b[:, r])
    return out.mul_(0.5).reshape(n * k, channels, -1)


def _block_dtype(use_fp16, device, force_fp32):
    """float16 only on CUDA, and never when forced to float32."""
    return torch.float16 if use_fp16 and device.type == 'cuda' and not force_fp32 else torch.float32


def _pair(value, what):
    """(first, second) of a number or a pair of numbers."""
    if isinstance(value, (int, float)):
        return float(value), float(value)
    value = tuple(float(v) for v in value)
    if len(value) != 2:
        raise ValueError(f'{what} must be a number or two numbers, not {value}.')
    return value


def line_coordinates(img_resolution, scale=None, size=None, translate=(0, 0), zoom=1):
    """The sample coordinates (ys [H], xs [W]) of an output view, in the trained unit range [0, 1].

    scale:     the official rule: side L = int(img_resolution * scale), samples linspace(0, 1, L).
    size:      (H, W) pixels, at the pixel pitch of `scale` (1/(L-1)) around the centre: a wider or
               taller view of the same content. Default (L, L).
    translate: (x, y) in image sizes: the content moves right and down by this much.
    zoom:      magnification about the view centre (2 = twice as close).
    Float64 arithmetic, returned as float32; the plain-scale view is exactly torch.linspace(0, 1, L).
    """
    scale = 1 if scale is None else float(scale)
    length = int(img_resolution * scale)
    height, width = (length, length) if size is None else (int(size[0]), int(size[1]))
    tx, ty = _pair(translate, 'translate')
    zoom = float(zoom)
    if min(length, height, width) < 1:
        raise ValueError(f'scale={scale:g} with size={size} gives an image of {height}x{width} pixels at side {length}.')
    if not (np.isfinite(zoom) and zoom > 0 and np.isfinite(tx) and np.isfinite(ty)):
        raise ValueError(f'zoom must be finite and positive and translate finite, not zoom={zoom}, translate={translate}.')
    pitch = 1 / max(length - 1, 1) / zoom

    def axis(count, shift):
        if count == length and shift == 0 and zoom == 1:
            return torch.linspace(0, 1, count)
        offsets = (np.arange(count, dtype=np.float64) - (count - 1) / 2) * pitch
        return torch.from_numpy(0.5 - shift + offsets).to(torch.float32)
    return axis(height, ty), axis(width, tx)

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: weights are stored unscaled and scaled on use."""

    def __init__(self,
        in_features,                # Number of input features.
        out_features,               # Number of output features.
        bias            = True,     # Apply an additive bias?
        weight_norm     = True,     # Scale the weights by 1/sqrt(in_features)?
        activation      = 'linear', # Activation function name (see bias_act.activation_funcs).
        lr_multiplier   = 1,        # Learning-rate multiplier.
        bias_init       = 0,        # Initial value of the bias.
    ):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.activation = activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / (np.sqrt(in_features) if weight_norm else 1)
        self.bias_gain = lr_multiplier

    def forward(self, x):
        w = self.weight.to(x.dtype) * self.weight_gain
        b = self.bias
        if b is not None:
            b = b.to(x.dtype)
            if self.bias_gain != 1:
                b = b * self.bias_gain
        if self.activation == 'linear' and b is not None:
            return torch.addmm(b.unsqueeze(0), x, w.t())
        return bias_act.bias_act(x.matmul(w.t()), b, act=self.activation)

    def pointwise(self, x):
        """The layer applied at every position of channels-first x [N, in_features, *S]."""
        assert self.activation in ('linear', 'lrelu') and self.bias is not None
        gain = bias_act.activation_funcs[self.activation].def_gain
        return _pointwise_linear(x, self.weight * (self.weight_gain * gain), self.bias * (self.bias_gain * gain),
                                 activation=self.activation)

    def extra_repr(self):
        return f'in_features={self.in_features:d}, out_features={self.out_features:d}, activation={self.activation:s}'

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """z (and an embedded label c) -> w, broadcast to `num_ws` copies, with truncation towards w_avg.

    As StyleGAN2's, except when w_avg moves: the official CREPS mapping updates it in training mode
    on every call that does *not* ask for update_emas (StyleGAN2 does the opposite). We keep the
    official rule, since it is part of the recipe its results come from.
    """

    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality, 0 = no latent.
        c_dim,                      # Conditioning label (C) dimensionality, 0 = no label.
        w_dim,                      # Intermediate latent (W) dimensionality.
        num_ws,                     # Number of copies of w to output, None = do not broadcast.
        num_layers      = 8,        # Number of mapping layers.
        embed_features  = None,     # Label embedding dimensionality, None = same as w_dim.
        layer_features  = None,     # Hidden layer width, None = same as w_dim.
        activation      = 'lrelu',  # Activation function name.
        lr_multiplier   = 0.01,     # Learning-rate multiplier of the mapping layers.
        w_avg_beta      = 0.998,    # Decay of the running mean of w, None = do not track.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.num_ws = num_ws
        self.num_layers = num_layers
        self.w_avg_beta = w_avg_beta

        if embed_features is None:
            embed_features = w_dim
        if c_dim == 0:
            embed_features = 0
        if layer_features is None:
            layer_features = w_dim
        features_list = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]

        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            layer = FullyConnectedLayer(features_list[idx], features_list[idx + 1], activation=activation,
                                        lr_multiplier=lr_multiplier)
            setattr(self, f'fc{idx}', layer)
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        x = None
        if self.z_dim > 0:
            misc.assert_shape(z, [None, self.z_dim])
            x = normalize_2nd_moment(z.to(torch.float32))
        if self.c_dim > 0:
            misc.assert_shape(c, [None, self.c_dim])
            y = normalize_2nd_moment(self.embed(c.to(torch.float32)))
            x = torch.cat([x, y], dim=1) if x is not None else y

        for idx in range(self.num_layers):
            x = getattr(self, f'fc{idx}')(x)

        if self.w_avg_beta is not None and self.training and not update_emas:  # The official CREPS rule.
            self.w_avg.copy_(x.detach().mean(dim=0).lerp(self.w_avg, self.w_avg_beta))

        if self.num_ws is not None:
            x = x.unsqueeze(1).repeat([1, self.num_ws, 1])

        if truncation_psi != 1:
            if self.w_avg_beta is None:
                raise ValueError('Truncation needs w_avg, which this mapping network does not track (w_avg_beta=None).')
            if self.num_ws is None or truncation_cutoff is None:
                x = self.w_avg.lerp(x, truncation_psi)
            else:
                x[:, :truncation_cutoff] = self.w_avg.lerp(x[:, :truncation_cutoff], truncation_psi)
        return x

    def extra_repr(self):
        return f'z_dim={self.z_dim:d}, c_dim={self.c_dim:d}, w_dim={self.w_dim:d}, num_ws={self.num_ws}'

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated, demodulated fully-connected layer with bias, activation (gain sqrt 2 for lrelu) and clamp."""

    def __init__(self,
        in_channels,                # Number of input channels.
        out_channels,               # Number of output channels.
        w_dim,                      # Intermediate latent (W) dimensionality.
        activation      = 'lrelu',  # Activation function name: 'lrelu' or 'linear'.
        fc_clamp        = None,     # Clamp the output to +-X, None = disable clamping.
        channels_last   = False,    # Official argument (weight memory format); no effect on the function.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.activation = activation
        self.fc_clamp = fc_clamp
        self.act_gain = bias_act.activation_funcs[activation].def_gain
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        # No weight gain: demodulation normalises the weights anyway.
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, noise_mode='random', gain=1):
        del noise_mode  # Accepted as the official layer does; CREPS has no noise inputs.
        total_gain = self.act_gain * gain
        weight = _modulated_weights(self.weight, self.affine(w), demodulate=True) * total_gain
        clamp = self.fc_clamp * gain if self.fc_clamp is not None else None
        return _pointwise_linear(x, weight, self.bias * total_gain, activation=self.activation, clamp=clamp)

    def extra_repr(self):
        return f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}, activation={self.activation:s}'

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisInput(torch.nn.Module):
    """Fourier-feature lines of the sample coordinates, modulated by w: [N, C, H + W, R].

    Both lines start from the same fixed random frequencies (one per channel pair and slot); the
    learned per-(channel, slot) weight times the w-dependent affine tells them apart: slots 0..R-1 of
    both belong to the line along the height (A), R..2R-1 to the line along the width (B). Features
    are sin(2 pi f u) for the first C/2 channels and cos for the rest, scaled by 1/sqrt(C).
    """

    def __init__(self,
        channels,               # Number of output channels C (sin and cos halves).
        w_dim,                  # Intermediate latent (W) dimensionality.
        resolution,             # Number of samples along each line at training time.
        rank        = 8,        # Slots R per line.
        bandwidth   = 10,       # Standard deviation of the frequencies, in cycles per unit length.
    ):
        super().__init__()
        assert channels % 2 == 0
        self.channels = channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.rank = rank
        self.bandwidth = bandwidth
        self.register_buffer('freqs', torch.randn([1, channels // 2 * rank]) * bandwidth)
        self.register_buffer('coords', torch.linspace(0, 1, resolution).reshape(1, -1, 1, 1).repeat(1, 1, 2, 1))
        self.weight = torch.nn.Parameter(torch.randn([1, channels, 1, 2 * rank]))
        self.affine = FullyConnectedLayer(w_dim, channels * 2 * rank, bias_init=1)

    def forward(self, w, coords=None):
        """coords (ys [H], xs [W]) -> our stacked lines [N, C, H + W, R].

        Without coords: the official bi-line [N, C, L, 2R] of the `coords` buffer, which is what the
        official code expects when a trusted load of an official pickle resolves its reference to
        this class (the official SynthesisInput is not persistent, so pickles name it).
        """
        if coords is None:
            length = self.coords.shape[1]
            lines = self.forward(w, coords=self.trained_coords())
            return torch.cat([lines[:, :, :length], lines[:, :, length:]], dim=3)
        half, R = self.channels // 2, self.rank
        freqs = self.freqs.reshape(half, 1, R)
        amplitude = self.weight * self.affine(w).reshape(w.shape[0], self.channels, 1, 2 * R) / np.sqrt(self.channels)
        lines = []
        for line, u in enumerate(coords):
            phase = (u.to(freqs.device, freqs.dtype).reshape(1, -1, 1) * freqs) * (2 * np.pi)   # [C/2, L, R]
            features = torch.cat([torch.sin(phase), torch.sin(phase + np.pi / 2)], dim=0)       # sin, then cos
            lines.append(features.unsqueeze(0) * amplitude[:, :, :, line * R:(line + 1) * R])
        return torch.cat(lines, dim=2)

    def trained_coords(self):
        """(ys, xs) of the `coords` buffer: the trained grid, or whatever an official-style edit put there."""
        return self.coords[0, :, 0, 0], self.coords[0, :, 1, 0]

    def extra_repr(self):
        return (f'channels={self.channels:d}, w_dim={self.w_dim:d}, rank={self.rank}, resolution={self.resolution:d}, '
                f'bandwidth={self.bandwidth:0.2f}')

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class ToResLayer(torch.nn.Module):
    """Modulated (not demodulated) fully-connected projection to the skip output: the CREPS analogue of ToRGB."""

    def __init__(self, in_channels, out_channels, w_dim, fc_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.fc_clamp = fc_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels)

    def forward(self, x, w):
        weight = _modulated_weights(self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return _pointwise_linear(x, weight, self.bias, clamp=self.fc_clamp)

    def extra_repr(self):
        return f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}'

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """The Fourier input (first block, in_channels=1) or fc0, then fc1, then a ToRes added to the skip output.

    The trunk blocks act on lines, block0/block1 on bands of pixels; the layers do not care which.
    The first block takes one w more than its layers (the input's). As officially, the first block
    has a ToRes (its tensors and its w slot exist) that runs only when it is also the last block: its
    architecture is 'orig', and the official forward tests that, not the constructor argument. So
    the skip output, and with it the composition, starts at the second block.
    """

    def __init__(self,
        in_channels,                    # Number of input channels, 1 = first block (Fourier input).
        out_channels,                   # Number of output channels.
        w_dim,                          # Intermediate latent (W) dimensionality.
        resolution,                     # Line length at training time (the Fourier input's sample count).
        is_last,                        # Is this the last block (always has a ToRes)?
        res_channels        = None,     # Channels of the skip output (32 in the trunk, img_channels in the head).
        architecture        = 'skip',   # 'skip' (a ToRes in every block) or 'orig' (in the last only).
        fc_clamp            = 256,      # Clamp of every layer's output, None = disable.
        use_fp16            = False,    # Run in float16 (on CUDA)?
        fp16_channels_last  = False,    # Official argument (memory format); no effect on the function.
        **layer_kwargs,                 # Arguments for SynthesisLayer.
    ):
        assert architecture in ('orig', 'skip')
        super().__init__()
        self.in_channels = in_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.res_channels = res_channels
        self.is_last = is_last
        self.architecture = architecture if in_channels > 1 else 'orig'
        self.use_fp16 = use_fp16
        if in_channels == 1:
            self.input = SynthesisInput(out_channels, w_dim=w_dim, resolution=resolution)
        else:
            self.fc0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, fc_clamp=fc_clamp, **layer_kwargs)
        self.fc1 = SynthesisLayer(out_channels, out_channels, w_dim=w_dim, fc_clamp=fc_clamp, **layer_kwargs)
        self.num_fc = 1 if in_channels == 1 else 2  # The layers' ws (the input's is counted apart, as officially).
        self.num_tores = 0
        if is_last or architecture == 'skip':
            self.tores = ToResLayer(out_channels, res_channels, w_dim=w_dim, fc_clamp=fc_clamp)
            self.num_tores = 1

    @property
    def num_block_ws(self):
        """How many ws this block reads: its input's (first block), its layers' and its ToRes's."""
        return (self.in_channels == 1) + self.num_fc + self.num_tores

    def forward(self, x, res, ws, force_fp32=False, update_emas=False, coords=None, **layer_kwargs):
        """ws [N, num_block_ws, w_dim]; returns (x, res), res accumulated in float32.

        coords: (ys, xs), the sample coordinates of the first block's input.
        """
        del update_emas  # No running statistics in the synthesis layers.
        misc.assert_shape(ws, [None, self.num_block_ws, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        dtype = _block_dtype(self.use_fp16, ws.device, force_fp32)
        if self.in_channels == 1:
            x = self.input(next(w_iter), coords=coords).to(dtype)
        else:
            x = self.fc0(x.to(dtype), next(w_iter), **layer_kwargs)
        x = self.fc1(x, next(w_iter), **layer_kwargs)
        if self.is_last or self.architecture == 'skip':  # Not the first block's ToRes (see the class docstring).
            y = self.tores(x, next(w_iter)).to(torch.float32)
            res = y if res is None else res.add_(y) if not torch.is_grad_enabled() else res + y
        return x, res

    def extra_repr(self):
        return f'resolution={self.resolution:d}, architecture={self.architecture:s}, use_fp16={self.use_fp16}'

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class PixelDecoder(torch.nn.Module):
    """Unmodulated per-pixel MLP C -> 2C -> 4C -> 2C -> C, lrelu after every layer.

    The official code uses a torch.nn.Sequential; the layers are named '0'..'3' the same way, so the
    tensor names match, but this class is persistent, so our pickles load without executing code.
    """

    def __init__(self, channels):
        super().__init__()
        self.channels = channels
        widths = [channels, channels * 2, channels * 4, channels * 2, channels]
        for i in range(4):
            self.add_module(str(i), FullyConnectedLayer(widths[i], widths[i + 1], activation='lrelu'))

    def forward(self, x):
        """x: channels-first [N, C, *S]."""
        for layer in self.children():
            x = layer.pointwise(x)
        return x

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """ws -> image: line trunk b4..b<res>, layer-wise composition, RGB decoder and per-pixel head."""

    def __init__(self,
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output image resolution (and the line length of every block).
        img_channels,               # Number of colour channels.
        biline_channels = 32,       # Channels of the skip lines and of the composed features.
        channel_base    = 32768,    # Overall multiplier for the number of channels.
        channel_max     = 512,      # Maximum number of channels in any layer.
        num_fp16_res    = 0,        # Use float16 for the trunk blocks of the N highest resolutions.
        **block_kwargs,             # Arguments for the trunk's SynthesisBlocks (fc_clamp, architecture, ...).
    ):
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0
        assert channel_base > 4 and channel_max > 1 and biline_channels > img_channels
        super().__init__()
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.img_channels = img_channels
        self.biline_channels = biline_channels
        self.num_fp16_res = num_fp16_res
        # The block "resolution" only names the block and sets its width: every block runs at full length.
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels_dict = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)

        self.num_ws = 1  # The input's w.
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(channels_dict[res // 2] if res > 4 else 1, channels_dict[res], w_dim=w_dim,
                                   resolution=img_resolution, res_channels=biline_channels, is_last=is_last,
                                   use_fp16=(res >= fp16_resolution), **block_kwargs)
            self.num_ws += block.num_fc + (block.num_tores if is_last else 0)
            setattr(self, f'b{res}', block)
        for res in self.block_resolutions[1:]:
            setattr(self, f'decoder_{res}', PixelDecoder(biline_channels))
        self.decoder_last = PixelDecoder(biline_channels)
        self.decoder_img = FullyConnectedLayer(biline_channels, img_channels)
        # The head is float16 with clamp 256 whatever the trunk's arguments (official).
        head_kwargs = dict(w_dim=w_dim, resolution=img_resolution, res_channels=img_channels, use_fp16=True, fc_clamp=256)
        self.block0 = SynthesisBlock(biline_channels, biline_channels * 4, is_last=False, **head_kwargs)
        self.block1 = SynthesisBlock(biline_channels * 4, biline_channels * 2, is_last=True, **head_kwargs)

    def _block_ws(self, ws):
        """The ws slice of every trunk block, as officially: a block's ToRes shares its w with the next block's first layer."""
        block_ws, w_idx = [], 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            block_ws.append(ws.narrow(1, w_idx, block.num_block_ws))
            w_idx += block.num_fc
        return block_ws

    def forward(self, ws, noise_mode='const', force_fp32=False, update_emas=False, scale=None, size=None,
                translate=(0, 0), zoom=1, tile_pixels=None, **layer_kwargs):
        """ws [N, num_ws, w_dim] -> image [N, img_channels, H, W] (float32).

        scale, size, translate, zoom: the view (see `line_coordinates`); by default the trained grid.
        tile_pixels: most pixels (over the batch) per band of the per-pixel stage; None = 2**15.
        noise_mode is accepted for interface compatibility (CREPS has no noise inputs).
        """
        del update_emas
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        default_view = scale in (None, 1) and size is None and tuple(_pair(translate, 'translate')) == (0, 0) and zoom == 1
        if default_view:
            coords = self.b4.input.trained_coords()
        else:
            coords = line_coordinates(self.img_resolution, scale, size, translate, zoom)
        lines = self.lines(ws, coords, force_fp32=force_fp32, noise_mode=noise_mode, **layer_kwargs)
        height = len(coords[0])
        return self.render_pixels(lines, ws[:, -1], height, tile_pixels=tile_pixels, force_fp32=force_fp32,
                                  noise_mode=noise_mode, **layer_kwargs)

    def lines(self, ws, coords, **block_kwargs):
        """The trunk: each block's accumulated skip lines [N, biline_channels, H + W, R] (float32), None before the first."""
        lines, x, res = [], None, None
        for block_res, cur_ws in zip(self.block_resolutions, self._block_ws(ws)):
            x, res = getattr(self, f'b{block_res}')(x, res, cur_ws, coords=coords, **block_kwargs)
            if res is not None:  # None after b4 (no skip output yet).
                lines.append(res if torch.is_grad_enabled() else res.clone())  # `res` grows in place without autograd.
            else:
                lines.append(None)
        return lines

    def render_pixels(self, lines, head_w, height, tile_pixels=None, **block_kwargs):
        """Composition, decoders and head; lines from `lines()`, head_w [N, w_dim] -> [N, img_channels, H, W].

        The image rows are cut into chunks of h = max(1, 4096 // W') rows (the last one padded by
        repeating the last row; W' is W padded to a multiple of 16), and each per-pixel layer is one
        batched matmul over [chunks, C, h*W'].
        Every matmul thus has the same shape whatever the band, so the result is bit for bit independent
        of `tile_pixels`, which only bounds how many chunks (times the batch) a band holds.
        """
        n, width = head_w.shape[0], lines[-1].shape[2] - height
        # Rows padded to a multiple of 16 pixels (the last column repeated): no tensor of the stage has a
        # ragged end, where vectorised kernels would switch to a scalar tail that may round differently.
        padded_width = -(-width // 16) * 16
        cols = torch.arange(padded_width, device=head_w.device).clamp_(max=width - 1)
        chunk_rows = min(height, max(1, _CHUNK_PIXELS // padded_width))
        num_chunks = -(-height // chunk_rows)
        chunks_per_band = max(1, (tile_pixels or _DEFAULT_TILE_PIXELS) // (n * chunk_rows * padded_width))
        head_ws = head_w.unsqueeze(1).repeat(1, 3, 1)  # Both head blocks use the last w for all three layers.
        # [N, R, C, H] and [N, R, C, W]: each line pair, ready to be sliced at the rows of a band.
        line_pairs = [(line[:, :, :height].permute(0, 3, 1, 2), line[:, :, height:].permute(0, 3, 1, 2)[..., cols])
                      for line in lines if line is not None]
        block_resolutions = [res for res, line in zip(self.block_resolutions, lines) if line is not None]
        bands = []
        for first in range(0, num_chunks, chunks_per_band):
            k = min(chunks_per_band, num_chunks - first)
            rows = torch.arange(first * chunk_rows, (first + k) * chunk_rows, device=head_w.device).clamp_(max=height - 1)
            feature = None
            for block_res, (a, b) in zip(block_resolutions, line_pairs):
                composed = _compose_rows(a, b, rows, k)
                if feature is None:
                    feature = composed
                else:
                    feature = getattr(self, f'decoder_{block_res}')(feature)
                    feature = feature.add_(composed) if not torch.is_grad_enabled() else feature + composed
            feature = self.decoder_last(feature)
            img = self.decoder_img.pointwise(feature)
            x, img = self.block0(feature, img, head_ws, **block_kwargs)
            x, img = self.block1(x, img, head_ws, **block_kwargs)
            img = img.reshape(n, k, self.img_channels, chunk_rows, padded_width).transpose(1, 2)
            bands.append(img.reshape(n, self.img_channels, k * chunk_rows, padded_width))
        img = bands[0] if len(bands) == 1 else torch.cat(bands, dim=2)
        return img[:, :, :height, :width]

    def extra_repr(self):
        return (f'w_dim={self.w_dim:d}, num_ws={self.num_ws:d}, img_resolution={self.img_resolution:d}, '
                f'img_channels={self.img_channels:d}, num_fp16_res={self.num_fp16_res:d}')

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class Generator(torch.nn.Module):
    """CREPS generator: G(z, c) = synthesis(mapping(z, c))."""

    # Capabilities (read by training.capabilities): synthesis keywords, and an image tensor returned.
    synthesis_options = ('noise_mode', 'force_fp32', 'scale', 'size', 'view')
    output_key = None

    def __init__(self,
        z_dim,                      # Input latent (Z) dimensionality.
        c_dim,                      # Conditioning label (C) dimensionality.
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output resolution.
        img_channels,               # Number of output colour channels.
        mapping_kwargs      = {},   # Arguments for MappingNetwork.
        label_kind          = None, # What c is: 'class' or 'camera' (25 floats); None = 'class', or 'none' if c_dim = 0.
        **synthesis_kwargs,         # Arguments for SynthesisNetwork.
    ):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.label_kind = misc.label_kind(label_kind, c_dim)
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, update_emas=update_emas, **synthesis_kwargs)

# ----------------------------------------------------------------------------------------------

# Pickles embed a module defining these classes; the no-exec loader rebuilds them from ours
# (torch_utils.persistence.load). The signature is the official module's top-level names (it has no
# PixelDecoder), so an official CREPS source is recognised too.
persistence.register_no_exec_module(
    'training.networks_creps',
    [FullyConnectedLayer, MappingNetwork, SynthesisInput, SynthesisLayer, ToResLayer, SynthesisBlock,
     PixelDecoder, SynthesisNetwork, Generator],
    signature=['normalize_2nd_moment', 'modulated_fc', 'FullyConnectedLayer', 'MappingNetwork', 'SynthesisLayer',
               'SynthesisInput', 'ToResLayer', 'SynthesisBlock', 'SynthesisNetwork', 'Generator'])
# The official SynthesisInput is a plain torch module: official pickles refer to it as the global
# training.networks_creps.SynthesisInput with its state; the loader keeps that state and copies its
# tensors into the SynthesisInput our SynthesisBlock builds. (Its decoders are torch.nn.Sequential,
# which the loader always admits; our PixelDecoder has the same tensor names.)
persistence.register_no_exec_plain_module('training.networks_creps', 'SynthesisInput')

# ----------------------------------------------------------------------------------------------

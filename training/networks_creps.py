"""CREPS generator (Column-Row Entangled Pixel Synthesis, CVPR 2023).

Constructor arguments, parameter and buffer names, shapes and order follow the official CREPS release
(tests/data/spec/creps_official_tensors.json), so official weights transfer by name. The function is
re-implemented from a written description of the paper's and the release's design, not from the
official source (AGPL). Where that description leaves a layout open (which line runs along which
axis, the order of the sin/cos features and of the input affine's outputs) the choices are marked
below; they have not yet been checked against official weights and images.

How an image is made. Every layer works on a "thick bi-line" [N, C, L, 2R]: L samples along an image
axis, and 2R slots, R for the column line and R for the row line. The layers are pointwise in (L, 2R)
(modulated fully-connected layers, no spatial kernel), so their cost grows with L, not L^2. After each
block the accumulated 32-channel skip bi-line is turned into a rank-R 2D map by an outer product of
its two lines; the maps of successive blocks are fused by small per-pixel MLPs ("layer-wise feature
composition"), decoded to RGB, and refined by two per-pixel modulated blocks.

Because every layer is a function of continuous coordinates in [0, 1], `G.synthesis(ws, scale=s)`
renders the same image at side int(img_resolution * s).

Self-contained on purpose: a pickle embeds this file's source, and it must load where only dnnlib
and torch_utils import, so it imports nothing from `training` (the small layers are written here).

Mixed precision: the two per-pixel refinement blocks (block0, block1) run in float16 on CUDA, as in
the official code; the trunk runs in float16 only for the top `num_fp16_res` resolutions (default 0).
On any other device everything runs in float32.
"""

import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import bias_act

# ----------------------------------------------------------------------------------------------


@misc.profiled_function
def normalize_2nd_moment(x, dim=1, eps=1e-8):
    """Scale `x` to unit mean square along `dim`."""
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


@misc.profiled_function
def modulated_fc(
    x,                  # Input activations [N, I, H, W] (any two trailing axes: a bi-line or an image).
    weight,             # Shared weights [O, I].
    styles,             # Per-sample input scales [N, I].
    demodulate=True,    # Normalise each output's per-sample weights to unit norm?
):
    """y[n,o,h,w] = sum_i x[n,i,h,w] * W''[n,o,i], with W'[n,o,i] = W[o,i] s[n,i], demodulated.

    A per-sample 1x1 convolution: no spatial kernel, so it applies alike to bi-lines and images.
    """
    misc.assert_shape(x, [None, weight.shape[1], None, None])
    misc.assert_shape(styles, [x.shape[0], weight.shape[1]])
    if x.dtype == torch.float16 and demodulate:
        # Dividing by the largest magnitudes first keeps the squared modulated weights inside the
        # float16 range; demodulation removes the common scale again.
        weight = weight / weight.norm(float('inf'), dim=1, keepdim=True)
        styles = styles / styles.norm(float('inf'), dim=1, keepdim=True)
    w = weight.unsqueeze(0) * styles.unsqueeze(1)  # [N, O, I]
    if demodulate:
        w = w * (w.square().sum(dim=2, keepdim=True) + 1e-8).rsqrt()
    return torch.einsum('nihw,noi->nohw', x, w.to(x.dtype))


@misc.profiled_function
def compose_biline(biline):
    """Rank-R 2D map of a bi-line: [N, C, L, 2R] -> F[n,c,i,j] = 1/2 sum_r A[n,c,i,r] B[n,c,j,r].

    A (the first R slots) runs along the image height (i), B (the last R slots) along the width (j).
    The 1/2 is sqrt(1/2) on each line, which keeps F at unit scale for unit-scale lines of rank 2.
    """
    rank = biline.shape[3] // 2
    a = biline[:, :, :, :rank] * np.sqrt(0.5)
    b = biline[:, :, :, rank:] * np.sqrt(0.5)
    return a @ b.transpose(2, 3)


def _to_pixels(image):
    """[N, C, H, W] -> [N*H*W, C], for the per-pixel MLPs."""
    return image.permute(0, 2, 3, 1).reshape(-1, image.shape[1])


def _from_pixels(pixels, n, height, width):
    """[N*H*W, C] -> [N, C, H, W]."""
    return pixels.reshape(n, height, width, -1).permute(0, 3, 1, 2)


def _block_dtype(use_fp16, device, force_fp32):
    """float16 only on CUDA, and never when forced to float32."""
    return torch.float16 if use_fp16 and device.type == 'cuda' and not force_fp32 else torch.float32


def _line_coords(buffer, length):
    """[1, length, 2, 1] sample positions in [0, 1] (both ends included), for both image axes.

    At the trained length the stored buffer is used, so a pickle's buffer is honoured; any other length
    (a `scale` != 1) is computed here and the buffer is left untouched.
    """
    if length == buffer.shape[1]:
        return buffer
    line = torch.linspace(0, 1, length, device=buffer.device, dtype=buffer.dtype)
    return line.reshape(1, length, 1, 1).repeat(1, 1, 2, 1)

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    """Dense layer with equalised learning rate: weights are stored unscaled and scaled on use."""

    def __init__(self,
        in_features,                # Number of input features.
        out_features,               # Number of output features.
        bias            = True,     # Apply an additive bias?
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
        self.weight_gain = lr_multiplier / np.sqrt(in_features)
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

    def extra_repr(self):
        return f'in_features={self.in_features:d}, out_features={self.out_features:d}, activation={self.activation:s}'

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    """z (and an embedded label c) -> w, broadcast to `num_ws` copies, with truncation towards w_avg (as StyleGAN2)."""

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

        if update_emas and self.w_avg_beta is not None:
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
class SynthesisInput(torch.nn.Module):
    """Fourier-feature bi-line [N, C, L, 2R] of the sample coordinates, modulated by w.

    Both lines start from the same fixed random frequencies (one per channel pair and rank slot); the
    learned per-(channel, slot) weight times the w-dependent affine tells them apart.
    """

    def __init__(self,
        w_dim,                  # Intermediate latent (W) dimensionality.
        channels,               # Number of output channels C (sin and cos halves).
        size,                   # Number of samples along each line at training time.
        rank        = 8,        # Slots R per line.
        bandwidth   = 10,       # Standard deviation of the frequencies, in cycles per unit length.
    ):
        super().__init__()
        assert channels % 2 == 0
        self.w_dim = w_dim
        self.channels = channels
        self.size = size
        self.rank = rank
        self.bandwidth = bandwidth
        self.weight = torch.nn.Parameter(torch.randn([1, channels, 1, 2 * rank]))
        self.affine = FullyConnectedLayer(w_dim, channels * 2 * rank, bias_init=1)
        self.register_buffer('freqs', torch.randn([1, channels // 2 * rank]) * bandwidth)
        self.register_buffer('coords', torch.linspace(0, 1, size).reshape(1, size, 1, 1).repeat(1, 1, 2, 1))

    def forward(self, w, length=None):
        coords = _line_coords(self.coords, self.size if length is None else length)  # [1, L, 2, 1]
        L, half, R = coords.shape[1], self.channels // 2, self.rank
        # [1, L, 2, C/2*R] -> [1, C/2, L, 2R]: the last axis is R column slots, then R row slots.
        x = (coords * self.freqs.unsqueeze(1)).reshape(1, L, 2, half, R).permute(0, 3, 1, 2, 4).reshape(1, half, L, 2 * R)
        phase = x * (2 * np.pi)
        x = torch.cat([torch.sin(phase), torch.sin(phase + np.pi / 2)], dim=1)  # sin, then cos: [1, C, L, 2R]
        styles = self.affine(w).reshape(w.shape[0], self.channels, 1, 2 * R)
        return x * self.weight * styles / np.sqrt(self.channels)

    def extra_repr(self):
        return f'w_dim={self.w_dim:d}, channels={self.channels:d}, size={self.size:d}, rank={self.rank:d}, bandwidth={self.bandwidth:g}'

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """Modulated, demodulated fully-connected layer with bias, activation and clamp."""

    def __init__(self,
        in_channels,                # Number of input channels.
        out_channels,               # Number of output channels.
        w_dim,                      # Intermediate latent (W) dimensionality.
        activation      = 'lrelu',  # Activation function name.
        fc_clamp        = 256,      # Clamp the output to +-X, None = disable clamping.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.activation = activation
        self.fc_clamp = fc_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        # No weight gain: demodulation normalises the weights anyway.
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w):
        styles = self.affine(w)
        x = modulated_fc(x, self.weight, styles, demodulate=True)
        act_gain = bias_act.activation_funcs[self.activation].def_gain
        return bias_act.bias_act(x, self.bias.to(x.dtype), act=self.activation, gain=act_gain, clamp=self.fc_clamp)

    def extra_repr(self):
        return f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}, activation={self.activation:s}'


@persistence.persistent_class
class ToResLayer(torch.nn.Module):
    """Modulated (not demodulated) fully-connected projection to the skip output: the CREPS analogue of ToRGB."""

    def __init__(self, in_channels, out_channels, w_dim, fc_clamp=256):
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
        styles = self.affine(w) * self.weight_gain
        x = modulated_fc(x, self.weight, styles, demodulate=False)
        return bias_act.bias_act(x, self.bias.to(x.dtype), clamp=self.fc_clamp)

    def extra_repr(self):
        return f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}'

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """Two modulated layers (or the Fourier input and one layer) and a ToRes added to the skip output.

    The trunk blocks act on bi-lines, block0/block1 on per-pixel images; the layers do not care which.
    """

    def __init__(self,
        in_channels,                # Number of input channels, 0 = first block (Fourier input).
        out_channels,               # Number of output channels.
        w_dim,                      # Intermediate latent (W) dimensionality.
        resolution,                 # Line length at training time (the Fourier input's sample count).
        res_channels,               # Channels of the skip output (32 in the trunk, img_channels in the head).
        use_fp16        = False,    # Run in float16 (on CUDA)?
        rank            = 8,        # Slots per line of the Fourier input.
        bandwidth       = 10,       # Frequency spread of the Fourier input.
        fc_clamp        = 256,      # Clamp of every layer's output.
    ):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.resolution = resolution
        self.use_fp16 = use_fp16
        if in_channels == 0:
            self.input = SynthesisInput(w_dim, out_channels, resolution, rank=rank, bandwidth=bandwidth)
        else:
            self.fc0 = SynthesisLayer(in_channels, out_channels, w_dim, fc_clamp=fc_clamp)
        self.fc1 = SynthesisLayer(out_channels, out_channels, w_dim, fc_clamp=fc_clamp)
        self.tores = ToResLayer(out_channels, res_channels, w_dim, fc_clamp=fc_clamp)
        self.num_fc = 2      # ws this block consumes before the next starts (input or fc0, then fc1)...
        self.num_tores = 1   # ...plus the one its ToRes shares with the next block's first layer.

    def forward(self, x, res, ws, length=None, force_fp32=False):
        """ws [N, num_fc + num_tores, w_dim]; returns (x, res), res accumulated in float32."""
        misc.assert_shape(ws, [None, self.num_fc + self.num_tores, self.w_dim])
        w_iter = iter(ws.unbind(dim=1))
        dtype = _block_dtype(self.use_fp16, ws.device, force_fp32)
        if self.in_channels == 0:
            x = self.input(next(w_iter), length=length).to(dtype)
        else:
            x = self.fc0(x.to(dtype), next(w_iter))
        x = self.fc1(x, next(w_iter))
        y = self.tores(x, next(w_iter)).to(torch.float32)
        res = y if res is None else res + y
        return x, res

    def extra_repr(self):
        return f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, resolution={self.resolution:d}, use_fp16={self.use_fp16}'

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class PixelDecoder(torch.nn.Module):
    """Unmodulated per-pixel MLP channels -> 64 -> 128 -> 64 -> channels, lrelu after every layer.

    The official code uses a torch.nn.Sequential; the layers are named '0'..'3' the same way, so the
    tensor names match, but this class is persistent, so our pickles load without executing code.
    """

    def __init__(self, channels):
        super().__init__()
        self.channels = channels
        widths = [channels, 64, 128, 64, channels]
        for i in range(4):
            self.add_module(str(i), FullyConnectedLayer(widths[i], widths[i + 1], activation='lrelu'))

    def forward(self, x):
        for layer in self.children():
            x = layer(x)
        return x


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    """ws -> image: bi-line trunk b4..b<res>, layer-wise composition, RGB decoder and per-pixel head."""

    def __init__(self,
        w_dim,                      # Intermediate latent (W) dimensionality.
        img_resolution,             # Output image resolution (and the line length of every block).
        img_channels,               # Number of colour channels.
        biline_channels = 32,       # Channels of the skip bi-line and of the composed features.
        channel_base    = 32768,    # Overall multiplier for the number of channels.
        channel_max     = 512,      # Maximum number of channels in any layer.
        num_fp16_res    = 0,        # Use float16 for the trunk blocks of the N highest resolutions.
        **block_kwargs,             # Arguments for SynthesisBlock (rank, bandwidth, fc_clamp).
    ):
        assert img_resolution >= 4 and img_resolution & (img_resolution - 1) == 0
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

        self.num_ws = 0
        for res in self.block_resolutions:
            in_channels = channels_dict[res // 2] if res > 4 else 0
            block = SynthesisBlock(in_channels, channels_dict[res], w_dim=w_dim, resolution=img_resolution,
                                   res_channels=biline_channels, use_fp16=(res >= fp16_resolution), **block_kwargs)
            self.num_ws += block.num_fc
            setattr(self, f'b{res}', block)
        self.num_ws += 1  # The last ToRes; the head blocks reuse this last w.
        for res in self.block_resolutions[1:]:
            setattr(self, f'decoder_{res}', PixelDecoder(biline_channels))
        self.decoder_last = PixelDecoder(biline_channels)
        self.decoder_img = FullyConnectedLayer(biline_channels, img_channels)
        head_kwargs = dict(w_dim=w_dim, resolution=img_resolution, res_channels=img_channels, use_fp16=True,
                           **{k: v for k, v in block_kwargs.items() if k == 'fc_clamp'})
        self.block0 = SynthesisBlock(biline_channels, 128, **head_kwargs)
        self.block1 = SynthesisBlock(128, 64, **head_kwargs)

    def _block_ws(self, ws):
        """The ws slice of every trunk block, as in StyleGAN2: each ToRes shares its w with the next block."""
        block_ws, w_idx = [], 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            block_ws.append(ws.narrow(1, w_idx, block.num_fc + block.num_tores))
            w_idx += block.num_fc
        return block_ws

    def forward(self, ws, noise_mode='const', force_fp32=False, scale=None, **block_kwargs):
        """noise_mode is accepted for interface compatibility and ignored (CREPS has no noise inputs).

        scale: render at side int(img_resolution * scale), sampling the same coordinate range [0, 1].
        """
        del noise_mode, block_kwargs  # Unused: no noise, no per-call block options (update_emas etc.).
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        length = self.img_resolution if scale is None else int(self.img_resolution * scale)
        if length < 1:
            raise ValueError(f'scale={scale} gives an image side of {length} pixels.')
        n = ws.shape[0]

        # Trunk and layer-wise composition: each block's accumulated skip bi-line becomes a 2D map that
        # is added to the decoded running feature.
        x = res = feature = None
        for block_res, cur_ws in zip(self.block_resolutions, self._block_ws(ws)):
            x, res = getattr(self, f'b{block_res}')(x, res, cur_ws, length=length, force_fp32=force_fp32)
            composed = _to_pixels(compose_biline(res))
            feature = composed if feature is None else getattr(self, f'decoder_{block_res}')(feature) + composed
        feature = self.decoder_last(feature)
        img = _from_pixels(self.decoder_img(feature), n, length, length)
        feature = _from_pixels(feature, n, length, length)

        # Per-pixel refinement: both head blocks use the last w for all three of their layers.
        head_ws = ws[:, -1:].repeat(1, 3, 1)
        x, img = self.block0(feature, img, head_ws, force_fp32=force_fp32)
        x, img = self.block1(x, img, head_ws, force_fp32=force_fp32)
        return img

    def extra_repr(self):
        return (f'w_dim={self.w_dim:d}, num_ws={self.num_ws:d}, img_resolution={self.img_resolution:d}, '
                f'img_channels={self.img_channels:d}, biline_channels={self.biline_channels:d}, '
                f'num_fp16_res={self.num_fp16_res:d}')

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class Generator(torch.nn.Module):
    """CREPS generator: G(z, c) = synthesis(mapping(z, c))."""

    # Capabilities (read by training.capabilities): synthesis keywords, and an image tensor returned.
    synthesis_options = ('noise_mode', 'force_fp32', 'scale')
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
# (torch_utils.persistence.load).
persistence.register_no_exec_module(
    'training.networks_creps',
    [FullyConnectedLayer, MappingNetwork, SynthesisInput, SynthesisLayer, ToResLayer, SynthesisBlock,
     PixelDecoder, SynthesisNetwork, Generator])

# ----------------------------------------------------------------------------------------------

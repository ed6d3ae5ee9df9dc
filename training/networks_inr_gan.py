"""INR-GAN's coordinate network as EpiGRAF uses it: the NeRF++ background (`bg_model.type='sphere'`).

EpiGRAF (universome/epigraf, src/training/networks_inr_gan.py) renders what lies outside the unit
sphere around its cameras with a small style-modulated MLP over NeRF++'s inverted-sphere
coordinates (x', y', z', 1/r). Module, class names, constructor arguments and tensors are the
official ones, so official pickles load by name and official `state_dict`s fit:

- `INR(cfg, w_dim)`: `cfg.num_blocks` blocks of `min(cbase // 2^(i + 2), cmax)` channels (two
  blocks of 128 in the released config), 'skip' outputs summed over the blocks;
- block 0: the coordinates' Fourier features (`ScalarEncoder1d`, period `posenc_period_len`, log-spaced
  frequencies, sin and cos; 4 x 12 = 48 features at the default 64) into one modulated layer;
  later blocks: two modulated layers; every block: a modulated, non-demodulated output layer to
  `output_channels` (raw RGB and raw density);
- `SynthesisLayer`: a per-sample modulated and demodulated linear map (StyleGAN2's modulated
  convolution with a 1 x 1 kernel, without its weight gain, which demodulation cancels), bias, lrelu;
- `SynthesisOutputLayer`: the same map scaled by 1 / sqrt(in_channels), not demodulated, plus bias.

A block takes `num_layers + num_toout` ws; consecutive blocks share one (the output layer's w is
the next block's first), as in the official split; `INR.num_ws` is 4 for two blocks.
Not supported here (off in every released config): FMM (`cfg.fmm.enabled`, low-rank modulation).
"""

import numpy as np
import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import bias_act
from training import networks_stylegan2 as sg2


def modulated_linear(x, weight, styles, demodulate):
    """[N, C_in, P] points through weight [C_out, C_in] scaled by per-sample styles [N, C_in] -> [N, C_out, P].

    demodulate: each output row of the scaled weight normalised to unit length (+1e-8 under the root).
    The per-sample weight is formed in float32, so float16 activations cannot overflow it.
    """
    w = weight.to(torch.float32).unsqueeze(0) * styles.to(torch.float32).unsqueeze(1)   # [N, C_out, C_in]
    if demodulate:
        w = w * (w.square().sum(dim=2, keepdim=True) + 1e-8).rsqrt()
    return torch.bmm(w.to(x.dtype), x)


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    """A modulated, demodulated linear layer over points: [N, C_in, P] -> [N, C_out, P], then bias and activation."""

    def __init__(self, in_channels, out_channels, w_dim, activation='lrelu', conv_clamp=None, cfg={}):
        super().__init__()
        if cfg.get('fmm', {}).get('enabled', False):
            raise ValueError("EpiGRAF's INR option fmm.enabled (low-rank modulation) is not supported "
                             "(every released config leaves it off).")
        self.cfg = cfg
        self.w_dim = w_dim
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.activation = activation
        self.conv_clamp = conv_clamp
        self.act_gain = bias_act.activation_funcs[activation].def_gain
        self.affine = sg2.FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))

    def forward(self, x, w, gain=1.0):
        misc.assert_shape(x, [None, self.in_channels, None])
        x = modulated_linear(x, self.weight, self.affine(w), demodulate=True)
        clamp = self.conv_clamp * gain if self.conv_clamp is not None else None
        return bias_act.bias_act(x.unsqueeze(3), self.bias.to(x.dtype), act=self.activation, gain=self.act_gain * gain,
                                 clamp=clamp).squeeze(3)

    def extra_repr(self):
        return f'in_channels={self.in_channels:d}, out_channels={self.out_channels:d}, w_dim={self.w_dim:d}, ' \
               f'activation={self.activation:s}'


@persistence.persistent_class
class SynthesisOutputLayer(torch.nn.Module):
    """The block's output: modulated (styles / sqrt(C_in)), not demodulated, plus bias, no activation."""

    def __init__(self, in_channels, out_channels, w_dim, conv_clamp=None):
        super().__init__()
        self.conv_clamp = conv_clamp
        self.affine = sg2.FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels)

    def forward(self, x, w):
        x = modulated_linear(x, self.weight, self.affine(w) * self.weight_gain, demodulate=False)
        return bias_act.bias_act(x.unsqueeze(3), self.bias.to(x.dtype), clamp=self.conv_clamp).squeeze(3)


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """One INR block: (coordinate features, or the previous block's activations) -> layers -> output added to `out`."""

    def __init__(self, in_channels, out_channels, w_dim, img_channels, is_last, coord_dim, architecture='skip',
                 conv_clamp=None, use_fp16=False, cfg={}, **layer_kwargs):
        super().__init__()
        if architecture != 'skip':
            raise ValueError(f"EpiGRAF's INR blocks are 'skip' blocks here, got architecture={architecture!r}.")
        from training.networks_epigraf import ScalarEncoder1d  # EpiGRAF's layers.py encoder (its module imports this one)
        self.cfg = cfg
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.w_dim = w_dim
        self.img_channels = img_channels
        self.is_last = is_last
        self.architecture = architecture
        self.use_fp16 = use_fp16
        self.coord_dim = coord_dim
        self.num_layers = 0
        self.num_toout = 0
        if in_channels == 0:
            self.scalar_enc = ScalarEncoder1d(coord_dim, x_multiplier=cfg.posenc_period_len, const_emb_dim=0)
            conv1_in_channels = self.scalar_enc.get_dim()
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, conv_clamp=conv_clamp, cfg=cfg,
                                        **layer_kwargs)
            self.num_layers += 1
            conv1_in_channels = out_channels
        self.conv1 = SynthesisLayer(conv1_in_channels, out_channels, w_dim=w_dim, conv_clamp=conv_clamp, cfg=cfg,
                                    **layer_kwargs)
        self.num_layers += 1
        self.to_out = SynthesisOutputLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_toout += 1

    def forward(self, x, out, ws, force_fp32=False):
        misc.assert_shape(ws, [None, self.num_layers + self.num_toout, self.w_dim])
        dtype = sg2._block_precision(self.use_fp16, False, ws.device, force_fp32)[0]
        w = iter(ws.unbind(dim=1))
        if self.in_channels == 0:
            n, coord_dim, p = x.shape
            misc.assert_shape(x, [None, self.coord_dim, None])
            features = self.scalar_enc(x.permute(0, 2, 1).reshape(n * p, coord_dim))
            x = features.reshape(n, p, -1).permute(0, 2, 1).to(dtype)
        else:
            misc.assert_shape(x, [None, self.in_channels, None])
            x = self.conv0(x.to(dtype), next(w))
        x = self.conv1(x, next(w))
        y = self.to_out(x, next(w)).to(torch.float32)
        return x, (y if out is None else out + y)


@persistence.persistent_class
class INR(torch.nn.Module):
    """Coordinates [N, coord_dim, P] and ws [N, num_ws, w_dim] -> [N, output_channels, P] (float32)."""

    def __init__(self, cfg, w_dim, **block_kwargs):
        super().__init__()
        self.w_dim = w_dim
        self.cfg = cfg
        channels = [min(cfg.cbase // 2 ** (index + 2), cfg.cmax) for index in range(cfg.num_blocks)]
        fp16_start = max(cfg.num_blocks - cfg.num_fp16_blocks, 1)
        self.num_ws = 0
        self.blocks = torch.nn.ModuleList()
        for index, out_channels in enumerate(channels):
            is_last = index == cfg.num_blocks - 1
            block = SynthesisBlock(channels[index - 1] if index > 0 else 0, out_channels, w_dim=w_dim,
                                   img_channels=cfg.output_channels, is_last=is_last, coord_dim=cfg.coord_dim,
                                   use_fp16=index >= fp16_start, cfg=cfg, **block_kwargs)
            self.num_ws += block.num_layers + (block.num_toout if is_last else 0)
            self.blocks.append(block)

    def forward(self, coords, ws, ray_d_world=None, **block_kwargs):
        if ray_d_world is not None:
            raise ValueError("EpiGRAF's INR has no view-direction input (ray_d_world must be None).")
        misc.assert_shape(coords, [len(ws), self.cfg.coord_dim, None])
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        ws = ws.to(torch.float32)
        x = out = None
        index = 0
        for block in self.blocks:
            x, out = block(coords if x is None else x, out, ws.narrow(1, index, block.num_layers + block.num_toout),
                           **block_kwargs)
            index += block.num_layers
        return out


persistence.register_no_exec_module('training.networks_inr_gan', [SynthesisLayer, SynthesisOutputLayer, SynthesisBlock, INR])
# Official EpiGRAF pickles with the spherical background embed src/training/networks_inr_gan.py: recognised
# by its top-level names (never run), rebuilt from these classes.
persistence.register_no_exec_module('epigraf.networks_inr_gan', [SynthesisLayer, SynthesisOutputLayer, SynthesisBlock, INR],
                                    signature=['nerf_renderer', 'fmm_modulate_linear', 'style_modulate_linear',
                                               'SynthesisLayer', 'SynthesisOutputLayer', 'SynthesisBlock', 'INR'])

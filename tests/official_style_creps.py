"""A stand-in for the official CREPS `training/networks_creps.py`, written for the tests.

It pickles the way the official release does, which is all the tests need of it:
- the same top-level names (normalize_2nd_moment, modulated_fc, FullyConnectedLayer, MappingNetwork,
  SynthesisLayer, SynthesisInput, ToResLayer, SynthesisBlock, SynthesisNetwork, Generator) and no other
  top-level classes or functions, so the no-exec loader identifies the embedded source by its names;
- every class persistent except SynthesisInput, a plain torch module (the official pickle refers to
  it as the global training.networks_creps.SynthesisInput and stores its __dict__);
- the per-block decoders and decoder_last are torch.nn.Sequential of four persistent
  FullyConnectedLayer children;
- the official constructor arguments where they reach the pickle (the first block has
  in_channels=1, blocks take is_last, layers take channels_last, the Generator records only the
  keyword arguments it was given) and the official tensors, registered in the official order.
It has no forward passes: the function is what training/networks_creps.py implements.
Importing it appends one character to the file named by $OFFICIAL_STYLE_CREPS_RUNS, so a test can
tell whether its source was ever executed. The tests import it from a copy in a temporary folder,
under a name of its own.
"""

import os

import numpy as np
import torch

from torch_utils import persistence

_runs_file = os.environ.get('OFFICIAL_STYLE_CREPS_RUNS')
if _runs_file:
    with open(_runs_file, 'a') as _f:
        _f.write('x')


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return x * (x.square().mean(dim=dim, keepdim=True) + eps).rsqrt()


def modulated_fc(x, weight, styles, demodulate=True):
    w = weight.unsqueeze(0) * styles.unsqueeze(1)
    if demodulate:
        w = w * (w.square().sum(dim=2, keepdim=True) + 1e-8).rsqrt()
    return torch.einsum('nihw,noi->nohw', x, w)


@persistence.persistent_class
class FullyConnectedLayer(torch.nn.Module):
    def __init__(self, in_features, out_features, bias=True, weight_norm=True, activation='linear',
                 lr_multiplier=1, bias_init=0):
        super().__init__()
        self.in_features, self.out_features, self.activation = in_features, out_features, activation
        self.weight = torch.nn.Parameter(torch.randn([out_features, in_features]) / lr_multiplier)
        self.bias = torch.nn.Parameter(torch.full([out_features], np.float32(bias_init))) if bias else None
        self.weight_gain = lr_multiplier / (np.sqrt(in_features) if weight_norm else 1)
        self.bias_gain = lr_multiplier


@persistence.persistent_class
class MappingNetwork(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, num_ws, num_layers=8, embed_features=None, layer_features=None,
                 activation='lrelu', lr_multiplier=0.01, w_avg_beta=0.998):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim, self.num_ws = z_dim, c_dim, w_dim, num_ws
        self.num_layers, self.w_avg_beta = num_layers, w_avg_beta
        embed_features = 0 if c_dim == 0 else (w_dim if embed_features is None else embed_features)
        layer_features = w_dim if layer_features is None else layer_features
        widths = [z_dim + embed_features] + [layer_features] * (num_layers - 1) + [w_dim]
        if c_dim > 0:
            self.embed = FullyConnectedLayer(c_dim, embed_features)
        for idx in range(num_layers):
            setattr(self, f'fc{idx}', FullyConnectedLayer(widths[idx], widths[idx + 1], activation=activation,
                                                          lr_multiplier=lr_multiplier))
        if num_ws is not None and w_avg_beta is not None:
            self.register_buffer('w_avg', torch.zeros([w_dim]))


@persistence.persistent_class
class SynthesisLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, activation='lrelu', fc_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim = in_channels, out_channels, w_dim
        self.activation, self.fc_clamp = activation, fc_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))


class SynthesisInput(torch.nn.Module):
    """Not persistent, as in the official module: it pickles as a class reference and its __dict__."""

    def __init__(self, channels, w_dim, resolution, rank=8, bandwidth=10):
        super().__init__()
        self.channels, self.w_dim, self.resolution, self.rank, self.bandwidth = channels, w_dim, resolution, rank, bandwidth
        # Buffers first, then the weight, then the affine: the official registration order.
        self.register_buffer('freqs', torch.randn([1, channels // 2 * rank]) * bandwidth)
        self.register_buffer('coords', torch.linspace(0, 1, resolution).reshape(1, -1, 1, 1).repeat(1, 1, 2, 1))
        self.weight = torch.nn.Parameter(torch.randn([1, channels, 1, 2 * rank]))
        self.affine = FullyConnectedLayer(w_dim, channels * 2 * rank, bias_init=1)


@persistence.persistent_class
class ToResLayer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, fc_clamp=None, channels_last=False):
        super().__init__()
        self.in_channels, self.out_channels, self.w_dim, self.fc_clamp = in_channels, out_channels, w_dim, fc_clamp
        self.affine = FullyConnectedLayer(w_dim, in_channels, bias_init=1)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels]))
        self.bias = torch.nn.Parameter(torch.zeros([out_channels]))
        self.weight_gain = 1 / np.sqrt(in_channels)


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    """in_channels=1 marks the first block (the Fourier input), as in the official module."""

    def __init__(self, in_channels, out_channels, w_dim, resolution, is_last, res_channels=None, architecture='skip',
                 fc_clamp=256, use_fp16=False, fp16_channels_last=False, **layer_kwargs):
        super().__init__()
        self.in_channels, self.w_dim, self.resolution, self.res_channels = in_channels, w_dim, resolution, res_channels
        self.is_last, self.use_fp16 = is_last, use_fp16
        self.architecture = architecture if in_channels > 1 else 'orig'
        self.channels_last = use_fp16 and fp16_channels_last
        layer_kwargs = dict(layer_kwargs, w_dim=w_dim, fc_clamp=fc_clamp, channels_last=self.channels_last)
        self.num_fc = self.num_tores = 0
        if in_channels == 1:
            self.input = SynthesisInput(out_channels, w_dim=w_dim, resolution=resolution)
        else:
            self.fc0 = SynthesisLayer(in_channels, out_channels, **layer_kwargs)
            self.num_fc += 1
        self.fc1 = SynthesisLayer(out_channels, out_channels, **layer_kwargs)
        self.num_fc += 1
        if is_last or architecture == 'skip':
            self.tores = ToResLayer(out_channels, res_channels, w_dim=w_dim, fc_clamp=fc_clamp,
                                    channels_last=self.channels_last)
            self.num_tores += 1


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels, biline_channels=32, channel_base=32768, channel_max=512,
                 num_fp16_res=0, **block_kwargs):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.biline_channels, self.num_fp16_res = biline_channels, num_fp16_res
        self.img_resolution_log2 = int(np.log2(img_resolution))
        self.block_resolutions = [2 ** i for i in range(2, self.img_resolution_log2 + 1)]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        fp16_resolution = max(2 ** (self.img_resolution_log2 + 1 - num_fp16_res), 8)
        self.num_ws = 1
        for res in self.block_resolutions:
            is_last = res == img_resolution
            block = SynthesisBlock(channels[res // 2] if res > 4 else 1, channels[res], w_dim=w_dim,
                                   resolution=img_resolution, res_channels=biline_channels, is_last=is_last,
                                   use_fp16=res >= fp16_resolution, **block_kwargs)
            self.num_ws += block.num_fc + (block.num_tores if is_last else 0)
            setattr(self, f'b{res}', block)
        widths = [biline_channels, biline_channels * 2, biline_channels * 4, biline_channels * 2, biline_channels]

        def decoder():  # Local: the official module has no top-level helper for it.
            return torch.nn.Sequential(*[FullyConnectedLayer(widths[i], widths[i + 1], activation='lrelu')
                                         for i in range(4)])
        for res in self.block_resolutions[1:]:
            setattr(self, f'decoder_{res}', decoder())
        self.decoder_last = decoder()
        self.decoder_img = FullyConnectedLayer(biline_channels, img_channels)
        head = dict(w_dim=w_dim, resolution=img_resolution, res_channels=img_channels, use_fp16=True, fc_clamp=256)
        self.block0 = SynthesisBlock(biline_channels, biline_channels * 4, is_last=False, **head)
        self.block1 = SynthesisBlock(biline_channels * 4, biline_channels * 2, is_last=True, **head)


@persistence.persistent_class
class Generator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, mapping_kwargs={}, **synthesis_kwargs):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = SynthesisNetwork(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels,
                                          **synthesis_kwargs)
        self.num_ws = self.synthesis.num_ws
        self.mapping = MappingNetwork(z_dim=z_dim, c_dim=c_dim, w_dim=w_dim, num_ws=self.num_ws, **mapping_kwargs)

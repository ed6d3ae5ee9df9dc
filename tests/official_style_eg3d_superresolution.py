"""A stand-in for EG3D's `training/superresolution.py`, written for the tests (see official_style_eg3d_triplane.py).

The same top-level names as the official module, all persistent classes: SuperresolutionHybrid8X,
SuperresolutionHybrid4X, SuperresolutionHybrid2X, SuperresolutionHybridDeepfp32, SynthesisBlockNoUp,
SuperresolutionHybrid8XDC. The official constructor arguments, the official resolution checks, and
ours (training.networks_triplane) for the tensors; the official Deepfp32 module is a 256x256 legacy
class that EG3D's generator no longer builds, here a stub. Their blocks are SynthesisBlockNoUp
(this module) and SynthesisBlock (networks_stylegan2), re-classed by the generator stand-in.
Importing this file appends 's' to $OFFICIAL_STYLE_EG3D_RUNS.
"""

import os

import torch

from torch_utils import persistence
from training import networks_triplane as ours

if os.environ.get('OFFICIAL_STYLE_EG3D_RUNS'):
    with open(os.environ['OFFICIAL_STYLE_EG3D_RUNS'], 'a') as _f:
        _f.write('s')


@persistence.persistent_class
class SuperresolutionHybrid8X(ours.SuperresolutionHybrid8X):
    def __init__(self, channels, img_resolution, sr_num_fp16_res, sr_antialias, num_fp16_res=4, conv_clamp=None,
                 channel_base=None, channel_max=None, **block_kwargs):
        assert img_resolution == 512
        super().__init__(channels, img_resolution, sr_num_fp16_res, sr_antialias, **block_kwargs)


@persistence.persistent_class
class SuperresolutionHybrid4X(ours.SuperresolutionHybrid4X):
    def __init__(self, channels, img_resolution, sr_num_fp16_res, sr_antialias, num_fp16_res=4, conv_clamp=None,
                 channel_base=None, channel_max=None, **block_kwargs):
        assert img_resolution == 256
        super().__init__(channels, img_resolution, sr_num_fp16_res, sr_antialias, **block_kwargs)


@persistence.persistent_class
class SuperresolutionHybrid2X(ours.SuperresolutionHybrid2X):
    def __init__(self, channels, img_resolution, sr_num_fp16_res, sr_antialias, num_fp16_res=4, conv_clamp=None,
                 channel_base=None, channel_max=None, **block_kwargs):
        assert img_resolution == 128
        super().__init__(channels, img_resolution, sr_num_fp16_res, sr_antialias, **block_kwargs)


@persistence.persistent_class
class SuperresolutionHybridDeepfp32(torch.nn.Module):
    pass


@persistence.persistent_class
class SynthesisBlockNoUp(ours.SynthesisBlockNoUp):
    pass


@persistence.persistent_class
class SuperresolutionHybrid8XDC(ours.SuperresolutionHybrid8XDC):
    def __init__(self, channels, img_resolution, sr_num_fp16_res, sr_antialias, num_fp16_res=4, conv_clamp=None,
                 channel_base=None, channel_max=None, **block_kwargs):
        assert img_resolution == 512
        super().__init__(channels, img_resolution, sr_num_fp16_res, sr_antialias, **block_kwargs)

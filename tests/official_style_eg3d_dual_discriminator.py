"""A stand-in for EG3D's `training/dual_discriminator.py`, written for the tests (see official_style_eg3d_triplane.py).

The official top-level names: filtered_resizing (a function), SingleDiscriminator, DualDiscriminator
and DummyDualDiscriminator (persistent classes; only DualDiscriminator is built here, the others
are stubs). DualDiscriminator takes the official constructor arguments; its tensors (resample_filter
and the StyleGAN2 b{res} blocks, mapping and b4 epilogue on 6-channel input) are ours, its StyleGAN2
parts re-classed to the stand-in classes of official_style_eg3d_stylegan2.py.
Importing this file appends 'd' to $OFFICIAL_STYLE_EG3D_RUNS.
"""

import os

import torch

import official_style_eg3d_stylegan2 as networks_stylegan2
from torch_utils import persistence
from training import networks_triplane as ours

if os.environ.get('OFFICIAL_STYLE_EG3D_RUNS'):
    with open(os.environ['OFFICIAL_STYLE_EG3D_RUNS'], 'a') as _f:
        _f.write('d')


def filtered_resizing(image_orig_tensor, size, f, filter_mode='antialiased'):
    return ours.filtered_resizing(image_orig_tensor, size, f, filter_mode=filter_mode)


@persistence.persistent_class
class SingleDiscriminator(torch.nn.Module):
    pass


@persistence.persistent_class
class DualDiscriminator(ours.DualDiscriminator):
    def __init__(self, c_dim, img_resolution, img_channels, architecture='resnet', channel_base=32768, channel_max=512,
                 num_fp16_res=4, conv_clamp=256, cmap_dim=None, disc_c_noise=0, block_kwargs={}, mapping_kwargs={},
                 epilogue_kwargs={}):
        super().__init__(c_dim, img_resolution, img_channels, architecture=architecture, channel_base=channel_base,
                         channel_max=channel_max, num_fp16_res=num_fp16_res, conv_clamp=conv_clamp, cmap_dim=cmap_dim,
                         disc_c_noise=disc_c_noise, block_kwargs=block_kwargs, mapping_kwargs=mapping_kwargs,
                         epilogue_kwargs=epilogue_kwargs)
        for module in self.modules():  # Our StyleGAN2 parts -> the stand-in classes of the same name.
            cls = getattr(networks_stylegan2, type(module).__name__, None)
            if isinstance(cls, type) and cls is not type(module) and issubclass(cls, type(module)):
                module.__class__ = cls


@persistence.persistent_class
class DummyDualDiscriminator(torch.nn.Module):
    pass

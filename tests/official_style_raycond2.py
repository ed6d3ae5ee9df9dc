"""A stand-in for the official Ray Conditioning `training/networks_raycond2.py`, written for the tests.

It pickles the way the official release does: its classes carry the official top-level names and
constructor arguments, are persistent (so every object embeds this module's source), the Generator
records no `legacy_rays`, and each synthesis block keeps the official ray function as an attribute,
`self.embedding = plucker_embedding`, so the pickle holds the global reference
`training.plucker.plucker_embedding`. Its forward follows the official wiring (Plücker maps of the
official field concatenated before conv0 at res/2 and before conv1 at res; b4's constant gets the 4x4
map; ToRGB sees no rays; the mapping ignores the camera). The layers themselves are StyleGAN2's.
The test imports it from a copy in a temporary folder, under a name of its own.
"""

import torch

from torch_utils import misc
from torch_utils import persistence
from torch_utils.ops import upfirdn2d
from training import networks_stylegan2 as sg2
from training.plucker import plucker_embedding


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return sg2.normalize_2nd_moment(x, dim=dim, eps=eps)


def modulated_conv2d(*args, **kwargs):
    return sg2.modulated_conv2d(*args, **kwargs)


@persistence.persistent_class
class FullyConnectedLayer(sg2.FullyConnectedLayer):
    pass


@persistence.persistent_class
class Conv2dLayer(sg2.Conv2dLayer):
    pass


@persistence.persistent_class
class MappingNetwork(sg2.MappingNetwork):
    """Records the camera's c_dim but embeds no label, as the official raycond2 mapping."""

    def __init__(self, z_dim, c_dim, w_dim, num_ws, **kwargs):
        super().__init__(z_dim=z_dim, c_dim=0, w_dim=w_dim, num_ws=num_ws, **kwargs)

    def forward(self, z, c, **kwargs):
        return super().forward(z, None, **kwargs)


@persistence.persistent_class
class SynthesisLayer(sg2.SynthesisLayer):
    pass


@persistence.persistent_class
class ToRGBLayer(sg2.ToRGBLayer):
    pass


@persistence.persistent_class
class SynthesisBlock(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim, resolution, img_channels, is_last, architecture='skip',
                 embedding='plucker', resample_filter=[1, 3, 3, 1], conv_clamp=256, use_fp16=False,
                 fp16_channels_last=False, fused_modconv_default=True, **layer_kwargs):
        super().__init__()
        self.in_channels, self.w_dim, self.resolution = in_channels, w_dim, resolution
        self.img_channels, self.is_last, self.architecture = img_channels, is_last, architecture
        self.use_fp16 = use_fp16
        self.fused_modconv_default = fused_modconv_default
        self.register_buffer('resample_filter', upfirdn2d.setup_filter(resample_filter))
        self.embedding = plucker_embedding  # What puts the function's global reference into the pickle.
        self.num_conv, self.num_torgb = 0, 0
        if in_channels == 0:
            self.const = torch.nn.Parameter(torch.randn([out_channels, resolution, resolution]))
        else:
            self.conv0 = SynthesisLayer(in_channels, out_channels, w_dim=w_dim, resolution=resolution, up=2,
                                        resample_filter=resample_filter, conv_clamp=conv_clamp, **layer_kwargs)
            self.num_conv += 1
        self.conv1 = SynthesisLayer(out_channels + 6, out_channels, w_dim=w_dim, resolution=resolution,
                                    conv_clamp=conv_clamp, **layer_kwargs)
        self.num_conv += 1
        self.torgb = ToRGBLayer(out_channels, img_channels, w_dim=w_dim, conv_clamp=conv_clamp)
        self.num_torgb += 1

    def forward(self, x, img, c, ws, force_fp32=False, fused_modconv=None, update_emas=False, **layer_kwargs):
        w_iter = iter(ws.unbind(dim=1))
        fused_modconv = self.fused_modconv_default if fused_modconv is None else fused_modconv
        if fused_modconv == 'inference_only':
            fused_modconv = not self.training
        c2ws, intrinsics = c[:, :16].view(-1, 4, 4), c[:, 16:].view(-1, 3, 3)
        with torch.no_grad():
            rays_next = self.embedding(self.resolution, self.resolution, intrinsics, c2ws)
        if self.in_channels == 0:
            x = torch.cat([self.const.unsqueeze(0).repeat([ws.shape[0], 1, 1, 1]), rays_next], dim=1)
            x = self.conv1(x, next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        else:
            with torch.no_grad():
                rays_in = self.embedding(self.resolution // 2, self.resolution // 2, intrinsics, c2ws)
            x = self.conv0(torch.cat([x, rays_in], dim=1), next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
            x = self.conv1(torch.cat([x, rays_next], dim=1), next(w_iter), fused_modconv=fused_modconv, **layer_kwargs)
        if img is not None:
            img = upfirdn2d.upsample2d(img, self.resample_filter)
        y = self.torgb(x, next(w_iter), fused_modconv=fused_modconv).to(torch.float32)
        return x, (img.add_(y) if img is not None else y)


@persistence.persistent_class
class SynthesisNetwork(torch.nn.Module):
    def __init__(self, w_dim, img_resolution, img_channels, channel_base=32768, channel_max=512, num_fp16_res=4,
                 **block_kwargs):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.block_resolutions = [2 ** i for i in range(2, int(img_resolution).bit_length())]
        channels = {res: min(channel_base // res, channel_max) for res in self.block_resolutions}
        self.num_ws = 0
        for res in self.block_resolutions:
            block = SynthesisBlock(channels[res // 2] + 6 if res > 4 else 0, channels[res], w_dim=w_dim, resolution=res,
                                   img_channels=img_channels, is_last=res == img_resolution, **block_kwargs)
            self.num_ws += block.num_conv + (block.num_torgb if res == img_resolution else 0)
            setattr(self, f'b{res}', block)

    def forward(self, ws, c, **block_kwargs):
        misc.assert_shape(ws, [None, self.num_ws, self.w_dim])
        x = img = None
        w_idx = 0
        for res in self.block_resolutions:
            block = getattr(self, f'b{res}')
            x, img = block(x, img, c, ws.narrow(1, w_idx, block.num_conv + block.num_torgb), **block_kwargs)
            w_idx += block.num_conv
        return img


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

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        ws = self.mapping(z, c, truncation_psi=truncation_psi, truncation_cutoff=truncation_cutoff,
                          update_emas=update_emas)
        return self.synthesis(ws, c, update_emas=update_emas, **synthesis_kwargs)


@persistence.persistent_class
class DiscriminatorBlock(sg2.DiscriminatorBlock):
    pass


@persistence.persistent_class
class MinibatchStdLayer(sg2.MinibatchStdLayer):
    pass


@persistence.persistent_class
class DiscriminatorEpilogue(sg2.DiscriminatorEpilogue):
    pass


@persistence.persistent_class
class Discriminator(sg2.Discriminator):
    pass

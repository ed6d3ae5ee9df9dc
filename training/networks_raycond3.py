"""Ray Conditioning on the StyleGAN3 backbone (configs raycond3-t and raycond3-r).

Every SynthesisLayer, ToRGB included, gets a 6-channel Plücker ray map concatenated to its input,
computed at the layer's actual input size (margin included). The layers therefore have weights
[out, in + 6, k, k] and affines with in + 6 outputs (the styles modulate the ray channels too), and
their input-magnitude EMA covers the ray channels. The Fourier input, the layer names and the filters
are those of `networks_stylegan3`, whose layers are reused; the mapping network ignores the camera.
The Generator contract, the `legacy_rays` option and the way pickles set it are those of
`networks_raycond2` (see its docstring).

Physical rays and the margin: a layer's samples cover the image plus `margin_size` samples on every
side, at the layer's input sampling rate `sr`. Sample j of a row of `size` samples lies at the
normalised image coordinate (j + 0.5 - (size - sr) / 2) / sr, so the physical map gives each sample the
ray through that point, and a point of the image gets the same ray at every layer. The legacy field
(official release) ignores the margin: it is the official pixel-unit map of a size x size image.
"""

import torch

from torch_utils import persistence
from training import cameras
from training import networks_stylegan3
from training.networks_raycond2 import (RAY_CHANNELS, build_generator, check_camera, claim_official_sources, concat_rays,
                                        generator_forward, widening_from_2d)

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class SynthesisLayer(networks_stylegan3.SynthesisLayer):
    """StyleGAN3 layer on its input ⊕ the ray map of its input grid; `in_channels` counts features only."""

    def __init__(self, w_dim, is_torgb, is_critically_sampled, use_fp16, in_channels, *args, **kwargs):
        super().__init__(w_dim, is_torgb, is_critically_sampled, use_fp16, in_channels + RAY_CHANNELS, *args, **kwargs)
        self.feature_channels = in_channels

    @property
    def ray_key(self):
        """(width, height, sampling rate) of the input grid."""
        return int(self.in_size[0]), int(self.in_size[1]), float(self.in_sampling_rate)

    def forward(self, x, w, rays=None, **layer_kwargs):
        return super().forward(concat_rays(x, rays, self.ray_key), w, **layer_kwargs)


def layer_ray_map(c, width, height, sampling_rate, legacy):
    """[N, 6, height, width] Plücker map of the cameras `c` on a layer grid with a margin (see the module docstring)."""
    if legacy:
        return cameras.plucker_map(c, height, width, legacy=True)
    cam2world, intrinsics = cameras.unpack(c)
    # Intrinsics in the grid's own normalised coordinates u' = (j + 0.5) / width, which map the
    # image coordinate u (module docstring) to u' = u * sr / width + (width - sr) / (2 width).
    image_to_grid = torch.tensor([[sampling_rate / width, 0, (width - sampling_rate) / (2 * width)],
                                  [0, sampling_rate / height, (height - sampling_rate) / (2 * height)],
                                  [0, 0, 1]], dtype=torch.float32, device=c.device)
    grid_intrinsics = image_to_grid @ intrinsics.float()
    origins, dirs = cameras.get_rays(cam2world.float(), grid_intrinsics, height, width)
    return cameras.plucker(origins, dirs).permute(0, 3, 1, 2)


@persistence.persistent_class
class SynthesisNetwork(networks_stylegan3.SynthesisNetwork):
    """StyleGAN3 synthesis whose every layer is ray-conditioned; forward(ws, c=...)."""

    def __init__(self,
        w_dim,                  # Intermediate latent (W) dimensionality.
        img_resolution,         # Output image resolution.
        img_channels,           # Number of colour channels.
        legacy_rays = False,    # The official release's non-physical ray field (for its weights)?
        **kwargs,               # Arguments for networks_stylegan3.SynthesisNetwork.
    ):
        super().__init__(w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, **kwargs)
        self.legacy_rays = bool(legacy_rays)
        # The backbone built plain layers; rebuild each, with the same arguments, ray-conditioned.
        for name in self.layer_names:
            layer = getattr(self, name)
            setattr(self, name, SynthesisLayer(*layer.init_args, **layer.init_kwargs))

    def forward(self, ws, c=None, **layer_kwargs):
        c = check_camera(c, ws.shape[0], ws.device)
        rays = {}
        with torch.no_grad():
            for name in self.layer_names:
                key = getattr(self, name).ray_key
                if key not in rays:
                    rays[key] = layer_ray_map(c, *key, legacy=self.legacy_rays)
        return super().forward(ws, rays=rays, **layer_kwargs)

    def extra_repr(self):
        return f'{super().extra_repr()},\nlegacy_rays={self.legacy_rays}'

# ----------------------------------------------------------------------------------------------


@persistence.persistent_class
class Generator(torch.nn.Module):
    """Ray-conditioned StyleGAN3 generator: G(z, c) = synthesis(mapping(z), c=c), c the camera."""

    # Capabilities (read by training.capabilities).
    label_kind = 'camera'
    synthesis_options = ('camera', 'noise_mode', 'force_fp32', 'transform')
    output_key = None

    def __init__(self,
        z_dim,                  # Input latent (Z) dimensionality.
        c_dim,                  # Camera label dimensionality: 25.
        w_dim,                  # Intermediate latent (W) dimensionality.
        img_resolution,         # Output resolution.
        img_channels,           # Number of output colour channels.
        mapping_kwargs  = {},   # Arguments for networks_stylegan3.MappingNetwork.
        legacy_rays     = False,# The official release's non-physical ray field (for its weights)?
        label_kind      = 'camera', # Always a camera (training configs pass it for every camera-labelled dataset).
        **synthesis_kwargs,     # Arguments for SynthesisNetwork.
    ):
        super().__init__()
        build_generator(self, SynthesisNetwork, networks_stylegan3.MappingNetwork, z_dim, c_dim, w_dim, img_resolution,
                        img_channels, mapping_kwargs, legacy_rays, label_kind, synthesis_kwargs)

    @property
    def legacy_rays(self):
        return self.synthesis.legacy_rays

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        return generator_forward(self, z, c, truncation_psi, truncation_cutoff, update_emas, synthesis_kwargs)

    def resume_widening(self, source_G):
        return widening_from_2d(source_G)

# ----------------------------------------------------------------------------------------------

# Our own pickles: recognised by their exact source, or, for older versions of this file, by names
# that only this module defines.
persistence.register_no_exec_module('training.networks_raycond3', [SynthesisLayer, SynthesisNetwork, Generator],
                                    signature=['SynthesisLayer', 'SynthesisNetwork', 'Generator', 'layer_ray_map'])

# Official pickles: the official module defines the StyleGAN3 names; ours stand in, with legacy rays.
_SG3 = networks_stylegan3
persistence.import_hook(claim_official_sources(
    'training.networks_raycond3',
    required_names=['SynthesisInput', 'SynthesisNetwork', 'Generator'],
    our_marker='layer_ray_map',
    stand_ins=dict(FullyConnectedLayer=_SG3.FullyConnectedLayer, MappingNetwork=_SG3.MappingNetwork,
                   SynthesisInput=_SG3.SynthesisInput, SynthesisLayer=_SG3.SynthesisLayer,
                   SynthesisNetwork=SynthesisNetwork, Generator=Generator),
    legacy_classes=[SynthesisNetwork, Generator]))

# ----------------------------------------------------------------------------------------------

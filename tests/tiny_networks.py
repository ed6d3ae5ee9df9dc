"""Tiny networks pickled by the tests of the sampling scripts and the pickle loader.

`CameraGenerator` is a minimal camera-conditioned generator that follows the generator contract:
its mapping ignores the camera, its synthesis takes the camera (`c=`) and an output `scale=`, like the
ray-conditioned and any-scale generators. It is registered with the no-exec loader, so its pickles
load in this process without executing their embedded source.
"""

import pickle
import warnings

import torch

from torch_utils import persistence
from training import networks_stylegan2, networks_stylegan3


@persistence.persistent_class
class CameraMapping(torch.nn.Module):
    def __init__(self, z_dim, w_dim, num_ws):
        super().__init__()
        self.z_dim, self.w_dim, self.num_ws = z_dim, w_dim, num_ws
        # Plain parameters, not torch.nn.Linear: the no-exec loader rebuilds only registered classes.
        self.weight = torch.nn.Parameter(torch.randn([z_dim, w_dim]))
        self.register_buffer('w_avg', torch.zeros([w_dim]))

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
        w = z @ self.weight
        w = self.w_avg + (w - self.w_avg) * truncation_psi
        return w.unsqueeze(1).repeat(1, self.num_ws, 1)


@persistence.persistent_class
class CameraSynthesis(torch.nn.Module):
    """Image = tanh of a per-pixel mix of the style and the camera origin; the size follows `scale`."""

    def __init__(self, w_dim, img_resolution, img_channels):
        super().__init__()
        self.w_dim, self.img_resolution, self.img_channels = w_dim, img_resolution, img_channels
        self.num_ws = 2
        self.from_w = torch.nn.Parameter(torch.randn([w_dim, img_channels]) * 0.3)
        self.from_camera = torch.nn.Parameter(torch.randn([img_channels, 3, img_resolution, img_resolution]))

    def forward(self, ws, c=None, noise_mode='const', scale=None):
        size = self.img_resolution if scale is None else int(self.img_resolution * scale)
        origin = c[:, [3, 7, 11]]
        pattern = torch.nn.functional.interpolate(self.from_camera.reshape(1, -1, self.img_resolution, self.img_resolution),
                                                  size=(size, size), mode='nearest').reshape(self.img_channels, 3, size, size)
        x = torch.einsum('nk,ckhw->nchw', origin, pattern) + (ws[:, 0] @ self.from_w)[:, :, None, None]
        return torch.tanh(x)


@persistence.persistent_class
class CameraGenerator(torch.nn.Module):
    label_kind = 'camera'
    synthesis_options = ('camera', 'scale', 'noise_mode')
    output_key = None

    def __init__(self, z_dim=4, w_dim=4, img_resolution=8, img_channels=3):
        super().__init__()
        self.z_dim, self.c_dim, self.w_dim = z_dim, 25, w_dim
        self.img_resolution, self.img_channels = img_resolution, img_channels
        self.synthesis = CameraSynthesis(w_dim, img_resolution, img_channels)
        self.num_ws = self.synthesis.num_ws
        self.mapping = CameraMapping(z_dim, w_dim, self.num_ws)

    def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False, **synthesis_kwargs):
        return self.synthesis(self.mapping(z, c, truncation_psi, truncation_cutoff), c, **synthesis_kwargs)


persistence.register_no_exec_module('tests.tiny_networks', [CameraGenerator, CameraMapping, CameraSynthesis])


def stylegan2_generator(c_dim=0, resolution=16, channels=3, seed=0, label_kind=None):
    torch.manual_seed(seed)
    return networks_stylegan2.Generator(z_dim=8, c_dim=c_dim, w_dim=8, img_resolution=resolution, img_channels=channels,
                                        mapping_kwargs=dict(num_layers=2), channel_base=64, channel_max=8,
                                        **({} if label_kind is None else dict(label_kind=label_kind))).eval()


def stylegan3_generator(resolution=32, radial=True, seed=0):
    """Config R (1x1 convolutions, radial filters): equivariant to translations and to quarter turns."""
    torch.manual_seed(seed)
    extra = dict(conv_kernel=1, use_radial_filters=True, channel_base=512, channel_max=32) if radial else \
        dict(channel_base=256, channel_max=16)
    return networks_stylegan3.Generator(z_dim=8, c_dim=0, w_dim=8, img_resolution=resolution, img_channels=3,
                                        **extra).eval()


def creps_generator(resolution=16, seed=0):
    """A tiny CREPS generator: any scale, any view shape, translate and zoom (the 'scale', 'size' and 'view' options)."""
    from training import networks_creps
    torch.manual_seed(seed)
    return networks_creps.Generator(z_dim=16, c_dim=0, w_dim=16, img_resolution=resolution, img_channels=3,
                                    mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=32).eval()


def triplane_generator(resolution=32, seed=0, box_warp=1.0, **rendering):
    """A tiny EG3D generator (16x16 planes, 8x8 neural rendering, 6 + 6 samples, fixed bounds around the unit box)."""
    from training import networks_triplane
    torch.manual_seed(seed)
    rendering_kwargs = dict(
        image_resolution=resolution, disparity_space_sampling=False, clamp_mode='softplus',
        superresolution_module='training.superresolution.SuperresolutionHybrid2X', c_gen_conditioning_zero=False,
        gpc_reg_prob=0.5, c_scale=1.0, superresolution_noise_mode='none', density_reg=0.25, density_reg_p_dist=0.004,
        reg_type='l1', decoder_lr_mul=1.0, sr_antialias=True, depth_resolution=6, depth_resolution_importance=6,
        ray_start=2.0, ray_end=3.4, box_warp=box_warp, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0])
    rendering_kwargs.update(rendering)
    G = networks_triplane.TriPlaneGenerator(z_dim=16, c_dim=25, w_dim=16, img_resolution=resolution, img_channels=3,
                                            mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=16,
                                            num_fp16_res=0, conv_clamp=None, rendering_kwargs=rendering_kwargs,
                                            sr_kwargs=dict(block_channels=[16, 16]), triplane_resolution=16)
    G.neural_rendering_resolution = 8
    return G.eval()


def camera_generator(seed=0, **kwargs):
    torch.manual_seed(seed)
    return CameraGenerator(**kwargs).eval()


# A tiny EpiGRAF configuration (training/networks_epigraf.py's cfg): 16x16 tri-planes of 4 channels, 4x4 patches,
# 6 + 6 samples per ray, EpiGRAF's FFHQ camera (radius 1, 12 degrees).
EPIGRAF_CFG = {
    'patch': {'enabled': True, 'patch_params_cond': True, 'resolution': 4, 'mbstd_group_size': 2},
    'dataset': {'camera': {'fov': 12.0, 'ray_start': 0.88, 'ray_end': 1.12, 'radius': 1.0}, 'cube_scale': 0.2,
                'white_back': False, 'last_back': False},
    'camera_cond': False, 'camera_cond_drop_p': 0.0, 'backbone': 'stylegan2', 'num_ray_steps': 6,
    'clamp_mode': 'softplus', 'nerf_noise_std_init': 1.0, 'nerf_noise_kimg_growth': 5000, 'density_shift': 0.0,
    'use_noise': True, 'tri_plane': {'res': 16, 'feat_dim': 4, 'fp32': True, 'mlp': {'n_layers': 2, 'hid_dim': 8}},
    'bg_model': {'type': None},
}


def save_snapshot(path, G, D=None):
    """Pickle G as a snapshot (G, D, G_ema) in the official format."""
    if D is None:
        D = networks_stylegan2.Discriminator(c_dim=G.c_dim, img_resolution=8, img_channels=G.img_channels,
                                             channel_base=32, channel_max=4)
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
    return str(path)


class PooledFeatureDetector(torch.nn.Module):
    """A stand-in for the metric detectors: 2x2 average-pooled pixels (0..1) through a fixed linear map.

    Keeps the official calling convention (uint8 NCHW in; `return_features`, `no_output_bias`). Its
    features are simple enough that tests recompute them with numpy. Saved as TorchScript so that
    any process loads it without importing the tests.
    """

    def __init__(self, num_features=8, seed=0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        self.register_buffer('weight', torch.randn([12, num_features], generator=generator))

    def forward(self, images, return_features: bool = False, no_output_bias: bool = False):
        x = torch.nn.functional.adaptive_avg_pool2d(images.to(torch.float32) / 255, 2).flatten(1)
        features = x @ self.weight
        if return_features:
            return features
        return torch.softmax(features, dim=1)


def save_pooled_feature_detector(path, num_features=8, seed=0):
    with warnings.catch_warnings():  # TorchScript is deprecated, but NVIDIA's older detectors are TorchScript files.
        warnings.simplefilter('ignore', DeprecationWarning)
        torch.jit.save(torch.jit.script(PooledFeatureDetector(num_features, seed)), str(path))
    return str(path)

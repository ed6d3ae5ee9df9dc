"""A stand-in for EG3D's `training/triplane.py` (NVlabs/eg3d), written for the tests.

With its siblings it makes an official-style EG3D release, enough to write pickles the way the
official training loop writes ffhq512-128.pkl:
- official_style_eg3d_triplane.py (training.triplane): exactly the top-level names TriPlaneGenerator
  (persistent) and OSGDecoder (a plain torch module: pickled as the global training.triplane.OSGDecoder
  and its __dict__), with the official constructors: the generator builds, in the official order, the
  plain renderer and ray sampler, the StyleGAN2 backbone at 256x256 with 96 channels, the
  super-resolution module named by rendering_kwargs['superresolution_module'], the decoder
  (Sequential(FullyConnectedLayer(32, 64), Softplus(), FullyConnectedLayer(64, 33))), then
  neural_rendering_resolution = 64, rendering_kwargs and _last_planes = None;
- official_style_eg3d_superresolution.py (training.superresolution),
  official_style_eg3d_dual_discriminator.py (training.dual_discriminator) and
  official_style_eg3d_stylegan2.py (EG3D's training.networks_stylegan2): persistent classes with the
  official top-level names, so each pickled object embeds the source of its own module;
- official_style_eg3d_rendering.py: the plain ImportanceRenderer, MipRayMarcher2 and RaySampler of
  training.volumetric_rendering (never embedded).
The tensors come from our classes (whose names, shapes and order are the official ones, per
tests/data/spec/eg3d_official_tensors.json); every StyleGAN2 or super-resolution part our code builds
is re-classed to the stand-in class of the same name before anything is pickled. No forward passes:
the function is what training/networks_triplane.py implements. The tests import these files from
copies in a temporary folder under names of their own (the 'official_style_eg3d_' prefix replaced)
and set the plain classes' __module__ to the official module names; importing this file appends 't'
to the file named by $OFFICIAL_STYLE_EG3D_RUNS, so a test can tell whether its source ever ran.
"""

import os

import torch

import official_style_eg3d_stylegan2 as networks_stylegan2
import official_style_eg3d_superresolution as superresolution
from official_style_eg3d_rendering import ImportanceRenderer, RaySampler
from torch_utils import persistence

if os.environ.get('OFFICIAL_STYLE_EG3D_RUNS'):
    with open(os.environ['OFFICIAL_STYLE_EG3D_RUNS'], 'a') as _f:
        _f.write('t')


@persistence.persistent_class
class TriPlaneGenerator(torch.nn.Module):
    def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, sr_num_fp16_res=0, mapping_kwargs={},
                 rendering_kwargs={}, sr_kwargs={}, **synthesis_kwargs):
        super().__init__()
        self.z_dim = z_dim
        self.c_dim = c_dim
        self.w_dim = w_dim
        self.img_resolution = img_resolution
        self.img_channels = img_channels
        self.renderer = ImportanceRenderer()
        self.ray_sampler = RaySampler()
        self.backbone = networks_stylegan2.Generator(z_dim, c_dim, w_dim, img_resolution=256, img_channels=32 * 3,
                                                     mapping_kwargs=mapping_kwargs, **synthesis_kwargs)
        sr_class = getattr(superresolution, rendering_kwargs['superresolution_module'].rpartition('.')[2])
        self.superresolution = sr_class(channels=32, img_resolution=img_resolution, sr_num_fp16_res=sr_num_fp16_res,
                                        sr_antialias=rendering_kwargs['sr_antialias'], **sr_kwargs)
        self.decoder = OSGDecoder(32, {'decoder_lr_mul': rendering_kwargs.get('decoder_lr_mul', 1),
                                       'decoder_output_dim': 32})
        self.neural_rendering_resolution = 64
        self.rendering_kwargs = rendering_kwargs
        self._last_planes = None
        for module in self.modules():  # Our parts -> the stand-in classes of the same name.
            for home in (networks_stylegan2, superresolution):
                cls = getattr(home, type(module).__name__, None)
                if isinstance(cls, type) and cls is not type(module) and issubclass(cls, type(module)):
                    module.__class__ = cls
                    break


class OSGDecoder(torch.nn.Module):
    def __init__(self, n_features, options):
        super().__init__()
        self.hidden_dim = 64
        lr_mul = options['decoder_lr_mul']
        self.net = torch.nn.Sequential(
            networks_stylegan2.FullyConnectedLayer(n_features, self.hidden_dim, lr_multiplier=lr_mul),
            torch.nn.Softplus(),
            networks_stylegan2.FullyConnectedLayer(self.hidden_dim, 1 + options['decoder_output_dim'],
                                                   lr_multiplier=lr_mul))

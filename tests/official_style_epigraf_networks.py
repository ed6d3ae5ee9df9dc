"""Stand-in for the source text that official EpiGRAF pickles embed (universome/epigraf, src/training/).

Only the top-level names matter: the no-exec loader recognises an embedded module by the names its
source defines (parsed, never executed), so each source below defines the official module's names with
empty bodies. The tests cut SOURCES out of this file and write them into official-format pickles. Nothing
here may run: the first statement of each source raises.
"""


NETWORKS_EPIGRAF = '''
raise RuntimeError("stand-in source of src/training/networks_epigraf.py: never executed")

def tri_plane_renderer(x, coords, ray_d_world, mlp, scale=1.0):
    pass

def nerf_renderer(coords, ws, nerf, ray_d_world):
    pass

class TriPlaneMLP:
    pass

class SynthesisBlocksSequence:
    pass

class SynthesisNetwork:
    pass

class Generator:
    pass
'''

LAYERS = '''
raise RuntimeError("stand-in source of src/training/layers.py: never executed")

def normalize_2nd_moment(x, dim=1, eps=1e-8):
    pass

class FullyConnectedLayer:
    pass

class MappingNetwork:
    pass

class Conv2dLayer:
    pass

class ScalarEncoder1d:
    pass

class FourierEncoder1d:
    pass

def construct_log_spaced_freqs(max_num_frames):
    pass
'''

NETWORKS_STYLEGAN2 = '''
raise RuntimeError("stand-in source of src/training/networks_stylegan2.py: never executed")

def modulated_conv2d(x, weight, styles):
    pass

class SynthesisLayer:
    pass

class ToRGBLayer:
    pass

class SynthesisBlock:
    pass

class SynthesisNetwork:
    pass

class Generator:
    pass
'''

NETWORKS_DISCRIMINATOR = '''
raise RuntimeError("stand-in source of src/training/networks_discriminator.py: never executed")

class DiscriminatorBlock:
    pass

class MinibatchStdLayer:
    pass

class DiscriminatorEpilogue:
    pass

class Discriminator:
    pass
'''

NETWORKS_INR_GAN = '''
raise RuntimeError("stand-in source of src/training/networks_inr_gan.py: never executed")

def nerf_renderer(coords, ws, nerf, ray_d_world):
    pass

def fmm_modulate_linear(x, weight, mod_params, noise=None, activation="demod"):
    pass

def style_modulate_linear(x, weight, styles, noise=None, demodulate=True):
    pass

class SynthesisLayer:
    pass

class SynthesisOutputLayer:
    pass

class SynthesisBlock:
    pass

class INR:
    pass

class SynthesisNetwork:
    pass
'''

SOURCES = dict(networks_epigraf=NETWORKS_EPIGRAF, layers=LAYERS, networks_stylegan2=NETWORKS_STYLEGAN2,
               networks_discriminator=NETWORKS_DISCRIMINATOR, networks_inr_gan=NETWORKS_INR_GAN)

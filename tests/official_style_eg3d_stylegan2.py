"""A stand-in for EG3D's own copy of `training/networks_stylegan2.py`, written for the tests.

Part of the official-style EG3D release of tests/official_style_eg3d_triplane.py (which describes the
set). The official module defines, at top level, the functions normalize_2nd_moment and
modulated_conv2d and the persistent classes FullyConnectedLayer, Conv2dLayer, MappingNetwork,
SynthesisLayer, ToRGBLayer, SynthesisBlock, SynthesisNetwork, Generator, DiscriminatorBlock,
MinibatchStdLayer, DiscriminatorEpilogue and Discriminator; so does this file, and nothing else, so
that the no-exec loader can only recognise it by those names (its text is not ours).
Each class is ours (training.networks_stylegan2: the official tensors in the official order) made
persistent again here, so that its objects pickle with this module's source. The composites build
their parts from our module; the tri-plane stand-ins re-class those parts to the classes below
before anything is pickled. Importing this file appends 'g' to $OFFICIAL_STYLE_EG3D_RUNS.
"""

import os

from torch_utils import persistence
from training import networks_stylegan2 as ours

if os.environ.get('OFFICIAL_STYLE_EG3D_RUNS'):
    with open(os.environ['OFFICIAL_STYLE_EG3D_RUNS'], 'a') as _f:
        _f.write('g')


def normalize_2nd_moment(x, dim=1, eps=1e-8):
    return ours.normalize_2nd_moment(x, dim=dim, eps=eps)


def modulated_conv2d(*args, **kwargs):
    return ours.modulated_conv2d(*args, **kwargs)


@persistence.persistent_class
class FullyConnectedLayer(ours.FullyConnectedLayer):
    pass


@persistence.persistent_class
class Conv2dLayer(ours.Conv2dLayer):
    pass


@persistence.persistent_class
class MappingNetwork(ours.MappingNetwork):
    pass


@persistence.persistent_class
class SynthesisLayer(ours.SynthesisLayer):
    pass


@persistence.persistent_class
class ToRGBLayer(ours.ToRGBLayer):
    pass


@persistence.persistent_class
class SynthesisBlock(ours.SynthesisBlock):
    pass


@persistence.persistent_class
class SynthesisNetwork(ours.SynthesisNetwork):
    pass


@persistence.persistent_class
class Generator(ours.Generator):
    pass


@persistence.persistent_class
class DiscriminatorBlock(ours.DiscriminatorBlock):
    pass


@persistence.persistent_class
class MinibatchStdLayer(ours.MinibatchStdLayer):
    pass


@persistence.persistent_class
class DiscriminatorEpilogue(ours.DiscriminatorEpilogue):
    pass


@persistence.persistent_class
class Discriminator(ours.Discriminator):
    pass

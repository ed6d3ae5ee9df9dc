"""A model family is one network module plus one config entry.

The README's steps for adding a family, followed with a toy family: its module declares its
capabilities and registers its classes; its config entry names the module. Nothing else is edited,
yet its pickles load without executing code (the loader imports the modules the registry names),
and the sampling code reads what it returns and accepts from its declarations.
"""

import importlib
import pickle
import sys
import textwrap
import uuid

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import gen_images
from torch_utils import persistence
from training import configs, generation, networks_stylegan2, snapshots

TOY_FAMILY = textwrap.dedent('''
    """A toy family: its generator returns a dict, as EG3D's does."""
    import torch
    from torch_utils import persistence

    @persistence.persistent_class
    class Generator(torch.nn.Module):
        label_kind = 'none'
        synthesis_options = ('noise_mode',)
        output_key = 'image'

        def __init__(self, z_dim, c_dim, w_dim, img_resolution, img_channels, gain=1.0):
            super().__init__()
            self.z_dim, self.c_dim, self.w_dim = z_dim, c_dim, w_dim
            self.img_resolution, self.img_channels, self.num_ws = img_resolution, img_channels, 1
            self.gain = gain
            self.weight = torch.nn.Parameter(torch.randn([w_dim, img_channels, img_resolution, img_resolution]))
            self.register_buffer('w_avg', torch.zeros([w_dim]))

        def mapping(self, z, c, truncation_psi=1, truncation_cutoff=None, update_emas=False):
            return (self.w_avg + (z - self.w_avg) * truncation_psi).unsqueeze(1)

        def synthesis(self, ws, noise_mode='const'):
            image = torch.tanh(self.gain * torch.einsum('nk,kchw->nchw', ws[:, 0], self.weight))
            return dict(image=image, image_depth=image.mean(dim=1, keepdim=True))

        def forward(self, z, c, truncation_psi=1, truncation_cutoff=None, **synthesis_kwargs):
            return self.synthesis(self.mapping(z, c, truncation_psi), **synthesis_kwargs)

    persistence.register_no_exec_module(__name__, [Generator])
''')


@pytest.fixture
def toy_family(tmp_path, monkeypatch):
    """The toy module on sys.path and its config entry in the registry; yields the module's name."""
    name = f'networks_toy_{uuid.uuid4().hex[:8]}'
    (tmp_path / f'{name}.py').write_text(TOY_FAMILY)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setattr(configs, '_registry', dict(configs._registry))
    monkeypatch.setattr(configs, '_modules', dict(configs._modules))

    @configs.register('toy', modules=[name])
    def _toy(c, opts):
        c.G_kwargs.class_name = f'{name}.Generator'
        return dict(map_depth=1, glr=0.001, snap=10)

    monkeypatch.setattr(persistence, '_no_exec_modules', dict(persistence._no_exec_modules))
    yield name
    sys.modules.pop(name, None)


def _toy_snapshot(name, path):
    module = importlib.import_module(name)
    torch.manual_seed(0)
    G = module.Generator(z_dim=3, c_dim=0, w_dim=3, img_resolution=8, img_channels=3, gain=0.7).eval()
    D = networks_stylegan2.Discriminator(c_dim=0, img_resolution=8, img_channels=3, channel_base=32, channel_max=4)
    with open(path, 'wb') as f:
        pickle.dump(dict(G=G, D=D, G_ema=G, augment_pipe=None, training_set_kwargs=None), f)
    # Forget the module, as a new process would: loading must import it because the registry names it.
    del sys.modules[name]
    persistence._no_exec_modules.pop(name)
    return G


def test_registry_names_the_modules_of_every_config():
    modules = configs.network_modules()
    assert len(modules) == len(set(modules))
    for module in ('training.networks_stylegan2', 'training.augment', 'training.networks_stylegan3',
                   'training.networks_raycond2', 'training.networks_raycond3'):
        assert module in modules


def test_a_new_family_loads_without_exec_and_samples_through_its_declarations(toy_family, tmp_path, monkeypatch):
    G = _toy_snapshot(toy_family, tmp_path / 'toy.pkl')
    assert toy_family in configs.network_modules()

    def no_exec(_source):
        raise AssertionError('the no-exec loader executed an embedded source')
    monkeypatch.setattr(persistence, '_src_to_module', no_exec)
    loaded = snapshots.open_network_pkl(str(tmp_path / 'toy.pkl'))['G_ema']
    assert type(loaded).__module__ == toy_family and loaded.gain == 0.7

    z = generation.latents([0, 1], 3)
    expected = G(z, torch.zeros([2, 0]))['image']
    assert torch.equal(generation.generate(loaded, z, torch.zeros([2, 0])), expected)

    result = CliRunner().invoke(gen_images.main, ['--network', str(tmp_path / 'toy.pkl'), '--seeds=1', '--device=cpu',
                                                  '--outdir', str(tmp_path / 'out')])
    assert result.exit_code == 0, result.output
    import PIL.Image
    written = np.array(PIL.Image.open(tmp_path / 'out' / 'seed0001.png'))
    assert np.array_equal(written, generation.to_uint8(expected[1:]).numpy()[0])


def test_a_new_config_builds_its_training_options(toy_family):
    opts = dict(cfg='toy', data='x', cond=False, mirror=False, mirror_cameras=False, aug='noaug', p=0, target=0.6,
                batch=8, gpus=1, batch_gpu=None, gamma=1, cbase=64, cmax=8, glr=None, dlr=0.002, map_depth=None,
                mbstd_group=4, freezed=0, fp32=False, kimg=1, tick=1, snap=None, seed=0, workers=0, nobench=False,
                metrics=[], device='cpu', resolution=8, camera_labels=False, dataset_size=16)
    import dnnlib
    c = configs.build_training_options(dnnlib.EasyDict(opts))
    assert c.G_kwargs.class_name == f'{toy_family}.Generator' and c.G_opt_kwargs.lr == 0.001
    assert c.network_snapshot_ticks == 10

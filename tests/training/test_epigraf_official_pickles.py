"""Official EpiGRAF pickles (universome/epigraf) load without running their code, OmegaConf configs included.

EpiGRAF's networks take `cfg`, an OmegaConf DictConfig (its Hydra config's model.generator subtree), so
the recorded constructor arguments of its pickled G_ema hold one. The fixtures
tests/data/omegaconf_dictconfig_<version>.pkl are such configs pickled by OmegaConf 2.0 (EpiGRAF's
hydra-core 1.0) and 2.4 (written by tests/data/make_omegaconf_fixture.py, with OmegaConf installed; the
suite never imports OmegaConf). The no-exec loader reads them through inert stand-ins into nested
EasyDicts with the interpolations resolved.

The official-format G pickle is written here: a tiny training.networks_epigraf.Generator whose
persistent objects are re-labelled the way the official release writes them (module sources with the
official top-level names, from tests/official_style_epigraf_networks.py; `cfg` the fixture's
DictConfig, re-pickled under OmegaConf's class names; globals under EpiGRAF's `src.` package).
"""

import collections
import copy
import copyreg
import importlib
import io
import json
import os
import pathlib
import pickle
import sys
import types

import pytest
import torch

import dnnlib
from torch_utils import persistence
from training import cameras, snapshots

ne = importlib.import_module('training.networks_epigraf')

REPO = pathlib.Path(__file__).resolve().parents[2]
DATA = REPO / 'tests' / 'data'
FIXTURES = {version: DATA / f'omegaconf_dictconfig_{version}.pkl' for version in ('2.0', '2.4')}

# OmegaConf.to_container(cfg, resolve=True) of the fixtures' config (also in the .json files beside them).
EXPECTED_CFG = {
    'fmaps': 1.0, 'cmax': 512, 'cbase': 32768, 'optim': {'lr': 0.0025, 'betas': [0.0, 0.99]},
    'patch': {'enabled': True, 'patch_params_cond': True, 'resolution': 4, 'mbstd_group_size': 2,
              'distribution': 'beta', 'min_scale_trg': 0.125},
    'dataset': {'name': 'tiny', 'resolution': 8,
                'camera': {'fov': 12.0, 'ray_start': 0.88, 'ray_end': 1.12, 'radius': 1.0, 'dist': 'beta'},
                'cube_scale': 0.2, 'white_back': False, 'last_back': False},
    'w_dim': 8, 'camera_cond': True, 'camera_cond_drop_p': 0.0, 'camera_cond_spoof_p': 0.5, 'map_depth': 2,
    'backbone': 'stylegan2', 'num_ray_steps': 6, 'clamp_mode': 'softplus', 'nerf_noise_std_init': 1.0,
    'nerf_noise_kimg_growth': 5000, 'density_shift': 0.0, 'use_noise': True,
    'tri_plane': {'res': 16, 'feat_dim': 4, 'fp32': True, 'view_hid_dim': 0, 'posenc_period_len': 0,
                  'mlp': {'n_layers': 2, 'hid_dim': 8}},
    'bg_model': {'type': None, 'output_channels': 4, 'fmm': {'enabled': False, 'rank': 3, 'activation': 'demod'},
                 'posenc_period_len': 64.0},
    'run_name': 'epigraf-tiny-8', 'extra_steps': [1, 2.5, 'x', None, True],
    'typed': {'name': 'epigraf', 'steps': 48, 'scale': 0.5, 'flag': False},
}

@pytest.fixture
def official_registry():
    """The no-exec registry, with training/networks_epigraf.py's registrations of the official modules."""
    snapshots._register_no_exec_classes()
    return persistence


def _official_sources():
    spec = importlib.util.spec_from_file_location('official_style_epigraf_networks_text',
                                                  REPO / 'tests' / 'official_style_epigraf_networks.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # strings only; the sources inside are never executed
    return module.SOURCES


def _assert_omegaconf_absent():
    assert not any(name == 'omegaconf' or name.startswith('omegaconf.') for name in sys.modules)
    with pytest.raises(ImportError):
        importlib.import_module('omegaconf')


# ----------------------------------------------------------------------------------------------
# OmegaConf configs.

@pytest.mark.parametrize('version', sorted(FIXTURES))
def test_omegaconf_fixture_loads_as_plain_nested_dicts_without_omegaconf(version):
    _assert_omegaconf_absent()
    cfg = persistence.load(str(FIXTURES[version]))
    assert cfg == EXPECTED_CFG
    assert json.loads(FIXTURES[version].with_suffix('.json').read_text()) == EXPECTED_CFG
    assert type(cfg) is dnnlib.EasyDict and type(cfg.dataset.camera) is dnnlib.EasyDict
    assert type(cfg.optim.betas) is list and cfg.dataset.camera.fov == 12.0 and cfg.patch.resolution == 4
    _assert_omegaconf_absent()
    # Inside a larger structure, as in a snapshot's recorded arguments.
    data = FIXTURES[version].read_bytes()
    assert persistence.load(io.BytesIO(data[:-1] + b'\x85.'))[0] == EXPECTED_CFG  # (cfg,)


class _FakeOmegaConf:
    """A test-side copy of an OmegaConf node: pickles as the OmegaConf class named by `official_name`."""

    official_name = None

    def __setstate__(self, state):
        self.__dict__['_state'] = state

    def __reduce_ex__(self, protocol):
        return copyreg.__newobj__, (type(self),), self.__dict__['_state']


_FAKE_CLASSES = {}


def _fake_class(name):
    if name not in _FAKE_CLASSES:
        _FAKE_CLASSES[name] = type(name.rsplit('.', 1)[1], (_FakeOmegaConf,), dict(official_name=name))
    return _FAKE_CLASSES[name]


class _FixtureReader(pickle.Unpickler):
    """Reads a fixture into fake OmegaConf objects (the same graph, parents included), admitting nothing else."""

    def find_class(self, module, name):
        if module.startswith('omegaconf.'):
            return _fake_class(f'{module}.{name}')
        if (module, name) in {('typing', 'Any'), ('builtins', 'dict'), ('builtins', 'list'), ('builtins', 'int'),
                              ('builtins', 'str'), ('builtins', 'float'), ('builtins', 'bool'),
                              ('collections', 'defaultdict')}:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f'unexpected {module}.{name}')


def _fixture_graph(version='2.0'):
    with open(FIXTURES[version], 'rb') as f:
        return _FixtureReader(f).load()


class _OfficialPickler(pickle._Pickler):  # the Python pickler: its save_global can name classes freely
    """Writes a network pickle the way EpiGRAF's release does (see the module docstring)."""

    dispatch = dict(pickle._Pickler.dispatch)
    dispatch[types.FunctionType] = lambda self, obj: self.save_global(obj)  # the table holds the base method

    def __init__(self, file, module_of, cfg, extra=None):
        super().__init__(file, protocol=4)
        self.module_of, self.cfg, self.extra = module_of, cfg, extra or {}

    def save_global(self, obj, name=None):
        official = getattr(obj, 'official_name', None) if isinstance(obj, type) else None
        if obj is persistence._reconstruct_persistent_obj:
            official = 'src.torch_utils.persistence._reconstruct_persistent_obj'
        elif obj is dnnlib.EasyDict:
            official = 'src.dnnlib.util.EasyDict'
        if official is None:
            return super().save_global(obj, name)
        module, qualname = official.rsplit('.', 1)
        self.save(module)
        self.save(qualname)
        self.write(pickle.STACK_GLOBAL)
        self.memoize(obj)

    def reducer_override(self, obj):
        if not persistence.is_persistent(obj) or isinstance(obj, type):
            return NotImplemented
        func, args = obj.__reduce__()[:2]
        meta = dict(args[0])
        meta['module_src'] = self.module_of(obj)
        state = dict(meta['state'])
        kwargs = dict(state['_init_kwargs'])
        kwargs.pop('legacy_rays', None)  # ours; the official constructors have no such argument
        if type(obj).__module__ == 'training.networks_inr_gan':  # the background INR's cfg is G's bg_model node
            for where in (kwargs, state):
                if 'cfg' in where:
                    where['cfg'] = self.cfg['bg_model']
        elif not isinstance(obj, (ne.Discriminator, ne.DiscriminatorBlock)):  # the fixture is G's config (D: a dict)
            if 'cfg' in kwargs:
                kwargs['cfg'] = self.cfg
            if 'cfg' in state:
                state['cfg'] = self.cfg  # the official modules keep self.cfg, the DictConfig itself
        kwargs.update(self.extra.get(type(obj).__name__, {}))
        state['_init_kwargs'] = kwargs
        meta['state'] = state
        return func, (meta,), None


def _module_of(sources):
    official = {
        'networks_epigraf': {'TriPlaneMLP', 'SynthesisBlocksSequence', 'SynthesisNetwork', 'Generator'},
        'layers': {'FullyConnectedLayer', 'MappingNetwork', 'Conv2dLayer', 'ScalarEncoder1d', 'FourierEncoder1d'},
        'networks_stylegan2': {'SynthesisLayer', 'ToRGBLayer', 'SynthesisBlock'},
        'networks_discriminator': {'DiscriminatorBlock', 'MinibatchStdLayer', 'DiscriminatorEpilogue', 'Discriminator'},
    }

    def module_of(obj):
        name = type(obj).__name__
        if type(obj).__module__ == 'training.networks_inr_gan':
            return sources['networks_inr_gan']
        if isinstance(obj, ne.Discriminator) or isinstance(obj, ne.DiscriminatorBlock):
            return sources['networks_discriminator']
        if type(obj).__module__ == 'training.networks_stylegan2' and name in ('DiscriminatorEpilogue', 'MinibatchStdLayer'):
            return sources['networks_discriminator']
        if name == 'Conv2dLayer':
            return sources['layers']
        for part, names in official.items():
            if name in names:
                return sources[part]
        raise AssertionError(f'no official module for {name}')
    return module_of


def _official_pickle(obj, cfg=None, extra=None):
    buffer = io.BytesIO()
    _OfficialPickler(buffer, _module_of(_official_sources()), cfg if cfg is not None else _fixture_graph(),
                     extra).dump(obj)
    return buffer.getvalue()


def tiny_official_G(seed=0):
    """A tiny EpiGRAF G with the official constructor arguments (EpiGRAF's train.py), camera-conditioned."""
    torch.manual_seed(seed)
    mapping_kwargs = dnnlib.EasyDict(num_layers=2, camera_cond=True, camera_cond_drop_p=0.0, camera_cond_noise_std=0.0,
                                     mean_camera_pose=torch.tensor([0.1, 1.5, 0.0]))
    G = ne.Generator(cfg=copy.deepcopy(EXPECTED_CFG), z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                     mapping_kwargs=mapping_kwargs, channel_base=64, channel_max=16, fused_modconv_default='inference_only')
    with torch.no_grad():
        G.synthesis.tri_plane_mlp.model[1].bias[-1] = 1.0
        for name, tensor in G.named_parameters():
            if 'noise_strength' in name:
                tensor.fill_(0.1)
    return G.eval().requires_grad_(False)


def _render(G):
    torch.manual_seed(1)
    z = torch.randn(2, G.z_dim)
    angles = torch.tensor([[0.2, 1.4, 0.0], [-0.3, 1.7, 0.0]])
    c = cameras.epigraf_angles_to_label(angles, 12.0, radius=1.0)
    return G(z, c, jitter=False, det=True, noise_mode='const')


def test_official_epigraf_G_rebuilds_from_our_classes_without_running_code(official_registry):
    G = tiny_official_G()
    data = _official_pickle({'G_ema': G, 'training_set_kwargs': {'resolution': 8}})
    assert b'omegaconf.dictconfig' in data and b'src.torch_utils.persistence' in data and b'tri_plane_renderer' in data
    assert ne.Generator._orig_module_src.encode() not in data
    _assert_omegaconf_absent()
    loaded = persistence.load(io.BytesIO(data))['G_ema']
    _assert_omegaconf_absent()
    assert type(loaded) is ne.Generator and loaded.cfg == EXPECTED_CFG and type(loaded.cfg) is dnnlib.EasyDict
    # Official pickles record no legacy_rays: the import hook gives them EpiGRAF's own ray grid.
    assert loaded.init_kwargs.cfg == EXPECTED_CFG and loaded.init_kwargs.legacy_rays is True
    assert loaded.synthesis.legacy_rays is True and G.synthesis.legacy_rays is False
    assert torch.equal(loaded.init_kwargs.mapping_kwargs.mean_camera_pose, torch.tensor([0.1, 1.5, 0.0]))
    ours, theirs = dict(G.named_parameters()) | dict(G.named_buffers()), \
        dict(loaded.named_parameters()) | dict(loaded.named_buffers())
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    G.synthesis.legacy_rays = True  # the official function, as the original renders it
    assert torch.equal(_render(loaded), _render(G))
    # Our pickle of the rebuilt G holds the config as plain dicts.
    again = pickle.dumps(loaded)
    assert b'omegaconf' not in again
    assert persistence.load(io.BytesIO(again)).cfg == EXPECTED_CFG


def test_official_epigraf_G_with_the_sphere_background_rebuilds_without_running_code(official_registry):
    # Its networks_inr_gan.py source is recognised too. The config here is plain dicts (the OmegaConf reading is
    # the test above's): the release's INR (bg_model of configs/model/epigraf.yaml), 128 wide, on 8-dim ws.
    cfg = copy.deepcopy(EXPECTED_CFG)
    cfg['bg_model'] = dict(type='sphere', output_channels=4, coord_dim=4, num_blocks=2, cbase=32768, cmax=128,
                           num_fp16_blocks=0, fmm={'enabled': False, 'rank': 3, 'activation': 'demod'},
                           posenc_period_len=64.0, num_steps=8, start=1.0)
    torch.manual_seed(0)
    G = ne.Generator(cfg=copy.deepcopy(cfg), z_dim=8, c_dim=0, w_dim=8, img_resolution=8, img_channels=3,
                     mapping_kwargs=dict(num_layers=2, camera_cond=False), channel_base=64, channel_max=16).eval()
    data = _official_pickle({'G_ema': G}, cfg=cfg)
    assert b'INR' in data and b'fmm_modulate_linear' in data
    loaded = persistence.load(io.BytesIO(data))['G_ema']
    assert type(loaded.synthesis.bg_model).__module__ == 'training.networks_inr_gan' and loaded.num_ws == G.num_ws
    assert list(loaded.state_dict()) == list(G.state_dict())
    assert all(torch.equal(a, b) for a, b in zip(loaded.state_dict().values(), G.state_dict().values()))
    G.synthesis.legacy_rays = True
    assert torch.equal(_render(loaded), _render(G))


def test_official_epigraf_snapshot_loads_through_open_network_pkl(official_registry, tmp_path):
    G = tiny_official_G()
    torch.manual_seed(2)
    D = ne.Discriminator(cfg=copy.deepcopy(EXPECTED_CFG) | {'hyper_mod': True, 'num_additional_start_blocks': 1},
                         c_dim=0, img_resolution=4, img_channels=3, channel_base=64, channel_max=16,
                         epilogue_kwargs=dict(mbstd_group_size=2)).eval().requires_grad_(False)
    path = tmp_path / 'network-snapshot-000000.pkl'
    path.write_bytes(_official_pickle({'G': G, 'D': D, 'G_ema': G, 'augment_pipe': None,
                                       'training_set_kwargs': {'resolution': 8}}))
    data = snapshots.open_network_pkl(str(path))  # what gen_images.py and --resume call
    _assert_omegaconf_absent()
    assert type(data['G_ema']) is ne.Generator and type(data['D']) is ne.Discriminator
    assert data['D'].cfg.hyper_mod is True and data['D'].cfg.patch.resolution == 4
    for ours, theirs in ((G, data['G_ema']), (D, data['D'])):
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
        assert list(ours.state_dict()) == list(theirs.state_dict())


def test_official_epigraf_sources_are_identified_without_changing_other_modules(official_registry):
    sources = _official_sources()
    expected = dict(networks_epigraf='epigraf.networks_epigraf', layers='epigraf.layers',
                    networks_stylegan2='epigraf.networks_stylegan2',
                    networks_discriminator='epigraf.networks_discriminator',
                    networks_inr_gan='epigraf.networks_inr_gan')
    for part, key in expected.items():
        assert persistence._identify_module(sources[part]).key == key
    # Every other official-style source of the tests, and our own sources, are identified as before.
    official_style = [p for p in (REPO / 'tests').glob('official_style_*.py') if 'epigraf' not in p.name]
    before = {}
    for key, entry in list(persistence._no_exec_modules.items()):
        if key.startswith('epigraf.'):
            continue
        for cls in entry.classes.values():
            before[cls._orig_module_src] = persistence._identify_module(cls._orig_module_src, cls.__name__)
            assert before[cls._orig_module_src].classes[cls.__name__] is cls
    for path in official_style:
        text = path.read_text()
        found = persistence._identify_module(text)
        assert found is None or not found.key.startswith('epigraf.'), path.name


# ----------------------------------------------------------------------------------------------
# What stays refused.

def _crafted(obj, recipes=None):
    """An official-style pickle of `obj`; recipes maps an object's id to the reduce tuple to write for it."""
    recipes = recipes or {}

    class Pickler(_OfficialPickler):
        def reducer_override(self, o):
            return recipes[id(o)] if id(o) in recipes else super().reducer_override(o)
    buffer = io.BytesIO()
    Pickler(buffer, lambda o: '', cfg=None).dump(obj)
    return buffer.getvalue()


def test_other_omegaconf_globals_and_callables_are_refused_without_running(tmp_path):
    marker = tmp_path / 'pwned.txt'
    graph = _fixture_graph()

    class Evil:
        def __reduce__(self):
            return os.system, (f'echo pwned > {marker}',)
    # A config value that is a callable's result.
    graph._state['_content']['backbone']._state['_val'] = Evil()
    with pytest.raises(persistence.UnsafePickleError, match=r"'posix\.system'.*trust_code=True"):
        persistence.load(io.BytesIO(_crafted(graph)))
    assert not marker.exists()
    pickle.loads(pickle.dumps(Evil()))  # the same reduce does run under plain pickle
    assert marker.exists()
    # Other OmegaConf names (OmegaConf itself, enum nodes, helpers) are refused.
    for name in ('omegaconf.omegaconf.OmegaConf', 'omegaconf.nodes.EnumNode', 'omegaconf.base.Container',
                 'omegaconf._utils.get_ref_type'):
        with pytest.raises(persistence.UnsafePickleError, match=rf"'{name}'.*does not admit"):
            persistence.load(io.BytesIO(_crafted([_fake_class(name)])))
    # The types OmegaConf metadata names are inert names, and only after an OmegaConf class.
    with pytest.raises(persistence.UnsafePickleError, match=r"'builtins\.dict'.*does not admit"):
        persistence.load(io.BytesIO(pickle.dumps([dict])))
    good = _fixture_graph()
    with pytest.raises(persistence.UnsafePickleError, match=r"'builtins\.dict' outside an OmegaConf config"):
        persistence.load(io.BytesIO(_crafted([good, dict])))
    call = object()
    with pytest.raises(persistence.UnsafePickleError, match=r"calls 'builtins\.dict'"):
        persistence.load(io.BytesIO(_crafted([good, call], {id(call): (dict, ())})))
    with pytest.raises(persistence.UnsafePickleError, match=r"'collections\.defaultdict' with arguments"):
        persistence.load(io.BytesIO(_crafted([good, call], {id(call): (collections.defaultdict, (1,))})))
    # OmegaConf classes are admitted as state holders only: no constructor arguments, one dict state.
    node = _fixture_graph()
    cls = type(node)
    with pytest.raises(persistence.UnsafePickleError, match='creates the OmegaConf object .*DictConfig.* with arguments'):
        persistence.load(io.BytesIO(_crafted(node, {id(node): (copyreg.__newobj__, (cls, 1), node._state)})))
    with pytest.raises(persistence.UnsafePickleError, match='DictConfig.* malformed state'):
        persistence.load(io.BytesIO(_crafted(node, {id(node): (copyreg.__newobj__, (cls,), [1])})))
    with pytest.raises(persistence.UnsafePickleError, match='metadata where a config belongs'):
        persistence.load(io.BytesIO(_crafted(node._state['_metadata'])))
    with pytest.raises(persistence.UnsafePickleError, match='holds a value of type Tensor'):
        node._state['_content']['backbone']._state['_val'] = torch.zeros(1)
        persistence.load(io.BytesIO(_crafted(node)))
    _assert_omegaconf_absent()


def test_self_referencing_and_unresolvable_configs(tmp_path):
    graph = _fixture_graph()
    content = graph._state['_content']
    # An interpolation cycle, and one into a missing key or a custom resolver (left as it is, as OmegaConf's
    # to_container(resolve=False) would).
    content['backbone']._state['_val'] = '${model.generator.backbone}'
    content['clamp_mode']._state['_val'] = '${nowhere.at_all}'
    content['run_name']._state['_val'] = 'x-${oc.env:HOME}-${dataset.name}'
    with pytest.raises(persistence.UnsafePickleError, match='nested more than 64 levels deep or refers to itself'):
        persistence.load(io.BytesIO(_crafted(graph)))
    content['backbone']._state['_val'] = 'stylegan2'
    cfg = persistence.load(io.BytesIO(_crafted(graph)))
    assert cfg.clamp_mode == '${nowhere.at_all}' and cfg.run_name == 'x-${oc.env:HOME}-${dataset.name}'
    # A relative interpolation (OmegaConf 2.1+) and a key through an interpolated container.
    content['clamp_mode']._state['_val'] = '${.backbone}'
    content['run_name']._state['_val'] = '${..generator.patch.resolution}-${model.generator.dataset.camera.fov}'
    cfg = persistence.load(io.BytesIO(_crafted(graph)))
    assert cfg.clamp_mode == 'stylegan2' and cfg.run_name == '4-12.0'
    # A container that holds itself.
    content['loop'] = graph
    with pytest.raises(persistence.UnsafePickleError, match='refers to itself'):
        persistence.load(io.BytesIO(_crafted(graph)))

"""Official CREPS pickles (VinAIResearch/CREPS, e.g. creps-ffhq-512x512.pkl) load without running their code.

The files are written the way the official release writes them, by tests/official_style_creps.py:
persistent classes embedding that source, a plain (not persistent) SynthesisInput referenced as the
global training.networks_creps.SynthesisInput, and torch.nn.Sequential decoders. The no-exec loader
must rebuild them as our training.networks_creps.Generator with every tensor of the file, and
`--resume` must start a CREPS run from them.
"""

import contextlib
import copy
import importlib
import io
import json
import os
import pathlib
import pickle
import sys
import types
import uuid

import pytest
import torch

import dnnlib
from torch_utils import misc, persistence
from training import networks_creps, networks_stylegan2, snapshots

REPO = pathlib.Path(__file__).resolve().parents[2]
SPEC = REPO / 'tests' / 'data' / 'spec' / 'creps_official_tensors.json'
sys.path.insert(0, str(REPO))
import train  # noqa: E402

# What the official train.py records for G, at a tiny size (the official: z_dim=w_dim=512, 8 mapping
# layers, channel_base=65536, channel_max=1024 at 512x512).
KWARGS = dict(z_dim=16, w_dim=16, mapping_kwargs=dict(num_layers=2), channel_base=256, channel_max=32,
              c_dim=0, img_resolution=16, img_channels=3)
TRAINING_SET_KWARGS = dict(class_name='training.dataset.ImageFolderDataset', path='ffhq16.zip', use_labels=False,
                           max_size=70000, xflip=True, resolution=16, random_seed=0)


@pytest.fixture
def official(tmp_path, monkeypatch):
    """The stand-in imported from a temporary copy under a name of its own; `runs` counts its executions."""
    runs = tmp_path / 'runs.txt'
    monkeypatch.setenv('OFFICIAL_STYLE_CREPS_RUNS', str(runs))
    name = f'networks_creps_release_{uuid.uuid4().hex[:8]}'
    folder = tmp_path / 'release'
    folder.mkdir()
    (folder / f'{name}.py').write_text((REPO / 'tests' / 'official_style_creps.py').read_text())
    monkeypatch.syspath_prepend(str(folder))
    module = importlib.import_module(name)
    # The official class is defined in training/networks_creps.py: its pickles name it so.
    module.SynthesisInput.__module__ = 'training.networks_creps'
    assert runs.read_text() == 'x'
    yield types.SimpleNamespace(module=module, runs=runs)
    sys.modules.pop(name, None)


@contextlib.contextmanager
def official_global_names(module):
    """training.networks_creps.SynthesisInput as the official-style class, as in the official code base.

    Needed while pickling (pickle checks that the name resolves to the class) and while constructing
    (persistent classes trial-pickle their state). Never while our own networks are built.
    """
    ours = networks_creps.SynthesisInput
    networks_creps.SynthesisInput = module.SynthesisInput
    try:
        yield
    finally:
        networks_creps.SynthesisInput = ours


def official_bytes(module, obj, protocol=4):
    """Pickled as the official training loop does (pickle.dump, protocol 4 on Python >= 3.8)."""
    with official_global_names(module):
        return pickle.dumps(obj, protocol=protocol)


def official_generator(module, seed):
    torch.manual_seed(seed)
    with official_global_names(module):
        G = module.Generator(**KWARGS)
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn(G.mapping.w_avg.shape))  # A trained one is not zero.
    return G.eval().requires_grad_(False)  # Snapshots hold eval-mode copies without gradients.


def official_snapshot(module):
    D = networks_stylegan2.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=8)
    return dict(G=official_generator(module, 0), D=D.eval().requires_grad_(False),
                G_ema=official_generator(module, 1), augment_pipe=None, training_set_kwargs=dict(TRAINING_SET_KWARGS))


def named_tensors(module):
    return misc.named_params_and_buffers(module)


def assert_same_tensors(ours, theirs):
    assert [(name, tuple(t.shape)) for name, t in named_tensors(ours)] == \
        [(name, tuple(t.shape)) for name, t in named_tensors(theirs)]
    for (name, a), (_, b) in zip(named_tensors(ours), named_tensors(theirs)):
        assert a.dtype == b.dtype and torch.equal(a, b), name


class _RecordingUnpickler(persistence._NoExecUnpickler):
    """The no-exec unpickler, noting every global the file refers to."""

    def __init__(self, file):
        super().__init__(file, {})
        self.seen = set()

    def find_class(self, module, name):
        self.seen.add(f'{module}.{name}')
        return super().find_class(module, name)


def render(G, seed=2, **kwargs):
    z = torch.randn([2, G.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G(z, None, **kwargs)

# ----------------------------------------------------------------------------------------------


def test_the_stand_in_has_the_official_structure(official):
    """Names, shapes, order and classes (persistent or not) of the official 512x512 G, per the spec."""
    entry = next(e for e in json.loads(SPEC.read_text()) if e['name'] == 'creps creps-ffhq-512x512.pkl G')
    with torch.device('meta'), official_global_names(official.module):
        G = official.module.Generator(**entry['kwargs'])
    assert [[name, list(t.shape)] for name, t in G.named_parameters()] == entry['parameters']
    assert [[name, list(t.shape), str(t.dtype).replace('torch.', '')] for name, t in G.named_buffers()] == entry['buffers']
    modules = [[name, type(m).__module__.replace(official.module.__name__, 'training.networks_creps'),
                type(m).__name__, persistence.is_persistent(m)] for name, m in G.named_modules()]
    assert modules == entry['modules']
    assert G.synthesis.num_ws == entry['num_ws'] and G.init_kwargs == entry['kwargs']


def test_the_stand_in_pickles_as_the_official_release(official):
    raw = official_bytes(official.module, official_snapshot(official.module))
    assert persistence._module_to_src(official.module).encode() in raw
    unpickler = _RecordingUnpickler(io.BytesIO(raw))
    unpickler.load()
    assert {'training.networks_creps.SynthesisInput', 'torch.nn.modules.container.Sequential'} <= unpickler.seen
    assert not any(official.module.__name__ in name for name in unpickler.seen)


@pytest.mark.parametrize('protocol', [2, 4])
def test_official_pickle_loads_without_exec_into_our_generator(official, monkeypatch, protocol):
    data = official_snapshot(official.module)
    raw = official_bytes(official.module, data, protocol=protocol)

    def no_exec(_source):
        raise AssertionError('the no-exec loader executed an embedded source')
    monkeypatch.setattr(persistence, '_src_to_module', no_exec)
    loaded = persistence.load(io.BytesIO(raw))
    assert official.runs.read_text() == 'x'  # The stand-in's source ran once: when the test imported it.

    for key in ('G', 'G_ema'):
        G = loaded[key]
        assert type(G) is networks_creps.Generator and G.init_kwargs == KWARGS
        assert type(G.synthesis.b4.input) is networks_creps.SynthesisInput
        assert type(G.synthesis.decoder_8) is networks_creps.PixelDecoder
        assert_same_tensors(G, data[key])
        assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert not torch.equal(loaded['G'].synthesis.b4.input.freqs, loaded['G_ema'].synthesis.b4.input.freqs)
    assert type(loaded['D']) is networks_stylegan2.Discriminator
    assert_same_tensors(loaded['D'], data['D'])
    assert loaded['augment_pipe'] is None and loaded['training_set_kwargs'] == TRAINING_SET_KWARGS

    # The image of our Generator built with the same constructor arguments and given the same tensors.
    torch.manual_seed(7)
    ours = networks_creps.Generator(**KWARGS).eval()
    misc.copy_params_and_buffers(data['G_ema'], ours, require_all=True)
    for kwargs in ({}, dict(scale=1.5)):
        assert torch.equal(render(loaded['G_ema'], **kwargs), render(ours, **kwargs))

    # The scripts' loader gives the same.
    monkeypatch.undo()
    via_scripts = snapshots.load_network_pkl(io.BytesIO(raw))
    assert type(via_scripts['G_ema']) is networks_creps.Generator
    assert torch.equal(render(via_scripts['G_ema']), render(ours))


def test_a_trusted_load_would_run_the_stand_in(official):
    """The guard above can fail: a trusted load of the same bytes executes the embedded source."""
    raw = official_bytes(official.module, dict(G=official_generator(official.module, 0)))
    source = persistence._module_to_src(official.module)
    persistence._src_to_module_dict.pop(source)  # As in a fresh process that never imported it.
    try:
        persistence.load(io.BytesIO(raw))
        assert official.runs.read_text() == 'x'
        trusted = persistence.load(io.BytesIO(raw), trust_code=True)
        assert official.runs.read_text() == 'xx'
        assert type(trusted['G']).__module__.startswith('_imported_module_')
    finally:
        persistence._src_to_module_dict[source] = official.module

# ----------------------------------------------------------------------------------------------
# Files the no-exec loader refuses.


def test_a_sequential_holding_a_class_the_loader_does_not_admit_is_refused(official):
    G = official_generator(official.module, 0)
    G.synthesis.decoder_8[1] = torch.nn.Tanh()  # a torch class no registered network builds (Linear is admitted: GRAM)
    with pytest.raises(persistence.UnsafePickleError, match=r"'torch\.nn\.modules\.activation\.Tanh'.*trust_code=True"):
        persistence.load(io.BytesIO(official_bytes(official.module, dict(G=G))))
    with pytest.raises(snapshots.NetworkPickleError, match=r'without executing code.*torch\.nn\.modules\.activation\.Tanh'):
        snapshots.load_network_pkl(io.BytesIO(official_bytes(official.module, dict(G=G, D=G, G_ema=G))))
    assert official.runs.read_text() == 'x'


def test_a_sequential_with_other_tensors_is_refused(official):
    G = official_generator(official.module, 0)
    del G.synthesis.decoder_16[3]
    with pytest.raises(persistence.UnsafePickleError, match=r"tensors of 'Generator'.*missing \['synthesis\.decoder_16\.3"):
        persistence.load(io.BytesIO(official_bytes(official.module, G)))


def test_a_plain_module_outside_a_rebuilt_network_is_refused(official):
    G = official_generator(official.module, 0)
    for obj in (G.synthesis.b4.input, G.synthesis.decoder_8, dict(G=G, extra=[G.synthesis.decoder_last])):
        with pytest.raises(persistence.UnsafePickleError, match=r"plain module '[\w.]+' outside the submodules"):
            persistence.load(io.BytesIO(official_bytes(official.module, obj)))


def test_without_its_registration_the_official_synthesis_input_is_refused(official, monkeypatch):
    raw = official_bytes(official.module, official_generator(official.module, 0))
    monkeypatch.setattr(persistence, '_no_exec_plain_modules', persistence._no_exec_plain_modules - {
        'training.networks_creps.SynthesisInput'})
    with pytest.raises(persistence.UnsafePickleError, match=r"'training\.networks_creps\.SynthesisInput'.*does not admit"):
        persistence.load(io.BytesIO(raw))

# ----------------------------------------------------------------------------------------------
# --resume from an official pickle, through the functions train.py and training_loop use.


def test_an_official_pickle_resumes_a_creps_run(official, tmp_path):
    data = official_snapshot(official.module)
    path = tmp_path / 'creps-ffhq-16x16.pkl'
    path.write_bytes(official_bytes(official.module, data))

    resume_pkl, resume_state = snapshots.resolve_resume(str(path))
    assert resume_pkl == str(path) and resume_state is None  # Weights only: an official pickle has no state.
    # train.py: load and check it fits the dataset before a run directory exists.
    resume_data = snapshots.load_network_snapshot(resume_pkl, trust_option='--trust-code')
    opts = dnnlib.EasyDict(resolution=16, data='ffhq16.zip', cond=False)
    train._check_resume_fits(resume_data, resume_pkl, opts, 3, 0, 'training.networks_creps.Generator')

    # training_loop: networks built from the run's options, then every tensor copied by name.
    torch.manual_seed(123)
    G = dnnlib.util.construct_class_by_name(class_name='training.networks_creps.Generator', **KWARGS)
    G = G.train().requires_grad_(False)
    D = networks_stylegan2.Discriminator(c_dim=0, img_resolution=16, img_channels=3, channel_base=64, channel_max=8)
    G_ema = copy.deepcopy(G).eval()
    resume_data = snapshots.load_network_snapshot(resume_pkl)
    report = snapshots.copy_weights_by_name(resume_data, dict(G=G, D=D, G_ema=G_ema), resume_pkl)
    assert report == dict(widened=[], kept=[])
    for name, module in (('G', G), ('D', D), ('G_ema', G_ema)):
        assert_same_tensors(module, data[name])
    assert torch.equal(render(G_ema), render(resume_data['G_ema']))

    # A run configured with other channels cannot take the file, and says which tensors differ.
    other = networks_creps.Generator(**dict(KWARGS, channel_max=16))
    with pytest.raises(snapshots.ResumeError, match=r'G\.synthesis\.b4\.input\.weight \[1, 32, 1, 16\] vs \[1, 16, 1, 16\]'):
        snapshots.copy_weights_by_name(resume_data, dict(G=other), resume_pkl)
    assert os.path.isfile(path)

"""Official EG3D pickles (NVlabs/eg3d, e.g. ffhq512-128.pkl) load without running their code.

The files are written the way the official training loop writes them, by the official-style release
of tests/official_style_eg3d_*.py (see official_style_eg3d_triplane.py): persistent classes that embed
the sources of training.triplane, training.superresolution, training.dual_discriminator and EG3D's
training.networks_stylegan2, and plain modules referred to as globals (training.triplane.OSGDecoder,
training.volumetric_rendering.renderer.ImportanceRenderer, ...ray_marcher.MipRayMarcher2,
...ray_sampler.RaySampler, torch.nn Sequential and Softplus). The no-exec loader must rebuild them as
our training.networks_triplane.TriPlaneGenerator and DualDiscriminator with every tensor of the file
and the plain state the official training leaves (neural_rendering_resolution=128, rendering_kwargs),
gen_images.py must render them, and `train.py --resume` must accept them.

A tiny configuration of the official one (z_dim = w_dim = 512, 2 mapping layers, the 256x256 backbone
of 96 channels, SuperresolutionHybrid2X at 128x128, whose official class requires that resolution),
with channel_base=1024, channel_max=16 and 6 + 6 samples per ray so that it runs in seconds on a CPU.
"""

import contextlib
import copy
import importlib
import io
import json
import os
import pathlib
import pickle
import subprocess
import sys
import types
import uuid

import pytest
import torch

import dnnlib
from torch_utils import misc, persistence
from training import cameras, networks_stylegan2, networks_triplane, snapshots

REPO = pathlib.Path(__file__).resolve().parents[2]
SPEC = REPO / 'tests' / 'data' / 'spec' / 'eg3d_official_tensors.json'
PARTS = ('stylegan2', 'rendering', 'superresolution', 'dual_discriminator', 'triplane')  # import order
OFFICIAL_MODULES = dict(stylegan2='training.networks_stylegan2', superresolution='training.superresolution',
                        dual_discriminator='training.dual_discriminator', triplane='training.triplane')
PLAIN_GLOBALS = {  # official global name -> (stand-in file, class)
    'training.triplane.OSGDecoder': ('triplane', 'OSGDecoder'),
    'training.volumetric_rendering.renderer.ImportanceRenderer': ('rendering', 'ImportanceRenderer'),
    'training.volumetric_rendering.ray_marcher.MipRayMarcher2': ('rendering', 'MipRayMarcher2'),
    'training.volumetric_rendering.ray_sampler.RaySampler': ('rendering', 'RaySampler'),
}

# What the official train.py records (cf. the spec's ffhq512-128.pkl kwargs), at a tiny size.
RENDERING_KWARGS = dict(
    image_resolution=128, disparity_space_sampling=False, clamp_mode='softplus',
    superresolution_module='training.superresolution.SuperresolutionHybrid2X', c_gen_conditioning_zero=False,
    gpc_reg_prob=0.5, c_scale=1.0, superresolution_noise_mode='none', density_reg=0.25, density_reg_p_dist=0.004,
    reg_type='l1', decoder_lr_mul=1.0, sr_antialias=True, depth_resolution=6, depth_resolution_importance=6,
    ray_start=2.25, ray_end=3.3, box_warp=1, avg_camera_radius=2.7, avg_camera_pivot=[0, 0, 0.2])
CBASE, CMAX = 1024, 16
G_KWARGS = dict(z_dim=512, w_dim=512, mapping_kwargs=dict(num_layers=2), channel_base=CBASE, channel_max=CMAX,
                fused_modconv_default='inference_only', rendering_kwargs=RENDERING_KWARGS, num_fp16_res=0,
                sr_num_fp16_res=4, sr_kwargs=dict(channel_base=CBASE, channel_max=CMAX,
                                                  fused_modconv_default='inference_only'),
                conv_clamp=None, c_dim=25, img_resolution=128, img_channels=3)
D_KWARGS = dict(block_kwargs=dict(freeze_layers=0), mapping_kwargs={}, epilogue_kwargs=dict(mbstd_group_size=4),
                channel_base=CBASE, channel_max=CMAX, disc_c_noise=0.0, num_fp16_res=4, conv_clamp=256, c_dim=25,
                img_resolution=128, img_channels=3)
TRAINING_SET_KWARGS = dict(class_name='training.dataset.ImageFolderDataset', path='ffhq128.zip', use_labels=True,
                           max_size=70000, xflip=True, resolution=128, random_seed=0)


@pytest.fixture
def official(tmp_path, monkeypatch):
    """The stand-in release imported from temporary copies under names of their own; `runs` counts executions."""
    runs = tmp_path / 'runs.txt'
    monkeypatch.setenv('OFFICIAL_STYLE_EG3D_RUNS', str(runs))
    prefix = f'eg3d_release_{uuid.uuid4().hex[:8]}_'
    folder = tmp_path / 'release'
    folder.mkdir()
    for part in PARTS:
        text = (REPO / 'tests' / f'official_style_eg3d_{part}.py').read_text()
        (folder / f'{prefix}{part}.py').write_text(text.replace('official_style_eg3d_', prefix))
    monkeypatch.syspath_prepend(str(folder))
    ns = types.SimpleNamespace(**{part: importlib.import_module(prefix + part) for part in PARTS})
    # The official plain classes are defined in these modules: their pickles name them so.
    for global_name, (part, name) in PLAIN_GLOBALS.items():
        getattr(ns, part).__dict__[name].__module__ = global_name.rpartition('.')[0]
    ns.prefix, ns.runs = prefix, runs
    ns.sources = {part: persistence._module_to_src(getattr(ns, part)) for part in OFFICIAL_MODULES}
    assert runs.read_text() == 'gsdt'  # Each embedded module's source ran once: when the test imported it.
    yield ns
    for part in PARTS:
        sys.modules.pop(prefix + part, None)


@contextlib.contextmanager
def official_global_names(ns):
    """The official plain classes' global names resolve to the stand-ins, as in the official code base.

    Needed while pickling (pickle checks that the name resolves to the class) and while constructing
    (persistent classes trial-pickle their state). Our repository has no such modules.
    """
    rendering = 'training.volumetric_rendering'
    modules = {name: {} for name in ('training.triplane', rendering, f'{rendering}.renderer', f'{rendering}.ray_marcher',
                                     f'{rendering}.ray_sampler')}
    for global_name, (part, name) in PLAIN_GLOBALS.items():
        modules[global_name.rpartition('.')[0]][name] = getattr(getattr(ns, part), name)
    assert not any(name in sys.modules for name in modules)
    for name, attrs in modules.items():
        module = types.ModuleType(name)
        module.__dict__.update(attrs)
        sys.modules[name] = module
    try:
        yield
    finally:
        for name in modules:
            sys.modules.pop(name, None)


def official_bytes(ns, obj, protocol=4):
    """Pickled as the official training loop does (pickle.dump, protocol 4 on Python >= 3.8)."""
    with official_global_names(ns):
        return pickle.dumps(obj, protocol=protocol)


def official_generator(ns, seed):
    torch.manual_seed(seed)
    with official_global_names(ns):
        G = ns.triplane.TriPlaneGenerator(**copy.deepcopy(G_KWARGS))
    with torch.no_grad():
        G.backbone.mapping.w_avg.copy_(torch.randn(G.backbone.mapping.w_avg.shape))  # A trained one is not zero.
    G.neural_rendering_resolution = 128  # What EG3D's loss leaves in ffhq512-128.pkl.
    return G.eval().requires_grad_(False)  # Snapshots hold eval-mode copies without gradients.


def official_discriminator(ns, seed=2):
    torch.manual_seed(seed)
    return ns.dual_discriminator.DualDiscriminator(**copy.deepcopy(D_KWARGS)).eval().requires_grad_(False)


def official_snapshot(ns):
    """The official loop's snapshot_data: training_set_kwargs first, then G, D, G_ema, augment_pipe."""
    return dict(training_set_kwargs=dict(TRAINING_SET_KWARGS), G=official_generator(ns, 0),
                D=official_discriminator(ns), G_ema=official_generator(ns, 1), augment_pipe=None)


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


def render(G, **kwargs):
    """G's images for one latent and one camera, with deterministic ray samples (jitter off)."""
    G.rendering_kwargs['jitter'] = False
    z = torch.randn([1, G.z_dim], generator=torch.Generator().manual_seed(5))
    c = cameras.lookat_labels([0.3], [-0.1])
    torch.manual_seed(11)
    with torch.no_grad():
        return G(z, c, noise_mode='const', **kwargs)


def reference_generator(data):
    """Our TriPlaneGenerator built with the official constructor arguments, given the file's tensors by name."""
    torch.manual_seed(7)
    G = networks_triplane.TriPlaneGenerator(**copy.deepcopy(G_KWARGS)).eval()
    misc.copy_params_and_buffers(data['G_ema'], G, require_all=True)
    G.neural_rendering_resolution = 128
    return G


def load_without_exec(monkeypatch, raw):
    def no_exec(_source):
        raise AssertionError('the no-exec loader executed an embedded source')
    with monkeypatch.context() as patch:
        patch.setattr(persistence, '_src_to_module', no_exec)
        return persistence.load(io.BytesIO(raw))

# ----------------------------------------------------------------------------------------------


def test_the_stand_in_has_the_official_structure(official):
    """Names, shapes, order and classes (persistent or not) of the official ffhq512-128 G and D, per the spec."""
    entries = {e['name']: e for e in json.loads(SPEC.read_text())}
    home = {getattr(official, part).__name__: name for part, name in OFFICIAL_MODULES.items()}
    for key, make in (('G', official.triplane.TriPlaneGenerator), ('D', official.dual_discriminator.DualDiscriminator)):
        entry = entries[f'eg3d ffhq512-128.pkl {key}']
        with official_global_names(official):
            net = make(**entry['kwargs'])  # Full size, on the CPU: about a second each.
        assert [[name, list(t.shape)] for name, t in net.named_parameters()] == entry['parameters']
        assert [[name, list(t.shape), str(t.dtype).replace('torch.', '')] for name, t in net.named_buffers()] == \
            entry['buffers']
        modules = [[name, home.get(type(m).__module__, type(m).__module__), type(m).__name__,
                    persistence.is_persistent(m)] for name, m in net.named_modules()]
        assert modules == entry['modules']
        assert net.init_kwargs == entry['kwargs']
    assert net.block_resolutions == entry['attrs']['block_resolutions']


def test_the_stand_in_pickles_as_the_official_release(official):
    raw = official_bytes(official, official_snapshot(official))
    for source in official.sources.values():
        assert source.encode() in raw
    for ours in (networks_triplane, networks_stylegan2):
        assert persistence._module_to_src(ours).encode() not in raw
    unpickler = _RecordingUnpickler(io.BytesIO(raw))
    unpickler.load()
    assert set(PLAIN_GLOBALS) | {'torch.nn.modules.container.Sequential', 'torch.nn.modules.activation.Softplus'} \
        <= unpickler.seen
    assert not any(official.prefix in name for name in unpickler.seen)
    # Each embedded source is recognised by its top-level names only: none is a source of ours.
    for part, key in OFFICIAL_MODULES.items():
        assert persistence._identify_module(official.sources[part]).key == key
        assert not persistence._identify_module(official.sources[part]).sources & set(official.sources.values())


@pytest.mark.parametrize('protocol', [2, 4])
def test_official_pickle_loads_without_exec_into_our_networks(official, monkeypatch, protocol):
    data = official_snapshot(official)
    raw = official_bytes(official, data, protocol=protocol)
    loaded = load_without_exec(monkeypatch, raw)
    assert official.runs.read_text() == 'gsdt'  # Nothing of the file ran.

    assert list(loaded) == ['training_set_kwargs', 'G', 'D', 'G_ema', 'augment_pipe']
    for key in ('G', 'G_ema'):
        G = loaded[key]
        assert type(G) is networks_triplane.TriPlaneGenerator and G.init_kwargs == G_KWARGS
        assert type(G.renderer) is networks_triplane.ImportanceRenderer
        assert type(G.renderer.ray_marcher) is networks_triplane.MipRayMarcher2
        assert type(G.ray_sampler) is networks_triplane.RaySampler
        assert type(G.backbone) is networks_stylegan2.Generator
        assert type(G.superresolution) is networks_triplane.SuperresolutionHybrid2X
        assert type(G.superresolution.block0) is networks_triplane.SynthesisBlockNoUp
        assert type(G.decoder) is networks_triplane.OSGDecoder
        assert_same_tensors(G, data[key])
        assert G.neural_rendering_resolution == 128 and G.rendering_kwargs == RENDERING_KWARGS
        assert G.rendering_kwargs is not data[key].rendering_kwargs
        assert not G.training and not any(p.requires_grad for p in G.parameters())
    assert not torch.equal(loaded['G'].decoder.net[0].weight, loaded['G_ema'].decoder.net[0].weight)
    assert type(loaded['D']) is networks_triplane.DualDiscriminator and loaded['D'].init_kwargs == D_KWARGS
    assert_same_tensors(loaded['D'], data['D'])
    assert loaded['augment_pipe'] is None and loaded['training_set_kwargs'] == TRAINING_SET_KWARGS

    # The scripts' loader gives the same networks.
    via_scripts = snapshots.load_network_pkl(io.BytesIO(raw))
    assert type(via_scripts['G_ema']) is networks_triplane.TriPlaneGenerator
    assert_same_tensors(via_scripts['G_ema'], data['G_ema'])
    assert via_scripts['G_ema'].neural_rendering_resolution == 128
    assert official.runs.read_text() == 'gsdt'


@pytest.mark.slow  # About 10 s on a 2-core CPU.
def test_the_loaded_generator_renders_what_our_generator_renders(official, monkeypatch):
    data = official_snapshot(official)
    loaded = load_without_exec(monkeypatch, official_bytes(official, data))
    out = render(loaded['G_ema'])
    assert sorted(out) == ['image', 'image_depth', 'image_raw']
    assert out['image'].shape == (1, 3, 128, 128)
    assert out['image_raw'].shape == (1, 3, 128, 128)  # The file's neural rendering resolution.
    assert out['image_depth'].shape == (1, 1, 128, 128)
    assert all(torch.isfinite(t).all() for t in out.values())
    reference = render(reference_generator(data))
    for key in out:
        assert torch.equal(out[key], reference[key]), key
    # The loaded D scores the loaded G's images.
    logits = loaded['D']({'image': out['image'], 'image_raw': out['image_raw']}, cameras.lookat_labels([0.3], [-0.1]))
    assert logits.shape == (1, 1) and torch.isfinite(logits).all()


@pytest.mark.slow  # About 10 s on a 2-core CPU.
def test_gen_images_renders_an_official_pickle(official, tmp_path):
    path = tmp_path / 'ffhq128-128.pkl'
    path.write_bytes(official_bytes(official, official_snapshot(official)))
    outdir = tmp_path / 'out'
    env = {k: v for k, v in os.environ.items() if k != 'OFFICIAL_STYLE_EG3D_RUNS'}
    result = subprocess.run([sys.executable, 'gen_images.py', f'--network={path}', '--seeds=0', f'--outdir={outdir}'],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert 'trust' not in (result.stdout + result.stderr).lower()
    image = outdir / 'seed0000.png'
    assert image.is_file()
    import PIL.Image
    assert PIL.Image.open(image).size == (128, 128)
    assert official.runs.read_text() == 'gsdt'


def test_a_trusted_load_would_run_the_stand_in(official):
    """The guard above can fail: a trusted load of the same bytes executes the embedded source."""
    raw = official_bytes(official, dict(G=official_generator(official, 0)))
    source = official.sources['triplane']
    persistence._src_to_module_dict.pop(source)  # As in a fresh process that never imported it.
    try:
        persistence.load(io.BytesIO(raw))
        assert official.runs.read_text() == 'gsdt'
        with official_global_names(official):
            trusted = persistence.load(io.BytesIO(raw), trust_code=True)
        assert official.runs.read_text() == 'gsdtt'
        assert type(trusted['G']).__module__.startswith('_imported_module_')
    finally:
        persistence._src_to_module_dict[source] = official.triplane

# ----------------------------------------------------------------------------------------------
# Edited embedded sources.


def _with_source(monkeypatch, cls, source):
    monkeypatch.setattr(cls, '_orig_module_src', source)


def test_an_extra_top_level_function_never_runs(official, monkeypatch):
    """The loader recognises training.triplane by the names it must define (TriPlaneGenerator, OSGDecoder):
    a source that also defines another function and writes to the counter at import still loads into our
    classes, and none of it runs."""
    tampered = official.sources['triplane'] + (
        "\n\ndef extra():\n    pass\n\n\nopen(os.environ['OFFICIAL_STYLE_EG3D_RUNS'], 'a').write('!')\n")
    G = official_generator(official, 0)
    _with_source(monkeypatch, official.triplane.TriPlaneGenerator, tampered)
    raw = official_bytes(official, dict(G=G))
    assert tampered.encode() in raw
    loaded = persistence.load(io.BytesIO(raw))
    assert type(loaded['G']) is networks_triplane.TriPlaneGenerator
    assert_same_tensors(loaded['G'], G)
    assert official.runs.read_text() == 'gsdt'


@pytest.mark.parametrize('part,cls_name,old,new', [
    ('triplane', 'TriPlaneGenerator', 'class OSGDecoder(', 'class OSGDecoderV2('),
    ('dual_discriminator', 'DualDiscriminator', 'def filtered_resizing(', 'def resize('),
    ('superresolution', 'SuperresolutionHybrid2X', 'class SynthesisBlockNoUp(', 'class BlockNoUp('),
])
def test_an_edited_source_that_lacks_an_official_name_is_refused(official, monkeypatch, part, cls_name, old, new):
    source = official.sources[part]
    assert source.count(old) == 1
    _with_source(monkeypatch, getattr(getattr(official, part), cls_name), source.replace(old, new))
    snapshot = official_snapshot(official)
    raw = official_bytes(official, snapshot)
    for load, error in ((persistence.load, persistence.UnsafePickleError),
                        (snapshots.load_network_pkl, snapshots.NetworkPickleError)):
        with pytest.raises(error) as info:
            load(io.BytesIO(raw))
        message = str(info.value)
        assert f"'{cls_name}'" in message and 'trust_code=True' in message
        assert message.count('. ') == 0 and message.endswith('.'), message  # One sentence.
    assert official.runs.read_text() == 'gsdt'



@pytest.mark.parametrize('global_name', [*PLAIN_GLOBALS, 'torch.nn.modules.activation.Softplus'])
def test_without_its_registration_an_official_plain_module_is_refused(official, monkeypatch, global_name):
    raw = official_bytes(official, official_generator(official, 0))
    monkeypatch.setattr(persistence, '_no_exec_plain_modules', persistence._no_exec_plain_modules - {global_name})
    with pytest.raises(persistence.UnsafePickleError, match=rf"'{global_name.replace('.', '[.]')}'.*does not admit"):
        persistence.load(io.BytesIO(raw))

# ----------------------------------------------------------------------------------------------
# --resume from an official pickle.


@pytest.fixture(scope='module')
def camera_dataset(tmp_path_factory):
    path = tmp_path_factory.mktemp('eg3d-data') / 'shapes128.zip'
    result = subprocess.run([sys.executable, 'dataset_tool.py', '--source=synthetic:shapes', f'--dest={path}',
                             '--resolution=128x128', '--max-images=8'], cwd=REPO, capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return path


@pytest.mark.slow  # About 10 s on a 2-core CPU.
def test_an_official_pickle_resumes_an_eg3d_run(official, camera_dataset, tmp_path):
    data = official_snapshot(official)
    path = tmp_path / 'ffhq128-128.pkl'
    path.write_bytes(official_bytes(official, data))
    env = {k: v for k, v in os.environ.items() if k != 'OFFICIAL_STYLE_EG3D_RUNS'}
    result = subprocess.run(
        [sys.executable, 'train.py', f'--outdir={tmp_path / "runs"}', '--cfg=eg3d-ffhq', f'--data={camera_dataset}',
         f'--resume={path}', '--gpus=1', '--batch=4', '--gamma=1', '--device=cpu', f'--cbase={CBASE}',
         f'--cmax={CMAX}', '--sr-module=training.superresolution.SuperresolutionHybrid2X', '--dry-run'],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert not (tmp_path / 'runs').exists()
    c, _ = json.JSONDecoder().raw_decode(result.stdout[result.stdout.index('{'):])
    assert c['resume_pkl'] == str(path) and c['resume_state'] is None
    assert official.runs.read_text() == 'gsdt'

    # training_loop: networks built from the run's options, then every tensor copied by name.
    common = dict(c_dim=25, img_resolution=128, img_channels=3)
    torch.manual_seed(123)
    G = dnnlib.util.construct_class_by_name(**c['G_kwargs'], **common).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**c['D_kwargs'], **common).train().requires_grad_(False)
    G_ema = copy.deepcopy(G).eval()
    resume_data = snapshots.load_network_snapshot(str(path))
    report = snapshots.copy_weights_by_name(resume_data, dict(G=G, D=D, G_ema=G_ema), str(path))
    assert report == dict(widened=[], kept=[])
    for name, module in (('G', G), ('D', D), ('G_ema', G_ema)):
        assert_same_tensors(module, data[name])

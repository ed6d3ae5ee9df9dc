"""Official GRAM checkpoints (generator.pth + ema.pth) read weights-only as our snapshots, and used by the scripts.

The files are made here: generator.pth is `torch.save(G.state_dict())` of our GramGenerator (whose
names are the official keys), and ema.pth a `torch.save` of a torch_ema ExponentialMovingAverage
written in a subprocess that has a fake `torch_ema` package on its path, so this process never
imports one. Script runs use tiny configs in place of the official ones (monkeypatched), so that
rendering a whole image takes milliseconds.
"""

import copy
import math
import os
import pickle
import subprocess
import sys

import numpy as np
import PIL.Image
import pytest
import torch
from click.testing import CliRunner

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, REPO)
import gen_images  # noqa: E402
import legacy  # noqa: E402
from training import cameras, generation, gram_checkpoints, networks_gram, snapshots  # noqa: E402

FACE_FOV = 12


def assert_one_sentence(message):
    assert '\n' not in message and 'Traceback' not in message, message
    assert message.rstrip().endswith('.'), message


def tiny_preset(hidden_dim_sample):
    preset = copy.deepcopy(networks_gram.OFFICIAL_CONFIGS['FFHQ_default'])
    preset['generator'].update(z_dim=8, img_size=16)
    preset['generator']['representation_kwargs'].update(hidden_dim=16, hidden_dim_sample=hidden_dim_sample)
    preset['generator']['renderer_kwargs'].update(num_samples=16, num_manifolds=8, levels_start=20, levels_end=10)
    preset['discriminator'] = dict(img_size=4)  # GRAM's D is 400 channels wide at 16 already; the loader only builds it
    return preset


TINY_CONFIGS = {'FFHQ_default': tiny_preset(8), 'CATS_default': tiny_preset(4)}


@pytest.fixture
def tiny(monkeypatch):
    """The official config names stand for tiny networks."""
    monkeypatch.setattr(networks_gram, 'OFFICIAL_CONFIGS', TINY_CONFIGS)
    monkeypatch.setattr(gram_checkpoints, '_SHAPES', {})


def build(preset, seed):
    torch.manual_seed(seed)
    return networks_gram.GramGenerator(**copy.deepcopy(preset['generator']), **preset['camera'], legacy_rays=True).eval()


FAKE_TORCH_EMA = '''
class ExponentialMovingAverage:
    """torch_ema 0.2's attributes, without its methods."""
    def __init__(self, shadow_params, decay, num_updates, extra):
        self.decay = decay
        self.num_updates = num_updates
        self.shadow_params = shadow_params
        self.collected_params = []
        self.__dict__.update(extra)
'''

WRITE_EMA = '''
import sys, torch
from torch_ema.ema import ExponentialMovingAverage
for source, dest, decay, num_updates, extra in torch.load(sys.argv[1], weights_only=False):
    torch.save(ExponentialMovingAverage(torch.load(source), decay, num_updates, extra), dest)
'''


def write_emas(folder, jobs):
    """jobs: (shadow tensors, ema.pth path, decay, num_updates, extra attributes); one subprocess writes them all."""
    package = folder / 'fake-packages' / 'torch_ema'
    package.mkdir(parents=True)
    (package / '__init__.py').write_text('from .ema import ExponentialMovingAverage\n')
    (package / 'ema.py').write_text(FAKE_TORCH_EMA)
    entries = []
    for index, (shadow, dest, decay, num_updates, extra) in enumerate(jobs):
        torch.save(shadow, folder / f'shadow{index}.pt')
        entries.append((str(folder / f'shadow{index}.pt'), str(dest), decay, num_updates, extra))
    torch.save(entries, folder / 'jobs.pt')
    env = dict(os.environ, PYTHONPATH=str(folder / 'fake-packages'))
    subprocess.run([sys.executable, '-c', WRITE_EMA, str(folder / 'jobs.pt')], check=True, env=env, cwd=folder)


def shadow_of(G, seed):
    gen = torch.Generator().manual_seed(seed)
    return [p.detach() + 0.05 * torch.randn(p.shape, generator=gen) for p in G.parameters()]


def release(folder, G):
    folder.mkdir(parents=True)
    torch.save(G.state_dict(), folder / 'generator.pth')
    return folder


@pytest.fixture(scope='module')
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp('gram')
    out = {}
    ffhq = build(networks_gram.OFFICIAL_CONFIGS['FFHQ_default'], seed=1)
    out['ffhq'] = release(root / 'FFHQ_default', ffhq)
    out['ffhq_shadow'] = shadow_of(ffhq, 2)
    small = build(TINY_CONFIGS['FFHQ_default'], seed=3)
    out['tiny'] = release(root / 'tiny', small)
    out['tiny_shadow'] = shadow_of(small, 4)
    out['short'] = release(root / 'short', small)  # an ema.pth of another generator: one tensor fewer
    out['no_ema'] = release(root / 'no_ema', small)
    write_emas(root, [(out['ffhq_shadow'], out['ffhq'] / 'ema.pth', 0.999, 12345, {}),
                      (out['tiny_shadow'], out['tiny'] / 'ema.pth', 0.999, 7, {'_params_refs': None}),
                      (out['tiny_shadow'][:-1], out['short'] / 'ema.pth', 0.999, 7, {})])
    return out


def gram_labels(thetas, fov=FACE_FOV):
    thetas = torch.tensor(thetas, dtype=torch.float32)
    return cameras.gram_pose_to_label(torch.full_like(thetas, math.pi / 2), thetas, fov)


def render(G, seed=0, thetas=(math.pi / 2, math.pi / 2 + 0.4), resolution=None):
    z = torch.randn([len(thetas), G.z_dim], generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        return G(z, gram_labels(list(thetas)), resolution=resolution)


def params(G):
    return [p.detach() for p in G.parameters()]


def all_equal(a, b):
    return len(a) == len(b) and all(torch.equal(x, y) for x, y in zip(a, b))

# ----------------------------------------------------------------------------------------------
# generator.pth


@pytest.mark.parametrize('config', ['FFHQ_default', 'CATS_default', 'CARLA_default'])
def test_generator_pth_is_read_weights_only_and_its_config_identified(config, tmp_path, monkeypatch):
    G = build(networks_gram.OFFICIAL_CONFIGS[config], seed=5)
    torch.save(G.state_dict(), tmp_path / 'generator.pth')
    calls = []
    original = torch.load
    monkeypatch.setattr(torch, 'load', lambda *args, **kwargs: calls.append(kwargs) or original(*args, **kwargs))
    loaded, name = gram_checkpoints.load_generator_pth(str(tmp_path / 'generator.pth'))
    assert calls and all(kwargs.get('weights_only') is True for kwargs in calls)
    assert name == config
    assert loaded.legacy_rays and not loaded.training
    assert (loaded.fov, loaded.ray_start, loaded.ray_end) == tuple(networks_gram.OFFICIAL_CONFIGS[config]['camera'].values())
    assert loaded.renderer.white_back == (config == 'CARLA_default')
    assert all_equal(params(loaded), params(G))
    assert not any(p.requires_grad for p in loaded.parameters())


def test_unknown_or_incomplete_generators_are_refused_in_one_sentence(tmp_path):
    preset = copy.deepcopy(networks_gram.OFFICIAL_CONFIGS['FFHQ_default'])
    preset['generator']['representation_kwargs']['hidden_dim_sample'] = 32
    torch.save(build(preset, 0).state_dict(), tmp_path / 'other.pth')
    with pytest.raises(snapshots.NetworkPickleError) as error:
        gram_checkpoints.load_generator_pth(str(tmp_path / 'other.pth'))
    assert_one_sentence(str(error.value))
    assert 'matches no official GRAM config' in str(error.value) and '[32, 3]' in str(error.value)

    state = build(networks_gram.OFFICIAL_CONFIGS['FFHQ_default'], 0).state_dict()
    del state['representation.rf_network.output_color.3.bias']
    torch.save(state, tmp_path / 'incomplete.pth')
    with pytest.raises(snapshots.NetworkPickleError) as error:
        gram_checkpoints.load_generator_pth(str(tmp_path / 'incomplete.pth'))
    assert_one_sentence(str(error.value))
    assert 'FFHQ_default' in str(error.value) and 'output_color.3.bias' in str(error.value)

    torch.save({'format': 'raycond-training-state', 'step': 3}, tmp_path / 'state.pt')
    (tmp_path / 'damaged.pth').write_bytes((tmp_path / 'other.pth').read_bytes()[:5000])
    for name, words in [('state.pt', 'not a state dict of named tensors'), ('damaged.pth', 'damaged')]:
        with pytest.raises(snapshots.NetworkPickleError) as error:
            snapshots.open_network_pkl(str(tmp_path / name))
        assert_one_sentence(str(error.value))
        assert words in str(error.value)


# ----------------------------------------------------------------------------------------------
# ema.pth


def test_ema_is_read_without_torch_ema_and_without_running_anything(files):
    ema = gram_checkpoints.load_ema(str(files['ffhq'] / 'ema.pth'))
    assert 'torch_ema' not in sys.modules and 'torch_ema.ema' not in sys.modules
    assert ema.decay == 0.999 and ema.num_updates == 12345
    assert all_equal(ema.shadow_params, files['ffhq_shadow'])
    with pytest.raises(snapshots.NetworkPickleError) as error:
        gram_checkpoints.load_ema(str(files['ffhq'] / 'generator.pth'))
    assert_one_sentence(str(error.value))
    assert 'not a torch_ema ExponentialMovingAverage' in str(error.value)


class _RunsACommand:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f'touch {self.marker}',)


@pytest.mark.parametrize('which', ['generator.pth', 'ema.pth'])
def test_a_checkpoint_with_code_is_refused_without_running_it(which, files, tiny, tmp_path):
    folder = tmp_path / 'evil'
    folder.mkdir()
    marker = tmp_path / 'code-ran'
    for name in ('generator.pth', 'ema.pth'):
        source = files['tiny'] / name
        (folder / name).write_bytes(source.read_bytes())
    torch.save({'payload': _RunsACommand(marker)}, folder / which)
    for source in (folder, folder / 'generator.pth'):
        with pytest.raises(snapshots.NetworkPickleError) as error:
            snapshots.open_network_pkl(str(source), trust_code=True)
        assert_one_sentence(str(error.value))
        assert 'system' in str(error.value) and which in str(error.value)
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# The snapshot.


def test_snapshot_has_the_raw_weights_the_ema_weights_and_a_fresh_discriminator(files):
    state = torch.load(files['ffhq'] / 'generator.pth', weights_only=True)
    loads = []
    for source in (files['ffhq'], files['ffhq'] / 'generator.pth'):
        data = snapshots.open_network_pkl(str(source))
        loads.append(data)
        assert set(data) >= {'G', 'D', 'G_ema', 'augment_pipe', 'training_set_kwargs'}
        assert data['augment_pipe'] is None and data['training_set_kwargs'] is None
        assert all_equal(params(data['G']), list(state.values()))
        assert all_equal(params(data['G_ema']), files['ffhq_shadow'])
        assert not all_equal(params(data['G']), params(data['G_ema']))
        assert isinstance(data['D'], networks_gram.GramDiscriminator) and data['D'].img_resolution == 256
        for net in (data['G'], data['D'], data['G_ema']):
            assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert all_equal(params(loads[0]['D']), params(loads[1]['D'])), 'the fresh D is the same on every load'


def test_rendering_of_G_ema_equals_a_by_name_copy_of_the_shadow_params(files):
    G_ema = snapshots.open_network_pkl(str(files['ffhq']))['G_ema']
    reference = build(networks_gram.OFFICIAL_CONFIGS['FFHQ_default'], seed=9)
    names = [name for name, _ in reference.named_parameters()]
    reference.load_state_dict(dict(zip(names, files['ffhq_shadow'])), strict=True)
    assert torch.equal(render(G_ema, resolution=8), render(reference, resolution=8))


def test_without_ema_G_ema_is_G_and_a_foreign_ema_is_refused(files, tiny):
    data = snapshots.open_network_pkl(str(files['no_ema'] / 'generator.pth'))
    assert all_equal(params(data['G_ema']), params(data['G']))
    with pytest.raises(snapshots.NetworkPickleError) as error:
        snapshots.open_network_pkl(str(files['short']))
    assert_one_sentence(str(error.value))
    assert 'shadow parameters' in str(error.value) and 'another generator' in str(error.value)


def test_resume_takes_a_gram_folder(files, tiny):
    assert snapshots.resolve_resume(str(files['tiny'])) == (str(files['tiny']), None)
    data = snapshots.load_network_snapshot(str(files['tiny']))
    assert all_equal(params(data['G_ema']), files['tiny_shadow'])
    with pytest.raises(snapshots.NetworkPickleError) as error:
        snapshots.open_network_pkl(str(files['tiny'].parent / 'fake-packages'))
    assert_one_sentence(str(error.value))


# ----------------------------------------------------------------------------------------------
# The scripts.


def gen(*args):
    result = CliRunner().invoke(gen_images.main, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result


def to_png_pixels(images):
    return generation.to_uint8(images).numpy()


def test_gen_images_takes_a_generator_pth_and_its_folder(files, tiny, tmp_path):
    # The default camera is the network's (GRAM: radius 1 about the origin, the focal of its fov).
    G_ema = snapshots.open_network_pkl(str(files['tiny']))['G_ema']
    label = cameras.lookat_labels([0.0], [0.0], radius=1.0, pivot=(0, 0, 0), focal=cameras.gram_focal(FACE_FOV))
    z = generation.latents([3], G_ema.z_dim)
    with torch.no_grad():
        expected = to_png_pixels(G_ema(z, label))[0]
    for source, out in [(files['tiny'] / 'generator.pth', tmp_path / 'pth'), (files['tiny'], tmp_path / 'folder')]:
        gen('--network', source, '--seeds=3', '--outdir', out, '--device=cpu')
        assert os.listdir(out) == ['seed0003.png']
        assert np.array_equal(np.asarray(PIL.Image.open(out / 'seed0003.png')), expected)


def test_gen_images_yaw_gives_grams_cameras(files, tiny, tmp_path, monkeypatch):
    """--yaw=y is GRAM's camera at theta = pi/2 - y (EG3D's yaw turns the other way), with GRAM's radius and pivot."""
    calls = []
    original = generation.synthesize
    monkeypatch.setattr(generation, 'synthesize', lambda G, ws, c=None, **kw: calls.append(c.clone()) or original(G, ws, c, **kw))
    focal = cameras.gram_focal(FACE_FOV)
    gen('--network', files['tiny'], '--seeds=0', '--yaw=-0.4,0,0.4', '--outdir', tmp_path, '--device=cpu',
        '--batch=3')
    assert sorted(os.listdir(tmp_path)) == [f'seed0000-view{v:02d}.png' for v in range(3)]
    torch.testing.assert_close(torch.cat(calls), gram_labels([math.pi / 2 + 0.4, math.pi / 2, math.pi / 2 - 0.4]),
                               atol=1e-6, rtol=0)
    assert generation.default_camera(build(TINY_CONFIGS['FFHQ_default'], 0)) == dict(
        radius=1.0, pivot=[0.0, 0.0, 0.0], focal=pytest.approx(focal))


def test_default_camera_reads_declarations_then_eg3ds_rendering_kwargs_then_ffhqs():
    class Declares:
        default_camera = dict(radius=1.0)

    class EG3D:
        rendering_kwargs = dict(avg_camera_radius=2.5, avg_camera_pivot=[0, 0, 0.1])
    ffhq = dict(radius=cameras.FFHQ_RADIUS, pivot=list(cameras.FFHQ_PIVOT), focal=cameras.FFHQ_FOCAL)
    assert generation.default_camera(object()) == ffhq
    assert generation.default_camera(Declares()) == dict(ffhq, radius=1.0)
    assert generation.default_camera(EG3D()) == dict(ffhq, radius=2.5, pivot=[0.0, 0.0, 0.1])
    assert generation.camera_defaults(EG3D()) == (2.5, [0.0, 0.0, 0.1])


def test_legacy_converts_to_a_pickle_that_loads_without_code_and_renders_the_same(files, tiny, tmp_path):
    for source, dest in [(files['tiny'] / 'generator.pth', tmp_path / 'gram.pkl')]:
        result = CliRunner().invoke(legacy.main, [f'--source={source}', f'--dest={dest}'])
        assert result.exit_code == 0, result.output
        converted = snapshots.open_network_pkl(str(dest))  # the no-exec loader
        original = snapshots.open_network_pkl(str(source))
        for key in ('G', 'G_ema', 'D'):
            assert type(converted[key]) is type(original[key])
            assert all_equal(params(converted[key]), params(original[key])), key
        assert converted['G_ema'].legacy_rays
        assert torch.equal(render(converted['G_ema']), render(original['G_ema']))
        with open(dest, 'rb') as f:
            assert f.read(1) == pickle.PROTO


def test_force_fp16_is_refused_in_one_sentence_for_networks_without_float16_layers(files, tiny):
    with pytest.raises(snapshots.NetworkPickleError, match='no float16 layers.*drop --force-fp16'):
        snapshots.open_network_pkl(str(files['tiny']), force_fp16=True)

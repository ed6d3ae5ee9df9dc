"""legacy.py: one loader for our snapshots, official PyTorch pickles and StyleGAN2 TensorFlow pickles."""

import io
import os
import pickle
import sys

import numpy as np
import pytest
import torch
from click.testing import CliRunner

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)
sys.path.insert(0, os.path.join(REPO, 'tests', 'training'))
import legacy  # noqa: E402
import test_tf_stylegan2 as tf_fixtures  # noqa: E402
import tiny_networks  # noqa: E402
from cli_checks import assert_cli_error, make_read_only  # noqa: E402
from torch_utils import persistence  # noqa: E402
from training import augment, networks_stylegan2, networks_stylegan3  # noqa: E402


def snapshot_dict():
    G = tiny_networks.stylegan2_generator(c_dim=3)
    D = networks_stylegan2.Discriminator(c_dim=3, img_resolution=16, img_channels=3, channel_base=64, channel_max=8)
    torch.manual_seed(1)
    G3 = tiny_networks.stylegan3_generator(resolution=16, radial=False)
    pipe = augment.AugmentPipe(xflip=1, brightness=1)
    return dict(G=G, D=D, G_ema=G3, augment_pipe=pipe, training_set_kwargs=dict(path='data.zip', resolution=16))


def outputs(data):
    gen = torch.Generator().manual_seed(0)
    z, c = torch.randn([2, 8], generator=gen), torch.randn([2, 3], generator=gen)
    img = torch.randn([2, 3, 16, 16], generator=gen)
    with torch.no_grad():
        return dict(G=data['G'](z, c, noise_mode='const'), D=data['D'](img, c),
                    G_ema=data['G_ema'](z, torch.zeros([2, 0])))


def assert_one_sentence(message):
    assert '\n' not in message and 'Traceback' not in message
    assert message.rstrip().endswith('.'), message


# ----------------------------------------------------------------------------------------------
# Our pickles and official ones.

def test_our_snapshot_loads_without_executing_code_and_computes_the_same():
    data = snapshot_dict()
    loaded = legacy.load_network_pkl(io.BytesIO(pickle.dumps(data)))
    expected, got = outputs(data), outputs(loaded)
    for name in expected:
        assert type(loaded[name]) is type(data[name])
        assert torch.equal(got[name], expected[name]), name
    assert loaded['training_set_kwargs'] == data['training_set_kwargs']
    assert float(loaded['augment_pipe'].p) == float(data['augment_pipe'].p)


class _OfficialPickler(pickle.Pickler):
    """Pickles our networks as the official releases do: each class embeds *another* module source.

    The embedded sources define the official top-level names and raise if executed, so a load that
    succeeds proves that nothing from the file ran.
    """

    sources = {
        networks_stylegan2.Generator._orig_module_src: ['FullyConnectedLayer', 'Conv2dLayer', 'MappingNetwork',
                                                        'SynthesisLayer', 'ToRGBLayer', 'SynthesisBlock',
                                                        'SynthesisNetwork', 'Generator', 'DiscriminatorBlock',
                                                        'MinibatchStdLayer', 'DiscriminatorEpilogue', 'Discriminator'],
        networks_stylegan3.Generator._orig_module_src: ['FullyConnectedLayer', 'MappingNetwork', 'SynthesisInput',
                                                        'SynthesisLayer', 'SynthesisNetwork', 'Generator'],
        augment.AugmentPipe._orig_module_src: ['AugmentPipe'],
    }

    def reducer_override(self, obj):
        if not persistence.is_persistent(obj) or isinstance(obj, type):
            return NotImplemented
        function, (meta,) = obj.__reduce__()[:2]
        names = self.sources[meta['module_src']]
        lines = ['raise RuntimeError("the embedded source was executed")', 'import torch']
        lines += [f'class {name}(torch.nn.Module):\n    pass' for name in names] + ['def modulated_conv2d():\n    pass']
        return function, (dict(meta, module_src='\n'.join(lines) + '\n'),)


def official_pickle(data):
    buffer = io.BytesIO()
    _OfficialPickler(buffer).dump(data)
    return buffer.getvalue()


def test_official_format_pickle_loads_without_executing_its_source():
    data = snapshot_dict()
    raw = official_pickle(data)
    assert b'the embedded source was executed' in raw
    loaded = legacy.load_network_pkl(io.BytesIO(raw))
    expected, got = outputs(data), outputs(loaded)
    for name in expected:
        assert type(loaded[name]) is type(data[name])
        assert torch.equal(got[name], expected[name]), name
    # trust_code=True really executes the embedded source (here: it raises).
    with pytest.raises(RuntimeError, match='embedded source was executed'):
        legacy.load_network_pkl(io.BytesIO(raw), trust_code=True)


def test_missing_keys_are_added_as_none():
    data = snapshot_dict()
    del data['augment_pipe'], data['training_set_kwargs']
    loaded = legacy.load_network_pkl(io.BytesIO(pickle.dumps(data)))
    assert loaded['augment_pipe'] is None and loaded['training_set_kwargs'] is None


def test_force_fp16_rebuilds_with_the_official_settings():
    data = snapshot_dict()
    loaded = legacy.load_network_pkl(io.BytesIO(pickle.dumps(data)), force_fp16=True)
    for name in ('G', 'D', 'G_ema'):
        kwargs = loaded[name].init_kwargs
        assert kwargs.num_fp16_res == 4 and kwargs.conv_clamp == 256, name
        for (na, a), (nb, b) in zip(list(data[name].named_parameters()) + list(data[name].named_buffers()),
                                    list(loaded[name].named_parameters()) + list(loaded[name].named_buffers())):
            assert na == nb and torch.equal(a, b)
    # On the CPU the networks run in fp32, and nothing here reaches the clamp: the same images.
    expected, got = outputs(data), outputs(loaded)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=0, atol=1e-6)


# ----------------------------------------------------------------------------------------------
# Files that are not network pickles.

class _WritesAFile:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


@pytest.mark.parametrize('content, words', [
    (b'certainly not a pickle', ['damaged or not a network pickle']),
    (b'', ['damaged or not a network pickle']),
    (pickle.dumps({'weights': [1, 2]}), ['not a network snapshot']),
    (pickle.dumps([1, 2, 3]), ['not a network snapshot']),
])
def test_not_a_network_pickle(content, words):
    with pytest.raises(legacy.NetworkPickleError) as error:
        legacy.load_network_pkl(io.BytesIO(content))
    assert_one_sentence(str(error.value))
    for word in words:
        assert word in str(error.value)


def test_code_in_a_pickle_is_refused_without_running_it(tmp_path):
    marker = tmp_path / 'code-ran'
    with pytest.raises(legacy.NetworkPickleError) as error:
        legacy.load_network_pkl(io.BytesIO(pickle.dumps({'G': _WritesAFile(str(marker))})))
    assert 'trust_code=True' in str(error.value)
    assert_one_sentence(str(error.value))
    assert not marker.exists()


# ----------------------------------------------------------------------------------------------
# TensorFlow pickles.

def tf_pickle(monkeypatch):
    rng = np.random.default_rng(5)
    nets = (tf_fixtures.make_tf_G(rng, 'G')[0], tf_fixtures.make_tf_D(rng)[0], tf_fixtures.make_tf_G(rng, 'Gs')[0])
    return tf_fixtures.dump_tf_pickle(monkeypatch, nets), nets


def test_tensorflow_pickle_converts_through_the_loader(monkeypatch):
    raw, (tf_G, _tf_D, tf_Gs) = tf_pickle(monkeypatch)
    loaded = legacy.load_network_pkl(io.BytesIO(raw))
    assert 'dnnlib.tflib' not in sys.modules
    assert isinstance(loaded['G'], networks_stylegan2.Generator) and isinstance(loaded['D'], networks_stylegan2.Discriminator)
    assert loaded['augment_pipe'] is None and loaded['training_set_kwargs'] is None
    # The converted generator computes what TensorFlow would (the converter's float64 oracle).
    variables = tf_fixtures.all_variables(tf_Gs.state)
    kw = tf_fixtures.g_kwargs()
    ws = np.random.default_rng(0).standard_normal([2, loaded['G_ema'].num_ws, kw['dlatent_size']])
    tf_fixtures.assert_close(tf_fixtures.run_synthesis(loaded['G_ema'], ws), tf_fixtures.oracle_synthesis(variables, kw, ws),
                             'G_ema.synthesis')


def test_legacy_cli_converts_and_never_overwrites(monkeypatch, tmp_path):
    raw, _ = tf_pickle(monkeypatch)
    (tmp_path / 'tf.pkl').write_bytes(raw)
    dest = tmp_path / 'converted.pkl'
    result = CliRunner().invoke(legacy.main, [f'--source={tmp_path / "tf.pkl"}', f'--dest={dest}'])
    assert result.exit_code == 0, result.output
    reloaded = legacy.load_network_pkl(open(dest, 'rb'))  # our format: loads with the no-exec loader
    direct = legacy.load_network_pkl(io.BytesIO(raw))
    z = torch.randn([2, reloaded['G'].z_dim])
    c = torch.randn([2, reloaded['G'].c_dim])
    with torch.no_grad():
        assert torch.equal(reloaded['G_ema'](z, c, noise_mode='const'), direct['G_ema'](z, c, noise_mode='const'))
    assert sorted(os.listdir(tmp_path)) == ['converted.pkl', 'tf.pkl'], 'no temporary file is left'

    before = dest.read_bytes()
    again = CliRunner().invoke(legacy.main, [f'--source={tmp_path / "tf.pkl"}', f'--dest={dest}'])
    assert again.exit_code == 1 and 'already exists' in again.output and 'Traceback' not in again.output
    assert dest.read_bytes() == before

    (tmp_path / 'junk.pkl').write_bytes(b'junk')
    bad = CliRunner().invoke(legacy.main, [f'--source={tmp_path / "junk.pkl"}', f'--dest={tmp_path / "out.pkl"}'])
    assert bad.exit_code == 1 and 'junk.pkl' in bad.output
    assert not (tmp_path / 'out.pkl').exists()
    missing = CliRunner().invoke(legacy.main, [f'--source={tmp_path / "none.pkl"}', f'--dest={tmp_path / "out.pkl"}'])
    assert missing.exit_code == 1 and 'none.pkl' in missing.output


def test_ctrl_c_while_writing_exits_130_and_leaves_nothing(monkeypatch, tmp_path):
    source = tiny_networks.save_snapshot(tmp_path / 'source.pkl', tiny_networks.stylegan2_generator())

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(legacy.pickle, 'dump', interrupted)
    result = CliRunner().invoke(legacy.main, [f'--source={source}', f'--dest={tmp_path / "out.pkl"}'])
    assert result.exit_code == 130, result.output
    assert result.output.strip() == 'Interrupted.' and 'Traceback' not in result.output
    assert os.listdir(tmp_path) == ['source.pkl']


def test_legacy_cli_refuses_a_dest_it_cannot_write_before_reading_the_source(tmp_path, monkeypatch):
    """dnnlib.cli.check_output_path: checked first (the source may be a long download)."""
    source = tiny_networks.save_snapshot(tmp_path / 'source.pkl', tiny_networks.stylegan2_generator())
    (tmp_path / 'file').write_text('x')
    dest = tmp_path / 'file' / 'out.pkl'
    assert_cli_error(CliRunner().invoke(legacy.main, [f'--source={tmp_path / "none.pkl"}', f'--dest={dest}']),
                     f'--dest={dest}', 'which is a file')
    assert_cli_error(CliRunner().invoke(legacy.main, [f'--source={source}', f'--dest={tmp_path}']), '--dest', 'is a folder')
    (tmp_path / 'locked').mkdir()
    locked = make_read_only(tmp_path / 'locked', monkeypatch)  # as root, os.access is made to honour the mode bits
    assert_cli_error(CliRunner().invoke(legacy.main, [f'--source={source}', f'--dest={locked / "out.pkl"}']),
                     f'--dest={locked / "out.pkl"}', 'not writable')
    assert not os.listdir(locked)

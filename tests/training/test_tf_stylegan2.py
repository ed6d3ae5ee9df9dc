"""Conversion of StyleGAN2 TensorFlow pickles (training/tf_stylegan2.py), checked against a TF oracle.

The pickles are made here without TensorFlow: a stand-in `Network` class, importable as
`dnnlib.tflib.network.Network` only while pickling, writes the state dict a real TF network pickles
(version, name, static_kwargs, components, build source, variables as numpy arrays). The variables are
random, with the documented TF names and layouts.

The expected outputs come from a float64 numpy oracle written from the TF StyleGAN2 formulas
(HWIO weights, cross-correlation with SAME padding, zero-stuffing then FIR filtering, modulation
bias without its +1, noise variables [1, 1, r, r]); it reads the TF variables directly and never
calls our torch code.

Tolerance: the converted networks run in float32 (unit roundoff 6e-8). The deepest path stacks about
ten layers of at most a few hundred products each, so the accumulated error stays near 1e-6 of the
output magnitude; RTOL = 1e-4 of max |expected| leaves a wide margin, while any conversion slip
(missing flip, transposed weight, lost +1, wrong noise index) changes outputs by O(1) of their size.
"""

import io
import pickle
import re
import sys
import types

import numpy as np
import pytest
import torch

from torch_utils import persistence
from training import networks_stylegan2
from training import tf_stylegan2
from training.tf_stylegan2 import STAND_INS, TFConversionError, TFNetworkStub

RTOL = 1e-4
SQRT2 = np.sqrt(2)
FIR = np.outer([1, 3, 3, 1], [1, 3, 3, 1]) / 64.0

# ----------------------------------------------------------------------------------------------
# Fake TF pickles.


class Network:
    """Pickles like dnnlib.tflib.network.Network: NEWOBJ + BUILD with the state dict."""

    def __init__(self, state):
        self.state = state

    def __getstate__(self):
        return self.state


def tf_net(name, static_kwargs, variables, components=None, version=4, func='G_main'):
    return Network(dict(
        version=version, name=name, static_kwargs=dict(static_kwargs), components=dict(components or {}),
        build_module_src='raise RuntimeError("never executed")\n', build_func_name=func,
        variables=list(variables.items()), input_shapes=[[None, 8]], output_shapes=[[None, 3, 8, 8]],
        input_names=['latents_in'], output_names=['images_out']))


def dump_tf_pickle(monkeypatch, obj, protocol=4):
    """Pickle `obj` with `Network` importable as dnnlib.tflib.network.Network, then make it unimportable again."""
    with monkeypatch.context() as patch:
        tflib = types.ModuleType('dnnlib.tflib')
        network = types.ModuleType('dnnlib.tflib.network')
        network.Network = Network
        tflib.network = network
        patch.setattr(Network, '__module__', 'dnnlib.tflib.network')
        patch.setitem(sys.modules, 'dnnlib.tflib', tflib)
        patch.setitem(sys.modules, 'dnnlib.tflib.network', network)
        data = pickle.dumps(obj, protocol=protocol)
    assert 'dnnlib.tflib' not in sys.modules
    assert b'dnnlib.tflib.network' in data
    return data


def load_blocking_tflib(monkeypatch, data):
    """persistence.load with STAND_INS while any import of dnnlib.tflib fails and is recorded."""
    attempts = []

    class BlockTflib:
        def find_spec(self, name, path=None, target=None):
            if name.startswith('dnnlib.tflib'):
                attempts.append(name)
                raise ImportError(f'{name} must not be imported')
            return None

    monkeypatch.setattr(sys, 'meta_path', [BlockTflib()] + sys.meta_path)
    result = persistence.load(io.BytesIO(data), stand_ins=STAND_INS)
    assert attempts == []
    return result


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def add_modconv(rng, v, name, kernel, fin, fout, w_dim, noise=True):
    v[f'{name}/weight'] = rand(rng, kernel, kernel, fin, fout)
    v[f'{name}/bias'] = rand(rng, fout, scale=0.5)
    v[f'{name}/mod_weight'] = rand(rng, w_dim, fin)
    v[f'{name}/mod_bias'] = rand(rng, fin, scale=0.5)
    if noise:
        v[f'{name}/noise_strength'] = np.float32(rng.uniform(0.3, 1.0) * rng.choice([-1, 1])).reshape([])


def g_kwargs(**overrides):
    kwargs = dict(latent_size=8, label_size=3, dlatent_size=8, resolution=16, num_channels=3, fmap_base=32,
                  fmap_max=8, mapping_layers=2, label_fmaps=5, mapping_fmaps=6, mapping_lrmul=0.01,
                  w_avg_beta=0.995, architecture='skip', truncation_psi=0.5, style_mixing_prob=0.9,
                  fmap_min=1, fmap_decay=1.0)
    kwargs.update(overrides)
    return kwargs


def g_channels(kw, res):
    return min(2 * kw['fmap_base'] // res, kw['fmap_max'])


def make_tf_G(rng, name='G', lod_torgb=False, **overrides):
    """A TF StyleGAN2 generator (G_main with 'mapping' and 'synthesis' components) with random variables."""
    kw = g_kwargs(**overrides)
    z, c, w, R = kw['latent_size'], kw['label_size'], kw['dlatent_size'], kw['resolution']
    mapping, synthesis = {}, {}
    if c:
        mapping['LabelEmbed/weight'] = rand(rng, c, kw['label_fmaps'])
        mapping['LabelEmbed/bias'] = rand(rng, kw['label_fmaps'], scale=0.5)
    features = [z + (kw['label_fmaps'] if c else 0)] + [kw['mapping_fmaps']] * (kw['mapping_layers'] - 1) + [w]
    for i in range(kw['mapping_layers']):
        mapping[f'Dense{i}/weight'] = rand(rng, features[i], features[i + 1], scale=1 / kw['mapping_lrmul'])
        mapping[f'Dense{i}/bias'] = rand(rng, features[i + 1], scale=5.0)
    log2 = int(np.log2(R))
    synthesis['4x4/Const/const'] = rand(rng, 1, g_channels(kw, 4), 4, 4)
    for res in [2 ** i for i in range(2, log2 + 1)]:
        cout = g_channels(kw, res)
        if res == 4:
            add_modconv(rng, synthesis, '4x4/Conv', 3, cout, cout, w)
            synthesis['noise0'] = rand(rng, 1, 1, 4, 4)
        else:
            cin = g_channels(kw, res // 2)
            add_modconv(rng, synthesis, f'{res}x{res}/Conv0_up', 3, cin, cout, w)
            add_modconv(rng, synthesis, f'{res}x{res}/Conv1', 3, cout, cout, w)
            synthesis[f'noise{2 * int(np.log2(res)) - 5}'] = rand(rng, 1, 1, res, res)
            synthesis[f'noise{2 * int(np.log2(res)) - 4}'] = rand(rng, 1, 1, res, res)
        if lod_torgb:
            add_modconv(rng, synthesis, f'ToRGB_lod{log2 - int(np.log2(res))}', 1, cout, kw['num_channels'], w,
                        noise=False)
        else:
            add_modconv(rng, synthesis, f'{res}x{res}/ToRGB', 1, cout, kw['num_channels'], w, noise=False)
    synthesis['lod'] = np.float32(0).reshape([])  # Present in real pickles, unused by the networks.
    own = {'dlatent_avg': rand(rng, w)}
    components = {'mapping': tf_net('G_mapping', {}, mapping, func='G_mapping'),
                  'synthesis': tf_net('G_synthesis', {}, synthesis, func='G_synthesis_stylegan2')}
    return tf_net(name, kw, own, components), kw


def d_kwargs(**overrides):
    kwargs = dict(label_size=3, resolution=16, num_channels=3, fmap_base=32, fmap_max=8, mapping_layers=2,
                  mapping_fmaps=6, mbstd_group_size=2, mbstd_num_features=2, architecture='resnet',
                  structure='auto')
    kwargs.update(overrides)
    return kwargs


def make_tf_D(rng, name='D', **overrides):
    kw = d_kwargs(**overrides)
    c, R, C, cmap = kw['label_size'], kw['resolution'], kw['num_channels'], kw['mapping_fmaps']
    v = {}
    log2 = int(np.log2(R))
    ch = {res: min(2 * kw['fmap_base'] // res, kw['fmap_max']) for res in [2 ** i for i in range(2, log2 + 1)]}
    v[f'{R}x{R}/FromRGB/weight'] = rand(rng, 1, 1, C, ch[R])
    v[f'{R}x{R}/FromRGB/bias'] = rand(rng, ch[R], scale=0.5)
    for res in [2 ** i for i in range(log2, 2, -1)]:
        v[f'{res}x{res}/Conv0/weight'] = rand(rng, 3, 3, ch[res], ch[res])
        v[f'{res}x{res}/Conv0/bias'] = rand(rng, ch[res], scale=0.5)
        v[f'{res}x{res}/Conv1_down/weight'] = rand(rng, 3, 3, ch[res], ch[res // 2])
        v[f'{res}x{res}/Conv1_down/bias'] = rand(rng, ch[res // 2], scale=0.5)
        v[f'{res}x{res}/Skip/weight'] = rand(rng, 1, 1, ch[res], ch[res // 2])
    v['LabelEmbed/weight'] = rand(rng, c, cmap)
    v['LabelEmbed/bias'] = rand(rng, cmap, scale=0.5)
    for i in range(kw['mapping_layers']):
        v[f'Mapping{i}/weight'] = rand(rng, cmap, cmap, scale=10.0)
        v[f'Mapping{i}/bias'] = rand(rng, cmap, scale=5.0)
    v['4x4/Conv/weight'] = rand(rng, 3, 3, ch[4] + kw['mbstd_num_features'], ch[4])
    v['4x4/Conv/bias'] = rand(rng, ch[4], scale=0.5)
    v['4x4/Dense0/weight'] = rand(rng, ch[4] * 16, ch[4])
    v['4x4/Dense0/bias'] = rand(rng, ch[4], scale=0.5)
    v['Output/weight'] = rand(rng, ch[4], cmap)
    v['Output/bias'] = rand(rng, cmap, scale=0.5)
    return tf_net(name, kw, v, func='D_main'), kw

# ----------------------------------------------------------------------------------------------
# Float64 oracle of the TF networks.


def all_variables(state, prefix=''):
    out = {prefix + name: np.asarray(value, dtype=np.float64) for name, value in state['variables']}
    for comp_name, comp in state['components'].items():
        out.update(all_variables(comp.state, f'{prefix}{comp_name}/'))
    return out


def act(x, name='lrelu'):
    return np.where(x >= 0, x, 0.2 * x) * SQRT2 if name == 'lrelu' else x


def dense(v, name, x, lrmul=1.0, activation='linear'):
    W = v[f'{name}/weight']
    return act(x @ (W * lrmul / np.sqrt(W.shape[0])) + v[f'{name}/bias'] * lrmul, activation)


def normalize(x):
    return x / np.sqrt(np.mean(x ** 2, axis=1, keepdims=True) + 1e-8)


def correlate_valid(x, w):
    """Cross-correlation, VALID: x [N, I, H, W], w [kh, kw, I, O] or per-sample [N, kh, kw, I, O]."""
    kh, kw = w.shape[-4:-2]
    H, W = x.shape[2] - kh + 1, x.shape[3] - kw + 1
    out = 0
    for a in range(kh):
        for b in range(kw):
            patch = x[:, :, a:a + H, b:b + W]
            out = out + (np.einsum('niyx,nio->noyx', patch, w[:, a, b]) if w.ndim == 5
                         else np.einsum('niyx,io->noyx', patch, w[a, b]))
    return out


def pad(x, before, after):
    return np.pad(x, [(0, 0), (0, 0), (before, after), (before, after)])


def fir(x, k, before, after):
    """Pad, then filter every channel with the 2-D kernel k (VALID)."""
    N, C = x.shape[:2]
    padded = pad(x, before, after)
    y = correlate_valid(padded.reshape(N * C, 1, *padded.shape[2:]), k[:, :, None, None])
    return y.reshape(N, C, *y.shape[2:])


def zero_stuff(x, length):
    """x at even positions of an array `length` long per spatial axis."""
    out = np.zeros(x.shape[:2] + (length, length))
    out[:, :, ::2, ::2] = x
    return out


def modulated_weight(v, name, w_latent, demodulate=True):
    W = v[f'{name}/weight']
    w_dim = v[f'{name}/mod_weight'].shape[0]
    s = w_latent @ (v[f'{name}/mod_weight'] / np.sqrt(w_dim)) + (v[f'{name}/mod_bias'] + 1)
    fan_in = W.shape[0] * W.shape[1] * W.shape[2]
    ww = W[None] / np.sqrt(fan_in) * s[:, None, None, :, None]
    if demodulate:
        ww = ww / np.sqrt(np.sum(ww ** 2, axis=(1, 2, 3), keepdims=True) + 1e-8)
    return ww


def synthesis_layer(v, name, noise_name, x, w_latent, up=False):
    ww = modulated_weight(v, name, w_latent)
    K = ww.shape[1]
    if up:
        x = correlate_valid(pad(zero_stuff(x, 2 * x.shape[2] - 1), K - 1, K - 1), ww)
        x = fir(x, FIR * 4, 1, 1)
    else:
        x = correlate_valid(pad(x, K // 2, K // 2), ww)
    x = x + v[noise_name][0, 0] * v[f'{name}/noise_strength']
    return act(x + v[f'{name}/bias'][None, :, None, None])


def torgb(v, name, x, w_latent):
    ww = modulated_weight(v, name, w_latent, demodulate=False)
    return correlate_valid(x, ww) + v[f'{name}/bias'][None, :, None, None]


def upsample2d(y):
    stuffed = np.zeros(y.shape[:2] + (2 * y.shape[2], 2 * y.shape[3]))
    stuffed[:, :, ::2, ::2] = y
    return fir(stuffed, FIR * 4, 2, 1)


def oracle_mapping(v, kw, z, c, psi=1.0):
    x = normalize(z)
    if kw['label_size']:
        x = np.concatenate([x, normalize(dense(v, 'mapping/LabelEmbed', c))], axis=1)
    for i in range(kw['mapping_layers']):
        x = dense(v, f'mapping/Dense{i}', x, lrmul=kw['mapping_lrmul'], activation='lrelu')
    num_ws = 2 * int(np.log2(kw['resolution'])) - 2
    ws = np.repeat(x[:, None], num_ws, axis=1)
    return v['dlatent_avg'] + psi * (ws - v['dlatent_avg'])


def oracle_synthesis(v, kw, ws, architecture='skip'):
    torgb_name = (lambda res: f'synthesis/ToRGB_lod{log2 - int(np.log2(res))}') if architecture == 'orig' else \
                 (lambda res: f'synthesis/{res}x{res}/ToRGB')
    log2 = int(np.log2(kw['resolution']))
    x = np.repeat(v['synthesis/4x4/Const/const'], ws.shape[0], axis=0)
    x = synthesis_layer(v, 'synthesis/4x4/Conv', 'synthesis/noise0', x, ws[:, 0])
    y = torgb(v, torgb_name(4), x, ws[:, 1]) if architecture == 'skip' else None
    for res in [2 ** i for i in range(3, log2 + 1)]:
        k = 2 * int(np.log2(res))
        x = synthesis_layer(v, f'synthesis/{res}x{res}/Conv0_up', f'synthesis/noise{k - 5}', x, ws[:, k - 5], up=True)
        x = synthesis_layer(v, f'synthesis/{res}x{res}/Conv1', f'synthesis/noise{k - 4}', x, ws[:, k - 4])
        if architecture == 'skip':
            y = upsample2d(y) + torgb(v, torgb_name(res), x, ws[:, k - 3])
        elif res == kw['resolution']:
            y = torgb(v, torgb_name(res), x, ws[:, k - 3])
    return y


def conv(v, name, x, stride=1, padding=0, bias=True, activation='lrelu'):
    W = v[f'{name}/weight']
    y = correlate_valid(pad(x, padding, padding), W / np.sqrt(np.prod(W.shape[:3])))[:, :, ::stride, ::stride]
    return act(y + v[f'{name}/bias'][None, :, None, None], activation) if bias else y


def minibatch_stddev(x, group_size, num_features):
    N, C, H, W = x.shape
    G = min(group_size, N)
    y = x.reshape(G, N // G, num_features, C // num_features, H, W)
    y = y - y.mean(axis=0)
    y = np.sqrt((y ** 2).mean(axis=0) + 1e-8)       # [N/G, F, c, H, W]
    y = y.mean(axis=(2, 3, 4))                        # [N/G, F]
    y = np.tile(y, (G, 1))[:, :, None, None] * np.ones((1, 1, H, W))  # sample g*(N/G)+m gets group m
    return np.concatenate([x, y], axis=1)


def oracle_discriminator(v, kw, img, c):
    R = kw['resolution']
    x = conv(v, f'{R}x{R}/FromRGB', img)
    for res in [2 ** i for i in range(int(np.log2(R)), 2, -1)]:
        t = conv(v, f'{res}x{res}/Conv0', x, padding=1)
        t = conv(v, f'{res}x{res}/Conv1_down', fir(t, FIR, 2, 2), stride=2)
        skip = conv(v, f'{res}x{res}/Skip', fir(x, FIR, 1, 1), stride=2, bias=False)
        x = (t + skip) * np.sqrt(0.5)
    x = minibatch_stddev(x, kw['mbstd_group_size'], kw['mbstd_num_features'])
    x = conv(v, '4x4/Conv', x, padding=1)
    x = dense(v, '4x4/Dense0', x.reshape(x.shape[0], -1), activation='lrelu')
    out = dense(v, 'Output', x)
    cmap = normalize(dense(v, 'LabelEmbed', c))
    for i in range(kw['mapping_layers']):
        cmap = dense(v, f'Mapping{i}', cmap, lrmul=0.1, activation='lrelu')
    return np.sum(out * cmap, axis=1, keepdims=True) / np.sqrt(cmap.shape[1])

# ----------------------------------------------------------------------------------------------
# Helpers.


def rel_error(actual, expected):
    return float(np.max(np.abs(np.asarray(actual, dtype=np.float64) - expected)) / np.max(np.abs(expected)))


def assert_close(actual, expected, what):
    err = rel_error(actual, expected)
    print(f'{what}: max |error| / max |expected| = {err:.2e}')
    assert err < RTOL, f'{what}: relative error {err:.2e} exceeds {RTOL}'


def assert_one_sentence(message):
    assert '\n' not in message and message.endswith('.'), message
    assert not re.search(r'[.!?]\s+[A-Z]', message), message


def run_G(G, z, c, psi):
    with torch.no_grad():
        return G(torch.from_numpy(z).float(), torch.from_numpy(c).float(), truncation_psi=psi,
                 noise_mode='const').double().numpy()


def run_synthesis(G, ws):
    with torch.no_grad():
        return G.synthesis(torch.from_numpy(ws).float(), noise_mode='const').double().numpy()


@pytest.fixture(scope='module')
def loaded():
    """A whole TF pickle, dumped, loaded without TF and converted (shared by the numerical tests)."""
    rng = np.random.default_rng(123)
    tf_G, kw_g = make_tf_G(rng, 'G')
    tf_Gs, _ = make_tf_G(rng, 'Gs')
    tf_D, kw_d = make_tf_D(rng)
    with pytest.MonkeyPatch.context() as mp:
        data = load_blocking_tflib(mp, dump_tf_pickle(mp, (tf_G, tf_D, tf_Gs)))
    converted = tf_stylegan2.convert_tf_pickle(data)
    return dict(converted=converted, tf=dict(G=tf_G, D=tf_D, G_ema=tf_Gs), kw_g=kw_g, kw_d=kw_d, rng=rng)

# ----------------------------------------------------------------------------------------------
# Loading.


@pytest.mark.parametrize('protocol', [2, 4])
def test_loads_as_stubs_without_tflib(monkeypatch, protocol):
    rng = np.random.default_rng(0)
    nets = (make_tf_G(rng, 'G')[0], make_tf_D(rng)[0], make_tf_G(rng, 'Gs')[0])
    data = load_blocking_tflib(monkeypatch, dump_tf_pickle(monkeypatch, nets, protocol=protocol))
    assert tf_stylegan2.is_tf_pickle(data)
    assert [type(net) for net in data] == [TFNetworkStub] * 3
    assert 'dnnlib.tflib' not in sys.modules and 'dnnlib.tflib.network' not in sys.modules
    G = data[0]
    assert G['version'] == 4 and G.name == 'G' and G.static_kwargs['resolution'] == 16
    assert set(G.components) == {'mapping', 'synthesis'} and isinstance(G.components['synthesis'], TFNetworkStub)
    original = dict(nets[0].state['components']['synthesis'].state['variables'])
    for name, value in G.components['synthesis'].variables:
        np.testing.assert_array_equal(value, original[name])


def test_is_tf_pickle_rejects_other_data():
    stub = TFNetworkStub(version=4)
    assert tf_stylegan2.is_tf_pickle((stub, stub, stub))
    assert not tf_stylegan2.is_tf_pickle([stub, stub, stub])
    assert not tf_stylegan2.is_tf_pickle((stub, stub))
    assert not tf_stylegan2.is_tf_pickle((stub, stub, dict(stub)))
    assert not tf_stylegan2.is_tf_pickle(dict(G=stub, D=stub, G_ema=stub))
    with pytest.raises(TFConversionError) as info:
        tf_stylegan2.convert_tf_pickle({'G': 1})
    assert_one_sentence(str(info.value))


def test_converted_pickle_structure(loaded):
    converted, kw = loaded['converted'], loaded['kw_g']
    assert set(converted) == {'G', 'D', 'G_ema'}
    G, D, G_ema = converted['G'], converted['D'], converted['G_ema']
    assert isinstance(G, networks_stylegan2.Generator) and isinstance(G_ema, networks_stylegan2.Generator)
    assert isinstance(D, networks_stylegan2.Discriminator)
    for net in (G, D, G_ema):
        assert not net.training and not any(p.requires_grad for p in net.parameters())
    assert (G.z_dim, G.c_dim, G.w_dim, G.img_resolution, G.img_channels, G.num_ws) == (8, 3, 8, 16, 3, 6)
    assert G.mapping.fc0.weight.shape == (6, 13) and G.mapping.embed.weight.shape == (5, 3)
    assert G.mapping.w_avg_beta == 0.995 and G.mapping.fc0.weight_gain == pytest.approx(0.01 / np.sqrt(13))
    assert G.synthesis.b16.conv1.weight.shape == (4, 4, 3, 3) and G.synthesis.b4.architecture == 'skip'
    assert D.b4.out.weight.shape == (6, 8) and D.b4.mbstd.group_size == 2 and D.b4.mbstd.num_channels == 2
    assert D.mapping.fc0.weight_gain == pytest.approx(0.1 / np.sqrt(6))
    # G and G_ema come from different TF networks.
    assert not torch.equal(G.synthesis.b8.conv1.weight, G_ema.synthesis.b8.conv1.weight)
    # Pickles of converted networks load again without executing code.
    again = persistence.load(io.BytesIO(pickle.dumps(G_ema)))
    assert torch.equal(again.synthesis.b8.conv0.weight, G_ema.synthesis.b8.conv0.weight)
    assert again.init_kwargs.synthesis_kwargs['channel_base'] == 2 * kw['fmap_base']

# ----------------------------------------------------------------------------------------------
# Numerics.


@pytest.mark.parametrize('key', ['G', 'G_ema'])
def test_generator_matches_tf_oracle(loaded, key):
    G, kw = loaded['converted'][key], loaded['kw_g']
    v = all_variables(loaded['tf'][key].state)
    rng = np.random.default_rng(5)
    z, c = rng.standard_normal([3, 8]), rng.standard_normal([3, 3])
    psi = 0.7
    expected = oracle_synthesis(v, kw, oracle_mapping(v, kw, z, c, psi))
    assert_close(run_G(G, z, c, psi), expected, f'{key}(z, c, psi={psi})')
    # A distinct w for every layer checks which w each layer reads (style mixing).
    ws = rng.standard_normal([3, G.num_ws, 8])
    assert_close(run_synthesis(G, ws), oracle_synthesis(v, kw, ws), f'{key}.synthesis(distinct ws)')
    with torch.no_grad():
        w_mapped = G.mapping(torch.from_numpy(z).float(), torch.from_numpy(c).float(), truncation_psi=psi)
    w_mapped = w_mapped.double().numpy()
    assert_close(w_mapped, oracle_mapping(v, kw, z, c, psi), f'{key}.mapping')


def test_generator_flip_of_upsampling_conv_matters(loaded):
    """A converter that forgot to flip Conv0_up kernels would not match the TF oracle."""
    G = loaded['converted']['G']
    v = all_variables(loaded['tf']['G'].state)
    ws = np.random.default_rng(6).standard_normal([2, G.num_ws, 8])
    expected = oracle_synthesis(v, loaded['kw_g'], ws)
    assert rel_error(run_synthesis(G, ws), expected) < RTOL
    unflipped = networks_stylegan2.Generator(**G.init_kwargs).eval().requires_grad_(False)
    unflipped.load_state_dict(G.state_dict())
    with torch.no_grad():
        for res in (8, 16):
            layer = getattr(unflipped.synthesis, f'b{res}').conv0
            layer.weight.copy_(layer.weight.flip([2, 3]))
    err = rel_error(run_synthesis(unflipped, ws), expected)
    print(f'G without the Conv0_up flip: relative error {err:.2e}')
    assert err > 100 * RTOL


def test_discriminator_matches_tf_oracle(loaded):
    D, kw = loaded['converted']['D'], loaded['kw_d']
    v = all_variables(loaded['tf']['D'].state)
    rng = np.random.default_rng(7)
    img, c = rng.standard_normal([4, 3, 16, 16]), rng.standard_normal([4, 3])
    with torch.no_grad():
        logits = D(torch.from_numpy(img).float(), torch.from_numpy(c).float()).double().numpy()
    assert logits.shape == (4, 1)
    assert_close(logits, oracle_discriminator(v, kw, img, c), 'D(img, c)')


def test_orig_architecture_with_lod_torgb(monkeypatch):
    rng = np.random.default_rng(11)
    tf_G, kw = make_tf_G(rng, 'Gs', lod_torgb=True, resolution=8, label_size=0)
    del kw['architecture']
    tf_G.state['static_kwargs'].pop('architecture')
    data = load_blocking_tflib(monkeypatch, dump_tf_pickle(monkeypatch, tf_G))
    G = tf_stylegan2.convert_tf_generator(data)
    assert G.init_kwargs.synthesis_kwargs['architecture'] == 'orig'
    assert G.synthesis.b8.architecture == 'orig' and not hasattr(G.synthesis.b4, 'torgb')
    assert G.num_ws == 4
    v = all_variables(tf_G.state)
    ws = rng.standard_normal([2, G.num_ws, 8])
    assert_close(run_synthesis(G, ws), oracle_synthesis(v, kw, ws, architecture='orig'), "orig G.synthesis")
    z = rng.standard_normal([2, 8])
    assert_close(run_G(G, z, np.zeros([2, 0]), 1.0), oracle_synthesis(v, kw, oracle_mapping(v, kw, z, None), 'orig'),
                 "orig G(z)")

# ----------------------------------------------------------------------------------------------
# Errors.


def stub_from(net):
    """The stub the loader would produce, without a round trip through pickle."""
    stub = TFNetworkStub.__new__(TFNetworkStub)
    state = dict(net.state)
    state['components'] = {name: stub_from(comp) for name, comp in state['components'].items()}
    stub.__setstate__(state)
    return stub


def conversion_error(convert, stub):
    with pytest.raises(TFConversionError) as info:
        convert(stub)
    message = str(info.value)
    assert_one_sentence(message)
    return message


def test_old_version_is_rejected():
    G = stub_from(make_tf_G(np.random.default_rng(1))[0])
    G['version'] = 3
    assert 'version 3' in conversion_error(tf_stylegan2.convert_tf_generator, G)
    D = stub_from(make_tf_D(np.random.default_rng(1))[0])
    D['version'] = 3
    assert 'version 3' in conversion_error(tf_stylegan2.convert_tf_discriminator, D)
    G = stub_from(make_tf_G(np.random.default_rng(1))[0])
    G.components['synthesis']['version'] = 2
    assert 'version 2' in conversion_error(tf_stylegan2.convert_tf_generator, G)


def test_unknown_kwarg_is_named():
    G = stub_from(make_tf_G(np.random.default_rng(1), dlatent_avg_beta=0.99)[0])
    assert "'dlatent_avg_beta'" in conversion_error(tf_stylegan2.convert_tf_generator, G)
    D = stub_from(make_tf_D(np.random.default_rng(1), mbstd_strange=3)[0])
    assert "'mbstd_strange'" in conversion_error(tf_stylegan2.convert_tf_discriminator, D)


def test_configs_a_to_d_are_rejected():
    G = stub_from(make_tf_G(np.random.default_rng(1), fmap_decay=0.5)[0])
    assert 'A-D' in conversion_error(tf_stylegan2.convert_tf_generator, G)


def test_missing_variable_is_named():
    G = stub_from(make_tf_G(np.random.default_rng(1))[0])
    synthesis = G.components['synthesis']
    synthesis['variables'] = [(n, a) for n, a in synthesis['variables'] if n != '8x8/Conv0_up/mod_bias']
    message = conversion_error(tf_stylegan2.convert_tf_generator, G)
    assert "'synthesis/8x8/Conv0_up/mod_bias'" in message and "'synthesis.b8.conv0.affine.bias'" in message
    D = stub_from(make_tf_D(np.random.default_rng(1))[0])
    D['variables'] = [(n, a) for n, a in D['variables'] if n != 'Output/bias']
    assert "'Output/bias'" in conversion_error(tf_stylegan2.convert_tf_discriminator, D)


def test_shape_mismatch_names_both_shapes():
    G = stub_from(make_tf_G(np.random.default_rng(1))[0])
    synthesis = G.components['synthesis']
    synthesis['variables'] = [(n, np.zeros([3, 3, 8, 5], np.float32) if n == '8x8/Conv1/weight' else a)
                              for n, a in synthesis['variables']]
    message = conversion_error(tf_stylegan2.convert_tf_generator, G)
    assert "'synthesis/8x8/Conv1/weight'" in message and '[3, 3, 8, 5]' in message and '[3, 3, 8, 8]' in message


def test_unused_variables_are_ignored_and_rng_untouched():
    G = stub_from(make_tf_G(np.random.default_rng(1))[0])
    G['variables'] = G['variables'] + [('some/extra/variable', np.zeros([7], np.float32))]
    torch.manual_seed(0)
    before = torch.randn(3)
    torch.manual_seed(0)
    tf_stylegan2.convert_tf_generator(G)
    assert torch.equal(torch.randn(3), before)

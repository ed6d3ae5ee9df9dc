"""Behaviour shared by the StyleGAN2 and StyleGAN3 generators and the discriminator.

Numerics against float64 oracles live in test_networks_stylegan2.py / test_networks_stylegan3.py;
this file checks the contracts users and the training loop rely on: determinism, truncation, labels,
gradients, precision on CPU, and pickles (trusted and no-exec).
"""

import copy
import io
import pickle

import pytest
import torch

from torch_utils import persistence
from training import networks_stylegan2 as sg2
from training import networks_stylegan3 as sg3

Z_DIM = W_DIM = 8
C_DIM = 3


def _sg2_generator(c_dim=0, **kwargs):
    return sg2.Generator(z_dim=Z_DIM, c_dim=c_dim, w_dim=W_DIM, img_resolution=16, img_channels=3,
                         mapping_kwargs=dict(num_layers=2), channel_base=64, channel_max=8, **kwargs)


def _sg3_generator(c_dim=0, **kwargs):
    return sg3.Generator(z_dim=Z_DIM, c_dim=c_dim, w_dim=W_DIM, img_resolution=16, img_channels=3,
                         channel_base=256, channel_max=16, **kwargs)


def _sg3r_generator(c_dim=0, **kwargs):
    return _sg3_generator(c_dim, conv_kernel=1, use_radial_filters=True, **kwargs)


def _discriminator(c_dim=0, **kwargs):
    return sg2.Discriminator(c_dim=c_dim, img_resolution=16, img_channels=3, channel_base=64, channel_max=8,
                             epilogue_kwargs=dict(mbstd_group_size=2), **kwargs)


GENERATORS = {'stylegan2': _sg2_generator, 'stylegan3-t': _sg3_generator, 'stylegan3-r': _sg3r_generator}


def _randomize_noise_strengths(G):
    # Official initial noise strength is 0; make the noise inputs matter.
    with torch.no_grad():
        for name, p in G.named_parameters():
            if name.endswith('noise_strength'):
                p.fill_(0.5)
    return G


def _inputs(G, n=2, seed=0):
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn([n, G.z_dim], generator=gen)
    c = torch.randn([n, G.c_dim], generator=gen) if G.c_dim else None
    return z, c


@pytest.fixture(params=sorted(GENERATORS))
def make_G(request):
    return GENERATORS[request.param]


# ----------------------------------------------------------------------------------------------
# Determinism, noise and truncation.


def test_const_noise_is_deterministic_and_random_noise_is_not():
    torch.manual_seed(0)
    G = _randomize_noise_strengths(_sg2_generator())
    z, c = _inputs(G)
    a = G(z, c, noise_mode='const')
    b = G(z, c, noise_mode='const')
    assert torch.equal(a, b)
    assert not torch.allclose(G(z, c, noise_mode='random'), G(z, c, noise_mode='random'))
    assert not torch.allclose(a, G(z, c, noise_mode='none'))


def test_generators_are_deterministic(make_G):
    torch.manual_seed(0)
    G = make_G()
    z, c = _inputs(G)
    assert torch.equal(G(z, c, noise_mode='const'), G(z, c, noise_mode='const'))


def test_unknown_noise_mode_is_refused(make_G):
    G = make_G()
    z, c = _inputs(G)
    with pytest.raises(ValueError, match='noise_mode'):
        G(z, c, noise_mode='constant')


def test_truncation_psi_zero_gives_the_image_of_w_avg(make_G):
    torch.manual_seed(0)
    G = make_G()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn([W_DIM]))
        z, c = _inputs(G, n=3)
        img = G(z, c, truncation_psi=0, noise_mode='const')
        ws_avg = G.mapping.w_avg.reshape(1, 1, -1).repeat(3, G.num_ws, 1)
        ref = G.synthesis(ws_avg, noise_mode='const')
    torch.testing.assert_close(img, ref, rtol=0, atol=1e-6)
    # Every sample is the same image.
    assert torch.allclose(img[0], img[1], atol=1e-6) and torch.allclose(img[0], img[2], atol=1e-6)


def test_truncation_cutoff_only_touches_the_first_ws(make_G):
    torch.manual_seed(0)
    G = make_G()
    with torch.no_grad():
        G.mapping.w_avg.copy_(torch.randn([W_DIM]))
        z, c = _inputs(G)
        ws = G.mapping(z, c)
        cut = G.mapping(z, c, truncation_psi=0.5, truncation_cutoff=2)
    w_avg = G.mapping.w_avg
    torch.testing.assert_close(cut[:, :2], w_avg + 0.5 * (ws[:, :2] - w_avg))
    assert torch.equal(cut[:, 2:], ws[:, 2:])


def test_w_avg_tracks_the_batch_mean_only_when_asked(make_G):
    torch.manual_seed(0)
    G = make_G()
    z, c = _inputs(G, n=4)
    with torch.no_grad():
        G.mapping.w_avg.fill_(1.0)
        G(z, c, noise_mode='const')
        assert torch.equal(G.mapping.w_avg, torch.ones([W_DIM]))
        ws = G.mapping(z, c)
        G(z, c, noise_mode='const', update_emas=True)
    beta = G.mapping.w_avg_beta
    expected = ws[:, 0].mean(dim=0) + beta * (1.0 - ws[:, 0].mean(dim=0))
    torch.testing.assert_close(G.mapping.w_avg, expected)


def test_float64_latents_are_accepted(make_G):
    # gen_images passes numpy float64 latents.
    torch.manual_seed(0)
    G = make_G()
    z, c = _inputs(G)
    img = G(z.double(), c, noise_mode='const')
    assert img.dtype == torch.float32
    torch.testing.assert_close(img, G(z, c, noise_mode='const'))

# ----------------------------------------------------------------------------------------------
# Labels.


def test_conditional_generator_depends_on_the_label(make_G):
    torch.manual_seed(0)
    G = make_G(c_dim=C_DIM)
    z, c = _inputs(G)
    assert G.c_dim == C_DIM and G.mapping.embed.weight.shape == (W_DIM, C_DIM)
    a = G(z, c, noise_mode='const')
    b = G(z, c + 1, noise_mode='const')
    assert a.shape == (2, 3, 16, 16)
    assert (a - b).abs().max() > 1e-4


def test_conditional_discriminator_projects_onto_the_mapped_label():
    torch.manual_seed(0)
    D = _discriminator(c_dim=C_DIM)
    img = torch.randn([2, 3, 16, 16])
    c = torch.randn([2, C_DIM])
    logits = D(img, c)
    assert logits.shape == (2, 1)
    # The logit is linear in the mapped label: doubling cmap doubles it.
    cmap = D.mapping(None, c)
    x = None
    x_img = img
    for res in D.block_resolutions:
        x, x_img = getattr(D, f'b{res}')(x, x_img)
    torch.testing.assert_close(D.b4(x, x_img, 2 * cmap), 2 * logits, rtol=1e-5, atol=1e-6)
    assert (D(img, c + 1) - logits).abs().max() > 1e-5


def test_unconditional_discriminator_ignores_the_label():
    torch.manual_seed(0)
    D = _discriminator()
    img = torch.randn([4, 3, 16, 16])
    assert torch.equal(D(img, None), D(img, torch.zeros([4, 0])))

# ----------------------------------------------------------------------------------------------
# Gradients.


def _assert_every_parameter_gets_a_gradient(net):
    missing = [name for name, p in net.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f'no gradient reaches {missing}'


def test_gradients_reach_every_generator_parameter(make_G):
    torch.manual_seed(0)
    G = make_G(c_dim=C_DIM)
    z, c = _inputs(G, n=2)
    (G(z, c, noise_mode='random') * torch.randn([2, 3, 16, 16])).sum().backward()
    _assert_every_parameter_gets_a_gradient(G)


@pytest.mark.parametrize('architecture', ['resnet', 'skip', 'orig'])
def test_gradients_reach_every_discriminator_parameter(architecture):
    torch.manual_seed(0)
    D = _discriminator(c_dim=C_DIM, architecture=architecture)
    img = torch.randn([4, 3, 16, 16], requires_grad=True)
    D(img, torch.randn([4, C_DIM])).sum().backward()
    _assert_every_parameter_gets_a_gradient(D)
    assert img.grad.abs().sum() > 0


def test_frozen_discriminator_layers_are_buffers():
    D = _discriminator(block_kwargs=dict(freeze_layers=2))
    names = dict(D.named_parameters())
    buffers = dict(D.named_buffers())
    assert 'b16.fromrgb.weight' in buffers and 'b16.conv0.weight' in buffers
    assert 'b16.conv1.weight' in names and 'b8.conv0.weight' in names

# ----------------------------------------------------------------------------------------------
# Precision and official argument forms.


def test_fp16_resolutions_run_in_float32_on_cpu(make_G):
    torch.manual_seed(0)
    G16 = make_G(num_fp16_res=4)
    G32 = make_G(num_fp16_res=0)
    G32.load_state_dict(G16.state_dict())
    z, c = _inputs(G16)
    img = G16(z, c, noise_mode='const')
    assert img.dtype == torch.float32
    assert torch.equal(img, G32(z, c, noise_mode='const'))


def test_stylegan2_ada_synthesis_kwargs_dict_is_accepted():
    # StyleGAN2-ADA constructs Generator(..., synthesis_kwargs={...}); its pickles record that form.
    a = sg2.Generator(Z_DIM, 0, W_DIM, 16, 3, mapping_kwargs=dict(num_layers=2),
                      synthesis_kwargs=dict(channel_base=64, channel_max=8, architecture='resnet'))
    b = _sg2_generator(architecture='resnet')
    assert [(n, p.shape) for n, p in a.named_parameters()] == [(n, p.shape) for n, p in b.named_parameters()]
    # A pickle recording that form rebuilds through the no-exec loader.
    loaded = persistence.load(io.BytesIO(pickle.dumps(a.eval())))
    assert loaded.init_kwargs['synthesis_kwargs']['architecture'] == 'resnet'
    z, _ = _inputs(a)
    assert torch.equal(loaded(z, None, noise_mode='const'), a(z, None, noise_mode='const'))


def test_fused_and_unfused_modulated_convolution_agree():
    torch.manual_seed(0)
    G = _randomize_noise_strengths(_sg2_generator())
    z, _ = _inputs(G)
    fused = G(z, None, noise_mode='const', fused_modconv=True)
    unfused = G(z, None, noise_mode='const', fused_modconv=False)
    torch.testing.assert_close(fused, unfused, rtol=1e-4, atol=1e-5)


def test_inference_only_fuses_in_eval_mode_only(monkeypatch):
    torch.manual_seed(0)
    G = _sg2_generator(fused_modconv_default='inference_only')
    seen = []
    original = sg2.modulated_conv2d

    def spy(*args, **kwargs):
        seen.append(kwargs['fused_modconv'])
        return original(*args, **kwargs)
    monkeypatch.setattr(sg2, 'modulated_conv2d', spy)
    z, _ = _inputs(G)
    G.train()(z, None)
    assert seen and not any(seen)
    seen.clear()
    G.eval()(z, None)
    assert seen and all(seen)


def test_bad_resolution_is_one_clear_error():
    with pytest.raises(ValueError, match='power of two'):
        sg2.Generator(Z_DIM, 0, W_DIM, 48, 3)
    with pytest.raises(ValueError, match='power of two'):
        sg2.Discriminator(0, 2, 3)

# ----------------------------------------------------------------------------------------------
# Pickles.


def _networks():
    torch.manual_seed(0)
    nets = {name: make(c_dim=C_DIM) for name, make in GENERATORS.items()}
    nets['D'] = _discriminator(c_dim=C_DIM)
    for net in nets.values():
        _randomize_noise_strengths(net)
        with torch.no_grad():
            for name, b in net.named_buffers():
                if name.endswith(('w_avg', 'magnitude_ema')):
                    b.copy_(torch.rand_like(b) + 0.5)
        net.eval().requires_grad_(False)
    return nets


def _outputs(nets):
    torch.manual_seed(1)
    z = torch.randn([2, Z_DIM])
    c = torch.randn([2, C_DIM])
    img = torch.randn([2, 3, 16, 16])
    out = {}
    for name, net in nets.items():
        if name == 'D':
            out[name] = net(img, c)
        else:
            out[name] = net(z, c, truncation_psi=0.7, noise_mode='const')
    return out


def test_pickle_round_trip_through_persistence_runs_the_same_function():
    nets = _networks()
    expected = _outputs(nets)
    loaded = pickle.loads(pickle.dumps(nets))
    for name, net in loaded.items():
        assert persistence.is_persistent(net) and type(net).__name__ == type(nets[name]).__name__
    got = _outputs(loaded)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name


def test_no_exec_loader_rebuilds_our_classes_with_identical_outputs():
    nets = _networks()
    expected = _outputs(nets)
    loaded = persistence.load(io.BytesIO(pickle.dumps(dict(nets, training_set_kwargs=dict(resolution=16)))))
    assert loaded['training_set_kwargs'] == dict(resolution=16)
    for name in nets:
        assert type(loaded[name]) is type(nets[name])
        assert loaded[name].training is False
    got = _outputs({name: loaded[name] for name in nets})
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    # Buffers such as the user transform and magnitude statistics come back too.
    for name in nets:
        for (na, a), (nb, b) in zip(nets[name].named_buffers(), loaded[name].named_buffers()):
            assert na == nb and torch.equal(a, b)


def _foreign_source(module, class_names):
    # What an official pickle embeds: a different file defining the same top-level classes.
    # It raises if it is ever executed, so loading proves that nothing from the file ran.
    lines = ['raise RuntimeError("the embedded source was executed")', 'import torch']
    for name in class_names:
        lines += [f'class {name}(torch.nn.Module):', '    pass']
    return '\n'.join(lines) + '\n'


OFFICIAL_CLASS_NAMES = {
    'training.networks_stylegan2': ['FullyConnectedLayer', 'Conv2dLayer', 'MappingNetwork', 'SynthesisLayer',
                                    'ToRGBLayer', 'SynthesisBlock', 'SynthesisNetwork', 'Generator',
                                    'DiscriminatorBlock', 'MinibatchStdLayer', 'DiscriminatorEpilogue',
                                    'Discriminator'],
    'training.networks_stylegan3': ['FullyConnectedLayer', 'MappingNetwork', 'SynthesisInput', 'SynthesisLayer',
                                    'SynthesisNetwork', 'Generator'],
}


def test_official_module_sources_are_recognised_without_executing_them(monkeypatch):
    nets = _networks()
    expected = _outputs(nets)
    data = pickle.dumps(nets)
    by_source = {sg2.Generator._orig_module_src: 'training.networks_stylegan2',
                 sg3.Generator._orig_module_src: 'training.networks_stylegan3'}

    def as_official(meta):
        key = by_source[meta.module_src]
        # Official files also define helpers (modulated_conv2d, normalize_2nd_moment) at top level.
        meta.module_src = _foreign_source(key, OFFICIAL_CLASS_NAMES[key] + ['modulated_conv2d'])
        return meta
    monkeypatch.setattr(persistence, '_import_hooks', [as_official])
    loaded = persistence.load(io.BytesIO(data))
    got = _outputs(loaded)
    for name in expected:
        assert type(loaded[name]) is type(nets[name])
        assert torch.equal(got[name], expected[name]), name


def test_deepcopy_keeps_the_function():
    # The training loop builds G_ema with copy.deepcopy(G).
    nets = _networks()
    copies = {name: copy.deepcopy(net) for name, net in nets.items()}
    expected, got = _outputs(nets), _outputs(copies)
    for name in expected:
        assert torch.equal(got[name], expected[name]), name
    for name in nets:
        assert [n for n, _ in nets[name].named_parameters()] == [n for n, _ in copies[name].named_parameters()]

# ----------------------------------------------------------------------------------------------
# CUDA (run where a GPU is available).


@pytest.mark.gpu
@pytest.mark.parametrize('name', sorted(GENERATORS))
def test_fp16_on_cuda_stays_close_to_fp32(name):
    torch.manual_seed(0)
    G = GENERATORS[name](num_fp16_res=4, conv_clamp=256).cuda().eval()
    z, c = _inputs(G)
    z = z.cuda()
    with torch.no_grad():
        mixed = G(z, c, noise_mode='const')
        full = G(z, c, noise_mode='const', force_fp32=True)
    assert mixed.dtype == torch.float32
    assert (mixed - full).abs().max() < 0.05 * full.abs().max() + 1e-3

# ----------------------------------------------------------------------------------------------
# Self-contained pickles.

_LOAD_WITHOUT_TRAINING = r'''
import importlib.abc, pickle, sys, torch

class NoTraining(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name == 'training' or name.startswith('training.'):
            raise ImportError('the training package is hidden in this test')
        return None

sys.meta_path.insert(0, NoTraining())
with open(sys.argv[1], 'rb') as f:
    data = pickle.load(f)
out = {}
for name, net in data['nets'].items():
    out[name] = net(data['img'], data['c']) if name == 'D' else net(data['z'], data['c'], noise_mode='const')
assert not any(m == 'training' or m.startswith('training.') for m in sys.modules)
torch.save(out, sys.argv[2])
'''


def test_our_pickles_load_and_run_where_only_dnnlib_and_torch_utils_import(tmp_path):
    # Contract: a snapshot loads anywhere dnnlib and torch_utils import, so the embedded network
    # sources must not import the training package (or each other).
    import subprocess
    import sys
    nets = _networks()
    torch.manual_seed(1)
    data = dict(nets=nets, z=torch.randn([2, Z_DIM]), c=torch.randn([2, C_DIM]), img=torch.randn([2, 3, 16, 16]))
    with open(tmp_path / 'nets.pkl', 'wb') as f:
        pickle.dump(data, f)
    script = tmp_path / 'load.py'
    script.write_text(_LOAD_WITHOUT_TRAINING)
    result = subprocess.run([sys.executable, str(script), str(tmp_path / 'nets.pkl'), str(tmp_path / 'out.pt')],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    got = torch.load(tmp_path / 'out.pt')
    for name, net in nets.items():
        expected = net(data['img'], data['c']) if name == 'D' else net(data['z'], data['c'], noise_mode='const')
        assert torch.equal(got[name], expected), name

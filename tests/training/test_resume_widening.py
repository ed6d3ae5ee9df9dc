"""Resuming a model that declares a widening (Ray Conditioning from a 2D pickle): widened tensors get the
2D weights in their first channels (snapshots.copy_weights_by_name over networks_raycond2.widening_from_2d)."""

import pytest
import torch

from training import networks_raycond2, snapshots


class Layer(torch.nn.Module):
    def __init__(self, in_channels, out_channels, w_dim=4):
        super().__init__()
        self.affine = torch.nn.Linear(w_dim, in_channels)
        self.weight = torch.nn.Parameter(torch.randn([out_channels, in_channels, 3, 3]))
        self.bias = torch.nn.Parameter(torch.randn([out_channels]))


class Net(torch.nn.Module):
    """Stands for a generator or a discriminator; with `rays`, it declares the Ray Conditioning widening."""

    def __init__(self, extra, label_dim=0, label_kind='none', rays=False):
        super().__init__()
        self.conv0 = Layer(8 + extra, 16)
        self.conv1 = Layer(16 + extra, 16)
        self.out = torch.nn.Linear(16, max(label_dim, 1))
        self.label_kind = label_kind
        self.rays = rays

    def resume_widening(self, source_G):
        return networks_raycond2.widening_from_2d(source_G) if self.rays else None


def test_widened_tensors_get_the_leading_slice_and_the_rest_keeps_its_init():
    torch.manual_seed(0)
    source = dict(G=Net(0), D=Net(0))
    G, D = Net(6, label_kind='camera', rays=True), Net(0, label_dim=5)
    before = {f'{prefix}.{name}': t.detach().clone() for prefix, net in (('G', G), ('D', D))
              for name, t in net.named_parameters()}
    report = snapshots.copy_weights_by_name(source, dict(G=G, D=D), 'base.pkl')

    src = dict(source['G'].named_parameters())
    for name in ('conv0', 'conv1'):
        layer = getattr(G, name)
        torch.testing.assert_close(layer.weight[:, :-6], src[f'{name}.weight'], rtol=0, atol=0)
        torch.testing.assert_close(layer.weight[:, -6:], before[f'G.{name}.weight'][:, -6:], rtol=0, atol=0)
        torch.testing.assert_close(layer.affine.weight[:-6], src[f'{name}.affine.weight'], rtol=0, atol=0)
        torch.testing.assert_close(layer.affine.bias[-6:], before[f'G.{name}.affine.bias'][-6:], rtol=0, atol=0)
        torch.testing.assert_close(layer.bias, src[f'{name}.bias'], rtol=0, atol=0)
    torch.testing.assert_close(D.out.weight, before['D.out.weight'], rtol=0, atol=0)  # label projection: fresh
    torch.testing.assert_close(D.conv0.weight, dict(source['D'].named_parameters())['conv0.weight'], rtol=0, atol=0)
    assert sorted(report['widened']) == sorted(f'G.{n}.{t}' for n in ('conv0', 'conv1')
                                               for t in ('affine.weight', 'affine.bias', 'weight'))
    assert sorted(report['kept']) == ['D.out.bias', 'D.out.weight']


def test_between_models_of_the_same_kind_mismatches_still_refuse():
    source = dict(G=Net(6, label_kind='camera', rays=True))
    with pytest.raises(snapshots.ResumeError, match='other shapes'):  # a camera source: no widening
        snapshots.copy_weights_by_name(source, dict(G=Net(12, label_kind='camera', rays=True)), 'ray.pkl')
    with pytest.raises(snapshots.ResumeError, match='other shapes'):
        snapshots.copy_weights_by_name(dict(G=Net(0)), dict(G=Net(6)), '2d.pkl')  # a target that declares none


def test_a_25_class_source_is_a_2d_source():
    """The label kind is declared: 25 classes are not a camera, so the 2D widening applies."""
    source = dict(G=Net(0, label_dim=25, label_kind='class'))
    report = snapshots.copy_weights_by_name(source, dict(G=Net(6, label_kind='camera', rays=True)), 'classes.pkl')
    assert 'G.conv0.weight' in report['widened'] and sorted(report['kept']) == ['G.out.bias', 'G.out.weight']

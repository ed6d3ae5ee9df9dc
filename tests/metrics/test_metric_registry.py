"""The metric registry: each metric declares the detectors it needs (fetched before any work)."""

from metrics import metric_main

# The detector each official metric is defined on (NVIDIA's metric_main: FID, KID and IS on Inception-v3
# features, precision/recall on VGG16 features, PPL on LPIPS' VGG16, equivariance on pixels).
EXPECTED = {
    'fid50k_full': ['inception'], 'kid50k_full': ['inception'], 'pr50k3_full': ['vgg16'], 'ppl2_wend': ['vgg16'],
    'eqt50k_int': [], 'eqt50k_frac': [], 'eqr50k': [], 'fid10k_full': ['inception'], 'fid2k_full': ['inception'],
    'fid50k': ['inception'], 'kid50k': ['inception'], 'pr50k3': ['vgg16'], 'is50k': ['inception'],
}


def test_every_metric_declares_its_detectors():
    assert set(metric_main.list_valid_metrics()) == set(EXPECTED)
    for metric, kinds in EXPECTED.items():
        assert metric_main.detector_kinds(metric) == kinds, metric


def test_a_new_metric_needs_only_its_declaration(monkeypatch):
    monkeypatch.setattr(metric_main, '_metric_dict', dict(metric_main._metric_dict))
    monkeypatch.setattr(metric_main, '_metric_detectors', dict(metric_main._metric_detectors))

    @metric_main.register_metric
    def isometry50k(opts):  # its name starts like 'is50k' but it uses no detector
        return dict(isometry50k=0.0)

    @metric_main.register_metric(detectors=['vgg16'])
    def fidelity_vgg(opts):
        return dict(fidelity_vgg=0.0)

    assert metric_main.is_valid_metric('isometry50k') and metric_main.detector_kinds('isometry50k') == []
    assert metric_main.detector_kinds('fidelity_vgg') == ['vgg16']

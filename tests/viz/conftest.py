"""Fixtures of the visualizer tests (what they share lives in viz_helpers.py)."""

import pytest

import tiny_networks
from viz_helpers import FAMILIES


@pytest.fixture(scope='session')
def snapshots(tmp_path_factory):
    """{family: path} of tiny snapshots (G_ema of each family in FAMILIES), and 'run': a run directory of two."""
    folder = tmp_path_factory.mktemp('viz-snapshots')
    paths = {name: tiny_networks.save_snapshot(folder / f'{name}.pkl', make()) for name, make in FAMILIES.items()}
    run = folder / 'run'
    run.mkdir()
    tiny_networks.save_snapshot(run / 'network-snapshot-000000.pkl', FAMILIES['stylegan2']())
    tiny_networks.save_snapshot(run / 'network-snapshot-000040.pkl', FAMILIES['stylegan3']())
    (run / 'training_options.json').write_text('{}')
    paths['run'] = str(run)
    return paths

import pytest
import torch

from subnetsearch.supernets import CheckpointError, build_supernet, load_checkpoint, save_checkpoint
from tests.conftest import TINY_ARCH


def _save(tmp_path, supernet):
    path = tmp_path / "net.pt"
    digest = save_checkpoint(path, supernet, {"epochs": 1}, {"name": "synthetic"}, {"val": 0.5})
    return path, digest


def test_round_trip_restores_weights_config_and_hash(tmp_path, tiny_supernet) -> None:
    path, digest = _save(tmp_path, tiny_supernet)
    checkpoint = load_checkpoint(path, TINY_ARCH | {"shuffle_rule": "balanced", "switch_classifier": False})
    assert checkpoint.hash == digest and checkpoint.metrics == {"val": 0.5}
    restored = checkpoint.build()
    for name, tensor in tiny_supernet.state_dict().items():
        assert torch.equal(restored.state_dict()[name], tensor)
    assert restored.space.id == tiny_supernet.space.id


def test_truncated_file_is_a_clear_error(tmp_path, tiny_supernet) -> None:
    path, _ = _save(tmp_path, tiny_supernet)
    path.write_bytes(path.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="truncated or not a checkpoint"):
        load_checkpoint(path)


def test_missing_file_names_the_path(tmp_path) -> None:
    with pytest.raises(CheckpointError, match="not found: .*nothing.pt"):
        load_checkpoint(tmp_path / "nothing.pt")


def test_modified_weights_fail_the_hash(tmp_path, tiny_supernet) -> None:
    path, _ = _save(tmp_path, tiny_supernet)
    payload = torch.load(path, weights_only=True)
    payload["state_dict"]["network.stem.weight"] += 1
    torch.save(payload, path)
    with pytest.raises(CheckpointError, match="content hash mismatch"):
        load_checkpoint(path)


def test_wrong_architecture_is_refused(tmp_path, tiny_supernet) -> None:
    path, _ = _save(tmp_path, tiny_supernet)
    with pytest.raises(CheckpointError, match="saved for architecture"):
        load_checkpoint(path, {**tiny_supernet.arch, "widths": [8, 16, 32]})
    # Weights that do not fit the architecture they claim are refused when building, naming keys.
    payload = torch.load(path, weights_only=True)
    wider = build_supernet({**TINY_ARCH, "widths": [8, 16, 32]})
    from subnetsearch.supernets._checkpoint import load_weights
    with pytest.raises(CheckpointError, match="does not fit its architecture"):
        load_weights(wider, payload["state_dict"])


def test_saving_is_atomic_no_temp_file_left(tmp_path, tiny_supernet) -> None:
    _save(tmp_path, tiny_supernet)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.pt"]

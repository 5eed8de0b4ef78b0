import pytest
import torch

from subnetsearch.supernets._calibrate import calibrated_bn


def test_calibration_reestimates_active_stats_and_restores_everything(tiny_supernet, tiny_data) -> None:
    tiny_supernet.eval()
    start = tiny_supernet.uniform_mode(2)
    tiny_supernet.set_mode(start)
    before = {k: v.clone() for k, v in tiny_supernet.state_dict().items()}
    batches = [images for images, _ in tiny_data.batches(tiny_data.train, 32, max_batches=3)]
    target = tiny_supernet.smallest_mode()
    with calibrated_bn(tiny_supernet, target, batches):
        assert tiny_supernet.mode == target and not tiny_supernet.training
        active = tiny_supernet.units["layer1.0.conv1"].norms[0].active
        # the stored statistics (zero mean) were replaced by the data's
        assert active.running_mean.abs().sum() > 0
        # cumulative average over exactly the given batches
        assert int(active.num_batches_tracked) == 3
    assert tiny_supernet.mode == start
    for name, tensor in tiny_supernet.state_dict().items():
        assert torch.equal(tensor, before[name]), name


def test_calibration_needs_batches(tiny_supernet) -> None:
    with pytest.raises(ValueError, match="at least one batch"):
        with calibrated_bn(tiny_supernet, tiny_supernet.full_mode(), []):
            pass

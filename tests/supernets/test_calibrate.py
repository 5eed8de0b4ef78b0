import pytest
import torch

from subnetsearch.supernets import calibrated_bn


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


def test_calibration_runs_only_the_norm_layers_in_training_mode() -> None:
    """Dropout and StochasticDepth stay at their inference function while statistics are re-estimated:
    two calibrations of one mode give the same network, and the same as a network without them."""
    from subnetsearch.supernets import build_supernet

    supernet = build_supernet({"family": "wenet-torchvision", "model": "efficientnet_b0", "num_classes": 10,
                               "input_size": 32}).eval()
    stochastic = [m for m in supernet.modules() if type(m).__name__ in ("Dropout", "StochasticDepth")]
    assert stochastic  # the model has both kinds
    mode = supernet.random_mode(torch.Generator().manual_seed(0))
    batches = [torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    x = torch.randn(2, 3, 32, 32)
    outputs = []
    for _ in range(2):
        torch.manual_seed(len(outputs))  # different dropout masks, if dropout were active
        with calibrated_bn(supernet, mode, batches):
            assert not any(m.training for m in stochastic)
            with torch.no_grad():
                outputs.append(supernet(x))
    torch.testing.assert_close(outputs[0], outputs[1], rtol=0, atol=0)

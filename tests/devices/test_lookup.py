import torch

from subnetsearch.devices import LatencyProtocol, LatencyTable, build_table, conv_sites
from subnetsearch.devices._lookup import layer_configs
from subnetsearch.supernets import ChannelShuffle


def test_configs_match_what_the_materialized_network_runs(tiny_supernet) -> None:
    sites = conv_sites(tiny_supernet)
    generator = torch.Generator().manual_seed(0)
    modes = [tiny_supernet.full_mode(), tiny_supernet.smallest_mode()] + [tiny_supernet.random_mode(generator)
                                                                          for _ in range(6)]
    for mode in modes:
        configs = layer_configs(sites, mode)
        static = tiny_supernet.materialize(mode)
        convs = [m for m in static.modules() if isinstance(m, torch.nn.Conv2d)]
        assert sorted(c.groups for c in configs) == sorted(c.groups for c in convs)
        shuffles = sum(isinstance(m, ChannelShuffle) for m in static.modules())
        assert sum(1 for c in configs if c.shuffle_groups) == shuffles
    assert sum(c.activation for c in layer_configs(sites, modes[0])) == 1 + 3  # stem + conv1 of each block


def test_the_predicted_realization_takes_dense_layers_where_the_table_says_they_are_faster(tiny_supernet) -> None:
    """A table in which one layer's grouped kernel is slow: the prediction realizes that layer (and
    only it) densely, folding the shuffles next to it; configs of a realization match what runs."""
    from subnetsearch.devices._lookup import LatencyPredictor, all_layer_configs
    from subnetsearch.supernets import Realization

    sites = conv_sites(tiny_supernet)
    mode = tiny_supernet.uniform_mode(4)
    slow = tiny_supernet.grouped_layers(mode)[1]
    protocol = LatencyProtocol(runtime="eager")
    entries = {c.key(): 1.0 + 0.01 * c.shuffle_groups if c.groups == 1 else 0.5 + 0.01 * c.shuffle_groups
               for c in all_layer_configs(sites, tiny_supernet)}
    slow_site = next(s for s in sites if s.knob == slow)
    for config in all_layer_configs([slow_site], tiny_supernet):
        if config.groups > 1:
            entries[config.key()] = 5.0  # this layer's grouped kernels are slow
    predictor = LatencyPredictor(tiny_supernet, LatencyTable(protocol, entries))
    latency = predictor(mode)
    assert latency.realization == {"dense": [slow]} and latency.alternatives_ms["grouped"] > latency.ms
    static = tiny_supernet.realize(mode, Realization((slow,)))
    convs = [m for m in static.modules() if isinstance(m, torch.nn.Conv2d)]
    configs = layer_configs(sites, mode, (slow,))
    assert sorted(c.groups for c in configs) == sorted(c.groups for c in convs)
    assert sum(1 for c in configs if c.shuffle_groups) == sum(isinstance(m, ChannelShuffle) for m in static.modules())


def test_table_predicts_from_measured_entries_and_round_trips(tiny_supernet) -> None:
    protocol = LatencyProtocol(runtime="eager", threads=1, warmup=1, repeats=1, min_run_time=0.01)
    modes = [tiny_supernet.uniform_mode(g) for g in (1, 2, 8)]
    table = build_table(tiny_supernet, modes, protocol, calibration_modes=modes[:2])
    sites = conv_sites(tiny_supernet)
    assert all(value > 0 for value in table.entries.values())
    prediction = table.predict(layer_configs(sites, modes[2]))
    assert prediction > 0
    again = LatencyTable.from_dict(table.to_dict())
    assert again.predict(layer_configs(sites, modes[2])) == prediction


def test_a_complete_table_predicts_every_mode_and_the_evaluator_uses_it(tiny_supernet, tiny_data) -> None:
    from subnetsearch.devices import Device
    from subnetsearch.devices._lookup import LatencyPredictor, all_layer_configs
    from subnetsearch.search import CachedEvaluator, EvaluationSettings

    protocol = LatencyProtocol(runtime="eager", threads=1, warmup=1, repeats=1, min_run_time=0.01)
    table = build_table(tiny_supernet, None, protocol, calibration_modes=[tiny_supernet.full_mode()])
    sites = conv_sites(tiny_supernet)
    assert set(table.entries) == {c.key() for c in all_layer_configs(sites, tiny_supernet)}
    generator = torch.Generator().manual_seed(3)
    predictor = LatencyPredictor(tiny_supernet, table)
    for _ in range(20):  # no mode needs a configuration the table lacks
        mode = tiny_supernet.random_mode(generator)
        latency = predictor(mode)  # the realization the table predicts fastest, and its figure
        dense = latency.realization["dense"]
        assert set(dense) <= set(tiny_supernet.grouped_layers(mode))
        assert latency.ms == table.predict(layer_configs(sites, mode, dense)) <= table.predict(layer_configs(sites, mode))
    quick = EvaluationSettings(calibration_batches=1, calibration_batch_size=16, max_eval_batches=1)
    predicted = CachedEvaluator(tiny_supernet, "h", tiny_data, Device("t"), settings=quick, predictor=predictor)
    measured = CachedEvaluator(tiny_supernet, "h", tiny_data, Device("t"), settings=quick)
    assert predicted.key != measured.key  # predicted and measured latencies never share a cache entry
    result = predicted.evaluate(mode)
    assert result.latency_ms == predictor(mode).ms
    assert result.latency["measured"] is False and result.latency["table"] == table.digest

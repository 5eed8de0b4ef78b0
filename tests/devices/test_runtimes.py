"""Every runtime the registry knows, parametrized: outputs, batch sizes, its file format, a missing
extra. A runtime whose extra is not installed is skipped with the install it needs (the README's test
command installs every extra, so CI runs them all)."""

import pytest
import torch

from subnetsearch.devices import (
    RUNTIMES,
    RuntimeUnavailable,
    export_formats,
    export_onnx,
    get_runtime,
    prepare_runtime,
)


def _runtime_or_skip(name: str):
    runtime = get_runtime(name)
    if runtime.missing():
        pytest.skip(runtime.missing())
    return runtime


@pytest.mark.parametrize("name", RUNTIMES)
@pytest.mark.parametrize("batch", [1, 5])
def test_every_runtime_computes_the_mode_at_any_batch(tiny_supernet, name: str, batch: int) -> None:
    _runtime_or_skip(name)
    static = tiny_supernet.materialize(tiny_supernet.uniform_mode(4)).eval()  # grouped convs and shuffles
    x = torch.randn(batch, *tiny_supernet.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(prepare_runtime(static, x, name, threads=1)(x), static(x), rtol=1e-4, atol=1e-5)


def test_the_onnx_export_runs_at_another_batch_than_it_was_traced_with(tiny_supernet) -> None:
    """Its batch axis is dynamic (the shuffle's reshape no longer bakes batch 1 in)."""
    import onnxruntime

    static = tiny_supernet.materialize(tiny_supernet.uniform_mode(2)).eval()
    graph = export_onnx(static, torch.randn(1, *tiny_supernet.input_shape))
    session = onnxruntime.InferenceSession(graph, providers=["CPUExecutionProvider"])
    x = torch.randn(7, *tiny_supernet.input_shape)
    with torch.no_grad():
        torch.testing.assert_close(torch.from_numpy(session.run(None, {"input": x.numpy()})[0]), static(x),
                                   rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("format", list(export_formats()))
def test_every_format_is_saved_and_run_from_its_file(tmp_path, tiny_supernet, format: str) -> None:
    runtime = export_formats()[format]
    _runtime_or_skip(runtime.name)
    static = tiny_supernet.materialize(tiny_supernet.uniform_mode(4)).eval()
    x = torch.randn(2, *tiny_supernet.input_shape)
    files = runtime.save(static, x, {"subnetsearch.mode_id": "m1"})
    assert set(files) == {runtime.suffixes[0], *runtime.companions}
    for suffix, payload in files.items():
        (tmp_path / f"mode{suffix}").write_bytes(payload)
    loaded = runtime.load(tmp_path / f"mode{runtime.suffixes[0]}")
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), static(x), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", [name for name in RUNTIMES if get_runtime(name).modules])
def test_a_runtime_that_is_not_installed_names_the_install(monkeypatch, tiny_supernet, name: str) -> None:
    runtime = get_runtime(name)
    monkeypatch.setattr(type(runtime), "modules", ("subnetsearch_absent_module",))
    install = f"pip install 'subnetsearch[{runtime.extra}]'" if runtime.extra else "pip install subnetsearch_absent_module"
    static = tiny_supernet.materialize(tiny_supernet.full_mode())
    with pytest.raises(RuntimeUnavailable, match=f"runtime '{name}'.*{install.replace('[', '.').replace(']', '.')}"):
        prepare_runtime(static, torch.randn(1, *tiny_supernet.input_shape), name)


def test_an_unknown_runtime_is_refused_naming_the_known_ones(tiny_supernet) -> None:
    static = tiny_supernet.materialize(tiny_supernet.full_mode())
    with pytest.raises(ValueError, match="runtime must be one of .*onnxruntime.*got 'tpu'"):
        prepare_runtime(static, torch.randn(1, *tiny_supernet.input_shape), "tpu")

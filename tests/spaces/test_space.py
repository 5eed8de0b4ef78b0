import pytest

from subnetsearch.spaces import Knob, Mode, ModeError, SearchSpace


def _space() -> SearchSpace:
    return SearchSpace([Knob("a", "ordered", (1, 2, 4)), Knob("b", "categorical", ("x", "y")),
                        Knob("lam", "float", (0.0, 1.0), runtime=False)], context={"arch": 1})


def test_mode_is_canonical_and_has_a_stable_id() -> None:
    space = _space()
    one = space.mode({"b": "x", "a": 2, "lam": 0.5})
    two = space.mode({"lam": 0.5, "a": 2, "b": "x"})
    assert one == two and hash(one) == hash(two) and one.id == two.id
    assert one.to_json() == two.to_json()
    assert Mode.from_json(one.to_json()) == one
    assert one.replace(a=4) != one
    with pytest.raises(TypeError):
        one.values["a"] = 4  # frozen


@pytest.mark.parametrize("values, message", [
    ({"a": 3, "b": "x", "lam": 0.1}, "knob 'a': 3 is not one of"),
    ({"a": 1, "b": "z", "lam": 0.1}, "knob 'b'"),
    ({"a": 1, "b": "x", "lam": 1.5}, "outside"),
    ({"a": 1, "b": "x"}, "missing knob"),
    ({"a": 1, "b": "x", "lam": 0.1, "c": 1}, "unknown knob"),
])
def test_validation_names_the_bad_knob(values, message) -> None:
    with pytest.raises(ModeError, match=message):
        _space().mode(values)


def test_space_id_depends_on_context_and_knobs() -> None:
    assert _space().id == _space().id
    other = SearchSpace(_space().knobs, context={"arch": 2})
    assert other.id != _space().id
    with pytest.raises(ModeError, match="another supernet"):
        other.validate(_space().mode({"a": 1, "b": "x", "lam": 0.0}))


def test_bad_knob_definitions_are_refused() -> None:
    with pytest.raises(ModeError, match="strictly increasing"):
        Knob("a", "ordered", (4, 2))
    with pytest.raises(ModeError, match="low < high"):
        Knob("f", "float", (1.0, 1.0))
    with pytest.raises(ModeError, match="not a mode JSON"):
        Mode.from_json("{oops")


def test_a_space_needs_knobs_with_unique_names() -> None:
    with pytest.raises(ModeError, match="at least one knob"):
        SearchSpace([])
    with pytest.raises(ModeError, match=r"repeated: \['a'\]"):
        SearchSpace([Knob("a", "ordered", (1, 2)), Knob("a", "ordered", (1, 4))])


def test_space_translates_to_a_ray_tune_param_space_and_back() -> None:
    from ray import tune

    from subnetsearch.spaces import mode_from_params, to_ray_tune

    space = _space()
    param_space = to_ray_tune(space)
    assert isinstance(param_space["a"], tune.search.sample.Categorical)
    assert param_space["a"].categories == [1, 2, 4]
    assert (param_space["lam"].lower, param_space["lam"].upper) == (0.0, 1.0)
    for _ in range(20):  # every config Tune samples is a valid mode of the space
        config = {name: domain.sample() for name, domain in param_space.items()}
        assert mode_from_params(space, config).values == config

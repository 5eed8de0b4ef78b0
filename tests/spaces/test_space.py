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

"""Harvest's position filter speaks the one position syntax (actlab.core.parse_positions), over a fixed context."""
import pytest

from actlab.store.harvest import position_mask


@pytest.mark.parametrize("spec, length, kept", [
    ("all", 4, [0, 1, 2, 3]), ("1:", 4, [1, 2, 3]), ("0,2", 4, [0, 2]), ("last", 4, [3]), ("-2", 4, [2]),
    ("::2", 5, [0, 2, 4]), ("3", 4, [3]), ("-3:", 5, [2, 3, 4]),
])
def test_position_mask_keeps_what_the_spec_says(spec, length, kept):
    assert position_mask(spec, length).nonzero().flatten().tolist() == kept


@pytest.mark.parametrize("spec, msg", [("9", "outside a 4-token context"), ("x", "not an integer"),
                                       ("2:2", "keep no position"), ("", "empty positions")])
def test_bad_position_specs_are_refused_clearly(spec, msg):
    with pytest.raises(ValueError, match=msg):
        position_mask(spec, 4)

"""worker.waves: which of a message's events are applied together."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from worker.waves import plan_groups

# (name, kind, keys)
Item = tuple[str, str, tuple[str, ...]]


def groups_of(items: list[Item]) -> list[list[str]]:
    return [[name for name, _, _ in group] for group in plan_groups(items, lambda i: i[2], lambda i: i[1])]


def test_independent_events_of_one_kind_form_one_group_in_received_order():
    items = [("e1", "sub", ("s:1",)), ("e2", "inv", ("s:2",)), ("e3", "sub", ("s:3",))]
    assert groups_of(items) == [["e1", "e3"], ["e2"]]


def test_an_event_sharing_a_key_waits_for_the_next_wave():
    items = [("e1", "sub", ("s:1",)), ("e2", "inv", ("s:1",)), ("e3", "sub", ("s:1",)), ("e4", "sub", ("s:2",))]
    assert groups_of(items) == [["e1", "e4"], ["e2"], ["e3"]]


def test_an_event_with_no_key_depends_on_nothing():
    items = [("e1", "sub", ("s:1",)), ("e2", "sub", ("s:1",)), ("e3", "sub", ())]
    assert groups_of(items) == [["e1", "e3"], ["e2"]]


items_strategy = st.lists(
    st.tuples(st.sampled_from(["sub", "inv", "cus"]), st.sets(st.sampled_from(["a", "b", "c", "d"]), max_size=2)),
    max_size=30,
)


@given(items_strategy)
def test_every_event_once_and_after_every_earlier_event_sharing_a_key(raw):
    items: list[Item] = [(f"e{i}", kind, tuple(sorted(keys))) for i, (kind, keys) in enumerate(raw)]
    groups = plan_groups(items, lambda i: i[2], lambda i: i[1])
    position = {item[0]: g for g, group in enumerate(groups) for item in group}
    assert sorted(position, key=lambda n: int(n[1:])) == [name for name, _, _ in items]
    for group in groups:
        assert len({kind for _, kind, _ in group}) == 1
        names = [int(name[1:]) for name, _, _ in group]
        assert names == sorted(names)
        seen: set[str] = set()
        for _, _, keys in group:
            assert not seen & set(keys)
            seen |= set(keys)
    for i, (a, _, a_keys) in enumerate(items):
        for b, _, b_keys in items[i + 1 :]:
            if set(a_keys) & set(b_keys):
                assert position[a] < position[b]

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from template.node.state import atomic_write_json, load_optimizer, read_json, save_optimizer
from template.protocol.records import AggregationRecord, RecordEntry

FP = "ab" * 32


def _record(**kw):
    base = dict(window=3, base_fingerprint=FP, next_fingerprint="cd" * 32, outer_lr=1.0,
                included=(RecordEntry(1, "hk1", "v1/gradients/00000003.safetensors", "ee" * 32),
                          RecordEntry(4, "hk4", "v1/gradients/00000003.safetensors", "ff" * 32)))
    return AggregationRecord(**(base | kw))


def test_record_roundtrip():
    rec = _record()
    assert AggregationRecord.from_body(rec.to_body()) == rec


@pytest.mark.parametrize(
    "mutate, needle",
    [
        (lambda b: b.pop("window"), "window"),
        (lambda b: b.update(window=-1), "window"),
        (lambda b: b.update(base_fingerprint="xyz"), "base_fingerprint"),
        (lambda b: b.update(outer_lr=float("inf")), "outer_lr"),
        (lambda b: b.update(included="x"), "included"),
        (lambda b: b["included"].reverse(), "sorted"),
        (lambda b: b["included"][0].update(extra=1), "exactly"),
        (lambda b: b["included"][0].update(sha256="00"), "sha256"),
    ],
)
def test_record_rejects(mutate, needle):
    body = _record().to_body()
    mutate(body)
    with pytest.raises(ValueError, match=needle):
        AggregationRecord.from_body(body)


@given(st.recursive(st.none() | st.integers() | st.text(max_size=5),
                    lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=5), c, max_size=3)))
def test_record_garbage_only_valueerror(body):
    try:
        AggregationRecord.from_body(body)
    except ValueError:
        pass


def test_atomic_json(tmp_path):
    p = tmp_path / "s" / "state.json"
    assert read_json(p, default={}) == {}
    atomic_write_json(p, {"a": 1})
    atomic_write_json(p, {"a": 2})
    assert read_json(p) == {"a": 2}
    assert [f.name for f in p.parent.iterdir()] == ["state.json"]


def test_optimizer_state_roundtrip_without_pickle(tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 3)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    for _ in range(3):
        opt.zero_grad()
        model(torch.randn(5, 4)).pow(2).sum().backward()
        opt.step()
    save_optimizer(tmp_path / "opt.safetensors", opt)
    twin = torch.nn.Linear(4, 3)
    twin.load_state_dict(model.state_dict())
    opt2 = torch.optim.AdamW(twin.parameters(), lr=0.1)
    assert load_optimizer(tmp_path / "opt.safetensors", opt2)
    x = torch.randn(5, 4)
    for m, o in ((model, opt), (twin, opt2)):
        o.zero_grad()
        m(x).pow(2).sum().backward()
        o.step()
    assert torch.equal(model.weight, twin.weight)


@given(last_window=st.none() | st.integers(0, 10**6), interval=st.none() | st.integers(0, 10**4),
       seen=st.lists(st.text("0123456789abcdef", min_size=64, max_size=64), max_size=5),
       key=st.none() | st.binary(min_size=32, max_size=32),
       seed=st.none() | st.tuples(st.integers(0, 10**6), st.binary(min_size=32, max_size=32)),
       gathered=st.none() | st.tuples(st.integers(0, 10**6), st.dictionaries(
           st.integers(0, 255), st.tuples(st.text(min_size=1, max_size=8), st.text("0123456789abcdef", min_size=64,
                                                                                   max_size=64)), max_size=4)),
       probation=st.dictionaries(st.integers(0, 255), st.integers(1, 5), max_size=4))
def test_validator_state_round_trips_through_run_state_json(last_window, interval, seen, key, seed, gathered,
                                                           probation):
    """Issue 26: the typed ValidatorState writes run_state.json with the keys the untyped dict had, and reads
    back what it wrote."""
    import json

    from gauntlet.progress import Probation
    from gauntlet.ratings import Ratings
    from gauntlet.sampling import Rotation
    from template.node.state import GatheredInputs, ValidatorState, WindowSeed

    state = ValidatorState(ratings=Ratings(alpha=0.1), last_window=last_window, last_weights_interval=interval,
                           seen=seen, near_copy_key=key, sample_seed=None if seed is None else WindowSeed(*seed),
                           gathered=None if gathered is None else GatheredInputs(*gathered),
                           rotation=Rotation(done=frozenset({(3, "hk")}), evaluated={3: ("hk", 2, True)}),
                           probation=Probation(probation))
    body = json.loads(json.dumps(state.run_state_json()))
    assert set(body) <= {"last_window", "last_weights_interval", "seen", "rotation", "near_copy_key", "sample_seed",
                         "gathered", "probation"}
    back = ValidatorState(ratings=Ratings(alpha=0.1))
    back.load_run_state_json(body)
    assert (back.last_window, back.last_weights_interval, back.seen, back.near_copy_key, back.sample_seed,
            back.gathered, back.rotation, back.probation) == (
        state.last_window, state.last_weights_interval, state.seen, state.near_copy_key, state.sample_seed,
        state.gathered, state.rotation, state.probation)
    old = {k: v for k, v in body.items() if k != "probation"}  # a file from before probation was saved
    back.load_run_state_json(old)
    assert back.probation.needs == {}


@pytest.mark.parametrize("body", [[], {"last_window": "x"}, {"sample_seed": {"window": 1}},
                                  {"gathered": {"window": 1, "uploads": {"2": ["hk"]}}}, {"near_copy_key": "zz"},
                                  {"probation": [2]}, {"probation": {"x": 3}}, {"probation": {"-1": 3}},
                                  {"probation": {"2": 0}}, {"probation": {"2": "3"}}, {"probation": {"2": True}},
                                  {"probation": {"2": 10**9}}])
def test_an_unreadable_run_state_names_the_problem(tmp_path, body):
    from template.node.state import load_validator_state

    atomic_write_json(tmp_path / "run_state.json", body)
    with pytest.raises(ValueError, match="run_state.json"):
        load_validator_state(tmp_path, alpha=0.1)

"""Preflight's judgements (template/node/preflight.py), the version lever (template/protocol/version.py) and
the state folder's format stamp (template/node/state.py): pure parts, no chain."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from template.node import preflight as pf
from template.node.state import STATE_VERSION, STATE_VERSION_FILE, open_state_dir, plan_state_upgrade
from template.protocol.version import CODE_VERSION, VERSION_KEY, upgrade_required, version_key, version_of_key

ROOT = Path(__file__).resolve().parents[2]
CPU_BOX = pf.HostFacts(cpu_cores=4, ram_gib=16.0, disk_free_gib=100.0, cuda_devices=0, vram_gib=0.0)
GPU_BOX = pf.HostFacts(cpu_cores=16, ram_gib=128.0, disk_free_gib=900.0, cuda_devices=1, vram_gib=80.0)


def spec(role: str, preset: str):
    return pf.compute_spec(pf.load_min_compute(), role, preset)


def test_cuda_requested_on_a_cpu_box_fails_in_one_line():
    c = pf.check_device("cuda", CPU_BOX, gpu_required=False)
    assert c.status == "FAIL" and "no CUDA device" in c.line() and "\n" not in c.line()
    assert pf.check_device("cuda:1", GPU_BOX, False).status == "FAIL"
    assert pf.check_device("auto", CPU_BOX, False).ok and pf.check_device("auto", GPU_BOX, True).ok
    assert pf.check_device("cpu", GPU_BOX, gpu_required=True).status == "FAIL"


def test_compute_against_min_compute_yml():
    tiny = pf.check_compute(spec("miner", "tiny"), "miner", "tiny", "auto", CPU_BOX)
    assert [c.name for c in tiny] == ["device", "memory", "disk"] and all(c.ok for c in tiny)
    big = pf.check_compute(spec("miner", "1B"), "miner", "1B", "auto", CPU_BOX)
    assert {c.name for c in big if not c.ok} == {"device", "memory", "disk"}
    assert all(c.ok for c in pf.check_compute(spec("miner", "1B"), "miner", "1B", "cuda", GPU_BOX))
    small_gpu = pf.HostFacts(16, 128.0, 900.0, 1, 24.0)
    dev = pf.check_compute(spec("validator", "1B"), "validator", "1B", "cuda", small_gpu)[0]
    assert dev.status == "FAIL" and "40 GiB" in dev.detail
    low_disk = pf.HostFacts(4, 16.0, 1.5, 0, 0.0)
    assert "free space" in pf.check_compute(spec("miner", "tiny"), "miner", "tiny", "cpu", low_disk)[2].detail
    unknown = pf.check_compute(None, "miner", "nope", "cpu", CPU_BOX)
    assert [c.status for c in unknown] == ["ok", "skip", "skip"]


def test_clock_skew():
    assert pf.check_clock(1000.5, 1000.0, 1.0).ok
    assert pf.check_clock(1012.0, 1000.0, 12.0).ok  # head produced a block ago
    assert "behind" in pf.check_clock(990.0, 1000.0, 12.0).detail
    assert "ahead" in pf.check_clock(1060.0, 1000.0, 12.0).detail


def test_registration_and_stake():
    hk = "5F" + "x" * 46
    miss = pf.check_registration("miner", None, 0.0, None, hk, 1)
    assert [c.status for c in miss] == ["FAIL", "skip"] and "btcli subnet register" in miss[0].detail
    assert all(c.ok for c in pf.check_registration("miner", 3, 0.0, 100.0, hk, 1))
    low = pf.check_registration("validator", 2, 5.0, 100.0, hk, 1)
    assert low[1].status == "FAIL" and "min_validator_stake" in low[1].detail
    assert pf.check_registration("validator", 2, 500.0, 100.0, hk, 1)[1].ok
    assert pf.check_registration("validator", 2, 500.0, None, hk, 1)[1].status == "skip"


def test_endpoint_approval():
    assert pf.check_endpoint("http://127.0.0.1:8333", ("http://127.0.0.1:8333",)).ok
    bad = pf.check_endpoint("http://10.0.0.5:9000", ("https://*.r2.cloudflarestorage.com",))
    assert bad.status == "FAIL" and "approved_storage_endpoints" in bad.detail


def test_exit_status_and_report_lines():
    good, bad = pf.ok("a", "fine"), pf.fail("b", "broken: do X")
    assert pf.exit_status([good]) == 0 and pf.exit_status([good, bad]) == 2
    assert pf.exit_status([good, pf.skip("c", "no chain")]) == 2 and pf.exit_status([]) == 2
    lines: list[str] = []
    assert pf.report([good, bad], emit=lines.append) == 2
    assert lines == [good.line(), bad.line(), "preflight failed: b"]
    assert bad.line().startswith("preflight FAIL b")


def test_version_key_follows_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["version"] == CODE_VERSION and VERSION_KEY == version_key(CODE_VERSION)


@given(st.integers(0, 998), st.integers(0, 99), st.integers(0, 99))
def test_version_key_round_trip_and_order(major, minor, patch):
    v = f"{major}.{minor}.{patch}"
    assert version_of_key(version_key(v)) == v
    assert version_key(v) < version_key(f"{major}.{minor}.{patch + 1}") if patch < 99 else True
    assert version_key(v) < version_key(f"{major + 1}.0.0")


@pytest.mark.parametrize("bad", ["1.2", "1.2.3.4", "v1.2.3", "1.100.0", "", "1.2.x"])
def test_version_key_refuses_bad_versions(bad):
    with pytest.raises(ValueError, match="MAJOR.MINOR.PATCH"):
        version_key(bad)


def test_upgrade_required_names_what_to_install():
    assert upgrade_required(0) is None and upgrade_required(VERSION_KEY) is None
    line = upgrade_required(10203, own_key=100)
    assert line is not None and ">= 1.2.3" in line and "0.1.0" in line and "docs/upgrade.md" in line
    assert "\n" not in line and pf.check_version_key(10203, 100).status == "FAIL"


def test_state_upgrade_plan():
    assert plan_state_upgrade(None, has_files=False) == []  # a new folder
    assert plan_state_upgrade(STATE_VERSION, True) == []
    assert plan_state_upgrade(None, has_files=True) == list(range(0, STATE_VERSION))  # from before the stamp
    refused = plan_state_upgrade(STATE_VERSION + 1, True)
    assert isinstance(refused, str) and "newer release" in refused
    assert isinstance(plan_state_upgrade(0, True, current=STATE_VERSION + 5), str)  # no step: refused


def test_open_state_dir_stamps_migrates_and_refuses(tmp_path):
    fresh = tmp_path / "fresh"
    assert open_state_dir(fresh, CODE_VERSION) == []
    assert json.loads((fresh / STATE_VERSION_FILE).read_text())["state_version"] == STATE_VERSION
    old = tmp_path / "old"
    old.mkdir()
    (old / "ratings.json").write_text("{}")
    assert open_state_dir(old, CODE_VERSION) == [0]  # a folder from before the stamp: migrated
    assert open_state_dir(old, CODE_VERSION) == []
    assert pf.check_state_dir(old).ok
    (old / STATE_VERSION_FILE).write_text(json.dumps({"state_version": STATE_VERSION + 1}))
    with pytest.raises(ValueError, match="newer release"):
        open_state_dir(old, CODE_VERSION)
    assert pf.check_state_dir(old).status == "FAIL"
    (old / STATE_VERSION_FILE).write_text("not json")
    with pytest.raises(ValueError, match="unreadable"):
        open_state_dir(old, CODE_VERSION)


def test_a_short_key_id_is_a_setup_error_not_a_traceback(tmp_path):
    from template.node.neuron import SetupError, load_own_bucket
    from template.protocol.config import NeuronConfig

    creds = tmp_path / "creds.json"
    creds.write_text(json.dumps({"endpoint": "http://127.0.0.1:9", "bucket": "alice", "write_key_id": "writer01",
                                 "write_secret": "secretsecret1", "read_key_id": "ab", "read_secret": "secretsecret2"}))
    cfg = NeuronConfig(role="miner", storage={"credentials_file": str(creds)})
    with pytest.raises(SetupError, match="access_key_id must be 4-128 chars"):
        load_own_bucket(cfg)


def test_require_version_stops_a_running_neuron_only_when_the_chain_asks_for_more():
    from template.node.neuron import SetupError

    class Chain:  # the one call require_version makes
        def __init__(self, weights_version: int) -> None:
            self.weights_version = weights_version

        def hyperparameters(self, netuid: int) -> dict[str, int]:
            return {"weights_version": self.weights_version}

    pf.require_version(Chain(0), 1)
    pf.require_version(Chain(VERSION_KEY), 1)
    with pytest.raises(SetupError, match=f">= {version_of_key(VERSION_KEY + 1)}"):
        pf.require_version(Chain(VERSION_KEY + 1), 1)


def test_only_an_unreachable_service_is_worth_a_restart():
    down = pf.Check("chain", "FAIL", "ChainError: unreachable", unreachable=True)
    later = pf.skip("registered", "chain unreachable")
    assert pf.only_unreachable([pf.ok("wallet", "ok"), down, later])
    assert not pf.only_unreachable([down, pf.fail("device", "no CUDA")])
    assert not pf.only_unreachable([pf.ok("wallet", "ok")])


def test_a_dead_storage_endpoint_is_unreachable_a_refusal_is_not(tmp_path):
    from template.node.neuron import ServiceUnreachable, SetupError

    dead = pf._attempt("storage", lambda: _put("http://127.0.0.1:9"))[1]
    assert dead is not None and dead.status == "FAIL" and dead.unreachable
    assert ServiceUnreachable.exit_status == 3 and SetupError.exit_status == 2
    refused = pf._attempt("storage", lambda: (_ for _ in ()).throw(ValueError("bad")))[1]
    assert refused is not None and not refused.unreachable


def _put(endpoint: str) -> None:
    from storage.s3 import S3Client

    S3Client(endpoint, "writer01", "secretsecret", max_attempts=1).put("alice", "k", b"x")

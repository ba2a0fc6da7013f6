"""The run files in deploy/: systemd units pass `systemd-analyze verify` and carry the restart policy, the
open-files limit and an EnvironmentFile (no key on a command line); the pm2 ecosystem file, loaded by node,
starts the miner under torchrun for several GPUs, stops on exit status 2 and writes log files.

The pm2 file is run for real against a playground in tests/integration/test_run_files.py."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNITS = sorted((ROOT / "deploy" / "systemd").glob("*.service"))
ECOSYSTEM = ROOT / "deploy" / "pm2" / "ecosystem.config.js"


def test_units_exist_with_restart_limits_and_an_env_file():
    assert {u.name for u in UNITS} == {"sparseloco-miner.service", "sparseloco-validator.service"}
    for unit in UNITS:
        text = unit.read_text()
        for line in ("Restart=on-failure", "RestartPreventExitStatus=2", "LimitNOFILE=65536", "KillSignal=SIGTERM"):
            assert line in text, f"{unit.name} lacks {line}"
        assert re.search(r"^EnvironmentFile=/etc/sparseloco/\w+\.env$", text, re.M)
        exec_start = text.split("ExecStart=", 1)[1].split("\nRestart=", 1)[0]
        assert "S3_" not in exec_start and "secret" not in exec_start.lower()
    env_example = (ROOT / "deploy" / "systemd" / "miner.env.example").read_text()
    assert "S3_WRITE_SECRET=" in env_example and "MINER_GPUS=" in env_example


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze absent (apt install systemd)")
def test_units_pass_systemd_analyze_verify(tmp_path):
    """The units as installed, with /opt/sparseloco pointing at this checkout (verify checks the binary exists).
    verify exits 0 even on a line it ignores, so any output is a failure too."""
    for unit in UNITS:
        (tmp_path / unit.name).write_text(unit.read_text().replace("/opt/sparseloco", str(ROOT)))
    out = subprocess.run(["systemd-analyze", "verify", *[str(tmp_path / u.name) for u in UNITS]],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and not out.stdout.strip() and not out.stderr.strip(), out.stdout + out.stderr


def load_ecosystem(env: dict[str, str]) -> dict:
    script = f"console.log(JSON.stringify(require({json.dumps(str(ECOSYSTEM))})))"
    out = subprocess.run(["node", "-e", script], capture_output=True, text=True, timeout=60,
                         env={"PATH": os.environ["PATH"], "HOME": "/home/op", **env})
    assert out.returncode == 0, out.stderr
    return {app["name"]: app for app in json.loads(out.stdout)["apps"]}


@pytest.mark.skipif(shutil.which("node") is None, reason="node absent (apt install nodejs; pm2 needs it too)")
def test_ecosystem_file_apps():
    apps = load_ecosystem({"MINER_GPUS": "4", "MINER_CREDENTIALS": "/etc/sparseloco/m.json",
                           "SPARSELOCO_NETWORK": "test", "SPARSELOCO_LOG_DIR": "/var/log/sl"})
    miner, validator = apps["miner"], apps["validator"]
    assert miner["script"].endswith("/.venv/bin/torchrun")
    assert miner["args"][:4] == ["--standalone", "--nproc-per-node", "4", "neurons/miner.py"]
    assert "--storage.credentials_file" in miner["args"] and "test" in miner["args"]
    assert validator["script"].endswith("/.venv/bin/python") and validator["args"][0] == "neurons/validator.py"
    for app in apps.values():
        assert app["autorestart"] and app["stop_exit_codes"] == [2] and app["kill_timeout"] >= 60000
        assert app["out_file"].startswith("/var/log/sl/") and app["cwd"] == str(ROOT)
        assert "--logging.logging_dir" in app["args"]
        assert not any("secret" in a.lower() for a in app["args"])
    one_gpu = load_ecosystem({})["miner"]
    assert one_gpu["script"].endswith("/.venv/bin/python") and one_gpu["args"][0] == "neurons/miner.py"

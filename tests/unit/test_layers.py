"""The import graph is a DAG by layer, and the pure layers load no I/O library.

Layers, lowest first (a module may import its own layer and the ones below, never above):

    template.protocol   pure protocol core: config, windows, model, codec, outer step, records, artifacts
    gauntlet            pure decisions: admission checks, evaluation, ratings, weights, aggregation
    storage             I/O: S3 client, peers' buckets, dataset fetch, SeaweedFS
    template.chain      the chain (localnet node and client, bittensor adapter); only the `Chain` interface
                        is seen from above
    template.node       node runtime: build path, miner and validator loops, sync, local state
    template.sim        hostile miners and validators of the simulation (never on the honest path)
    template.harness    the whole network on one machine: localnet orchestration, report, progress,
                        dashboard, what-if replay, data preparation, convergence runs (what scripts/ drive)
    neurons, scripts    entry points (scripts/ are thin CLIs over template.harness and the layers below)

`template.chain` sits beside `storage`: it imports neither storage nor gauntlet, and they don't import it.
`storage` and `gauntlet` are siblings too: neither imports the other.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

# layer name -> first-party packages it may import (besides itself)
ALLOWED: dict[str, set[str]] = {
    "template.protocol": set(),
    "gauntlet": {"template.protocol"},
    "storage": {"template.protocol"},  # a sibling of gauntlet: what both need (Upload, the peer list) is protocol
    "template.chain": {"template.protocol"},
    "template.node": {"template.protocol", "gauntlet", "storage", "template.chain"},
    "template.sim": {"template.protocol", "gauntlet", "storage", "template.chain", "template.node"},
    "neurons": {"template.protocol", "gauntlet", "storage", "template.chain", "template.node"},
    "template.harness": {"template.protocol", "gauntlet", "storage", "template.chain", "template.node", "template.sim"},
    "scripts": {"template.protocol", "gauntlet", "storage", "template.chain", "template.node", "template.sim",
                "template.harness"},
}
LAYERS = sorted(ALLOWED, key=len, reverse=True)  # longest prefix first: template.node before template


def layer_of(module: str) -> str | None:
    for layer in LAYERS:
        if module == layer or module.startswith(layer + "."):
            return layer
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def first_party_imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import of a first-party module in `path` (lazy imports included)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
            # `from template import node` names a package too
            found += [(node.lineno, f"{node.module}.{alias.name}") for alias in node.names]
    return [(line, m) for line, m in found if m.split(".")[0] in {"template", "gauntlet", "storage", "neurons",
                                                                  "scripts"}]


def source_files() -> list[tuple[Path, str]]:
    """(path, module name) of every first-party source file; `template/__init__.py` is only a namespace."""
    files = []
    for top in ("template", "gauntlet", "storage", "neurons", "scripts"):
        files += [(p, module_name(p)) for p in sorted((ROOT / top).rglob("*.py")) if module_name(p) != "template"]
    return files


def violations(files: list[tuple[Path, str]]) -> list[str]:
    bad = []
    for path, module in files:
        here = layer_of(module)
        assert here is not None, f"{path} is in no layer; add its package to ALLOWED in {__file__}"
        for line, target in first_party_imports(path):
            there = layer_of(target)
            if there is None:
                if target in {"template", "storage", "gauntlet"}:
                    continue  # the bare package name of `from template import node` (checked by its child)
                bad.append(f"{module}:{line} imports {target}, which is in no layer")
            elif there != here and there not in ALLOWED[here]:
                bad.append(f"{module}:{line} ({here}) imports {target} ({there})")
    return bad


def test_every_import_points_down_the_layers():
    assert violations(source_files()) == []


@pytest.mark.parametrize(("module", "line"), [
    ("gauntlet.probe", "from template.node.neuron import StopFlag"),
    ("template.protocol.probe", "import storage.s3"),
    ("storage.probe", "from template.chain.base import Chain"),
    ("template.chain.probe", "from gauntlet import checks"),
    ("neurons.probe", "from template.sim.adversaries import STRATEGIES"),
])
def test_layer_check_catches_an_upward_import(tmp_path, module, line):
    # the checker itself must flag a violation, or the test above proves nothing
    probe = tmp_path / "probe.py"
    probe.write_text(line + "\n")
    assert violations([(probe, module)])


@pytest.mark.parametrize("heavy", ["boto3", "botocore", "httpx", "fastapi", "uvicorn", "bittensor"])
def test_pure_layers_load_no_io_library(heavy):
    pure = [module_name(p) for top in ("template/protocol", "gauntlet") for p in sorted((ROOT / top).rglob("*.py"))]
    code = "import importlib, sys\n" + "".join(f"importlib.import_module({m!r})\n" for m in pure)
    code += f"print({heavy!r} in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", f"importing the pure layers loads {heavy}"

"""The README and the documentation site as a reader meets them: every Python snippet runs as
printed, the test command is the one CI runs, linked files exist and the docs build strictly."""
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
# a block that needs a remote cluster says so on a line of its own
NEEDS_CLUSTER = "# requires: spark-cluster"


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, flags=re.S | re.M)


def test_readme_python_blocks_run_as_printed(tmp_path, monkeypatch):
    blocks = [b for b in code_blocks(README, "python") if NEEDS_CLUSTER not in b]
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)  # whatever a snippet writes lands here
    namespace: dict = {"__name__": "__readme__"}
    for number, block in enumerate(blocks, 1):
        try:  # one namespace, top to bottom, as a reader pastes them into a notebook
            exec(compile(block, f"README.md python block {number}", "exec"), namespace)
        except Exception as exc:  # noqa: BLE001 - name the block that failed
            pytest.fail(f"README python block {number} raised {type(exc).__name__}: {exc}\n"
                        f"{block}")
    effects = namespace["effects"]
    assert (effects["status"] == "ok").sum() > 0.5 * len(effects)
    lb, ub = namespace["lb"], namespace["ub"]
    assert lb.shape == ub.shape == (len(namespace["est"].effects_),)


def test_readme_test_command_is_what_ci_runs():
    commands = [b.strip() for b in code_blocks(README, "bash")[:2]]
    main_job, tests = commands
    ci = (ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert ci == tests
    assert "-e ." in main_job and "[dev]" not in main_job and "causalrec demo" in main_job


def test_readme_links_exist():
    targets = re.findall(r"\]\(([^)#]+)\)", README)
    assert "docs/img/report_first_screen.png" in targets
    missing = [t for t in targets if not t.startswith("http") and not (ROOT / t).exists()]
    assert missing == []


def test_docs_python_blocks_are_marked_or_run(tmp_path, monkeypatch):
    """The docs' snippets either run here or say which cluster they need."""
    monkeypatch.chdir(tmp_path)
    for page in sorted((ROOT / "docs").glob("*.md")):
        for number, block in enumerate(code_blocks(page.read_text(encoding="utf-8"), "python"), 1):
            if NEEDS_CLUSTER in block:
                continue
            exec(compile(block, f"{page.name} python block {number}", "exec"),
                 {"__name__": "__docs__"})


@pytest.mark.skipif(shutil.which("mkdocs") is None and not (Path(sys.executable).parent
                                                            / "mkdocs").exists(),
                    reason="needs the docs extra (pip install -e '.[docs]')")
def test_docs_build_strict(tmp_path):
    mkdocs = shutil.which("mkdocs") or str(Path(sys.executable).parent / "mkdocs")
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    run = subprocess.run([mkdocs, "build", "--strict", "--site-dir", str(tmp_path / "site")],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text(encoding="utf-8")
    assert "ItemEffectEstimator" in api and "effect_interval" in api

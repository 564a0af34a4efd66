"""Start-up: ``import msa_hf`` stays light, commands answer --help and usage errors before torch, Ctrl-C exits 130.

Each check runs in a fresh interpreter (what a user's shell starts).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import msa_hf

REPO = Path(__file__).resolve().parents[1]
SRC = Path(msa_hf.__file__).resolve().parents[1]
SCRIPTS = (REPO / "pyproject.toml").read_text().split("[project.scripts]")[1].split("\n[")[0]
COMMANDS = dict(re.findall(r'^(msa-[\w-]+) = "([\w.:]+)"$', SCRIPTS, flags=re.M))  # pyproject's console scripts
HEAVY = [
    "torch",
    "torchvision",
    "torch._dynamo",
    "transformers",
    "datasets",
    "gradio",
    "faiss",
    "timm",
    "huggingface_hub",
]


def python(code: str, *args: str, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("MSA_HF_DEBUG", None)
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=REPO, timeout=timeout
    )


def test_import_msa_hf_imports_no_heavy_library_and_still_registers_the_auto_classes(tiny_model_dir):
    code = f"""
import json, sys
import msa_hf
light = [m for m in {HEAVY!r} if m in sys.modules]
from transformers import AutoModel, AutoProcessor, AutoModelForZeroShotImageClassification
model = AutoModel.from_pretrained(sys.argv[1])
processor = AutoProcessor.from_pretrained(sys.argv[1])
zero_shot = AutoModelForZeroShotImageClassification.from_pretrained(sys.argv[1])
print(json.dumps([light, type(model).__name__, type(processor).__name__, type(zero_shot).__name__]))
"""
    proc = python(code, str(tiny_model_dir))
    assert proc.returncode == 0, proc.stderr[-3000:]
    heavy, model, processor, zero_shot = json.loads(proc.stdout.strip().splitlines()[-1])
    assert heavy == []
    assert (model, processor, zero_shot) == ("MSAModel", "MSAProcessor", "MSAForZeroShotImageClassification")


def test_registration_waits_for_modules_that_are_still_importing(tiny_model_dir):
    """Whatever is imported first (transformers, a class of msa_hf, a pipeline), the Auto classes know MSA."""
    code = """
import sys
first = sys.argv[2]
if first == "transformers":
    from transformers import AutoModel
    import msa_hf
elif first == "msa_class":
    from msa_hf import MSAConfig
    from transformers import AutoModel
else:
    import msa_hf
    from transformers import AutoModel, pipeline
print(type(AutoModel.from_pretrained(sys.argv[1])).__name__)
"""
    for first in ("transformers", "msa_class", "pipeline"):
        proc = python(code, str(tiny_model_dir), first)
        assert proc.returncode == 0 and proc.stdout.split()[-1] == "MSAModel", (first, proc.stderr[-3000:])


# A path that does not exist, in each command's first path argument.
MISSING_PATH = {
    "msa-app": "--model ./missing-model",
    "msa-classify": "./missing-folder --model m",
    "msa-convert-original": "--img-model ./a.pth --img-map b --text-model c --crossatt d --text-config e --out f",
    "msa-data": "validate ./missing-corpus",
    "msa-eval": "--model m --corpus missing.json",
    "msa-index": "build ./missing-folder --model m --out i.idx",
    "msa-push": "./missing-folder --repo-id user/x",
    "msa-search": "missing.idx two planes",
}


def test_every_command_answers_help_usage_errors_and_missing_paths_without_heavy_imports():
    code = f"""
import contextlib, importlib, io, json, sys
results, errors = {{}}, {{}}
missing = json.loads(sys.argv[2])
for name, target in json.loads(sys.argv[1]).items():
    module, function = target.split(":")
    main = getattr(importlib.import_module(module), function)
    for argv in (["--help"], ["--no-such-option"], missing[name].split()):
        err = io.StringIO()
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
            results[f"{{name}} {{argv[0]}}"] = main(argv)
        errors[f"{{name}} {{argv[0]}}"] = err.getvalue()
print(json.dumps([results, errors, [m for m in {HEAVY!r} if m in sys.modules]]))
"""
    proc = python(code, json.dumps(COMMANDS), json.dumps(MISSING_PATH))
    assert proc.returncode == 0, proc.stderr[-3000:]
    results, errors, heavy = json.loads(proc.stdout.strip().splitlines()[-1])
    assert heavy == []
    expected = {f"{name} {flag}": code for name in COMMANDS for flag, code in (("--help", 0), ("--no-such-option", 2))}
    expected |= {f"{name} {MISSING_PATH[name].split()[0]}": 2 for name in COMMANDS}
    assert results == expected
    for name in COMMANDS:
        assert "does not exist" in errors[f"{name} {MISSING_PATH[name].split()[0]}"], name


# Arguments that pass argparse, so the command goes on to import its libraries.
CHECKPOINT_FLAGS = ("img-model", "img-map", "text-model", "crossatt", "text-config")
RUN_ARGS = {
    "msa-convert-original": " ".join(f"--{flag} pyproject.toml" for flag in CHECKPOINT_FLAGS) + " --out f",
    "msa-data": "validate missing-corpus",
    "msa-eval": "--model missing --corpus missing",
    "msa-index": "build . --model missing --out missing.idx",
    "msa-search": ". two planes",
    "msa-classify": ". --model missing --labels a,b",
    "msa-app": "--model missing --index missing.idx",
}
WATCH = """
import importlib.abc, sys


class SignalOnHeavyImport(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name in ("torch", "datasets", "transformers", "gradio"):
            sys.meta_path.remove(self)
            print("importing", name, file=sys.stdout, flush=True)
            sys.stdin.readline()  # blocks until the parent's SIGINT interrupts it
        return None


sys.meta_path.insert(0, SignalOnHeavyImport())
import importlib
module, function = sys.argv[1].split(":")
sys.exit(getattr(importlib.import_module(module), function)(sys.argv[2:]))
"""


@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT to a subprocess")
@pytest.mark.parametrize("command", sorted(RUN_ARGS))
def test_ctrl_c_while_a_command_imports_exits_130_in_one_line(command):
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    env.pop("MSA_HF_DEBUG", None)
    proc = subprocess.Popen(
        [sys.executable, "-c", WATCH, COMMANDS[command], *RUN_ARGS[command].split()],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO,
    )
    try:
        assert proc.stdout.readline().startswith("importing"), proc.stderr.read()
        proc.send_signal(signal.SIGINT)  # the child waits inside the import until the signal lands
        _, err = proc.communicate(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == 130, err
    assert err.strip().splitlines() == [f"{command}: interrupted"]

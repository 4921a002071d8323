"""README.md's commands work as written: the make targets of "The two
commands" exist, every ``kvmss`` verb in its code blocks exists, and the
modules and scripts it runs are there."""

from __future__ import annotations

import importlib.util
import re
import shlex
import subprocess
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from kvmss.cli.main import main

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
FENCE_RE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)


def section(text: str, title: str) -> str:
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def shell_lines(text: str) -> list[str]:
    """The commands of the ``sh`` code blocks of ``text``, comments dropped."""
    lines = []
    for lang, body in FENCE_RE.findall(text):
        if lang != "sh":
            continue
        for line in body.splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def kvmss_verbs(line: str) -> list[list[str]]:
    """The command paths a README line names: ``kvmss image list | versions P O S``
    is ``[["image", "list"], ["image", "versions"]]`` (``|`` lists more verbs of
    the same group)."""
    words = shlex.split(line)
    if words and words[0] == "sudo":
        words = words[1:]
    if not words or Path(words[0]).name != "kvmss":
        return []
    segments: list[list[str]] = [[]]
    for w in words[1:]:
        if w == "|":
            segments.append([])
        else:
            segments[-1].append(w)
    paths: list[list[str]] = []
    parent: list[str] = []
    for seg in segments:
        path = resolve(seg, parent)
        assert path, f"{line!r}: {' '.join(seg)!r} names no kvmss command"
        paths.append(path)
        parent = path[:-1]
    return paths


def resolve(words: list[str], parent: list[str]) -> list[str]:
    """The longest command path ``parent + words[:k]`` that exists in the CLI."""
    cmd: click.Command = main
    for name in parent:
        assert isinstance(cmd, click.Group)
        cmd = cmd.commands[name]
    path = list(parent)
    for w in words:
        if not isinstance(cmd, click.Group) or w not in cmd.commands:
            break
        cmd = cmd.commands[w]
        path.append(w)
    if isinstance(cmd, click.Group) or path == parent:
        return []  # a group alone, or nothing: not a verb
    return path


def readme() -> str:
    return README.read_text()


def test_the_two_commands_are_make_targets_that_exist() -> None:
    lines = shell_lines(section(readme(), "The two commands"))
    targets = [shlex.split(x)[1] for x in lines if x.startswith("make ")]
    assert {"test", "demo", "demo-down"} <= set(targets)
    for target in targets:
        r = subprocess.run(
            ["make", "-n", target], cwd=REPO, capture_output=True, text=True, check=False
        )
        assert r.returncode == 0, f"make -n {target}: {r.stderr}"


def test_make_demo_runs_kvmss_lab() -> None:
    r = subprocess.run(["make", "-n", "demo"], cwd=REPO, capture_output=True, text=True)
    assert "kvmss lab up" in r.stdout
    r = subprocess.run(["make", "-n", "demo-down"], cwd=REPO, capture_output=True, text=True)
    assert "kvmss lab down" in r.stdout


def all_verbs() -> list[list[str]]:
    out: list[list[str]] = []
    for line in shell_lines(readme()):
        for path in kvmss_verbs(line):
            if path not in out:
                out.append(path)
    return out


def test_the_readme_shows_the_lab_and_the_main_verbs() -> None:
    verbs = {" ".join(p) for p in all_verbs()}
    assert {"lab up", "lab status", "lab down", "vmss create", "image publish"} <= verbs


@pytest.mark.parametrize("path", all_verbs(), ids=lambda p: " ".join(p))
def test_every_kvmss_verb_in_the_readme_exists(path: list[str]) -> None:
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output


def test_modules_and_scripts_the_readme_runs_exist() -> None:
    lines = shell_lines(readme())
    modules = [m for x in lines for m in re.findall(r"python -m ([\w.]+)", x)]
    scripts = [s for x in lines for s in re.findall(r"python ([\w/]+\.py)", x)]
    assert modules and scripts
    for m in modules:
        assert (REPO / (m.replace(".", "/") + ".py")).is_file() or importlib.util.find_spec(m), m
    for s in scripts:
        assert (REPO / s).is_file(), s


def test_kvmss_verbs_parses_alternatives_and_rejects_unknown_verbs() -> None:
    assert kvmss_verbs(".venv/bin/kvmss image list | versions P O S") == [
        ["image", "list"],
        ["image", "versions"],
    ]
    assert kvmss_verbs("kvmss vmss rolling-upgrade start web --wait | cancel web") == [
        ["vmss", "rolling-upgrade", "start"],
        ["vmss", "rolling-upgrade", "cancel"],
    ]
    assert kvmss_verbs("kvmss-agent serve --config x") == []
    with pytest.raises(AssertionError):
        kvmss_verbs("kvmss vmss frobnicate web")
    with pytest.raises(AssertionError):
        kvmss_verbs("kvmss vmss")

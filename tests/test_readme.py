"""README.md and docs/ stay true: the Python examples run as written, every `varedit ...` line of their
code blocks names real commands and options, README stays a short front door, and the documentation
speaks of the product only."""
from __future__ import annotations

import re
from pathlib import Path

import click
import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from varedit.cli import main

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
DOCS = {p.name: p.read_text() for p in sorted((ROOT / "docs").glob("*.md"))}
PAGES = {"README.md": README, **{f"docs/{k}": v for k, v in DOCS.items()}}

#: words about how the work was organised, not about the product (the same rule as the project's hook)
ORGANISATION = re.compile(r"(the [a-z-]+ issue\b|\bissue #?[0-9]+|\blent to\b|this session|session.s (cpu )?time)",
                          re.I)
GLOBAL_OPTIONS = {"-q", "--quiet", "-v", "-vv", "--verbose", "--debug"}


def _block(text: str, section: str, lang: str) -> str:
    """The first fenced ``lang`` block after the heading ``section``."""
    start = text.index(f"\n{section}\n")
    m = re.compile(rf"```{lang}\n(.*?)```", re.S).search(text, start)
    assert m, f"no {lang} block under {section}"
    return m.group(1)


def _code_blocks(text: str) -> list[str]:
    """Every fenced block's body (any language tag)."""
    return re.findall(r"^```[\w-]*\n(.*?)^```", text, re.S | re.M)


# --------------------------------------------------------------------------------------------------
# the Python examples
# --------------------------------------------------------------------------------------------------
def _statements(code: str) -> list[str]:
    return [c for c in (re.sub(r"\s+#.*$", "", line).strip() for line in code.splitlines()) if c]


def test_readme_python_example_is_part_of_the_api_page():
    """README's example is lines of docs/python-api.md's, which runs below (one run instead of two)."""
    api = set(_statements(_block(PAGES["docs/python-api.md"], "## The pipeline", "python")))
    readme = _statements(_block(README, "### Python", "python"))
    assert readme and not [s for s in readme if s not in api]


@pytest.mark.parametrize("page,section", [("docs/python-api.md", "## The pipeline")])
def test_python_api_example_runs_as_written(page, section, tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    Image.fromarray((rng.random((96, 160, 3)) * 255).astype(np.uint8)).save(tmp_path / "photo.png")
    mask = np.zeros((96, 160), np.uint8)
    mask[30:70, 50:110] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    Image.fromarray((rng.random((40, 60, 3)) * 255).astype(np.uint8)).save(tmp_path / "small.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.delenv("VAREDIT_MODEL", raising=False)
    scope: dict = {}
    exec(compile(_block(PAGES[page], section, "python"), page, "exec"), scope)  # noqa: S102 - our own docs
    assert Image.open(tmp_path / "star.png").size == (128, 128)
    assert Image.open(tmp_path / "out.png").size == (120, 80)  # the upscaled small.png
    assert scope["r"].settings["task"] == "upscale" and scope["r"].settings["seed"] == 4


# --------------------------------------------------------------------------------------------------
# every `varedit ...` line of every code block
# --------------------------------------------------------------------------------------------------
def _varedit_lines(text: str) -> list[str]:
    """Lines of code blocks that run varedit: `varedit ...`, after environment assignments
    (`VAREDIT_MODEL=var-d16 varedit ...`), or `torchrun ... -m varedit.cli ...` (as `varedit ...`);
    backslash continuations joined, comments dropped."""
    out = []
    for body in _code_blocks(text):
        for line in body.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#.*$", "", line).strip()
            line = re.sub(r"^(export\s+)?([A-Z_][A-Z0-9_]*=\S*\s+)+", "", line)
            line = re.sub(r"^torchrun\s.*?-m varedit\.cli\s", "varedit ", line)
            line = re.sub(r"\s*&$", "", line)
            if line.startswith("varedit "):
                out.append(line)
    return out


def _word(w: str) -> str:
    return w.strip("[]()|,`'\"")


def _resolve(words: list[str]) -> list[tuple[list[str], list[str]]]:
    """(command path, long options named) for one line's words after `varedit`. A group's subcommand may
    be given as alternatives: `models list | info MODEL [--json] | pull NAME`, `train vqvae|var ...`."""
    words = [w for w in words if _word(w) not in GLOBAL_OPTIONS]
    name = _word(words[0])
    cmd = main.get_command(click.Context(main), name)
    rest = " ".join(words[1:])
    if not isinstance(cmd, click.Group):  # (an unknown command fails in the test, naming the page)
        return [([name], re.findall(r"--[\w-]+", rest))]
    out = []
    for segment in re.split(r"\s\|\s(?=[a-z])", rest):  # `| pull NAME` starts an alternative, `| --x` does not
        seg = segment.split()
        if not seg:
            continue
        opts = re.findall(r"--[\w-]+", " ".join(seg[1:]))
        for sub in _word(seg[0]).split("|"):
            out.append(([name, sub], opts))
    return out


def _page_commands(page: str) -> list[tuple[list[str], list[str]]]:
    return [c for line in _varedit_lines(PAGES[page]) for c in _resolve(line.split()[1:])]


def _doc_commands() -> list[tuple[str, list[str], list[str]]]:
    """Every (page, command path, options) of the pages, each command and option set once."""
    out, seen = [], set()
    for page in PAGES:
        for path, opts in _page_commands(page):
            key = (tuple(path), tuple(opts))
            if key not in seen:
                seen.add(key)
                out.append((page, path, opts))
    return out


def _options(cmd: click.Command) -> set[str]:
    names = {"--help"}
    for p in cmd.params:
        names.update(o for o in (*p.opts, *p.secondary_opts) if o.startswith("--"))
    return names


@pytest.mark.parametrize("page,path,options", _doc_commands(),
                         ids=lambda v: " ".join(v) if isinstance(v, list) else v if isinstance(v, str) else None)
def test_documented_commands_and_options_exist(page, path, options):
    res = CliRunner().invoke(main, path + ["--help"])
    assert res.exit_code == 0, f"{page}: varedit {' '.join(path)}: {res.output}"
    ctx = click.Context(main)
    cmd: click.Command = main
    for p in path:
        assert isinstance(cmd, click.Group)
        sub = cmd.get_command(ctx, p)
        assert sub is not None, f"{page}: no command varedit {' '.join(path)}"
        cmd = sub
    missing = [o for o in options if o not in _options(cmd)]
    assert not missing, f"{page}: varedit {' '.join(path)} has no {', '.join(missing)}"


def test_the_command_lists_are_checked():
    """The parser sees the pages' commands: the command list of docs/cli.md and the README's quick start."""
    cli_cmds = {tuple(p) for p, _ in _page_commands("docs/cli.md")}
    for c in ("generate", "inpaint", "outpaint", "edit", "upscale", "export", "serve", "bench", "remove"):
        assert any(p[0] == c for p in cli_cmds), c
    assert ("models", "list") in cli_cmds and ("train", "var") in cli_cmds
    readme = {tuple(p) for p, _ in _page_commands("README.md")}
    assert {("generate",), ("inpaint",), ("serve",), ("export", "onnx")} <= readme


def test_a_wrong_option_is_caught():
    """The check can fail: an option no command has is reported."""
    (path, opts), = _resolve("inpaint x.png --no-such-option -o y.png".split())
    assert "--no-such-option" in opts and "--no-such-option" not in _options(main.get_command(click.Context(main),
                                                                                                "inpaint"))


# --------------------------------------------------------------------------------------------------
# README as the front door; the docs speak of the product
# --------------------------------------------------------------------------------------------------
def test_readme_is_a_short_front_door():
    assert len(README.splitlines()) <= 300
    for page in re.findall(r"\]\((docs/[\w.-]+\.md)", README):
        assert (ROOT / page).is_file(), page


def _anchors(text: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    heads = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_docs_links_point_to_pages_and_headings_that_exist():
    for name, text in PAGES.items():
        base = ROOT if name == "README.md" else ROOT / "docs"
        for target, anchor in re.findall(r"\]\(([^)#\s]*\.md)?(?:#([^)\s]+))?\)", text):
            if not target and not anchor:
                continue
            path = (base / target).resolve() if target else ROOT / name
            assert path.is_file(), f"{name} links to missing {target}"
            if anchor:
                assert anchor in _anchors(path.read_text()), f"{name} links to missing #{anchor} in {target or name}"


def test_docs_speak_of_the_product_only():
    hits = [f"{name}: {m.group(0)!r}" for name, text in PAGES.items() for m in ORGANISATION.finditer(text)]
    assert not hits, hits


def test_ci_runs_the_readme_test_command():
    ci = (ROOT / ".ci" / "run").read_text()
    setup = _block(README, "## Install", "bash")
    assert "pip install torch==2.13.0" in setup and 'pip install -e ".[cpu,test]"' in setup
    assert "python -m pytest -q" in README
    assert ci.rstrip().splitlines()[-1].strip() == "python -m pytest -q"
    assert "python -m pip install -q torch==2.13.0" in ci and 'python -m pip install -q -e ".[cpu,test]"' in ci

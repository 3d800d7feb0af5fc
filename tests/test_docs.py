"""The README is the front door and docs/ holds the rest; every command they quote works.

- README.md stays short (at most MAX_README_LINES lines) and links every page of docs/ and
  CHANGELOG.md;
- every relative link of README.md, CHANGELOG.md and docs/*.md names a file that exists (and
  a `#fragment`, a heading of that file), and so does every file (`aelab/training/run.py`) or
  module name (`aelab.sweeps.plan_runs`) quoted in their prose;
- every `python -m ...` command in a fenced code block of those pages works as far as it can
  without training: `python -m aelab ARGS` (one run or a `-m` sweep, a `+sweep=` file, Hydra
  launchers) passes the CLI's own option check, composes with Hydra as the CLI composes it
  (a sweep: its first run, after the sweep's run folders are planned and checked as the
  sweep would) and passes `aelab.config.validate`, every check made before anything is built;
  `python -m aelab.stacked ARGS` plans its sweep with aelab.stacked's own planner; the
  analysis and benchmark tools parse their documented arguments with their own argparse
  parser, and answer `--help` with exit 0.

A command documented as refused carries a comment starting with `refused` (`python -m aelab
+l2_penality=1e-3  # refused: ...`): it must be refused. A form with placeholders
(`<run folder>`, `DIR`) goes in a ```text block, which is not run; every other fence with no
language, or bash/sh/shell/console, is checked, and a `python -m` line indented as a code block
outside a fence is an error (it would escape the check).
"""

from __future__ import annotations

import argparse
import re
import shlex
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from unittest import mock

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import DictConfig, OmegaConf, open_dict

from aelab.config import CONFIG_DIR

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CHANGELOG = REPO / "CHANGELOG.md"
DOCS = sorted((REPO / "docs").glob("*.md"))
PAGES = [README, CHANGELOG, *DOCS]
MAX_README_LINES = 210

CHECKED_FENCES = {"", "bash", "sh", "shell", "console"}
FENCE = re.compile(r"^\s*```\s*([\w+-]*)\s*$")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)")
SEPARATORS = {"&&", "||", ";", "|", "&"}
# the tools a doc may run besides python -m aelab and python -m aelab.stacked
ANALYSIS = {  # the command's module -> the module whose main(argv) parses its arguments
    "aelab.summarize": "aelab.analysis.summarize",
    "aelab.figures": "aelab.analysis.figures",
    "benchmarks.bench": "benchmarks.bench",
    "aelab.doctor": "aelab.doctor.__main__",
    "benchmarks.doctor": "benchmarks.doctor",
    "benchmarks.scope": "benchmarks.scope",
    "benchmarks.why_fashion": "benchmarks.why_fashion",
}
NOT_OURS = {"pytest", "pip", "venv", "tensorboard"}


def rel(path: Path) -> str:
    return str(path.relative_to(REPO))


@dataclass
class Block:
    page: Path
    line: int  # 1-based line of the opening fence
    lang: str
    lines: list[str]


def split_page(page: Path) -> tuple[list[Block], list[tuple[int, str]]]:
    """(fenced code blocks, the other lines with their numbers) of a Markdown page."""
    blocks: list[Block] = []
    prose: list[tuple[int, str]] = []
    current: Block | None = None
    for n, line in enumerate(page.read_text(encoding="utf-8").splitlines(), start=1):
        match = FENCE.match(line)
        if current is None and match:
            current = Block(page, n, match.group(1).lower(), [])
        elif current is not None and line.strip() == "```":
            blocks.append(current)
            current = None
        elif current is not None:
            current.lines.append(line)
        else:
            prose.append((n, line))
    assert current is None, f"{rel(page)}:{current.line}: a code fence is never closed"
    return blocks, prose


@dataclass
class Command:
    page: Path
    line: int
    module: str
    args: list[str]
    refused: bool  # documented as refused (a comment starting with "refused")

    @property
    def id(self) -> str:
        return f"{rel(self.page)}:{self.line}:{self.module}"

    def __str__(self) -> str:
        return f"{rel(self.page)}:{self.line}: python -m {self.module} {shlex.join(self.args)}"


def logical_lines(block: Block) -> list[tuple[int, str]]:
    """The block's lines with backslash continuations joined, each with its first line."""
    out: list[tuple[int, str]] = []
    pending, start = "", 0
    for i, line in enumerate(block.lines, start=block.line + 1):
        if not pending:
            start = i
        if line.rstrip().endswith("\\"):
            pending += line.rstrip()[:-1] + " "
            continue
        out.append((start, pending + line))
        pending = ""
    if pending:
        out.append((start, pending))
    return out


def commands_in(block: Block) -> list[Command]:
    found = []
    for n, line in logical_lines(block):
        code, comment = _code_and_comment(line)
        lexer = shlex.shlex(code, posix=True, punctuation_chars=";&|")
        lexer.whitespace_split = True
        lexer.commenters = ""
        tokens = list(lexer)
        segment: list[str] = []
        for token in [*tokens, ";"]:
            if token not in SEPARATORS:
                segment.append(token)
                continue
            if len(segment) >= 3 and re.fullmatch(r"python3?", segment[0]) and segment[1] == "-m":
                module = segment[2]
                if module.split(".")[0] not in NOT_OURS:
                    refused = comment.strip().lower().startswith("refused")
                    found.append(Command(block.page, n, module, segment[3:], refused))
            segment = []
    return found


def _code_and_comment(line: str) -> tuple[str, str]:
    """The shell code of a line and its trailing comment (after a `#` that starts a word)."""
    match = re.search(r"(^|\s)#", line)
    if not match:
        return line, ""
    return line[: match.start()], line[match.end():]


def all_commands() -> list[Command]:
    commands = []
    for page in PAGES:
        if not page.is_file():
            continue
        blocks, _ = split_page(page)
        for block in blocks:
            if block.lang in CHECKED_FENCES:
                commands.extend(commands_in(block))
    return commands


COMMANDS = all_commands()


# ---------------------------------------------------------------- the pages and their links


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= MAX_README_LINES, (
        f"README.md has {len(lines)} lines (at most {MAX_README_LINES}): move detail to docs/"
    )


def links(page: Path) -> list[tuple[int, str]]:
    _, prose = split_page(page)
    found = []
    for n, line in prose:
        # a link inside inline code is not a link
        for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
            found.append((n, target))
    return found


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE))


def test_readme_links_every_doc() -> None:
    assert DOCS, "docs/ holds no page"
    linked = {
        (README.parent / target.split("#")[0]).resolve()
        for _, target in links(README)
        if not is_external(target) and not target.startswith("#")
    }
    missing = [rel(p) for p in [CHANGELOG, *DOCS] if p.resolve() not in linked]
    assert not missing, f"README.md links no {', '.join(missing)}"


def slug(heading: str) -> str:
    """GitHub's anchor for a Markdown heading."""
    text = re.sub(r"`|\*\*|\*|_(?=\W)|\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    _, prose = split_page(page)
    seen: dict[str, int] = {}
    out = set()
    for _, line in prose:
        match = re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        base = slug(match.group(1))
        n = seen.get(base, 0)
        seen[base] = n + 1
        out.add(base if n == 0 else f"{base}-{n}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_links_resolve(page: Path) -> None:
    assert page.is_file(), f"{rel(page)} is missing"
    broken = []
    for n, target in links(page):
        if is_external(target):
            continue
        path_part, _, fragment = target.partition("#")
        path = (page.parent / path_part).resolve() if path_part else page
        if not path.exists():
            broken.append(f"{rel(page)}:{n}: {target} (no such file)")
        elif fragment and path.suffix == ".md" and fragment not in anchors(path):
            broken.append(f"{rel(page)}:{n}: {target} (no heading #{fragment} in {path.name})")
    assert not broken, "broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_no_unfenced_commands(page: Path) -> None:
    """An indented code block escapes the command check: commands go in fenced blocks."""
    _, prose = split_page(page)
    loose = [f"{rel(page)}:{n}: {line.strip()}" for n, line in prose
             if re.match(r"^ {4,}(\$ )?python3? -m ", line)]
    assert not loose, "put these in a ```bash (or ```text) block:\n" + "\n".join(loose)


PATH_SPAN = re.compile(
    r"`((?:aelab|tests|conf|sweeps|notebooks|benchmarks|hydra_plugins|docs|\.ci)/[^`\s]*)`")
NAME_SPAN = re.compile(r"`(aelab(?:\.\w+)+)`")


def resolves(dotted: str) -> bool:
    """`aelab.x.y` names a module, or an attribute of one."""
    import importlib

    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:n]))
        except ImportError:
            continue
        try:
            for attr in parts[n:]:
                obj = getattr(obj, attr)
        except AttributeError:
            return False
        return True
    return False


@pytest.mark.parametrize("page", PAGES, ids=rel)
def test_named_files_and_modules_exist(page: Path) -> None:
    """A file (`aelab/training/run.py`, `sweeps/seeds.yaml`) or a module (`aelab.sweeps.plan_runs`)
    named in the prose exists: the layout moved once, and a stale name misleads."""
    _, prose = split_page(page)
    stale = []
    for n, line in prose:
        for span in PATH_SPAN.findall(line):
            if any(c in span for c in "<*{") or "NAME" in span:
                continue  # a pattern, not a path
            if not (REPO / span).exists():
                stale.append(f"{rel(page)}:{n}: {span} (no such file)")
        for span in NAME_SPAN.findall(line):
            if not resolves(span):
                stale.append(f"{rel(page)}:{n}: {span} (no such module or name)")
    assert not stale, "stale names:\n" + "\n".join(stale)


def test_the_commands_were_found() -> None:
    """The extraction itself: the quick start's run (after `pip install ... &&`), a sweep of
    the findings and a refusal are among the commands found."""
    assert any(c.page == README and c.module == "aelab" and not c.args for c in COMMANDS)
    assert any(c.page.name == "findings.md" and c.module == "aelab" and "-m" in c.args
               and any(a.startswith("+sweep=") for a in c.args) for c in COMMANDS)
    assert any(c.refused for c in COMMANDS)
    assert {"aelab", "aelab.summarize", "aelab.figures", "aelab.stacked",
            "benchmarks.bench"} <= {c.module for c in COMMANDS}


# ---------------------------------------------------------------- the commands


def _compose(overrides: list[str]) -> DictConfig:
    with initialize_config_dir(config_dir=CONFIG_DIR, version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def compose_cli(overrides: list[str], multirun: bool, out_dir: Path) -> DictConfig:
    """The config `python -m aelab [-m] OVERRIDES` gives its (first) run, without `hydra`."""
    from aelab.sweeps import check_distinct, plan_runs

    parsed = OverridesParser.create().parse_overrides(overrides)
    hydra = [line for line, o in zip(overrides, parsed) if o.key_or_group.startswith("hydra")]
    task = [line for line, o in zip(overrides, parsed) if not o.key_or_group.startswith("hydra")]
    sweeps = [line for line, o in zip(overrides, parsed) if o.is_sweep_override()]
    if not multirun:
        assert not sweeps, f"{sweeps} is a sweep: Hydra needs -m (--multirun) for it"
        job = task
    else:
        fixed = [line for line in task if line not in sweeps]
        hcfg = _compose(fixed + hydra).hydra
        params = (OmegaConf.to_container(hcfg.sweeper.params, resolve=False)
                  if hcfg.sweeper.get("params") else {})
        naming = hcfg.job.config.override_dirname
        exclude = list(naming.exclude_keys)
        runs = plan_runs(params, task, exclude, naming.item_sep, naming.kv_sep)
        check_distinct(runs, exclude)
        job = runs[0][0]
    cfg = _compose([*job, *hydra, f"paths.output_dir={out_dir}"])
    with open_dict(cfg):
        del cfg["hydra"]
    return cfg


def check_aelab(args: list[str], out_dir: Path) -> None:
    """As `python -m aelab ARGS` would, up to the first training step: raises on a refusal."""
    from aelab.__main__ import unknown_option
    from aelab.config.validate import validate

    multirun, overrides, rest = False, [], list(args)
    while rest:
        arg = rest.pop(0)
        if arg in ("-m", "--multirun"):
            multirun = True
        elif arg in ("--cfg", "-c", "--package", "-p"):
            assert rest, f"{arg} needs a value"
            rest.pop(0)
        elif arg in ("--help", "-h", "--hydra-help", "--info"):
            continue
        elif arg.startswith("-"):
            raise AssertionError(f"{arg}: not a flag of python -m aelab (Hydra's main)")
        else:
            overrides.append(arg)
    message = unknown_option(overrides)
    if message:
        raise Refused(message)
    validate(compose_cli(overrides, multirun, out_dir))


def check_stacked(args: list[str], out_dir: Path) -> None:
    """As `python -m aelab.stacked ARGS` plans its sweep (nothing trains)."""
    from aelab.config.validate import validate
    from aelab.stacked.sweep import plan_jobs, split_args

    _, task, hydra = split_args(args)
    sweep = plan_jobs(task, hydra)
    assert sweep.jobs, "the sweep plans no run"
    validate(sweep.jobs[0][0])


class Refused(Exception):
    """The CLI's own refusal before Hydra composes (a misspelt option: exit 2)."""


def refusals() -> tuple[type[BaseException], ...]:
    """What a refused command may raise: aelab's refusals, Hydra's and OmegaConf's errors."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    from aelab.errors import AelabError

    return (Refused, AelabError, HydraException, OmegaConfBaseException)


class Parsed(Exception):
    """Raised once a tool's parser has read its arguments: nothing else runs."""


def parse_with(main: Callable[..., object], args: list[str]) -> None:
    """Run `main(args)` until its argparse parser has parsed `args` (SystemExit on an error)."""
    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self: argparse.ArgumentParser, args: object = None,
                        namespace: object = None) -> None:
        real(self, args, namespace)
        raise Parsed

    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop):
        try:
            main(args)
        except Parsed:
            return
        except SystemExit as exc:  # --help exits 0; a bad argument exits 2
            if exc.code in (0, None):
                return
            raise AssertionError(f"its parser refused the arguments (exit {exc.code})") from exc
    raise AssertionError("main() returned without parsing its arguments")


def check_analysis(module: str, args: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    monkeypatch.syspath_prepend(str(REPO))  # benchmarks/ lives beside the package
    parse_with(importlib.import_module(ANALYSIS[module]).main, args)


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c.id)
def test_documented_command(command: Command, tmp_path: Path,
                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # nothing here writes, but if it did, not into the clone

    def check() -> None:
        if command.module == "aelab":
            check_aelab(command.args, tmp_path / "run")
        elif command.module == "aelab.stacked":
            check_stacked(command.args, tmp_path / "run")
        else:
            check_analysis(command.module, command.args, monkeypatch)

    known = ["aelab", "aelab.stacked", *ANALYSIS]
    if command.module not in known:
        pytest.fail(f"{command}: no such tool (known: {', '.join(known)})")
    if command.refused:
        with pytest.raises(refusals()):
            check()
        return
    try:
        check()
    except Exception as exc:
        pytest.fail(f"{command}\n  fails: {type(exc).__name__}: {exc}")


@pytest.mark.parametrize("module", sorted({c.module for c in COMMANDS} & set(ANALYSIS)))
def test_tool_help(module: str) -> None:
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"python -m {module} --help: exit {done.returncode}\n{done.stderr}"

"""The commands that README.md and docs/*.md show, as a reader would type them; a folder laid out like a
checkout to run them in; and a check of the arguments of those that are not run.

What counts as a command:
- every command line of a ```sh, ```bash, ```shell or ```console code block (in ```console blocks only the
  lines after a `$ ` prompt; the other lines are output): a line continues after a `\\` and after a
  trailing `|` or `&&`, a `#` comment (outside quotes) is dropped, and a chain `a && b` or `a; b` gives one
  command per part;
- every ```python code block, as one command (its text);
- inline `code` in the prose that starts with a command a reader would type (`sh`, `bash`, `python`,
  `torchrun`, `pip`, `tensorboard`, `git`, the project's `imas-*`; after optional `NAME=value` settings and
  `time`, `env`, `/usr/bin/time -v`, `taskset -c N`) and gives it at least one argument. A bare name
  (`imas-report`) and a name with only subcommand words and one option without its value
  (`imas-data splits pascal`, `imas-eval --output`) are words in a sentence, not command lines.

Each command keeps the file and line it starts on, and the test file that an HTML comment right above its
block names as running it (`<!-- ... tests/test_x.py ... -->`); `key` is what the classification of
tests/test_docs_commands.py is indexed by (the command with its whitespace collapsed; for a Python block,
"python: " and its first line).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import json
import os
import re
import runpy
import shutil
import signal
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from importlib.metadata import entry_points
from pathlib import Path
from unittest import mock

SHELL_LANGUAGES = {"sh", "bash", "shell", "console"}
COMMAND_WORDS = {
    *("sh", "bash", "python", "python3", "torchrun", "pip", "tensorboard", "git"),
    *("time", "/usr/bin/time", "env", "taskset"),  # the wrappers the docs put before a command
}
PROJECT_PREFIX = "imas-"
FENCE = re.compile(r"^\s*(```+|~~~+)\s*([\w+-]*)")
ASSIGNMENT = re.compile(r"[A-Za-z_]\w*=")
SUBCOMMAND_WORD = re.compile(r"[a-z][a-z_]*$")
RUN_BY = re.compile(r"tests/test_\w+\.py")


@dataclass(frozen=True)
class DocCommand:
    """One command of the docs: `text` as it is run, where it starts, and how it was written."""

    text: str
    path: str  # relative to the repository root, e.g. "docs/data.md"
    line: int  # 1-based line of its first character
    form: str  # "block" (a shell code block), "inline" (prose) or "python" (a Python code block)
    run_by: str = ""  # the test file an HTML comment right above its block names as running it

    @property
    def key(self) -> str:
        if self.form == "python":
            first = next(line for line in self.text.splitlines() if line.strip())
            return "python: " + first.strip()
        return self.text

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}"


def doc_files(repo: Path) -> list[Path]:
    """README.md and docs/*.md, in that order."""
    return [repo / "README.md", *sorted((repo / "docs").glob("*.md"))]


def commands_of(repo: Path) -> list[DocCommand]:
    """Every command of every doc file, in document order."""
    found: list[DocCommand] = []
    for path in doc_files(repo):
        found += commands_in(path.read_text(encoding="utf-8"), str(path.relative_to(repo)))
    return found


def commands_in(text: str, path: str) -> list[DocCommand]:
    """The commands of one Markdown text: its code blocks', then its prose's."""
    lines = text.splitlines()
    found: list[DocCommand] = []
    prose = list(lines)  # the text with every code block blanked (line numbers kept)
    n = 0
    while n < len(lines):
        fence = FENCE.match(lines[n])
        if fence is None:
            n += 1
            continue
        end = next(
            (k for k in range(n + 1, len(lines)) if lines[k].strip().startswith(fence.group(1))), len(lines)
        )
        body = lines[n + 1 : end]
        language = fence.group(2).lower()
        run_by = _run_by(lines, n)
        if language in SHELL_LANGUAGES:
            found += _shell_block(body, n + 2, path, language == "console", run_by)
        elif language == "python" and any(line.strip() for line in body):
            code = textwrap.dedent("\n".join(body)).strip("\n") + "\n"
            first = next(k for k, line in enumerate(body) if line.strip())
            found.append(DocCommand(code, path, n + 2 + first, "python", run_by))
        for k in range(n, min(end + 1, len(lines))):
            prose[k] = ""
        n = end + 1
    return found + _inline(prose, path)


def _run_by(lines: list[str], fence: int) -> str:
    """The test file (tests/test_*.py) an HTML comment on the lines right above a fence names, or ""."""
    k = fence - 1
    while k >= 0 and not lines[k].strip():
        k -= 1
    if k < 0 or not lines[k].strip().startswith("<!--"):
        return ""
    named = RUN_BY.search(lines[k])
    return named.group(0) if named else ""


def _shell_block(body: list[str], first_line: int, path: str, prompt: bool, run_by: str) -> list[DocCommand]:
    """The commands of a shell block whose first body line is line `first_line` of the file. A line
    continues on the next after a `\\` and after a trailing `|`, `&&` or `||` (comments aside)."""
    found: list[DocCommand] = []
    n = 0
    while n < len(body):
        start, line = n, body[n]
        n += 1
        if prompt:
            if not line.lstrip().startswith("$ "):
                continue
            line = line.lstrip()[2:]
        while n < len(body):
            if line.rstrip().endswith("\\"):
                line = line.rstrip()[:-1] + " " + body[n]
            elif strip_comment(line).rstrip().endswith(("|", "&&")):
                line = strip_comment(line) + " " + body[n]
            else:
                break
            n += 1
        for part in split_chain(strip_comment(line)):
            found.append(DocCommand(part, path, first_line + start, "block", run_by))
    return found


def strip_comment(line: str) -> str:
    """The line without its `#` comment: a `#` outside quotes at the start or after a blank."""
    quote = ""
    for k, char in enumerate(line):
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "#" and (k == 0 or line[k - 1].isspace()):
            return line[:k]
    return line


def split_chain(line: str) -> list[str]:
    """`a && b; c` -> ["a", "b", "c"], splitting only outside quotes and parentheses (`$(...)`,
    `( ... )`); each part with its whitespace collapsed, empty parts dropped."""
    parts, current, quote, depth, k = [], [], "", 0, 0
    while k < len(line):
        char = line[k]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif depth == 0 and (line.startswith("&&", k) or char == ";"):
            parts.append("".join(current))
            current = []
            k += 2 if char == "&" else 1
            continue
        current.append(char)
        k += 1
    parts.append("".join(current))
    return [collapsed for part in parts if (collapsed := " ".join(part.split()))]


def _inline(prose: list[str], path: str) -> list[DocCommand]:
    """Inline `code` spans of the prose (code blocks blanked) that are command lines."""
    text = "\n".join(prose)
    found: list[DocCommand] = []
    for match in re.finditer(r"(?<!`)`([^`]+)`(?!`)", text):
        span = " ".join(match.group(1).split())
        parts = split_chain(span)
        if any(is_command_line(part) for part in parts):
            line = text.count("\n", 0, match.start()) + 1
            found += [DocCommand(part, path, line, "inline") for part in parts]
    return found


def is_command_line(part: str) -> bool:
    """Whether an inline span's part is a command line (see the module's docstring)."""
    words = part.split()
    if not words or not (
        words[0] in COMMAND_WORDS or words[0].startswith(PROJECT_PREFIX) or ASSIGNMENT.match(words[0])
    ):
        return False
    words = _strip_wrappers(words)
    if len(words) < 2:
        return False
    name, arguments = words[0], words[1:]
    if name.startswith(PROJECT_PREFIX) or name == "git":
        options = [w for w in arguments if w.startswith("-")]
        names_only = all(SUBCOMMAND_WORD.match(w) or w.startswith("--") for w in arguments)
        return not (names_only and len(options) <= 1 and (not options or arguments[-1] == options[0]))
    return name in COMMAND_WORDS or name.startswith(PROJECT_PREFIX)


# ------------------------------------------------------------------ a workspace laid out like a checkout

LINKED = (
    "exps",
    "splits",
    "single_run.sh",
    "train_semi.py",
    "eval.py",
    "predict.py",
    "pretrained",
    "benchmarks",
)
TRACEBACK = "Traceback (most recent call last)"


def make_workspace(folder: Path, repo: Path, data: Path) -> Path:
    """`folder` laid out like a checkout: the checkout's configs, split lists and scripts linked, tools/
    copied (its scripts find the checkout from their own path, and so write here), `data` as data/ and the
    running interpreter's environment as .venv."""
    folder.mkdir(parents=True)
    for name in LINKED:
        if (repo / name).exists():
            (folder / name).symlink_to(repo / name)
    shutil.copytree(repo / "tools", folder / "tools", ignore=shutil.ignore_patterns("__pycache__"))
    (folder / ".venv").symlink_to(Path(sys.prefix))
    (folder / "data").symlink_to(data)
    return folder


def command_env(**extra: str) -> dict[str, str]:
    """A reader's shell: the environment's commands (python, imas-*) first on PATH, one CPU thread per
    process (two share CI's cores), nothing of the test process's own import path."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"} | extra


@dataclass
class Outcome:
    """How a command ended: its exit status, its output, and whether it was stopped (`until` was met)."""

    status: int
    stdout: str
    stderr: str
    stopped: bool
    seconds: float

    def tail(self, lines: int = 15) -> str:
        return "\n".join((self.stdout + "\n" + self.stderr).strip().splitlines()[-lines:])


def run_shell(
    command: str,
    cwd: Path,
    timeout: float,
    until: str = "",
    watch: tuple[str, ...] = (),
    env: dict[str, str] | None = None,
) -> Outcome:
    """Run `command` with bash in `cwd`, in a process group of its own. With `until` (a regex), stop the group
    with SIGTERM once it matches the output, or, with `watch`, each of those files (relative to `cwd`); the
    group is killed when `timeout` seconds pass first (status -9)."""
    logs = Path(tempfile.mkdtemp(prefix="doc_command_"))
    out, err = logs / "stdout", logs / "stderr"
    start = time.perf_counter()
    with out.open("w") as stdout, err.open("w") as stderr:
        process = subprocess.Popen(
            ["bash", "-c", command],
            cwd=cwd,
            env=env or command_env(),
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            start_new_session=True,
        )
        stopped = False
        try:
            while process.poll() is None:
                if until and _met(until, watch, cwd, out, err):
                    stopped = True
                    os.killpg(process.pid, signal.SIGTERM)
                    with contextlib.suppress(subprocess.TimeoutExpired):
                        process.wait(timeout=60)
                    break
                if time.perf_counter() - start > timeout:
                    break
                time.sleep(0.2)
        finally:
            _kill_group(process)
    outcome = Outcome(
        process.wait(),
        out.read_text(errors="replace"),
        err.read_text(errors="replace"),
        stopped,
        time.perf_counter() - start,
    )
    shutil.rmtree(logs)
    return outcome


def _met(until: str, watch: tuple[str, ...], cwd: Path, out: Path, err: Path) -> bool:
    """Whether `until` matches every watched file, or (none watched) the output so far."""
    texts = [cwd / name for name in watch] if watch else [out, err]
    if watch and not all(path.is_file() for path in texts):
        return False
    if watch:
        return all(re.search(until, path.read_text(errors="replace"), re.M) for path in texts)
    return any(re.search(until, path.read_text(errors="replace"), re.M) for path in texts)


def _kill_group(process: subprocess.Popen) -> None:
    """SIGKILL to what is left of the command's process group (its children included)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout=30)


# ------------------------------------------------------------------ checking a command's arguments only

NOT_CHECKED = {"pytest", "pip", "cProfile"}  # python -m modules whose parser says nothing about this project
STUB = """#!{python}
import json, os, sys
if sys.argv[1:2] == ["-c"]:  # single_run.sh's own questions (GPU count, the config's data): answered
    os.execv(sys.executable, [sys.executable, *sys.argv[1:]])
with open(os.environ["DOC_STUB_RECORD"], "a") as record:
    record.write(json.dumps(sys.argv[1:]) + "\\n")
"""


class _Parsed(BaseException):
    """Raised from the patched ArgumentParser.parse_args: a command's arguments, before it does anything.
    A BaseException, so that no `except Exception` of the command swallows it."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__()
        self.namespace = namespace


@contextlib.contextmanager
def working_folder(path: Path) -> Iterator[None]:
    before = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(before)


def check_arguments(command: str, cwd: Path) -> str | None:
    """What is wrong with the arguments of a command that is not run: its own parser reads them (bash
    expands the words; `sh single_run.sh` runs with an interpreter that records what it would start), then
    the config it names is loaded with its overrides. "" when nothing is wrong; None when the command is
    not one whose parser is known (or its words need more than an expansion: pipes, redirections)."""
    if re.search(r"\$\(|`|[|<>;&]", re.sub(r"'[^']*'|\"[^\"]*\"", "", command)):
        return None
    words = _strip_wrappers(shell_words(command, cwd))
    if words[:1] in (["sh"], ["bash"]) and len(words) > 1 and words[1].endswith("single_run.sh"):
        recorded = _single_run_arguments(command, cwd)
        if isinstance(recorded, str):
            return recorded
        words = ["python", *recorded]
    found = _entry(words, cwd)
    if found is None or isinstance(found, str):
        return found
    main, argv = found
    parsed = _parse_only(main, argv, cwd)
    if isinstance(parsed, str):
        return parsed
    return _config_problem(parsed, main, cwd)


def shell_words(command: str, cwd: Path) -> list[str]:
    """The words bash makes of `command` (quotes, braces, variables, globs), nothing run."""
    result = subprocess.run(
        ["bash", "-c", "printf '%s\\0' " + command],
        cwd=cwd,
        env=command_env(),
        capture_output=True,
        text=True,
    )
    return result.stdout.split("\0")[:-1]


def _strip_wrappers(words: list[str]) -> list[str]:
    """The command itself: without NAME=value settings and `time`, `env`, `/usr/bin/time -v`, `srun`,
    `taskset -c N` before it."""
    words = list(words)
    while words:
        if ASSIGNMENT.match(words[0]) or words[0] in ("time", "env"):
            words.pop(0)
        elif words[0] in ("/usr/bin/time", "srun"):
            words.pop(0)
            while words and words[0].startswith("-"):
                words.pop(0)
        elif words[0] == "taskset":
            words = words[3:]
        else:
            break
    return words


def _single_run_arguments(command: str, cwd: Path) -> list[str] | str:
    """The command line single_run.sh would start (after `python`), or its complaint."""
    folder = Path(tempfile.mkdtemp(prefix="doc_stub_"))
    stub, record = folder / "python", folder / "record.jsonl"
    stub.write_text(STUB.format(python=sys.executable))
    stub.chmod(0o755)
    outcome = run_shell(command, cwd, 120, env=command_env(PYTHON=str(stub), DOC_STUB_RECORD=str(record)))
    lines = record.read_text().splitlines() if record.is_file() else []
    shutil.rmtree(folder)
    if outcome.status != 0 or not lines:
        return f"exit status {outcome.status}: {outcome.tail(5)}"
    return json.loads(lines[-1])


def _entry(words: list[str], cwd: Path) -> tuple[Callable, list[str]] | str | None:
    """(the `main` the command runs, its arguments) for imas-*, `python -m M`, `python SCRIPT.py` and
    torchrun (also `python -m torch.distributed.run`); a sentence when that command, module or script does
    not exist; None for any other command."""
    if not words:
        return None
    name, rest = words[0], words[1:]
    if name.startswith(PROJECT_PREFIX):
        found = entry_points(group="console_scripts", name=name)
        return (next(iter(found)).load(), rest) if found else f"there is no command {name}"
    launcher = ["-m", "torch.distributed.run"]
    if name == "torchrun" or (name in ("python", "python3") and rest[:2] == launcher):
        options = rest[2:] if rest[:2] == launcher else rest
        start = next((k for k, word in enumerate(options) if word == "-m" or word.endswith(".py")), None)
        return None if start is None else _entry(["python", *options[start:]], cwd)
    if name not in ("python", "python3") or not rest:
        return None
    if rest[0] == "-m" and len(rest) > 1 and rest[1] not in NOT_CHECKED:
        try:
            spec = importlib.util.find_spec(rest[1])
        except ModuleNotFoundError:
            spec = None
        if spec is None:
            return f"there is no module {rest[1]}"
        main = getattr(importlib.import_module(rest[1]), "main", None)
        return None if main is None else (main, rest[2:])
    if rest[0].endswith(".py"):
        if not (cwd / rest[0]).is_file():
            return f"{rest[0]} does not exist"
        main = runpy.run_path(str(cwd / rest[0]), run_name="doc_command_check").get("main")
        return None if main is None else (main, rest[1:])
    return None


def _parse_only(main: Callable, argv: list[str], cwd: Path) -> argparse.Namespace | str:
    """The namespace `main` parses `argv` into, stopped right there; or the complaint of its parser. The
    stop comes after the module's own `parse_args` function where it has one (with the checks it adds to
    argparse's), else after the first ArgumentParser.parse_args."""
    original = argparse.ArgumentParser.parse_args
    own = main.__globals__.get("parse_args")
    inside: list[bool] = []

    def parser_level(self, args=None, namespace=None):
        parsed = original(self, args, namespace)
        if not inside:
            raise _Parsed(parsed)
        return parsed

    def module_level(*args, **kwargs):
        inside.append(True)
        try:
            parsed = own(*args, **kwargs)
        finally:
            inside.pop()
        raise _Parsed(parsed)

    errors = io.StringIO()
    own_patch = mock.patch.dict(main.__globals__, {"parse_args": module_level}) if callable(own) else None
    with (
        mock.patch.object(argparse.ArgumentParser, "parse_args", parser_level),
        own_patch or contextlib.nullcontext(),
        contextlib.redirect_stderr(errors),
        contextlib.redirect_stdout(io.StringIO()),
        working_folder(cwd),
    ):
        try:
            status = main(argv)
        except _Parsed as parsed:
            return parsed.namespace
        except SystemExit as exc:
            return f"exit status {exc.code}: {errors.getvalue().strip()}"
    if status:
        return f"exit status {status}: {errors.getvalue().strip()}"
    return f"{main.__module__}.{main.__name__} returned without parsing its arguments"


def _config_problem(args: argparse.Namespace, main: Callable, cwd: Path) -> str:
    """What is wrong with the config the arguments name (`config` with the overrides of `opt`; for a tool
    with table rows, each row's config), or ""."""
    from imas.config import load_config
    from imas.errors import UserError

    options = list(getattr(args, "opt", None) or [])
    configs = [args.config] if isinstance(getattr(args, "config", None), str) and args.config else []
    rows = getattr(args, "rows", None)
    table = main.__globals__.get("CONFIGS")
    if isinstance(rows, list) and isinstance(table, dict):
        unknown = [row for row in rows if row not in table]
        if unknown:
            return f"unknown row {unknown[0]!r}; the rows are: {', '.join(table)}"
        configs += [table[row] for row in rows]
    with working_folder(cwd):
        for config in configs:
            try:
                load_config(config, options)
            except (UserError, OSError) as exc:
                return f"{config}: {exc}"
    return ""

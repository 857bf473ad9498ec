"""The code examples of the project's Markdown documents, found in the text itself, so that the
tests run whatever the documents say today (tests/test_docs_examples.py, and the Triton recipe in
tests/test_triton_backend.py) instead of a copy that drifts.

An example is a fenced block (```bash, ```python, ...) or an indented block (four spaces deeper
than the text before it, after a blank line). Blocks that are not commands (a folder layout, a
config file) are not examples. The convention, for document writers:

- `<!-- not run here: REASON -->` on the line(s) just before a block: the walk does not run it,
  and REASON (reported by the test) says why: a GPU, a download, a Qdrant cluster, or where else
  it is tested. Blocks that use Docker, Kubernetes (helm, kubectl) or a Triton server need no mark:
  this machine runs none of them, and the walk reports that instead.
- Placeholders a block may use, filled in by the walk: `localhost:8000` (or `127.0.0.1:8000`) is
  the server under test; `data:image/png;base64,...` is a real PNG of a digit; the files
  `digit.png`, `a.jpg` and `b.png`, the folder `./photos` (images), the ImageFolder
  `./imagefolder` (one sub-folder per class) and the README's sample pictures `./samples`
  (`python -m training.samples samples`) exist in the block's working directory; `clipserve`
  is this checkout's; `--duration N` is cut to 1 second.
- Each block runs on its own (`bash -euo pipefail`, curl failing on HTTP errors; Python blocks
  with this interpreter), so it must not depend on another block having run.
"""

from __future__ import annotations

import re
import textwrap
from dataclasses import dataclass
from pathlib import Path

from tests.server import REPO

DOCUMENTS = ["README.md", "docs/*.md", "deploy/README.md", "benchmarks/README.md"]
SHELL_LANGS = {"", "sh", "bash", "shell", "console"}
NOT_HERE = {  # commands this machine cannot run, and why
    "docker": "Docker",
    "podman": "a container engine",
    "helm": "Kubernetes",
    "kubectl": "Kubernetes",
    "tritonserver": "a Triton server",
    "nvidia-smi": "a GPU",
}
_MARK = re.compile(r"<!--\s*not run here:\s*(.*?)\s*-->\s*$", re.S)
_FENCE = re.compile(r"^(\s*)(```+|~~~+)\s*([\w+-]*)")
_ASSIGNMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*=\S*$")


@dataclass(frozen=True)
class Example:
    document: Path
    line: int  # 1-based line of the block's first code line
    lang: str  # "python" or "shell"
    code: str
    not_here: str | None  # why the walk does not run it, if it does not

    @property
    def name(self) -> str:
        return f"{self.document.relative_to(REPO)}:{self.line}"


def documents() -> list[Path]:
    return sorted({p for pattern in DOCUMENTS for p in REPO.glob(pattern)})


def _blocks(text: str) -> list[tuple[int, str, str, str]]:
    """(first code line, language, code, the prose since the previous block) of every block."""
    lines = text.splitlines()
    out = []
    i, prose, prose_indent, after_blank = 0, [], 0, True
    while i < len(lines):
        line = lines[i]
        indent = len(line) - len(line.lstrip())
        fence = _FENCE.match(line)
        if fence:
            margin, marks, lang = fence.groups()
            j = i + 1
            while j < len(lines) and not lines[j].strip().startswith(marks):
                j += 1
            body = [ln[len(margin) :] if ln.startswith(margin) else ln for ln in lines[i + 1 : j]]
            out.append((i + 2, lang.lower(), "\n".join(body), "\n".join(prose)))
            i, prose, after_blank = j + 1, [], False
            continue
        if line.strip() and after_blank and indent >= prose_indent + 4:
            j = i
            while j < len(lines) and (
                not lines[j].strip() or len(lines[j]) - len(lines[j].lstrip()) >= prose_indent + 4
            ):
                j += 1
            while j > i and not lines[j - 1].strip():
                j -= 1
            code = textwrap.dedent("\n".join(lines[i:j]))
            out.append((i + 1, "", code, "\n".join(prose)))
            i, prose, after_blank = j, [], False
            continue
        if line.strip():
            prose.append(line)
            item = re.match(r"^(\s*)([-*+]|\d+\.)\s+", line)
            if not line.lstrip().startswith("<!--"):
                prose_indent = len(item.group(0)) if item else indent
        after_blank = not line.strip()
        i += 1
    return out


def _first_command(code: str) -> str | None:
    """The program a shell block starts with, or None when it is not a command block."""
    for raw in code.replace("\\\n", " ").splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        words = line.split()
        while words and _ASSIGNMENT.match(words[0]):
            words = words[1:]
        if not words:
            continue
        return words[0]
    return None


COMMANDS = {"clipserve", "curl", "python", "python3", "pip", "make", "bash", "mkdir", "for", "cd"}
COMMANDS |= set(NOT_HERE)


def _is_command(word: str) -> bool:
    return word in COMMANDS or word.startswith((".venv/", "./", "$"))


def examples(document: Path) -> list[Example]:
    found = []
    for line, lang, code, before in _blocks(document.read_text()):
        mark = _MARK.search(before.rstrip())
        if lang == "python":
            kind = "python"
        elif lang in SHELL_LANGS and (first := _first_command(code)) and _is_command(first):
            kind = "shell"
        else:
            continue  # a layout, a config file, output: not an example
        reason = " ".join(mark.group(1).split()) if mark else None
        if reason is None and kind == "shell":
            used = {w for w in re.findall(r"[\w.-]+", code) if w in NOT_HERE}
            if used:
                reason = "needs " + " and ".join(sorted({NOT_HERE[w] for w in used}))
        found.append(Example(document, line, kind, code, reason))
    return found


def all_examples() -> list[Example]:
    return [e for doc in documents() for e in examples(doc)]

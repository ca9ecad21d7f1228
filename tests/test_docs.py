"""Docs and code describe the software as it is: no "issue N", no session words, no commit hashes.

History lives in CHANGELOG.md (exempt). Scanned: the README and every doc; comments and docstrings
of samfast/, tests/ and csrc/src, csrc/include; test function names and file names under tests/.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

ISSUE = re.compile(r"\bissues?\s+#?\d+", re.IGNORECASE)
SESSION = re.compile(r"\b(?:this|last|previous|next) session\b|\bwas lent\b", re.IGNORECASE)
COMMIT = re.compile(r"\bcommits?\s+(?:of\s+)?([0-9a-f]{7,40})\b", re.IGNORECASE)
# A bare short hash: 7-12 hex characters with a digit and a letter, not part of a longer token
# (a hex colour's '#', a UUID's or file name's '-' / '_', a 64-character sha256).
BARE_HEX = re.compile(r"(?<![#\w-])([0-9a-f]{7,12})(?![\w-])")
UUID = re.compile(r"\b[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}\b", re.IGNORECASE)
SHA256 = re.compile(r"\b[0-9a-f]{64}\b")

DOCS = ["README.md", "csrc/README.md", "bench/README.md", "bench/RESULTS.md", "docs"]
C_DIRS = ["csrc/src", "csrc/include"]
C_COMMENT = re.compile(r"//[^\n]*|/\*.*?\*/", re.DOTALL)


def known_digests() -> set[str]:
    """sha256 values the package itself names (weights), so their prefixes may be quoted."""
    found = set()
    for path in (ROOT / "samfast").rglob("*.py"):
        found |= set(SHA256.findall(path.read_text()))
    return found


DIGESTS = known_digests()


def _is_hash(word: str) -> bool:
    if not (re.search(r"\d", word) and re.search(r"[a-f]", word)):
        return False
    return not any(word in digest for digest in DIGESTS)


def history_words(text: str) -> list[str]:
    """The issue references, session words and commit hashes in text."""
    text = UUID.sub(" ", text)
    hits = [m.group(0) for m in ISSUE.finditer(text)]
    hits += [m.group(0) for m in SESSION.finditer(text)]
    hits += [m.group(0) for m in COMMIT.finditer(text) if _is_hash(m.group(1).lower())]
    hits += [m.group(1) for m in BARE_HEX.finditer(text) if _is_hash(m.group(1))]
    return hits


def python_prose(path: Path) -> list[tuple[int, str]]:
    """(line, text) of every comment and docstring in a Python file."""
    source = path.read_text()
    prose = [
        (tok.start[0], tok.string)
        for tok in tokenize.generate_tokens(io.StringIO(source).readline)
        if tok.type == tokenize.COMMENT
    ]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                if isinstance(body[0].value.value, str):
                    prose.append((body[0].lineno, body[0].value.value))
    return prose


def c_prose(path: Path) -> list[tuple[int, str]]:
    source = path.read_text()
    return [(source.count("\n", 0, m.start()) + 1, m.group(0)) for m in C_COMMENT.finditer(source)]


def _report(found: list[str]) -> str:
    return "history belongs in CHANGELOG.md:\n" + "\n".join(found)


def test_docs_carry_no_history():
    found = []
    for name in DOCS:
        path = ROOT / name
        for doc in sorted(path.rglob("*.md")) if path.is_dir() else [path]:
            for number, line in enumerate(doc.read_text().splitlines(), 1):
                found += [f"{doc.relative_to(ROOT)}:{number}: {hit}" for hit in history_words(line)]
    assert not found, _report(found)


def test_code_comments_and_docstrings_carry_no_history():
    files = [(p, python_prose) for d in ("samfast", "tests") for p in sorted((ROOT / d).rglob("*.py"))]
    files += [
        (p, c_prose)
        for d in C_DIRS
        for p in sorted((ROOT / d).rglob("*"))
        if p.suffix in {".c", ".cc", ".cpp", ".h", ".hpp"}
    ]
    found = [
        f"{path.relative_to(ROOT)}:{line}: {hit}"
        for path, prose in files
        for line, text in prose(path)
        for hit in history_words(text)
    ]
    assert not found, _report(found)


def _words(name: str) -> str:
    """An identifier or file name as words, so `engine_1a2b3c4_seed0.jsonl.gz` shows its hash."""
    return re.sub(r"[_.\-]", " ", name)


def test_test_names_and_fixture_files_carry_no_history():
    found = []
    for path in sorted((ROOT / "tests").rglob("*")):
        if "__pycache__" in path.parts:
            continue
        found += [f"{path.relative_to(ROOT)}: {hit}" for hit in history_words(_words(path.name))]
        if path.suffix == ".py":
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name.startswith("test"):
                    hits = history_words(_words(node.name))
                    found += [f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {hit}" for hit in hits]
    assert not found, _report(found)


def test_the_scanner_flags_history_and_spares_digests_colours_and_uuids():
    assert history_words("Fast runtime (issue 8)") == ["issue 8"]
    assert history_words("as issues 19 and 20 asked") == ["issues 19"]
    assert history_words("measured in this session; no GPU was lent") == ["this session", "was lent"]
    assert history_words("the engine of commit 1a2b3c4") == ["commit 1a2b3c4", "1a2b3c4"]
    assert history_words("before (9f8e7d6)") == ["9f8e7d6"]
    assert history_words("a crossing colour #1f77b4a and 123e4567-e89b-12d3-a456-426614174000") == []
    assert history_words("sha256 `79d8c9dc…28ce76`, set engines/litemedsam/79d8c9dca6db4d69/") == []
    assert history_words("the same session and run, 1600000000 voxels") == []
    assert history_words(_words("engine_1a2b3c4_seed0.jsonl.gz")) == ["1a2b3c4"]
    assert history_words(_words("test_issue_16_resize")) == ["issue 16"]

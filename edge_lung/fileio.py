"""File I/O every layer shares: atomic temp-then-replace writes (files and directories), the project's
JSON format, SHA-256, the file names of a run directory, and the one writing policy of the CLI.

The writing policy (issue 26; `check_output`, called by every command before it writes, and by the writers
that open files):

- No command replaces or deletes a file or folder it did not create. An output path that exists is
  replaced only with `--overwrite`, and only if it is of the kind that command writes (`OutputKind`): an
  edge-lung model directory recognised by its manifest, a JSON-lines file whose first line is an edge-lung
  event, a folder carrying edge-lung's marker file (`MARKER_NAME`: report folders, synthetic databases), a
  PNG drawn by matplotlib, a JSON report with the command's keys. Anything else is refused, with or
  without `--overwrite`: "exists and was not written by edge-lung; move it or choose another path".
- A folder that --overwrite would replace must hold only what the command writes (`OutputKind.owns`): a
  user's NOTES.txt in a model directory is refused by name, never deleted.
- An output path equal to an input path is refused (for folders: one holding an input or lying inside an
  input folder), whatever the options: "is one of the input files; choose another path".
- An empty file or folder holds nothing to lose: it is written without --overwrite.
- A new file's folder must exist (a missing one is refused before the command runs, not found at its end).

Every message names the option, the path and what was expected.

Torch-free core; imports nothing from edge_lung.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RUN_CONFIG = "config.json"
"""A run directory's settings and results (written by `edge-lung train`, read by export, demo, bench)."""


SMALL_FILE_BYTES = 32 << 20
"""Files up to this size are hashed by Python's built-in SHA-256 (see `sha256_file`)."""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex SHA-256 of a file.

    Files up to `SMALL_FILE_BYTES` use Python's built-in SHA-256 rather than hashlib's: `import hashlib` maps
    OpenSSL's libcrypto, 3.7 MB resident (measured), and a device process that only loads a Pi-class model and
    checks its hashes would carry it for nothing (the bench's aim for such a model is 80 MB in all). Larger
    files use OpenSSL's, six times faster here (90 MB: 0.12 s against 0.70 s), beside which 3.7 MB is noise.
    """
    h = _sha256_factory(Path(path).stat().st_size)()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def _sha256_factory(size: int) -> Any:
    if size > SMALL_FILE_BYTES:
        import hashlib

        return hashlib.sha256
    try:
        from _sha2 import sha256  # Python >= 3.12
    except ImportError:
        try:
            from _sha256 import sha256  # Python 3.11
        except ImportError:  # an interpreter without the built-in module
            from hashlib import sha256
    return sha256


@contextmanager
def atomic_path(path: str | Path) -> Iterator[Path]:
    """Yield a temp path beside `path` to write to; on success it replaces `path` in one step, on
    failure it is removed. Readers never see a half-written file."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.tmp-{os.getpid()}{path.suffix}")  # keeps the suffix (savefig needs it)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)

def atomic_write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically (see `atomic_path`)."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)

def atomic_write_json(path: str | Path, data: Any) -> None:
    """The project's JSON files: indented, keys sorted, paths as strings, written atomically."""
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def temp_dir_beside(target: str | Path) -> Path:
    """A new empty directory `.NAME.tmp-XXXX` beside `target`, with the usual umask permissions (mkdtemp
    makes it 0700); `OSError` if the parent is missing or not writable."""
    target = Path(target)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    return tmp


@contextmanager
def replaced_dir(target: str | Path, tmp: Path | None = None) -> Iterator[Path]:
    """Yield a temp directory beside `target` to fill (`tmp`, else a new `temp_dir_beside(target)`); on
    success it replaces `target` (an existing one is removed after the swap), on failure it is removed
    and `target` is left as it was. The one directory swap: export's MODEL_DIR, training's saved model.
    """
    target = Path(target)
    tmp = tmp if tmp is not None else temp_dir_beside(target)
    try:
        yield tmp
        old = None
        if target.exists():
            old = target.with_name(f".{target.name}.old-{os.getpid()}")
            target.rename(old)
        os.replace(tmp, target)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


# --------------------------------------------------------------------------- the writing policy

MARKER_NAME = ".edge-lung"
"""The marker file of a folder edge-lung wrote (a report folder, a synthetic database): JSON naming the command."""

_SNIFF_BYTES = 4096
_JSON_SNIFF_LIMIT = 64 << 20  # a JSON report larger than this is not one of ours (bench's are a few MB)


class OutputRefused(ValueError):
    """An output path the writing policy refuses; the message names the option, the path and what was expected."""


@dataclass(frozen=True)
class OutputKind:
    """What a command writes at an output path, and how to recognise one it wrote before.

    `what`: the kind in words, for messages ("an edge-lung model directory (manifest.json)"); `folder`: a
    directory rather than a file; `recognise(path)`: True for an existing path of this kind; `owns(entry)`
    (folders): True for a top-level entry the command writes; any other entry blocks `--overwrite`.
    """

    what: str
    folder: bool
    recognise: Callable[[Path], bool]
    owns: Callable[[Path], bool] | None = None


def check_output(path: str | Path, option: str, kind: OutputKind, overwrite: bool = False,
                 inputs: Iterable[str | Path | None] = (), replace_hint: str = "add --overwrite to replace it") -> None:
    """Refuse (`OutputRefused`) an output path the writing policy (module docstring) does not allow.

    Allowed: a new path (a file's folder must exist), an empty folder (folder kinds), or with `overwrite`
    a path of `kind` (a folder holding only entries `kind.owns`). `replace_hint` ends the message for a
    path of `kind` given without `overwrite` (`edge-lung train` says --resume).
    """
    path = Path(path)
    check_not_input(path, option, inputs, kind.folder)
    if not path.exists() and not path.is_symlink():
        if not kind.folder and not path.absolute().parent.is_dir():
            raise OutputRefused(f"{option} {path}: folder {path.absolute().parent} does not exist; create it first")
        return
    if kind.folder and not path.is_dir():
        raise OutputRefused(f"{option} {path}: exists and is not a directory (expected {kind.what}); "
                            "move it or choose another path")
    if not kind.folder and path.is_dir():
        raise OutputRefused(f"{option} {path}: is a directory; expected a file path ({kind.what})")
    if (kind.folder and not any(path.iterdir())) or (not kind.folder and path.stat().st_size == 0):
        return  # an empty folder or file: nothing in it to lose
    if not kind.recognise(path):
        raise OutputRefused(f"{option} {path}: exists and was not written by edge-lung (not {kind.what}); "
                            "move it or choose another path")
    if not overwrite:
        raise OutputRefused(f"{option} {path}: exists; {replace_hint}")
    foreign = sorted(p.name for p in path.iterdir() if not kind.owns(p)) if kind.folder and kind.owns else []
    if foreign:
        raise OutputRefused(f"{option} {path}: holds {', '.join(foreign)}, which edge-lung did not write; "
                            "--overwrite would delete it: move it or choose another path")


def check_not_input(path: str | Path, option: str, inputs: Iterable[str | Path | None], folder: bool = False) -> None:
    """Refuse an output path that is an input (same file, links resolved); a folder output may neither hold
    an input nor lie inside an input folder."""
    out = Path(path).expanduser().resolve()
    for given in inputs:
        if given is None or str(given) == "-":
            continue
        src = Path(given).expanduser().resolve()
        if out == src or (out.exists() and src.exists() and os.path.samefile(out, src)):
            raise OutputRefused(f"{option} {path}: is one of the input files ({given}); choose another path")
        if folder and src.is_relative_to(out):
            raise OutputRefused(f"{option} {path}: holds the input {given}; choose another path")
        if folder and src.is_dir() and out.is_relative_to(src):
            raise OutputRefused(f"{option} {path}: is inside the input folder {given}; choose another path")


def write_marker(folder: str | Path, command: str) -> None:
    """Mark `folder` as written by `edge-lung COMMAND` (`MARKER_NAME`), so --overwrite may later replace it."""
    atomic_write_json(Path(folder) / MARKER_NAME, {"written_by": f"edge-lung {command}"})


def has_marker(folder: str | Path, command: str) -> bool:
    """True if `folder` carries the marker `write_marker(folder, command)` writes."""
    try:
        data = json.loads((Path(folder) / MARKER_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and data.get("written_by") == f"edge-lung {command}"


def marked_folder(what: str, command: str, owns: Callable[[Path], bool] | None = None) -> OutputKind:
    """The kind of a folder `edge-lung COMMAND` marks with `write_marker`."""
    return OutputKind(what, True, lambda p: has_marker(p, command), owns)


def _head(path: Path, size: int = _SNIFF_BYTES) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read(size)
    except OSError:
        return b""


def is_event_jsonl(path: str | Path) -> bool:
    """True for a JSON-lines file whose first line is an edge-lung event (an object with a "type")."""
    first = _head(Path(path), 1 << 16).split(b"\n", 1)[0]
    try:
        event = json.loads(first)
    except ValueError:
        return False
    return isinstance(event, dict) and isinstance(event.get("type"), str)


def is_matplotlib_png(path: str | Path) -> bool:
    """True for a PNG drawn by matplotlib (edge-lung's plots): the signature and its "Software" text chunk."""
    head = _head(Path(path))
    return head.startswith(b"\x89PNG\r\n\x1a\n") and b"Matplotlib" in head


def is_flac(path: str | Path) -> bool:
    """True for a FLAC file (the kind `--record` writes)."""
    return _head(Path(path), 4) == b"fLaC"


def json_keys(path: str | Path) -> frozenset[str]:
    """The top-level keys of a JSON object file (empty for anything else, or one too large to be ours)."""
    path = Path(path)
    try:
        if path.stat().st_size > _JSON_SNIFF_LIMIT:
            return frozenset()
        data = json.loads(path.read_text())
    except (OSError, ValueError, UnicodeDecodeError):
        return frozenset()
    return frozenset(data) if isinstance(data, dict) else frozenset()


def json_report(what: str, keys: Iterable[str]) -> OutputKind:
    """The kind of a JSON report file recognised by its top-level `keys`."""
    wanted = frozenset(keys)
    return OutputKind(what, False, lambda p: wanted <= json_keys(p))


EVENTS_JSONL = OutputKind("an edge-lung JSON-lines file (first line an event with a \"type\")", False, is_event_jsonl)
PLOT_PNG = OutputKind("a PNG drawn by edge-lung (matplotlib)", False, is_matplotlib_png)
FLAC_RECORDING = OutputKind("a FLAC recording", False, is_flac)
RUN_DIR = OutputKind(f"an edge-lung run directory ({RUN_CONFIG} written by `edge-lung train`)", True,
                     lambda p: (p / RUN_CONFIG).is_file())

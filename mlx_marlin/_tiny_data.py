"""Training / held-out text for the embedded tiny models (pure Python, stdlib only).

The text is material every CPython installation ships:

* ``pydoc_data.topics.topics`` -- the language-reference topics used by ``help()``;
* docstrings of a fixed list of standard-library modules, their public
  functions and classes, and the classes' methods, gathered in a fixed
  (sorted) order.

Each piece of text is a *document* with a stable key (``"topic:<name>"`` or
``"doc:<module>.<qualname>"``). A document is held out for validation when
``sha256(key) % 20 == 0`` (about 5% of the documents, ~5% of the bytes), so the
split does not depend on ordering or on the amount of text.

``examples/train_tiny.py`` trains the tokenizer and the models on
``train_text()`` and reports validation loss on ``heldout_text()``. Docstrings
differ slightly between CPython versions; the models were trained with
CPython 3.11.7. The exact held-out text of that run is committed as
``mlx_marlin/models/heldout.txt``; ``heldout_text()`` returns that file when it
exists (pass ``recompute=True`` to rebuild it from this interpreter instead).
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import inspect
import json
import os
import subprocess
import sys
import warnings
from typing import List, Tuple

__all__ = [
    "EOS",
    "HELDOUT_MOD",
    "MODULES",
    "documents",
    "split_documents",
    "train_text",
    "heldout_text",
    "heldout_path",
]

#: Separator appended after every document (also the tokenizer's eos token).
EOS = "<|endoftext|>"

#: A document is held out when ``sha256(key) % HELDOUT_MOD == 0``.
HELDOUT_MOD = 20

#: Standard-library modules whose docstrings are used (fixed order).
MODULES = (
    "abc", "argparse", "array", "ast", "asyncio", "base64", "binascii",
    "bisect", "builtins", "bz2", "calendar", "cmath", "codecs", "collections",
    "collections.abc", "colorsys", "configparser", "contextlib", "copy",
    "csv", "dataclasses", "datetime", "decimal", "difflib", "dis", "email",
    "email.message", "enum", "filecmp", "fnmatch", "fractions", "ftplib",
    "functools", "gc", "getopt", "gettext", "glob", "gzip", "hashlib",
    "heapq", "hmac", "html", "html.parser", "http", "http.client",
    "http.server", "imaplib", "importlib", "inspect", "io", "ipaddress",
    "itertools", "json", "keyword", "linecache", "locale", "logging",
    "logging.handlers", "lzma", "mailbox", "math", "mimetypes",
    "multiprocessing", "numbers", "operator", "optparse", "os", "os.path",
    "pathlib", "pickle", "pkgutil", "platform", "plistlib", "poplib",
    "pprint", "queue", "quopri", "random", "re", "reprlib", "sched",
    "secrets", "selectors", "shelve", "shlex", "shutil", "signal", "smtplib",
    "socket", "socketserver", "sqlite3", "ssl", "stat", "statistics",
    "string", "struct", "subprocess", "sys", "tarfile", "tempfile",
    "textwrap", "threading", "time", "timeit", "token", "tokenize", "trace",
    "traceback", "types", "typing", "unittest", "unittest.mock",
    "urllib.parse", "urllib.request", "uuid", "warnings", "wave", "weakref",
    "xml.dom.minidom", "xml.etree.ElementTree", "zipfile", "zlib",
)

_MIN_DOC_CHARS = 40


def _clean(doc) -> str:
    if not isinstance(doc, str):
        return ""
    doc = inspect.cleandoc(doc).strip()
    # Normalise line endings / trailing spaces so the text is stable.
    return "\n".join(line.rstrip() for line in doc.splitlines())


def _topic_documents() -> List[Tuple[str, str]]:
    from pydoc_data.topics import topics

    out = []
    for name in sorted(topics):
        text = "\n".join(line.rstrip() for line in topics[name].strip().splitlines())
        if text:
            out.append((f"topic:{name}", text))
    return out


def _owned(obj, modname: str) -> bool:
    return getattr(obj, "__module__", None) == modname


def _docstring_documents() -> List[Tuple[str, str]]:
    out = []
    seen = set()

    def add(key, title, doc):
        doc = _clean(doc)
        if len(doc) < _MIN_DOC_CHARS or doc in seen:
            return
        seen.add(doc)
        out.append((key, f"{title}\n\n{doc}"))

    for modname in MODULES:
        try:
            mod = importlib.import_module(modname)
        except Exception:  # pragma: no cover - module missing on this build
            continue
        add(f"doc:{modname}", f"Module {modname}", mod.__doc__)
        for name in sorted(vars(mod)):
            if name.startswith("_"):
                continue
            obj = vars(mod)[name]
            if inspect.isclass(obj):
                if not _owned(obj, modname):
                    continue
                add(f"doc:{modname}.{name}", f"class {modname}.{name}", obj.__doc__)
                for mname in sorted(vars(obj)):
                    if mname.startswith("_") and mname != "__init__":
                        continue
                    member = vars(obj)[mname]
                    if isinstance(member, (staticmethod, classmethod)):
                        member = member.__func__
                    if isinstance(member, property):
                        member = member.fget
                    if not callable(member) and not inspect.isdatadescriptor(member):
                        continue
                    add(
                        f"doc:{modname}.{name}.{mname}",
                        f"{modname}.{name}.{mname}",
                        getattr(member, "__doc__", None),
                    )
            elif inspect.isroutine(obj):
                if not _owned(obj, modname):
                    continue
                add(f"doc:{modname}.{name}", f"{modname}.{name}", obj.__doc__)
    return out


@functools.lru_cache(maxsize=1)
def _documents_cached() -> Tuple[Tuple[str, str], ...]:
    # Gather in a fresh, isolated interpreter (-I: no site-packages, no
    # sitecustomize) so that libraries imported by the caller (e.g. torch
    # monkeypatching ``inspect.getfile``) cannot change the docstrings seen.
    try:
        res = subprocess.run(
            [sys.executable, "-I", "-X", "utf8", os.path.abspath(__file__), "--json"],
            check=True, capture_output=True, env={"PYTHONIOENCODING": "utf-8"},
        )
        return tuple(tuple(d) for d in json.loads(res.stdout.decode("utf-8")))
    except Exception:  # pragma: no cover - e.g. no subprocess support
        return tuple(_documents_inprocess())


def documents() -> List[Tuple[str, str]]:
    """All ``(key, text)`` documents in their fixed order (topics, then docstrings)."""
    return [tuple(d) for d in _documents_cached()]


def _documents_inprocess() -> List[Tuple[str, str]]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # e.g. deprecated typing.io / typing.re
        return _topic_documents() + _docstring_documents()


def _is_heldout(key: str) -> bool:
    h = int.from_bytes(hashlib.sha256(key.encode("utf-8")).digest()[:8], "big")
    return h % HELDOUT_MOD == 0


def split_documents() -> Tuple[List[str], List[str]]:
    """Return ``(train_docs, heldout_docs)``, lists of document texts in order."""
    train, held = [], []
    for key, text in documents():
        (held if _is_heldout(key) else train).append(text)
    return train, held


def _join(docs: List[str]) -> str:
    return "".join(d + "\n" + EOS + "\n" for d in docs)


def train_text() -> str:
    """Training text: the training documents, each followed by ``EOS``."""
    return _join(split_documents()[0])


def heldout_path() -> str:
    """Path of the committed held-out text of the reference training run."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "models", "heldout.txt")


def heldout_text(recompute: bool = False) -> str:
    """Held-out (validation) text, documents separated by ``EOS``.

    Returns the committed ``models/heldout.txt`` (exactly what the reference
    training run held out) unless it is missing or ``recompute`` is true, in
    which case the split is recomputed from this interpreter's stdlib.
    """
    path = heldout_path()
    if not recompute and os.path.exists(path):
        with open(path, "r", encoding="utf-8", newline="") as f:
            return f.read()
    return _join(split_documents()[1])


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["--json"]:
        sys.stdout.write(json.dumps(_documents_inprocess()))
        sys.exit(0)
    tr, he = split_documents()
    ttr, the = _join(tr), _join(he)
    print(f"train: {len(tr)} docs, {len(ttr)} chars; heldout: {len(he)} docs, {len(the)} chars "
          f"({100 * len(the) / (len(ttr) + len(the)):.1f}%)")
    print("sha256 train", hashlib.sha256(ttr.encode()).hexdigest()[:16],
          "heldout", hashlib.sha256(the.encode()).hexdigest()[:16])

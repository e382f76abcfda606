"""Nothing received from another rank is unpickled or evaluated (issue item 7).

An AST scan of every module under ``src/fedsqueeze`` for the ways bytes can become code:

* importing ``pickle``/``_pickle``/``cPickle``/``marshal``/``shelve``/``dill``/``cloudpickle``/
  ``joblib``, or mpi4py's pickle helpers (``mpi4py.util.pkl5``, ``mpi4py.util.dtlib`` is fine);
* the builtins ``eval``, ``exec`` and ``compile`` (a bare call, or ``builtins.eval``...);
* lowercase mpi4py methods (``send``, ``recv``, ``bcast``, ``gather``, ``scatter``, ``sendrecv``,
  ``isend``, ``irecv``, ``allgather``, ``allreduce``, ``reduce``, ``alltoall``, ...), which pickle
  Python objects, called on anything but fedsqueeze's frame ``Transport`` (receivers named
  ``tx``/``transport``), an imported non-mpi4py module (Numba kernel modules have a ``gather``),
  or ``self`` inside a class that defines the method;
* ``np.load``/``numpy.load`` with ``allow_pickle`` not literally ``False`` (the default is safe);
* ``torch.load`` without ``weights_only=True``;
* ``yaml.load``/``yaml.unsafe_load``/``yaml.full_load`` (``yaml.safe_load`` is fine);
* ``pandas.read_pickle`` / ``pd.read_pickle``.

Exceptions are listed in :data:`ALLOWED` with the reason; a stale entry fails the test too.
The scanner is tested on synthetic sources, good and bad, so that it can fail.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[3] / "src" / "fedsqueeze"

PICKLE_MODULES = {"pickle", "_pickle", "cPickle", "marshal", "shelve", "dill", "cloudpickle",
                  "joblib", "mpi4py.util.pkl5", "copyreg"}
EVAL_BUILTINS = {"eval", "exec", "compile", "__import__"}
MPI_PICKLE_METHODS = {
    "send", "recv", "isend", "irecv", "bsend", "ssend", "ibsend", "issend", "sendrecv",
    "bcast", "ibcast", "gather", "igather", "scatter", "iscatter", "allgather", "iallgather",
    "alltoall", "ialltoall", "reduce", "allreduce", "scan", "exscan", "mrecv", "improbe_recv",
}
ALLOWED = {
    ("data/datasets.py", "import pickle"):
        "CIFAR-10 ships as Python pickles; read from a local path the user configures "
        "(data.path), on every rank, never from another rank",
}


@dataclass(frozen=True)
class Finding:
    path: str
    line: int
    rule: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.rule}"


def _root_name(node: ast.AST) -> str | None:
    while isinstance(node, (ast.Attribute, ast.Subscript, ast.Call)):
        node = node.func if isinstance(node, ast.Call) else node.value
    return node.id if isinstance(node, ast.Name) else None


def _dotted(node: ast.AST) -> str:
    if isinstance(node, ast.Attribute):
        return f"{_dotted(node.value)}.{node.attr}"
    if isinstance(node, ast.Name):
        return node.id
    return "?"


def _kw(call: ast.Call, name: str) -> ast.expr | None:
    for k in call.keywords:
        if k.arg == name:
            return k.value
    return None


def _is_const(node: ast.expr | None, value) -> bool:
    return isinstance(node, ast.Constant) and node.value is value


class _Scanner(ast.NodeVisitor):
    def __init__(self, path: str) -> None:
        self.path = path
        self.findings: list[Finding] = []
        self.imports: dict[str, str] = {}  # local name -> imported module or object path
        self.classes: list[set[str]] = []  # method names of the enclosing classes

    def add(self, node: ast.AST, rule: str) -> None:
        self.findings.append(Finding(self.path, getattr(node, "lineno", 0), rule))

    # imports
    def visit_Import(self, node: ast.Import) -> None:
        for a in node.names:
            self.imports[(a.asname or a.name).split(".")[0]] = a.name
            if a.name in PICKLE_MODULES or a.name.split(".")[0] in PICKLE_MODULES:
                self.add(node, f"import {a.name}")
        self.generic_visit(node)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        mod = ("." * node.level) + (node.module or "")
        for a in node.names:
            full = f"{mod}.{a.name}" if node.module else f"{mod}{a.name}"
            self.imports[a.asname or a.name] = full
            if (node.module in PICKLE_MODULES or full in PICKLE_MODULES
                    or (node.module or "").split(".")[0] in PICKLE_MODULES):
                self.add(node, f"from {node.module} import {a.name}")
            if node.module == "builtins" and a.name in EVAL_BUILTINS:
                self.add(node, f"from builtins import {a.name}")
        self.generic_visit(node)

    # classes: methods a `self.<name>(...)` call may resolve to
    def visit_ClassDef(self, node: ast.ClassDef) -> None:
        self.classes.append({n.name for n in node.body
                             if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))})
        self.generic_visit(node)
        self.classes.pop()

    def visit_Call(self, node: ast.Call) -> None:
        f = node.func
        if isinstance(f, ast.Name) and f.id in EVAL_BUILTINS and f.id not in self.imports:
            self.add(node, f"{f.id}()")
        if isinstance(f, ast.Attribute):
            recv, name = f.value, f.attr
            dotted = _dotted(f)
            root = _root_name(recv)
            module = self.imports.get(root or "", "")
            if root == "builtins" and name in EVAL_BUILTINS:
                self.add(node, f"builtins.{name}()")
            if name == "load" and module in ("numpy", "np") or dotted in ("np.load", "numpy.load"):
                ap = _kw(node, "allow_pickle")
                if ap is not None and not _is_const(ap, False):
                    self.add(node, "np.load(allow_pickle=...) not literally False")
            if name == "load" and module == "torch" and not _is_const(_kw(node, "weights_only"),
                                                                     True):
                self.add(node, "torch.load without weights_only=True")
            if module == "yaml" and name in ("load", "unsafe_load", "full_load", "load_all",
                                             "unsafe_load_all", "full_load_all"):
                self.add(node, f"yaml.{name}")
            if name == "read_pickle":
                self.add(node, f"{dotted}()")
            if name in MPI_PICKLE_METHODS and not self._frame_api(recv, root, module, name):
                self.add(node, f"lowercase mpi4py {dotted}()")
        self.generic_visit(node)

    def _frame_api(self, recv: ast.AST, root: str | None, module: str, name: str) -> bool:
        """Whether ``recv.name(...)`` is known not to be an mpi4py pickle call."""
        if module and not module.startswith("mpi4py"):
            return True  # a function of an imported module (kernels: _pq.gather, _k.gather)
        # fedsqueeze's transport names its methods send_frame / isend_frame / recv_buffer, so a
        # lowercase ``send``/``recv`` on any other object is treated as a pickle call
        return isinstance(recv, ast.Name) and recv.id == "self" and bool(self.classes) \
            and name in self.classes[-1]


def scan_source(text: str, path: str = "<string>") -> list[Finding]:
    s = _Scanner(path)
    s.visit(ast.parse(text, filename=path))
    return s.findings


def scan_tree(root: Path = SRC) -> list[Finding]:
    out: list[Finding] = []
    for p in sorted(root.rglob("*.py")):
        out += scan_source(p.read_text(encoding="utf-8"), p.relative_to(root).as_posix())
    return out


# -- the tree ------------------------------------------------------------------------------------
def test_the_source_tree_holds_no_way_to_run_code_from_the_wire():
    bad = [f for f in scan_tree() if (f.path, f.rule) not in ALLOWED]
    assert not bad, "code from the wire:\n" + "\n".join(map(str, bad))


def test_every_allowed_exception_is_still_needed():
    found = {(f.path, f.rule) for f in scan_tree()}
    assert set(ALLOWED) <= found, f"stale ALLOWED entries: {set(ALLOWED) - found}"


def test_the_scan_covers_the_data_path():
    files = {p.relative_to(SRC).as_posix() for p in SRC.rglob("*.py")}
    for f in ("comm/wire.py", "comm/transport.py", "compress/base.py", "fl/server.py",
              "fl/worker.py", "fl/protocol.py", "fl/downlink.py", "split/server.py"):
        assert f in files


# -- the scanner can fail ----------------------------------------------------------------------
BAD = {
    "pickle import": "import pickle\nobj = pickle.loads(buf)\n",
    "pickle alias": "import pickle as pk\n",
    "from pickle": "from pickle import loads\n",
    "cpickle": "import _pickle\n",
    "marshal": "import marshal\n",
    "shelve": "import shelve\n",
    "dill": "import dill\n",
    "pkl5": "from mpi4py.util import pkl5\n",
    "pkl5 module": "import mpi4py.util.pkl5\n",
    "eval": "x = eval(payload.decode())\n",
    "exec": "exec(bytes(payload))\n",
    "compile": "code = compile(src, 'f', 'exec')\n",
    "builtins.eval": "import builtins\nbuiltins.eval('1')\n",
    "from builtins": "from builtins import exec as run\n",
    "comm.send": "def f(comm, x):\n    comm.send(x, dest=1)\n",
    "comm.recv": "def f(comm):\n    return comm.recv(source=0)\n",
    "self.comm.bcast": "class A:\n    def f(self, x):\n        return self.comm.bcast(x)\n",
    "COMM_WORLD.gather": "from mpi4py import MPI\nMPI.COMM_WORLD.gather(1)\n",
    "scatter": "def f(world):\n    world.scatter([1, 2])\n",
    "sendrecv": "def f(c):\n    c.sendrecv(1, dest=0)\n",
    "isend": "def f(comm):\n    comm.isend(b'x', dest=1).wait()\n",
    "irecv": "def f(comm):\n    return comm.irecv(source=0)\n",
    "allreduce": "def f(comm, v):\n    return comm.allreduce(v)\n",
    "mprobe msg.recv": "def f(comm):\n    return comm.mprobe().recv()\n",
    "self.recv not ours": "class A:\n    def f(self):\n        return self.recv()\n",
    "tx.send": "def f(self, frame):\n    self.tx.send(0, 4, frame)\n",
    "np.load pickle": "import numpy as np\nnp.load(f, allow_pickle=True)\n",
    "np.load pickle var": "import numpy\nnumpy.load(f, allow_pickle=flag)\n",
    "torch.load": "import torch\ntorch.load(f)\n",
    "torch.load False": "import torch\ntorch.load(f, weights_only=False)\n",
    "yaml.load": "import yaml\nyaml.load(s, Loader=yaml.Loader)\n",
    "yaml.unsafe_load": "import yaml\nyaml.unsafe_load(s)\n",
    "read_pickle": "import pandas as pd\npd.read_pickle(p)\n",
}
GOOD = {
    "transport": "def f(self, frame):\n    self.tx.isend_frame(0, 4, frame)\n"
                 "    self.tx.send_frame(0, 4, frame)\n",
    "server tx": "def f(server, frame):\n    server.tx.send_frame(1, 9, frame)\n",
    "kernel gather": "from ..kernels.cpu import pq as _pq\n_pq.gather(a, b, c, d)\n",
    "own recv": "class T:\n    def recv(self):\n        pass\n"
                "    def g(self):\n        self.recv()\n",
    "uppercase mpi": "def f(comm, buf):\n    comm.Send([buf, MPI.BYTE], dest=1)\n"
                     "    comm.Recv(buf)\n",
    "np.load": "import numpy as np\nnp.load(f)\nnp.load(f, allow_pickle=False)\n",
    "torch.load safe": "import torch\ntorch.load(f, weights_only=True)\n",
    "yaml.safe_load": "import yaml\nyaml.safe_load(s)\n",
    "model.eval": "model.eval()\n",
    "re.compile": "import re\nre.compile('x')\n",
    "json": "import json\njson.loads(payload)\n",
}


@pytest.mark.parametrize("name", sorted(BAD))
def test_the_scanner_flags_bad_source(name):
    assert scan_source(BAD[name]), f"{name!r} was not flagged"


@pytest.mark.parametrize("name", sorted(GOOD))
def test_the_scanner_accepts_good_source(name):
    assert scan_source(GOOD[name]) == []


def test_a_flagged_line_is_reported_with_its_location():
    (f,) = scan_source("x = 1\n\ny = eval(z)\n", "m.py")
    assert str(f) == "m.py:3: eval()"

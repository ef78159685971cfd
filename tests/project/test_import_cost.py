"""Importing the core and listing schemes stays light: no tensordict, no plugin implementation module, no
``torch._dynamo`` (which ``torch.compile``'s helpers import on first use: about 2.5 s).

The core's solvers are listed from their own modules (a spec lives beside its implementation),
which import nothing beyond torch and pydantic; the loss and the sampling pipeline stay unloaded.
No module of ours that declares a class pydantic reads (the specs) hands it string annotations, which
pydantic would compile and evaluate for every spec (``from __future__ import annotations``).
"""

from __future__ import annotations

import json
import subprocess
import sys

PROBE = """
import json, sys
import diffusion_schemes as ds
names = [(i.kind, i.name) for i in ds.list_schemes()]
heavy = sorted(m for m in sys.modules if m == "tensordict" or m.startswith("tensordict.") or m == "torch._dynamo"
               or (m.startswith("diffusion_schemes_") and m.split(".")[-1].startswith("_"))
               or m in ("diffusion_schemes.sampling.loss", "diffusion_schemes.sampling.sampler"))
ds.create("preconditioner", "edm", model=lambda x, c_noise, condition=None: x)(
    __import__("torch").ones(1, 2), __import__("torch").ones(1))  # a forward, with its check of the levels
print(json.dumps({"heavy": heavy, "n": len(names), "dynamo": "torch._dynamo" in sys.modules}))
"""


def test_import_and_list_import_no_tensordict_no_dynamo_and_no_implementation_module():
    out = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, check=True, timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n"] > 0
    assert result["heavy"] == []
    assert not result["dynamo"]  # after a forward too


ANNOTATIONS_PROBE = """
import builtins, importlib.metadata, json, sys
import pluggy, pydantic, pydantic.fields, torch
class Warm(pydantic.BaseModel):  # pydantic imports the rest of itself for its first model: not counted
    name: str = "x"
compiled = []
real_compile = builtins.compile
def counting_compile(source, filename, mode, *args, **kwargs):
    # typing and pydantic evaluate a string annotation by compile(annotation, "<string>", "eval"); the first frame
    # outside them is the code that declared it: counted when that is one of our modules (core, plugin, contrib)
    if mode == "eval" and isinstance(source, str):
        frame = sys._getframe(1)
        while frame is not None and frame.f_globals.get("__name__", "").partition(".")[0] in ("typing", "pydantic"):
            frame = frame.f_back
        name = frame.f_globals.get("__name__", "") if frame is not None else ""
        if name.startswith("diffusion_schemes"):
            compiled.append([name, source])
    return real_compile(source, filename, mode, *args, **kwargs)
builtins.compile = counting_compile
import diffusion_schemes as ds
n = len(ds.list_schemes())
builtins.compile = real_compile
print(json.dumps({"n": n, "compiled": compiled}))
"""


def test_import_and_list_compile_no_string_annotation_of_ours():
    # A spec module with `from __future__ import annotations` hands pydantic strings: it compiles and evaluates each
    # one when the class is made, the base's ClassVars again for every spec (686 compile() calls, about a fifth of
    # the CPU time of import + list_schemes() on the machine measured): spec modules keep evaluated annotations.
    out = subprocess.run([sys.executable, "-c", ANNOTATIONS_PROBE], capture_output=True, text=True, check=True,
                         timeout=120)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["n"] > 0
    assert result["compiled"] == []

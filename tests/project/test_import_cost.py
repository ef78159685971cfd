"""Importing the core and listing schemes stays light: no tensordict, no plugin implementation module, no
``torch._dynamo`` (which ``torch.compile``'s helpers import on first use: about 2.5 s).

The core's solvers are listed from their own modules (a spec lives beside its implementation),
which import nothing beyond torch and pydantic; the loss and the sampling pipeline stay unloaded.
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

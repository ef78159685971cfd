"""``python -m benchmarks.weighting_tradeoff OUT.png RUN [RUN ...]``: likelihood against sample quality.

Reads each run's ``metrics.json`` (``final.fd_digits`` and its floor, from ``diffusion-schemes train``)
and ``nll.json`` (from ``diffusion-schemes nll``), prints a markdown table and draws NLL in bits per
dimension against fd_digits over its floor, one point per run, labelled by the run folder's name.
``docs/likelihood.md`` records it for the digits runs trained with four loss weightings.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def read(run: Path) -> dict[str, float | str]:
    final = json.loads((run / "metrics.json").read_text())["final"]
    nll = json.loads((run / "nll.json").read_text())
    return {
        "run": run.name,
        "nll_bpd": nll["nll_bpd"],
        "nll_bpd_stderr": nll["nll_bpd_stderr"],
        "fd_ratio": final["fd_digits"] / final["fd_digits_floor"],
    }


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    out, runs = Path(args[0]), [read(Path(a)) for a in args[1:]]
    print("| run | NLL (bits/dim) | fd_digits / floor |\n|---|---|---|")
    for r in runs:
        print(f"| {r['run']} | {r['nll_bpd']:.3f} ± {r['nll_bpd_stderr']:.3f} | {r['fd_ratio']:.2f} |")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.6), dpi=120)
    for r in runs:
        ax.errorbar(r["fd_ratio"], r["nll_bpd"], yerr=r["nll_bpd_stderr"], fmt="o", capsize=3)
        ax.annotate(str(r["run"]), (r["fd_ratio"], r["nll_bpd"]), textcoords="offset points", xytext=(6, 4))
    ax.set_xlabel("fd_digits / floor (lower: better samples)")
    ax.set_ylabel("NLL, bits/dim (lower: better likelihood)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    print(f"written: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""``python -m diffusion_schemes_trainer ARGS`` is ``diffusion-schemes ARGS`` (handy under torchrun:
``torchrun --nproc_per_node=2 -m diffusion_schemes_trainer train``)."""

import sys

from diffusion_schemes.cli import main

if __name__ == "__main__":
    sys.exit(main())

"""``python -m diffusion_schemes.cli``: the ``diffusion-schemes`` command."""

import sys

from diffusion_schemes.cli import main

sys.exit(main())

import sys

from diffusion_schemes.cli import main

sys.exit(main())

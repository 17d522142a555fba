"""``python -m ase_wannierml.active run|status CONFIG``."""
import sys

from .loop import main

sys.exit(main())

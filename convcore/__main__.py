"""python -m convcore: the convcore command."""
import sys

from .cli import main

sys.exit(main())

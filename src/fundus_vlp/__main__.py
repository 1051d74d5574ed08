"""``python -m fundus_vlp`` (also the torchrun entry point: ``torchrun ... -m fundus_vlp pretrain``)."""
import sys

from .cli.main import main

sys.exit(main())

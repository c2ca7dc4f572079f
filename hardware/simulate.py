#!/usr/bin/env python3
"""The modality simulator, from the hardware folder: same as `dicom-gateway simulate-device`.

hardware/simulate.py --profile line-kv --port /dev/ttyUSB1 --count 3 --inject noise@2
"""

from __future__ import annotations

import sys
from pathlib import Path

try:
    from gateway.cli_simulate import main
except ModuleNotFoundError:  # run from a source checkout without the package installed
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from gateway.cli_simulate import main

if __name__ == "__main__":
    sys.exit(main())

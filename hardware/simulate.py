#!/usr/bin/env python3
"""The modality simulator, from the hardware folder: same as `dicom-gateway simulate-device`.

hardware/simulate.py --profile line-kv --port /dev/ttyUSB1 --count 3 --inject noise@2
"""

from __future__ import annotations

import sys

from gateway.cli_simulate import main

if __name__ == "__main__":
    sys.exit(main())

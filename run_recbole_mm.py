#!/usr/bin/env python
"""mmrecbole command line: `python run_recbole_mm.py --model=SASRec --dataset=ml-100k [--key=value ...]`."""
import sys

from mmrecbole.cli import main

if __name__ == "__main__":
    sys.exit(main())

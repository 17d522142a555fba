#!/usr/bin/env python
"""Start or resume the bilayer-graphene DFT + Wannier90 batch in the background-friendly way.

    nohup nice -n 10 python scripts/generate_graphene_data.py --n-frames 400 \
        > scratch/batch_graphene.log 2>&1 &

Equivalent to ``python -m ase_wannierml.dft.batch --material graphene-bilayer ...``; extra arguments are passed on
(e.g. ``--np 2 --nk 2``, ``--max-hours 5``, ``--dry-run``).  Finished frames (ok or rejected) are skipped.
"""
import sys

from ase_wannierml.dft.batch import main

if __name__ == "__main__":
    argv = sys.argv[1:]
    if "--material" not in argv:
        argv = ["--material", "graphene-bilayer"] + argv
    sys.exit(main(argv))

"""Evaluate trained ImageNet runs under the paper's test protocols (center, ten_crop, multi_scale):

    python src/evaluate.py outputs/runs/<run> eval.mode=ten_crop
"""
import sys

from deepres.evaluate import main

if __name__ == "__main__":
    main(sys.argv[1:])

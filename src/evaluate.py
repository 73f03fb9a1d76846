"""Evaluate trained runs under the paper's test protocols, or make public weights a run and evaluate it:

    python src/evaluate.py RUN_DIR [RUN_DIR ...] eval.mode=center|ten_crop|multi_scale [key=value ...]
    python src/evaluate.py NEW_RUN_DIR model.weights=PATH model.weights_format=deepres|torchvision|akamaster [...]

eval.mode: center (one 224 crop; CIFAR's only view), ten_crop (Tables 2 and 3), multi_scale (Table 4, fully
convolutional over 5 scales). Each run's final.ckpt (last.ckpt for an unfinished run) is evaluated with its recorded
config and the overrides (e.g. data.root=..., data.num_workers=...); one line per run is printed and
RUN_DIR/eval_<mode>.json written. More in src/deepres/evaluate.py and the README.
"""
import sys

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):  # before torch and Lightning are imported
        print(__doc__.strip())
        sys.exit(0)
    from deepres.evaluate import main

    main(sys.argv[1:])

"""Evaluate trained runs (one by one, or as one ensemble) under the paper's test protocols, or make public weights a
run and evaluate it:

    python src/evaluate.py RUN_DIR [RUN_DIR ...] eval.mode=center|ten_crop|multi_scale [key=value ...]
    python src/evaluate.py NEW_RUN_DIR model.weights=PATH model.weights_format=deepres|torchvision|akamaster [...]
    python src/evaluate.py RUN_DIR RUN_DIR [...] eval.ensemble=true eval.mode=ten_crop [eval.ensemble_dir=DIR]

eval.mode: center (one 224 crop; CIFAR's only view), ten_crop (Tables 2 and 3), multi_scale (Table 4, fully
convolutional over 5 scales). Each run's final.ckpt (last.ckpt for an unfinished run) is evaluated with its recorded
config and the overrides (e.g. data.root=..., data.num_workers=...); one line per run is printed and
RUN_DIR/eval_<mode>.json written. With eval.ensemble=true, two or more ImageNet runs are one ensemble (Table 5):
every net over the same views, the softmax averaged over the views and the nets, written to
ENSEMBLE_DIR/ensemble_<mode>.json (default: the deepest directory holding the runs). A detection run is scored by
its task as its training scored it (VOC 2007's or COCO's mAP; data.test_set=12test writes the server's files), into
RUN_DIR/eval_<test set>.json. More in src/deepres/evaluate.py and the README.
"""
import sys

if __name__ == "__main__":
    if {"-h", "--help"} & set(sys.argv[1:]):  # before torch and Lightning are imported
        print(__doc__.strip())
        sys.exit(0)
    from deepres.evaluate import main

    main(sys.argv[1:])

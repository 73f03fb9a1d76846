"""Write the paper's figures and tables from a sweep directory into it (PNG + PDF, Markdown, CSV):

    python src/report.py multirun/cifar10 fig6 table6 [fig1 fig7] [--data-root DIR]
    python src/report.py multirun/imagenet fig4 table2 table3 table4
    python src/report.py multirun/table5 table5     (where src/evaluate.py ... eval.ensemble=true wrote its files)
    python src/report.py multirun/table7 table7     (Faster R-CNN on PASCAL VOC; multirun/table8 table8: MS COCO)
"""
import argparse
import sys

from deepres.errors import EXIT_USER_ERROR, UserError
from deepres.report import REPORTS, write


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", help="the directory of a sweep (hydra.sweep.dir), e.g. multirun/cifar10; table5: "
                                          "the directory of the ensembles' ensemble_<mode>.json (eval.ensemble_dir)")
    parser.add_argument("reports", nargs="+", choices=list(REPORTS), metavar="REPORT",
                        help=f"one or more of: {', '.join(REPORTS)}")
    parser.add_argument("--data-root", help="where the data set is, if not at the runs' data.root (fig7 runs the "
                                            "nets on the test set; tables build the nets to count parameters)")
    args = parser.parse_args(argv)
    try:
        for path in write(args.sweep_dir, args.reports, args.data_root):
            print(path)
    except UserError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(EXIT_USER_ERROR)


if __name__ == "__main__":
    main(sys.argv[1:])

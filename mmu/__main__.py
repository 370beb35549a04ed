"""Command line: `mmu demo` (or `python -m mmu demo`), `mmu info`."""
import argparse
import sys


def main(argv=None):
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="mmu", description="mmu: discrete visual tokenizers on a fast CPU core")
    sub = parser.add_subparsers(dest="command")
    sub.add_parser("demo", help="train a small autoencoder on scikit-learn's digits and print its loss falling",
                   add_help=False)
    sub.add_parser("info", help="versions, threads and the oneDNN build in use")
    args, rest = parser.parse_known_args(argv)
    if args.command == "demo":
        from . import demo
        return demo.main(rest)
    if args.command == "info":
        import numpy as np

        import mmu
        print(f"mmu {mmu.__version__}  numpy {np.__version__}  oneDNN {mmu._C.dnnl_version()}  "
              f"threads {mmu.get_num_threads()}")
        return 0
    parser.print_help()
    return 0 if not argv else 2


if __name__ == "__main__":
    sys.exit(main())

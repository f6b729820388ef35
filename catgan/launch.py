"""``python -m catgan.launch --nproc-per-node=N --module stages.train``: torchrun for the train stage.

It is torch.distributed.run (what the ``torchrun`` command calls), always ``--standalone``, with two
changes: one process runs the script directly, without the elastic agent's seconds of start-up, and a
failed process is reported in one line (its own error is printed above it) instead of torchrun's traceback.
"""
from __future__ import annotations

import logging
import os
import sys


def main(argv: list[str] | None = None) -> None:
    from torch.distributed.run import get_args_parser, run

    args = get_args_parser().parse_args(["--standalone", *(sys.argv[1:] if argv is None else argv)])
    nproc = int(args.nproc_per_node) if str(args.nproc_per_node).isdigit() else 0
    if nproc == 1:
        module = ["-m"] if args.module else []
        os.execv(sys.executable, [sys.executable, *module, args.training_script,
                                  *args.training_script_args])
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    try:
        run(args)
    except ChildFailedError as err:
        rank, failure = err.get_first_failure()
        code = failure.exitcode if failure.exitcode > 0 else 1
        print(f"error: {args.training_script} failed in process {rank} of {nproc or args.nproc_per_node} "
              f"(exit code {failure.exitcode}); its message is above", file=sys.stderr)
        raise SystemExit(code) from None


if __name__ == "__main__":
    main()

"""``python -m catgan.training.launch --nproc-per-node=N --module stages.train``: torchrun for
the train stage.

It is torch.distributed.run (what the ``torchrun`` command calls) with three changes: it is
``--standalone`` unless a multi-node option is given (on the command line or as torchrun's
``PET_*`` variables, the way through ``dvc repro``, whose command is fixed); one process on one
node runs the script directly, without the elastic agent's seconds of start-up; and a failed
process is reported in one line (its own error is printed above it) instead of torchrun's traceback.
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile

from catgan.errors import UserError

# torchrun's defaults of its multi-node options: any other value means several nodes meet.
SINGLE_NODE = {"nnodes": ("1", "1:1"), "node_rank": (0,), "rdzv_backend": ("static",),
               "rdzv_endpoint": ("",), "master_addr": ("127.0.0.1",), "master_port": (None,)}


def parse(argv: list[str]):
    """torchrun's arguments, standalone when no multi-node option is given."""
    from torch.distributed.run import get_args_parser, parse_min_max_nnodes

    args = get_args_parser().parse_args(argv)
    given = [name for name, default in SINGLE_NODE.items() if getattr(args, name) not in default]
    if args.standalone and given:
        flag = "--" + given[0].replace("_", "-")
        raise UserError(f"--standalone runs one node on its own, but {flag} is given; "
                        "drop one or the other")
    args.standalone = not given
    try:
        _, max_nodes = parse_min_max_nnodes(args.nnodes)
    except (RuntimeError, ValueError):
        raise UserError(f"--nnodes={args.nnodes}: give a number of nodes, or MIN:MAX") from None
    if args.rdzv_backend == "static" and not 0 <= args.node_rank < max_nodes:
        raise UserError(f"--node-rank={args.node_rank} must be from 0 to {max_nodes - 1} "
                        f"with --nnodes={args.nnodes}")
    return args, max_nodes


def main(argv: list[str] | None = None) -> None:
    try:
        args, nodes = parse(sys.argv[1:] if argv is None else argv)
    except UserError as err:  # not cli_entry: its logging setup would let torchrun's INFO lines out
        print(f"error: {err}", file=sys.stderr)
        raise SystemExit(err.exit_code) from None
    nproc = int(args.nproc_per_node) if str(args.nproc_per_node).isdigit() else 0
    if nproc == 1 and args.standalone:
        module = ["-m"] if args.module else []
        os.execv(sys.executable, [sys.executable, *module, args.training_script,
                                  *args.training_script_args])
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import run

    logging.getLogger("torch.distributed.elastic").setLevel(logging.CRITICAL)
    with contextlib.ExitStack() as stack:
        if args.log_dir is None:  # torch would make one in the temp folder per run and keep it
            args.log_dir = stack.enter_context(tempfile.TemporaryDirectory(prefix="torchelastic_"))
        try:
            run(args)
        except ChildFailedError as err:
            rank, failure = err.get_first_failure()
            code = failure.exitcode if failure.exitcode > 0 else 1
            total = nproc * nodes if nproc else args.nproc_per_node
            print(f"error: {args.training_script} failed in process {rank} of {total} "
                  f"(exit code {failure.exitcode}); its message is above", file=sys.stderr)
            raise SystemExit(code) from None


if __name__ == "__main__":
    main()

"""The ``hardattn`` command: ``hardattn <command> [<subcommand>] [--flags]``.

Each command's flags come from a frozen dataclass parsed by tyro, so ``--help`` documents
every field. Commands are imported lazily: ``hardattn data preview`` does not import the agents.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable

# name -> (module, config class, function, one-line help)
COMMANDS: dict[str, tuple[str, str, str, str]] = {
    "data preview": ("hardattn.preview", "PreviewConfig", "preview",
                     "write a labelled grid of sample canvases to a PNG"),
    "train": ("hardattn.agents.run", "TrainConfig", "train",
              "train an agent: hard (REINFORCE, actor-critic, SB3 PPO) or soft/full-image "
              "baselines"),
    "eval": ("hardattn.agents.evaluate", "EvalConfig", "evaluate",
             "evaluate a checkpoint on the fixed val or test canvases"),
    "compare": ("hardattn.agents.compare", "CompareConfig", "compare",
                "train and compare hard, soft and full-image agents on one preset"),
    "bench": ("hardattn.agents.bench", "BenchConfig", "bench",
              "training images/s vs. compute floor, GEMM roofline and a naive trainer"),
}


def _usage() -> str:
    lines = ["usage: hardattn <command> [--help] [flags]", "", "commands:"]
    lines += [f"  {name:<14} {entry[3]}" for name, entry in COMMANDS.items()]
    return "\n".join(lines)


def _resolve(argv: list[str]) -> tuple[str, list[str]]:
    for width in (2, 1):
        name = " ".join(argv[:width])
        if len(argv) >= width and name in COMMANDS:
            return name, argv[width:]
    group = [name for name in COMMANDS if name.split()[0] == argv[0] and " " in name]
    if group and (len(argv) == 1 or argv[1] in ("-h", "--help")):  # `hardattn data --help`
        print("\n".join([f"usage: hardattn {argv[0]} <command> [--help] [flags]", ""] +
                         [f"  {name:<14} {COMMANDS[name][3]}" for name in group]))
        raise SystemExit(0)
    raise SystemExit(f"hardattn: unknown command {' '.join(argv[:2])!r}\n\n{_usage()}")


def main(argv: list[str] | None = None) -> None:
    """Entry point of the ``hardattn`` console script."""
    import tyro

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return
    name, rest = _resolve(argv)
    from hardattn.benchmarking import process_commit

    process_commit()  # the code this process runs, before anything can commit over it
    module_name, cfg_name, fn_name, doc = COMMANDS[name]
    module = importlib.import_module(module_name)
    cfg_cls = getattr(module, cfg_name)
    fn: Callable = getattr(module, fn_name)
    cfg = tyro.cli(cfg_cls, args=rest, prog=f"hardattn {name}", description=doc)
    try:
        out = fn(cfg)
    except KeyboardInterrupt:
        raise SystemExit(f"hardattn {name}: interrupted") from None
    except (ValueError, FloatingPointError, OSError) as exc:  # bad input, bad path: one line
        raise SystemExit(f"hardattn {name}: error: {exc}") from None
    except Exception as exc:
        from hardattn.checkpoint import CheckpointError

        if isinstance(exc, CheckpointError):
            raise SystemExit(f"hardattn {name}: error: {exc}") from None
        raise
    if out is not None and not isinstance(out, dict):
        print(out)


if __name__ == "__main__":
    main()

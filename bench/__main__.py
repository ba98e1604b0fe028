"""`make bench` / `make bench-gpu`: every benchmark of the project.

    python -m bench                 CPU tables (targets beside the figures), then the regression check
    python -m bench cpu [--update-baseline]
    python -m bench gpu [--dry-run] [--json PATH] [--parts ...]   models at real size on a CUDA GPU
"""
import importlib
import sys
import time

from georeasoner_plugin.core.parsing import parse_model_output

SUITES = ["bench.bench_cascade", "bench.bench_vectorize", "bench.bench_server", "bench.bench_families",
          "bench.bench_tiled", "bench.bench_segment"]


def parser_on_degenerate_output():
    print("\nParser on degenerate model output (milliseconds; must stay linear in length)")
    print("| output | ms |\n|---|---|")
    for label, raw in [("'<think>' x 10000", "<think>" * 10000), ("'<answer>' x 10000", "<answer>" * 10000),
                       ("'[' x 50000", "[" * 50000), ("200 boxes", "<answer>[" + ",".join(["[1,2,3,4]"] * 200) + "]</answer>")]:
        started = time.perf_counter()
        parse_model_output(raw)
        print(f"| {label} | {(time.perf_counter() - started) * 1000:.1f} |")


def cpu(argv):
    from transformers.utils import logging as transformers_logging

    from bench import regression

    transformers_logging.disable_progress_bar()  # keep the tables readable
    update = "--update-baseline" in argv
    regression.main(update=update)  # interleaved medians of the CPU stages, against bench/baseline.json
    parser_on_degenerate_output()
    for name in SUITES:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name == name:
                continue
            raise
        print(f"\n== {name}")
        module.run()


def main(argv=None):
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "gpu":
        from bench import bench_gpu

        return bench_gpu.main(argv[1:])
    if argv and argv[0] == "cpu":
        argv = argv[1:]
    if argv and argv[0] not in ("--update-baseline",):
        print(__doc__)
        return 2
    cpu(argv)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""`make bench`: every benchmark table of the project."""
import importlib
import time

from georeasoner_plugin.core.parsing import parse_model_output

SUITES = ["bench.bench_cascade", "bench.bench_vectorize", "bench.bench_server", "bench.bench_segment"]


def parser_on_degenerate_output():
    print("\nParser on degenerate model output (milliseconds; must stay linear in length)")
    print("| output | ms |\n|---|---|")
    for label, raw in [("'<think>' x 10000", "<think>" * 10000), ("'<answer>' x 10000", "<answer>" * 10000),
                       ("'[' x 50000", "[" * 50000), ("200 boxes", "<answer>[" + ",".join(["[1,2,3,4]"] * 200) + "]</answer>")]:
        started = time.perf_counter()
        parse_model_output(raw)
        print(f"| {label} | {(time.perf_counter() - started) * 1000:.1f} |")


def main():
    from transformers.utils import logging as transformers_logging
    transformers_logging.disable_progress_bar()  # keep the tables readable
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


if __name__ == "__main__":
    main()

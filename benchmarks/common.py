"""Shared by the benchmark scripts: timing, peak memory, the results file."""

import datetime
import os
import platform
import statistics
import subprocess
import sys
import time

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "RESULTS.md")


def environment():
    """One line naming the date, machine, backend and library versions."""
    import keras
    import keras_hub
    import numpy as np
    import tensorflow as tf

    import keras_gss

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as file:
            cpu = next(line.split(":", 1)[1].strip() for line in file
                       if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    gpus = [d.name for d in tf.config.list_physical_devices("GPU")]
    return (f"{datetime.date.today().isoformat()}, {os.cpu_count()} × {cpu}"
            f"{', GPUs: ' + ', '.join(gpus) if gpus else ', CPU only'}; "
            f"backend {keras.backend.backend()}; keras_gss {keras_gss.__version__}, "
            f"keras {keras.__version__}, keras-hub {keras_hub.__version__}, "
            f"tensorflow {tf.__version__}, numpy {np.__version__}, "
            f"python {platform.python_version()}")


def median_seconds(function, runs=20, warmup=3):
    """Median wall time of `function()` over `runs` calls after `warmup` calls."""
    for _ in range(warmup):
        function()
    times = []
    for _ in range(runs):
        tic = time.perf_counter()
        function()
        times.append(time.perf_counter() - tic)
    return statistics.median(times)


def interleaved_medians(functions, argument, runs):
    """Median seconds of each `functions[name](argument)` over `runs` rounds, round-robin.

    Interleaving makes drifts in machine speed hit every function alike;
    outputs are pulled to numpy so asynchronous work is counted.
    """
    import numpy as np
    import tensorflow as tf

    for function in functions.values():
        for _ in range(3):  # trace and warm up
            tf.nest.map_structure(np.asarray, function(argument))
    times = {name: [] for name in functions}
    for _ in range(runs):
        for name, function in functions.items():
            tic = time.perf_counter()
            tf.nest.map_structure(np.asarray, function(argument))
            times[name].append(time.perf_counter() - tic)
    return {name: statistics.median(t) for name, t in times.items()}


def peak_extra_mb(setup, run, timeout=900):
    """Peak memory (MB) that `run` adds on top of `setup`, in a fresh process.

    Each measurement runs alone in its own process, so allocator caches of
    earlier measurements cannot hide or inflate it. After `setup`, the
    kernel's peak-RSS mark is reset (Linux `/proc/self/clear_refs`), so the
    peak reflects `run` only. Returns `(extra_mb or None, output)`.
    """
    code = (setup + "\n"
            "def _status(key):\n"
            "    with open('/proc/self/status') as f:\n"
            "        return next(int(l.split()[1]) for l in f if l.startswith(key))\n"
            "with open('/proc/self/clear_refs', 'w') as f:\n"
            "    f.write('5')\n"
            "_before = _status('VmRSS:')\n"
            + run + "\n"
            "print('EXTRA_KB', _status('VmHWM:') - _before)\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True,
                            text=True, timeout=timeout)
    if result.returncode != 0:
        return None, result.stderr[-1500:]
    extra = next(int(line.split()[1]) for line in result.stdout.splitlines()
                 if line.startswith("EXTRA_KB"))
    return extra / 1024.0, result.stdout


def markdown_table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def record(title, command, table, notes=""):
    """Print a result and append it, with the environment, to RESULTS.md."""
    block = (f"\n## {title}\n\n`{command}`, {environment()}\n\n{table}\n"
             + (f"\n{notes}\n" if notes else ""))
    print(block)
    new_file = not os.path.exists(RESULTS)
    with open(RESULTS, "a") as file:
        if new_file:
            file.write("# Benchmark results\n\nAppended by the scripts in `benchmarks/`; "
                       "newest last.\n")
        file.write(block)


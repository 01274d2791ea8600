"""Quiet start-up: TensorFlow's C++ start-up log and absl's Python log.

TensorFlow (2.18 and later) writes its start-up lines (absl's "All log
messages before absl::InitializeLog()", oneDNN, CUDA probes, CPU features)
from C++ straight to file descriptor 2, before `TF_CPP_MIN_LOG_LEVEL` is
read. `import_quietly` runs an import with that descriptor sent to a file,
then writes back every line that is not such start-up noise, so a real
error still shows.
"""

import contextlib
import os
import re
import sys
import tempfile

# Start-up lines of TensorFlow's and XLA's C++ runtime (absl INFO/WARNING records, CPU hints).
_NOISE = re.compile(
    r"^(WARNING: All log messages before absl::InitializeLog\(\)|[IW]\d{4} \d\d:\d\d:|"
    r"E\d{4} .*Unable to register cu(DNN|FFT|BLAS) factory|To enable the following "
    r"instructions:|WARNING: Logging before InitGoogleLogging)")


@contextlib.contextmanager
def _stderr_to(file):
    sys.stderr.flush()
    saved = os.dup(2)
    os.dup2(file.fileno(), 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)


def import_quietly(names):
    """Import modules (e.g. `["keras"]`) without TensorFlow's C++ start-up noise.

    Lines that are not start-up noise are written back to stderr, and an
    import error is raised as it is.
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # Python-side TensorFlow logging
    try:
        capture = tempfile.TemporaryFile(mode="w+")
    except OSError:  # no writable temp folder: import with the noise
        capture = None
    if capture is None or "tensorflow" in sys.modules:
        for name in names:
            __import__(name)
        return
    with capture:
        try:
            with _stderr_to(capture):
                for name in names:
                    __import__(name)
        finally:
            capture.seek(0)
            kept = [line for line in capture if not _NOISE.match(line)]
            sys.stderr.write("".join(kept))


def quiet_frameworks():
    """Silence Python-side framework chatter for the CLI and examples."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    try:
        import absl.logging

        absl.logging.set_verbosity(absl.logging.ERROR)
    except ImportError:
        pass

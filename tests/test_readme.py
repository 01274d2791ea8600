import os
import re

import numpy as np


def test_readme_python_snippets_run(tmp_path):
    readme = open(os.path.join(os.path.dirname(__file__), "..", "README.md")).read()
    snippets = re.findall(r"```python\n(.*?)```", readme, flags=re.S)
    assert snippets
    cwd = os.getcwd()
    os.chdir(tmp_path)
    try:
        for code in snippets:
            namespace = {}
            exec(compile(code, "README.md", "exec"), namespace)
    finally:
        os.chdir(cwd)
    assert namespace["logits"].shape == (16, 32, 32, 3)
    assert namespace["scores"].shape == (16, 32, 32)
    assert set(np.asarray(namespace["open_set"]).ravel().tolist()) <= {0, 1, 2, 3}
    restored = namespace["restored"]
    assert (restored.predict(namespace["images"], verbose=0)
            - namespace["logits"]).__abs__().max() < 1e-6

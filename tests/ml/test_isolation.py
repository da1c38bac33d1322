import ast
import json
import subprocess
import sys

from tests.conftest import ROOT

# Modules that must be found, so a broken discovery cannot pass by finding nothing.
EXPECTED = {"ml", "ml.artifact", "ml.evaluate", "ml.metrics", "ml.predict", "ml.retrain", "ml.train"}

# Run in a fresh interpreter: every module of ml/ (found with pkgutil, so new ones are covered
# without editing this test) is imported, then sys.modules is checked. ml.__main__ runs the CLI.
IMPORT_ALL = """
import json, pkgutil, sys
import ml
names = ["ml"] + sorted(m.name for m in pkgutil.walk_packages(ml.__path__, "ml.") if m.name != "ml.__main__")
for name in names:
    __import__(name)
leaked = sorted(m for m in sys.modules if m == "django" or m.startswith("django."))
print(json.dumps({"imported": names, "leaked": leaked}))
"""


def test_ml_never_imports_django():
    result = subprocess.run([sys.executable, "-c", IMPORT_ALL], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert result.returncode == 0, result.stdout + result.stderr
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert EXPECTED <= set(outcome["imported"]), outcome["imported"]
    assert outcome["leaked"] == [], f"ml imports Django: {outcome['leaked']}"


def test_ml_reads_no_settings_at_import():
    """No module-level os.environ reads: settings arrive as arguments (env only inside functions)."""
    paths = sorted((ROOT / "ml").rglob("*.py"))
    assert {"retrain.py", "metrics.py"} <= {path.name for path in paths}
    for path in paths:
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
                continue
            assert "environ" not in ast.unparse(node), f"{path.name} reads the environment at import: {ast.unparse(node)}"

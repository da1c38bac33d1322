import subprocess
import sys

from tests.conftest import ROOT

ML_MODULES = ["ml", "ml.artifact", "ml.backbones", "ml.cli", "ml.data", "ml.ensemble", "ml.evaluate",
              "ml.features", "ml.images", "ml.layers", "ml.openset", "ml.predict", "ml.train"]


def test_ml_never_imports_django():
    code = (
        "import sys\n"
        f"for name in {ML_MODULES!r}: __import__(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'django' or m.startswith('django.'))\n"
        "print(leaked)\n"
        "raise SystemExit(1 if leaked else 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_ml_reads_no_settings_at_import():
    """No module-level os.environ reads: settings arrive as arguments (env only inside functions)."""
    import ast

    for path in (ROOT / "ml").glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in tree.body:
            if isinstance(node, (ast.FunctionDef, ast.ClassDef, ast.Import, ast.ImportFrom)):
                continue
            assert "environ" not in ast.unparse(node), f"{path.name} reads the environment at import: {ast.unparse(node)}"

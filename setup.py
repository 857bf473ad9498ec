"""Everything is in pyproject.toml; this adds one build step: wheels carry the bundled model
repository (`models/`) inside the package, as `service/bundled_models/`, so that a non-editable
install (`pip install .`) serves the default model like a source checkout does
(`service.config.bundled_models_dir`). Editable installs read `models/` in place."""

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithModels(build_py):
    def run(self) -> None:
        super().run()
        source = Path(__file__).resolve().parent / "models"
        if self.editable_mode or not source.is_dir():  # (the image build copies models itself)
            return
        target = Path(self.build_lib) / "service" / "bundled_models"
        shutil.copytree(
            source, target, dirs_exist_ok=True, ignore=shutil.ignore_patterns(".trt", "__pycache__")
        )


setup(cmdclass={"build_py": BuildPyWithModels})

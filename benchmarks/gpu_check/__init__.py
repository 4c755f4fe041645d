"""The GPU check: every GPU claim of the README measured in one call on a bare device machine.

    python -m benchmarks.gpu_check --out benchmarks/results/gpu-<date> --budget-s 480
    python -m benchmarks.gpu_check --dry-run --out DIR        # the same plan on a CPU with a tiny model (CI)

Steps, in order of importance (plan.STEPS): the machine (nvidia-smi, versions); its ceilings (copy bandwidth,
fp16 / bf16 matmul peak); ``bertfast bench`` in float16; cold start in a fresh process; the kernel
micro-benchmarks (benchmarks/bench_kernels.py); ``bertfast bench`` in bfloat16; the ``needs_cuda`` tests
(``pytest -m cuda``); CUDA-graph capture per bucket; onnxruntime-gpu; torch.compile in float16 and bfloat16.
A step starts only when the budget left covers it and is killed at its cap, so the check ends inside
``--budget-s`` and says what it cut. Anything missing (a package, CUDA) makes a step skipped with its reason.

Writes into DIR these 7 files (the limit is 8), nothing in subfolders, each under 16 MiB: summary.md (the one-screen
summary, the targets met / missed, every table), results.json (every number, every step with its status and
reason), bench.png, kernels.json (pytest-benchmark's), tests.log, kernels.log, steps.log.

Modules: plan (modes, steps, budget), check (the orchestrating process), steps (the steps run as child
processes), cold_start (the fresh process), machine, derive (figures and targets), summary, files.
"""

"""Cold start, measured inside a fresh process from before ``import torch`` to the first result on the device:

    python -m benchmarks.gpu_check.cold_start MODEL_DIR DEVICE DTYPE BATCH SEQ

(the check's cold-start step runs it with an empty TRITON_CACHE_DIR, so every kernel the first call needs is
compiled in it). Prints one JSON line: import_s, load_s, first_call_s, first_result_s (their sum: the
"first call" target), second_call_ms, and the backend the ops dispatched to.
"""
from __future__ import annotations

import time

START = time.perf_counter()  # before anything heavy is imported

import json  # noqa: E402  (after START on purpose)
import sys  # noqa: E402  (likewise)


def main(argv: list[str]) -> int:
    model_dir, device_name, dtype_name, batch, seq = argv
    import torch

    import bertfast
    from bertfast import ops
    from bertfast.bench.timing import synchronize, time_one
    from bertfast.config import resolve_dtype
    from bertfast.inputs import random_batch

    imported = time.perf_counter()
    device = torch.device(device_name)
    model = bertfast.BertModel.from_pretrained(model_dir, dtype=resolve_dtype(dtype_name), device=device,
                                               local_files_only=True)
    lengths = [int(seq)] * int(batch)
    inputs = {k: v.to(device) for k, v in random_batch(model.config, lengths).items()}  # (B, S) each
    loaded = time.perf_counter()
    with torch.inference_mode():
        model(**inputs)
        synchronize(device)
        first = time.perf_counter()
        second_ms = time_one(lambda: model(**inputs), device)
    probe = torch.empty(1, device=device)
    print(json.dumps({"import_s": imported - START, "load_s": loaded - imported, "first_call_s": first - loaded,
                      "first_result_s": first - START, "second_call_ms": second_ms,
                      "backend": ops.backend_for(probe)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))

"""bertfast on a real Triton Inference Server (the tritonserver binary of the nvidia-pytriton wheel) over
loopback: each task over HTTP and gRPC against the direct pipeline call, the load test, malformed requests and
their statuses, disconnecting clients. Every server is started and stopped here."""
from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import numpy as np
import pytest
import torch
from tritonclient.utils import InferenceServerException

import bertfast
from bertfast.serving.repository import write_triton_repository
from bertfast.serving import TritonServer
from bertfast.serving.contract import contract_for
from bertfast.serving.load import connect, infer_inputs, mixed_length_texts, run_load

ATOL = 1e-5
START_TIMEOUT_S = 240
LOAD_BUDGET = 1024  # tokens per model call of the "load" model: gathered batches of 16-256-token texts get split
TEXTS = ["The cat sat on the [MASK].", "Café naïve résumé — 東京 is [MASK] in spring!",
         "A [MASK] of [MASK] things."]
PAIRS = ["It purred.", "Everyone agreed.", "The end."]


def rows(texts) -> np.ndarray:
    return np.array([[t.encode() if isinstance(t, str) else t] for t in texts], dtype=np.object_)


@pytest.fixture(scope="module")
def server(tmp_path_factory, free_ports, tiny_vocab_checkpoint, tiny_long_checkpoint, minilm_dir, heads,
           roberta_sentiment_checkpoint, modernbert_checkpoint):
    """One tritonserver on a repository written by write_triton_repository(backend="python"): fill-mask and
    next-sentence on the tiny checkpoint (the first one copied into the repository), MiniLM embeddings,
    "load": tiny embeddings with 512 positions and a small token budget, the task heads' tasks, and "roberta": a
    RoBERTa text classifier and "modernbert" ModernBERT embeddings (other architectures and tokenizers through the
    same repository writer)."""
    repo = tmp_path_factory.mktemp("triton") / "repository"
    one = {"backend": "python", "threads": 1}  # one torch thread per model: the test machine's cores are shared
    write_triton_repository(tiny_vocab_checkpoint, repo, task="fill-mask", **one)
    write_triton_repository(tiny_vocab_checkpoint, repo, task="next-sentence", copy_checkpoint=False, **one)
    write_triton_repository(minilm_dir, repo, task="feature-extraction", copy_checkpoint=False, **one)
    write_triton_repository(tiny_long_checkpoint, repo, name="load", task="feature-extraction", max_queue_delay_us=2000,
                            max_batch_tokens=LOAD_BUDGET, copy_checkpoint=False, **one)
    for task, checkpoint in heads.items():
        write_triton_repository(checkpoint, repo, task=task, copy_checkpoint=False, **one)
    write_triton_repository(roberta_sentiment_checkpoint, repo, name="roberta", task="text-classification",
                            copy_checkpoint=False, **one)
    write_triton_repository(modernbert_checkpoint, repo, name="modernbert", task="feature-extraction",
                            copy_checkpoint=False, **one)
    http, grpc, metrics = free_ports(3)
    triton = TritonServer(repo, http_port=http, grpc_port=grpc, metrics_port=metrics,  # 60 s: 8 stubs unload
                          exit_timeout_s=60, log_file=repo.parent / "tritonserver.log")  # slowly
    try:
        yield triton.start(timeout_s=START_TIMEOUT_S)
    finally:
        assert triton.stop() == 0


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """The direct calls in one torch thread too: two threads on cores other processes share are many times slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def heads(sentiment_checkpoint, ner_checkpoint, qa_checkpoint, cross_encoder_checkpoint) -> dict[str, str]:
    """The tasks of the task heads and their checkpoints."""
    return {"text-classification": sentiment_checkpoint, "token-classification": ner_checkpoint,
            "question-answering": qa_checkpoint, "rerank": cross_encoder_checkpoint}


@pytest.fixture(scope="module")
def pipelines(tiny_vocab_checkpoint, tiny_long_checkpoint, minilm_dir, heads, roberta_sentiment_checkpoint,
              modernbert_checkpoint) -> dict:
    return {"fill-mask": bertfast.pipeline("fill-mask", model=tiny_vocab_checkpoint),
            "next-sentence": bertfast.pipeline("next-sentence", model=tiny_vocab_checkpoint),
            "feature-extraction": bertfast.pipeline("feature-extraction", model=minilm_dir),
            "load": bertfast.pipeline("feature-extraction", model=tiny_long_checkpoint),
            "roberta": bertfast.pipeline("text-classification", model=roberta_sentiment_checkpoint),
            "modernbert": bertfast.pipeline("feature-extraction", model=modernbert_checkpoint),
            **{task: bertfast.pipeline(task, model=checkpoint) for task, checkpoint in heads.items()}}


def propositions(result: list) -> list[dict]:
    """A fill-mask result's propositions in one list (a text with several masks has a list per mask)."""
    return [p for group in (result if isinstance(result[0], list) else [result]) for p in group]


def infer(url: str, protocol: str, model: str, request: dict[str, np.ndarray], outputs: list[str]) -> dict:
    client = connect(protocol, url)
    try:
        response = client.infer(model, infer_inputs(protocol, request))
        return {name: response.as_numpy(name) for name in outputs}
    finally:
        client.close()


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_each_task_matches_the_direct_pipeline_call(server, pipelines, protocol):
    fill = infer(server.url(protocol), protocol, "fill-mask", {"text": rows(TEXTS)}, ["result"])
    expected = pipelines["fill-mask"](TEXTS)
    for served, direct in zip([json.loads(r[0]) for r in fill["result"]], expected):
        flat_served, flat_direct = propositions(served), propositions(direct)
        assert [p["token_str"] for p in flat_served] == [p["token_str"] for p in flat_direct]
        assert [p["sequence"] for p in flat_served] == [p["sequence"] for p in flat_direct]
        np.testing.assert_allclose([p["score"] for p in flat_served], [p["score"] for p in flat_direct], atol=ATOL)

    nsp = infer(server.url(protocol), protocol, "next-sentence", {"text": rows(TEXTS), "text_pair": rows(PAIRS)},
                ["logits", "is_next_probability", "label"])
    expected = pipelines["next-sentence"](TEXTS, PAIRS)
    np.testing.assert_allclose(nsp["logits"], [r["logits"] for r in expected], atol=ATOL, rtol=0)
    np.testing.assert_allclose(nsp["is_next_probability"][:, 0], [r["is_next_probability"] for r in expected],
                               atol=ATOL, rtol=0)
    assert [r[0].decode() for r in nsp["label"]] == [r["label"] for r in expected]

    sentences = ["A man is playing a guitar.", "Someone performs music.", "Stocks fell sharply on Tuesday."]
    embedding = infer(server.url(protocol), protocol, "feature-extraction", {"text": rows(sentences)},
                      ["embedding"])["embedding"]
    assert embedding.shape == (3, 384)
    np.testing.assert_allclose(embedding, pipelines["feature-extraction"](sentences).numpy(), atol=ATOL, rtol=0)

    embedding = infer(server.url(protocol), protocol, "modernbert", {"text": rows(sentences + REVIEWS)},
                      ["embedding"])["embedding"]
    assert embedding.shape == (6, 32)
    np.testing.assert_allclose(embedding, pipelines["modernbert"](sentences + REVIEWS).numpy(), atol=ATOL, rtol=0)


def _results(output: np.ndarray) -> list:
    return [json.loads(row[0]) for row in output]


def assert_same_results(served: list, direct: list, score: str = "score") -> None:
    """Equal JSON results except for the scores, which may differ by ATOL (another batch, another summation)."""
    def without(result):
        if isinstance(result, list):
            return [without(r) for r in result]
        return {k: v for k, v in result.items() if k != score}

    def scores(result):
        return [s for r in result for s in scores(r)] if isinstance(result, list) else [result[score]]

    assert without(served) == without(direct)
    np.testing.assert_allclose(scores(served), scores(direct), atol=ATOL, rtol=0)


REVIEWS = ["I loved every minute of it.", "The service was slow — and the soup cold.", "Ça va, merci."]
PEOPLE = ["Alice Smith met Bob in Paris.", "東京 and New York are cities.", "nothing here"]
QUESTIONS = ["Where did the cat sit?", "What is the capital of France?", "Who wrote it?"]
CONTEXTS = ["The cat sat on the mat all day.", " ".join(["Filler words go here."] * 20) + " Paris is the capital.",
            "It was written long ago by someone."]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_each_task_head_matches_the_direct_pipeline_call(server, pipelines, protocol):
    url = server.url(protocol)
    single = infer(url, protocol, "text-classification", {"text": rows(REVIEWS)}, ["scores", "result"])
    assert_same_results(_results(single["result"]), pipelines["text-classification"](REVIEWS))
    direct = pipelines["text-classification"](REVIEWS, top_k=3)
    np.testing.assert_allclose(single["scores"], [[{r["label"]: r["score"] for r in ranked}[label] for label in
                                                   ("NEGATIVE", "NEUTRAL", "POSITIVE")] for ranked in direct],
                               atol=ATOL, rtol=0)
    pair = infer(url, protocol, "text-classification", {"text": rows(REVIEWS), "text_pair": rows(PAIRS)}, ["result"])
    assert_same_results(_results(pair["result"]), pipelines["text-classification"](REVIEWS, PAIRS))

    entities = infer(url, protocol, "token-classification", {"text": rows(PEOPLE)}, ["result"])["result"]
    expected = pipelines["token-classification"](PEOPLE, aggregation_strategy="simple")
    assert any(expected)
    assert_same_results(_results(entities), expected)

    answers = infer(url, protocol, "question-answering", {"question": rows(QUESTIONS), "context": rows(CONTEXTS)},
                    ["result"])["result"]
    assert_same_results(_results(answers), pipelines["question-answering"](question=QUESTIONS, context=CONTEXTS))

    served = infer(url, protocol, "roberta", {"text": rows(REVIEWS), "text_pair": rows(PAIRS)}, ["result"])["result"]
    direct = pipelines["roberta"](REVIEWS, PAIRS)
    assert len({round(r["score"], 6) for r in direct}) == len(REVIEWS)  # each text its own score
    assert_same_results(_results(served), direct)

    queries, documents = ["cats", "cats", "capitals"], ["The cat sat on the mat.", "Paris is the capital.", "Cats."]
    scores = infer(url, protocol, "rerank", {"query": rows(queries), "document": rows(documents)}, ["score"])["score"]
    np.testing.assert_allclose(scores[:, 0], [pipelines["rerank"](q, [d])[0]["score"] for q, d in
                                              zip(queries, documents)], atol=ATOL, rtol=0)


def test_metadata_and_config_describe_the_contract(server):
    client = connect("http", server.url("http"))
    try:
        for model in ("fill-mask", "next-sentence", "feature-extraction", "text-classification",
                      "token-classification", "question-answering", "rerank"):
            contract = contract_for(model)
            metadata = client.get_model_metadata(model)
            assert metadata["platform"] == "python"
            assert [(t["name"], t["datatype"], t["shape"]) for t in metadata["inputs"]] == [
                (spec.name, "BYTES", [-1, 1]) for spec in contract.inputs]
            assert [t["name"] for t in metadata["outputs"]] == [spec.name for spec in contract.outputs]
            parameters = client.get_model_config(model)["parameters"]
            assert parameters["task"]["string_value"] == model
            assert {k: v["string_value"] for k, v in parameters.items() if k.startswith("doc.")} == {
                f"doc.{spec.name}": spec.doc for spec in (*contract.inputs, *contract.outputs)}
        assert client.get_model_metadata("feature-extraction")["outputs"][0]["shape"] == [-1, 384]
        assert client.get_model_metadata("text-classification")["outputs"][0]["shape"] == [-1, 3]
        inputs = client.get_model_config("text-classification")["input"]
        assert [(t["name"], t.get("optional", False)) for t in inputs] == [("text", False), ("text_pair", True)]
    finally:
        client.close()


def test_load_8_clients_x_50_mixed_length_requests_each_answered_correctly(server, pipelines):
    texts = mixed_length_texts(pipelines["load"].tokenizer, 400, 16, 256, seed=0)
    lengths = [len(ids) for ids in pipelines["load"].tokenizer(texts)["input_ids"]]
    assert min(lengths) >= 16 and max(lengths) <= 256 and len(set(lengths)) > 100
    urls = {p: server.url(p) for p in ("http", "grpc")}
    result = run_load(urls, "load", [{"text": rows([t])} for t in texts], ["embedding"], clients=8)
    assert result.errors == [None] * 400
    served = np.concatenate([out["embedding"] for out in result.outputs])  # row i answers request i
    np.testing.assert_allclose(served, pipelines["load"](texts).numpy(), atol=ATOL, rtol=0)
    print(f"\nload: {result.requests_per_s:.0f} requests/s, p50 {np.median(result.latencies_ms):.1f} ms, "
          f"p99 {np.quantile(result.latencies_ms, 0.99):.1f} ms")


class Background:
    """A well-formed client sending requests to "load" until stopped; it records every mismatch or error."""

    def __init__(self, server, pipe, protocol: str):
        self.texts = mixed_length_texts(pipe.tokenizer, 8, 16, 128, seed=1)
        self.expected = pipe(self.texts).numpy()
        self.server, self.protocol = server, protocol
        self.answered, self.failures = 0, []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)

    def _loop(self) -> None:
        client = connect(self.protocol, self.server.url(self.protocol))
        try:
            for i in range(500):  # bounded: stopped long before
                if self.done.is_set():
                    break
                k = i % len(self.texts)
                try:
                    out = client.infer("load", infer_inputs(self.protocol, {"text": rows([self.texts[k]])}))
                    if not np.allclose(out.as_numpy("embedding")[0], self.expected[k], atol=ATOL, rtol=0):
                        self.failures.append(f"request {i}: wrong embedding")
                except InferenceServerException as e:
                    self.failures.append(f"request {i}: {e}")
                self.answered += 1
        finally:
            client.close()

    def __enter__(self) -> "Background":
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(timeout=60)
        assert not self.thread.is_alive()


MALFORMED = [  # (protocol, model, inputs, a part of the error message)
    ("http", "load", {"txt": rows(["hello"])}, "unexpected inference input 'txt'"),
    ("grpc", "load", {"text": np.zeros((0, 1), dtype=np.object_)}, "expected 1 string elements for inference input"),
    ("http", "load", {"text": rows([b"caf\xe9"])}, "row 0 is not valid UTF-8"),
    ("grpc", "load", {"text": rows(["fine", "word " * 5000])}, "row 1 is 5002 tokens long, over this model's limit"),
    ("http", "load", {"text": rows([""])}, "row 0 is empty"),
    ("http", "load", {"text": rows(["x"] * 33)}, "batch-size must be <= 32"),
    ("grpc", "next-sentence", {"text": rows(["only half"])}, "expected 2 inputs but got 1"),
    ("http", "fill-mask", {"text": rows(["no mask at all"])}, "the text has no [MASK] token"),
    ("grpc", "question-answering", {"question": rows(["why " * 70]), "context": rows(["Because."])},
     "more than max_question_len=64"),
    ("http", "rerank", {"query": rows(["cats"])}, "expected 2 inputs but got 1"),
]


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_malformed_requests_get_errors_while_a_concurrent_client_is_served(server, pipelines, protocol):
    with Background(server, pipelines["load"], protocol) as background:
        for round_ in range(3):
            for wire, model, request, message in MALFORMED:
                with pytest.raises(InferenceServerException) as error:
                    infer(server.url(wire), wire, model, request, [])
                assert message in error.value.message(), (round_, model, error.value.message())
                assert error.value.status() in ("400", "StatusCode.INVALID_ARGUMENT"), error.value.status()
    assert background.failures == [] and background.answered > 0
    still = infer(server.url("http"), "http", "load", {"text": rows(["still serving"])}, ["embedding"])
    assert still["embedding"].shape == (1, 32)


def _json(inputs: list[dict]) -> bytes:
    return json.dumps({"inputs": inputs}).encode()


def _text(data: list, name: str = "text") -> dict:
    return {"name": name, "shape": [len(data), 1], "datatype": "BYTES", "data": data}


STATUSES = [  # (HTTP body, its status, the request over gRPC or None, a part of the error) as measured: Triton's
    # HTTP front end answers 500 to a body it cannot parse, 400 to a request it or the model refuses; gRPC refuses
    # each with INVALID_ARGUMENT
    (b"this is not json", 500, None, "failed to parse the request JSON buffer"),
    (b'{"inputs": {}}', 500, None, "Unable to parse 'inputs': attempt to access JSON non-array as array"),
    (_json([_text([{"a": 1}])]), 500, None, "Unable to parse JSON bytes array"),
    (_json([_text(["hello"], "txt")]), 400, {"txt": rows(["hello"])}, "unexpected inference input 'txt'"),
    (_json([]), 400, {}, "expected 1 inputs but got 0 inputs for model 'load'"),
    (_json([_text(["x"] * 33)]), 400, {"text": rows(["x"] * 33)}, "batch-size must be <= 32"),
    (_json([_text(["word " * 5000])]), 400, {"text": rows(["word " * 5000])}, "row 0 is 5002 tokens long"),
    (_json([_text([""])]), 400, {"text": rows([""])}, "row 0 is empty"),
]


@pytest.mark.parametrize("body, status, grpc_request, message", STATUSES)
def test_malformed_requests_get_the_measured_http_status_and_grpc_code(server, body, status, grpc_request, message):
    request = urllib.request.Request(f"http://{server.url('http')}/v2/models/load/infer", data=body,
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as error:
        urllib.request.urlopen(request, timeout=60)
    assert (error.value.code, message in json.loads(error.value.read())["error"]) == (status, True)
    if grpc_request is not None:
        with pytest.raises(InferenceServerException) as refused:
            infer(server.url("grpc"), "grpc", "load", grpc_request, [])
        assert (refused.value.status(), message in refused.value.message()) == ("StatusCode.INVALID_ARGUMENT", True)


def _http_request(server, body: bytes) -> bytes:
    return (f"POST /v2/models/load/infer HTTP/1.1\r\nHost: {server.url('http')}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


def test_clients_disconnecting_mid_request_lose_nothing_for_the_others(server, pipelines):
    texts = mixed_length_texts(pipelines["load"].tokenizer, 32, 200, 256, seed=2)
    body = json.dumps({"inputs": [{"name": "text", "shape": [32, 1], "datatype": "BYTES", "data": texts}]}).encode()
    host, port = server.url("http").split(":")
    with Background(server, pipelines["load"], "http") as background:
        for cut in (len(body), len(body) // 2, 10) * 2:  # whole request then gone, half a body, half the headers
            with socket.create_connection((host, int(port)), timeout=10) as s:
                s.sendall(_http_request(server, body)[:cut if cut < len(body) else None])
        time.sleep(0.5)
    assert background.failures == [] and background.answered > 0
    out = infer(server.url("grpc"), "grpc", "load", {"text": rows(texts)}, ["embedding"])["embedding"]
    np.testing.assert_allclose(out, pipelines["load"](texts).numpy(), atol=ATOL, rtol=0)

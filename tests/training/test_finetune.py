"""Fine-tuning: each head's loss and gradients on the fine-tuning batches vs transformers, the data (columns, labels,
word-piece alignment, QA windows), `bertfast finetune` end to end (the output loads in transformers and its
pipeline), LoRA adapters that peft loads, and the errors."""
from __future__ import annotations

import csv
import errno
import json
import math
import os
import shutil

import pytest
import torch
import transformers
from safetensors import SafetensorError

import bertfast
from bertfast.cli import main
from bertfast.inputs import IGNORE_INDEX
from bertfast.training.finetune import FinetuneArguments, finetune
from bertfast.training.finetune_data import TextClassificationData, TokenClassificationData
from bertfast.training.qa_data import QuestionAnsweringData, read_squad
from tests.helpers import needs_cuda
from tests.training.test_trainer import gradient_errors, grads_with_hf_names

LOSS_RTOL, GRAD_RTOL = 1e-5, 1e-4
GOOD = ["great", "wonderful", "excellent", "lovely", "superb", "brilliant"]
BAD = ["awful", "terrible", "horrible", "dreadful", "dire", "boring"]


def write_csv(path, rows) -> str:
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return str(path)


def sentiment_rows(count: int, offset: int = 0) -> list[dict]:
    return [{"text": f"the film was {(GOOD if i % 2 else BAD)[(i // 2) % 6]} from start to end" + " indeed" * (i % 3),
             "label": "pos" if i % 2 else "neg"} for i in range(offset, offset + count)]


CONTEXT = "The cat sat on the mat in the kitchen. It was a sunny day and the dog slept outside."
SQUAD = {"data": [{"paragraphs": [{"context": CONTEXT, "qas": [
    {"id": "a", "question": "Where did the cat sit?",
     "answers": [{"text": "on the mat", "answer_start": CONTEXT.index("on the mat")}]},
    {"id": "b", "question": "Who slept outside?",
     "answers": [{"text": "the dog", "answer_start": CONTEXT.index("the dog")}]}]}]}]}


def batch_for(task: str, tokenizer, problem_type: str = "single_label_classification"):
    """A collated batch of the task's fine-tuning data (padded: the lengths differ) and its labels."""
    if task == "BertForSequenceClassification":
        labels = {"regression": ["score"]}.get(problem_type, ["neg", "pos"])
        rows = sentiment_rows(5)
        if problem_type == "regression":
            rows = [{"text": r["text"], "label": str(i / 4)} for i, r in enumerate(rows)]
        if problem_type == "multi_label_classification":
            rows = [{"text": r["text"], "label": "neg|pos" if i == 2 else r["label"]} for i, r in enumerate(rows)]
        data = TextClassificationData(tokenizer, labels, problem_type)
        return data.collate(data.features(rows, "rows")), len(labels)
    if task == "BertForTokenClassification":
        data = TokenClassificationData(tokenizer, ["O", "B-PER", "I-PER"])
        rows = [{"tokens": "my name is wolfgang amadeus", "tags": "O O O B-PER I-PER"}, {"tokens": "hello", "tags": "O"}]
        return data.collate(data.features(rows, "rows")), 3
    data = QuestionAnsweringData(tokenizer, max_length=24, doc_stride=8)
    examples = [{"id": q["id"], "question": q["question"], "context": p["context"], "answers": q["answers"]}
                for p in SQUAD["data"][0]["paragraphs"] for q in p["qas"]]
    features = data.features(examples, "squad")
    batch = data.collate(features)
    assert len(features) > len(examples) and (batch["start_positions"] > 0).any()  # windows, an answer inside one
    return batch, 2


@pytest.mark.parametrize("task, problem_type", [
    ("BertForSequenceClassification", "single_label_classification"),
    ("BertForSequenceClassification", "multi_label_classification"),
    ("BertForSequenceClassification", "regression"),
    ("BertForTokenClassification", None), ("BertForQuestionAnswering", None)])
def test_loss_and_every_gradient_match_transformers_on_fine_tuning_batches(task, problem_type, tokenizer,
                                                                           tiny_vocab_checkpoint):
    batch, num_labels = batch_for(task, tokenizer, problem_type or "single_label_classification")
    torch.manual_seed(0)
    hf = getattr(transformers, task).from_pretrained(tiny_vocab_checkpoint, num_labels=num_labels,
                                                     problem_type=problem_type).eval()
    ours = getattr(bertfast, task).from_hf(hf).eval()
    assert batch["attention_mask"].min() == 0  # padded
    expected, actual = hf(**batch).loss, ours(**batch).loss
    expected.backward()
    actual.backward()
    assert abs(actual.item() - expected.item()) <= LOSS_RTOL * abs(expected.item())
    hf_grads = {n: p.grad for n, p in hf.named_parameters() if p.grad is not None}
    errors = gradient_errors({n: g for n, g in grads_with_hf_names(ours).items() if g is not None}, hf_grads)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= GRAD_RTOL, f"{worst}: relative error {errors[worst]:.2e}"


def test_word_labels_go_to_first_word_pieces_as_transformers_aligns_them(tokenizer, minilm_dir):
    words, tags = ["Wolfgang", "Amadeus", "Mozart", "composed", "Zauberflöte"], ["B-PER", "I-PER", "I-PER", "O", "O"]
    data = TokenClassificationData(tokenizer, ["O", "B-PER", "I-PER"])
    feature = data.features([{"tokens": words, "tags": tags}], "rows")[0]
    hf = transformers.AutoTokenizer.from_pretrained(minilm_dir)
    encoded = hf(words, is_split_into_words=True)
    previous, expected = None, []
    for word in encoded.word_ids():  # transformers' run_ner.py alignment (label_all_tokens=False)
        expected.append(IGNORE_INDEX if word is None or word == previous else data.label2id[tags[word]])
        previous = word
    assert feature["input_ids"] == encoded["input_ids"] and feature["labels"] == expected
    assert expected.count(IGNORE_INDEX) > 2  # some words have continuation pieces


def test_qa_windows_hold_the_answer_span(tokenizer, tmp_path):
    path = tmp_path / "squad.json"
    path.write_text(json.dumps(SQUAD))
    examples = read_squad(path)
    data = QuestionAnsweringData(tokenizer, max_length=24, doc_stride=8)
    found = set()
    for feature in data.features(examples, path):
        start, end = feature["start_positions"], feature["end_positions"]
        if start:
            example = examples[feature["example"]]
            text = example["context"][feature["offsets"][start][0]:feature["offsets"][end][1]]
            assert text == example["answers"][0]["text"]
            found.add(feature["example"])
    assert found == {0, 1}


@pytest.fixture(scope="module")
def sentiment_files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sentiment")
    return write_csv(folder / "train.csv", sentiment_rows(48)), write_csv(folder / "eval.csv", sentiment_rows(12, 48))


QUICK = dict(epochs=6, batch_size=8, learning_rate=1e-2, warmup_ratio=0.0, device="cpu", progress=False)


def test_finetune_command_writes_a_model_transformers_and_its_pipeline_load(sentiment_files, tiny_vocab_checkpoint,
                                                                            tmp_path, capsys):
    train, eval_file = sentiment_files
    out = str(tmp_path / "clf")
    assert main(["finetune", "--model", tiny_vocab_checkpoint, "--train", train, "--eval", eval_file, "--out", out,
                 "--epochs", "6", "--batch-size", "8", "--lr", "1e-2", "--warmup-ratio", "0", "--device", "cpu",
                 "--no-progress", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [e["epoch"] for e in results["epochs"]] == [1, 2, 3, 4, 5, 6] and results["metric"] == "accuracy"
    assert results["best"]["accuracy"] == max(e["accuracy"] for e in results["epochs"]) >= 0.9
    assert results["epochs"][-1]["train_loss"] < results["epochs"][0]["train_loss"]
    hf = transformers.BertForSequenceClassification.from_pretrained(out).eval()
    ours = bertfast.BertForSequenceClassification.from_pretrained(out)
    assert hf.config.id2label == {0: "neg", 1: "pos"} == ours.config.id2label
    batch = bertfast.BertTokenizer.from_pretrained(out)(["a great film", "an awful film"], padding=True,
                                                        return_tensors="pt")
    torch.testing.assert_close(ours(**batch).logits, hf(**batch).logits, atol=1e-5, rtol=0)
    with open(os.path.join(out, "finetune_results.json")) as f:
        assert json.load(f)["best"] == results["best"]
    predictions = transformers.pipeline("text-classification", model=out, device="cpu")(["it was great", "it was awful"])
    assert [p["label"] for p in predictions] == [p["label"] for p in bertfast.pipeline(
        "text-classification", model=out)(["it was great", "it was awful"])]


def test_lora_adapter_is_peft_format_peft_loads_it_and_bertfast_merges_it(sentiment_files, tiny_vocab_checkpoint,
                                                                          tmp_path):
    import peft

    train, eval_file = sentiment_files
    out = tmp_path / "lora"
    finetune(tiny_vocab_checkpoint, train, eval_file, out, FinetuneArguments(**{**QUICK, "epochs": 2},
                                                                             lora="4,8,query,value,intermediate.dense"))
    config = json.loads((out / "adapter_config.json").read_text())
    assert (config["peft_type"], config["r"], config["modules_to_save"]) == ("LORA", 4, ["classifier"])
    base = transformers.BertForSequenceClassification.from_pretrained(tiny_vocab_checkpoint, num_labels=2)
    peft_model = peft.PeftModel.from_pretrained(base, str(out)).eval()
    ours = bertfast.BertForSequenceClassification.from_pretrained(tiny_vocab_checkpoint, adapter=str(out),
                                                                  num_labels=2)
    batch = bertfast.BertTokenizer.from_pretrained(tiny_vocab_checkpoint)(["a great film", "awful"], padding=True,
                                                                          return_tensors="pt")
    with torch.no_grad():
        expected = peft_model(**batch).logits
        plain = bertfast.BertForSequenceClassification.from_pretrained(tiny_vocab_checkpoint, num_labels=2)
        plain.classifier.load_state_dict(ours.classifier.state_dict())
        without_lora = plain(**batch).logits
    torch.testing.assert_close(ours(**batch).logits, expected, atol=1e-5, rtol=0)
    assert (without_lora - expected).abs().max() > 1e-4  # the LoRA update changes the outputs


def test_bad_input_is_an_error_that_says_what_to_fix(sentiment_files, tiny_vocab_checkpoint, tmp_path):
    train, _ = sentiment_files
    unknown = write_csv(tmp_path / "eval.csv", [{"text": "fine", "label": "meh"}])
    with pytest.raises(ValueError, match=r"row 1: unknown label 'meh'; the labels are \['neg', 'pos'\]"):
        finetune(tiny_vocab_checkpoint, train, unknown, tmp_path / "a", FinetuneArguments(**QUICK))
    with pytest.raises(ValueError, match="has no column 'sentence'.*name the right one with --text-column"):
        finetune(tiny_vocab_checkpoint, train, train, tmp_path / "b", FinetuneArguments(**QUICK, text_column="sentence"))
    with pytest.raises(ValueError, match="fine-tuning runs on CUDA only: use --device cuda, or --dtype float32"):
        finetune(tiny_vocab_checkpoint, train, train, tmp_path / "c", FinetuneArguments(**{**QUICK, "dtype": "float16"}))
    with pytest.raises(ValueError, match="fewer than one global batch of 64"):
        finetune(tiny_vocab_checkpoint, train, train, tmp_path / "d", FinetuneArguments(**{**QUICK, "batch_size": 64}))
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="is not empty: choose a new --out, or pass --overwrite"):
        finetune(tiny_vocab_checkpoint, train, train, tmp_path / "full", FinetuneArguments(**QUICK))
    with pytest.raises(ValueError, match="--lora target 'attn' matches no Linear layer"):
        finetune(tiny_vocab_checkpoint, train, train, tmp_path / "e", FinetuneArguments(**QUICK, lora="4,8,attn"))


def test_token_classification_and_question_answering_fine_tune_end_to_end(tiny_vocab_checkpoint, tmp_path):
    """A few steps of each; the outputs load in transformers (same logits) and the metrics are the task's."""
    rows = [{"tokens": json.dumps(["my", "name", "is", name, "and", "i", "live", "here"]),
             "tags": json.dumps(["O", "O", "O", "B-PER", "O", "O", "O", "O"])} for name in ("wolfgang", "clara", "anna", "otto")]
    ner_file = write_csv(tmp_path / "ner.csv", rows)
    ner = finetune(tiny_vocab_checkpoint, ner_file, ner_file, tmp_path / "ner", FinetuneArguments(
        task="token-classification", text_column="tokens", label_column="tags", **{**QUICK, "epochs": 1, "batch_size": 2}))
    assert {"accuracy", "f1", "eval_loss"} <= set(ner["best"]) and ner["metric"] == "f1"
    hf = transformers.BertForTokenClassification.from_pretrained(tmp_path / "ner").eval()
    assert hf.config.id2label == {0: "B-PER", 1: "O"}
    text = "my name is clara"
    theirs = [(e["word"], e["entity"]) for e in transformers.pipeline("token-classification", model=str(tmp_path / "ner"),
                                                                     device="cpu")(text)]
    ours = [(e["word"], e["entity"]) for e in bertfast.pipeline("token-classification", model=str(tmp_path / "ner"))(text)]
    assert ours == theirs
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(SQUAD))
    qa = finetune(tiny_vocab_checkpoint, squad, squad, tmp_path / "qa", FinetuneArguments(
        task="question-answering", max_length=24, doc_stride=8, **{**QUICK, "epochs": 1, "batch_size": 2}))
    assert {"exact_match", "f1"} <= set(qa["best"]) and 0 <= qa["best"]["f1"] <= 100
    batch = bertfast.BertTokenizer.from_pretrained(tmp_path / "qa")("Who?", CONTEXT, return_tensors="pt")
    ours = bertfast.BertForQuestionAnswering.from_pretrained(tmp_path / "qa")(**batch)
    theirs = transformers.BertForQuestionAnswering.from_pretrained(tmp_path / "qa").eval()(**batch)
    torch.testing.assert_close(ours.start_logits, theirs.start_logits, atol=1e-5, rtol=0)


def test_squad_exact_match_and_f1_follow_the_official_normalisation():
    from bertfast.training.qa_data import exact_match, token_f1

    assert exact_match("The Mat!", "mat") == 1.0 and exact_match("on mat", "mat") == 0.0
    assert token_f1("on the mat", "the mat in the kitchen") == pytest.approx(2 * (1 / 2) * (1 / 3) / (1 / 2 + 1 / 3))


@pytest.fixture(scope="module")
def no_dropout_checkpoint(tiny_vocab_checkpoint, tmp_path_factory) -> str:
    base = tmp_path_factory.mktemp("no_dropout") / "base"
    shutil.copytree(tiny_vocab_checkpoint, base)
    config = json.loads((base / "config.json").read_text())
    (base / "config.json").write_text(json.dumps({**config, "hidden_dropout_prob": 0.0,
                                                  "attention_probs_dropout_prob": 0.0}))
    return str(base)


def assert_same_run(a, b, results_a: dict, results_b: dict) -> None:
    """Same per-epoch train and eval losses (1e-5 relative) and final weights."""
    from safetensors.torch import load_file

    losses = [[e[key] for e in r["epochs"] for key in ("train_loss", "eval_loss")] for r in (results_a, results_b)]
    assert torch.allclose(torch.tensor(losses[0]), torch.tensor(losses[1]), rtol=1e-5, atol=0)
    weights_a, weights_b = (load_file(os.path.join(d, "model.safetensors")) for d in (a, b))
    loss_error = max(abs(x - y) / abs(y) for x, y in zip(*losses))
    weight_error = max((weights_a[n] - weights_b[n]).abs().max().item() for n in weights_b if not n.endswith("key.bias"))
    print(f"{os.path.basename(a)} vs {os.path.basename(b)}: losses {loss_error:.2e} relative, weights {weight_error:.2e} "
          f"absolute (max)")
    for name in weights_b:  # the key biases: zero gradient in exact arithmetic, Adam-amplified noise (test_distributed)
        if not name.endswith("key.bias"):  # atol: biases that start at 0 stay ~1e-3, where 1e-5 relative is 1e-8
            torch.testing.assert_close(weights_a[name], weights_b[name], rtol=1e-5, atol=1e-7, msg=name)


def test_gradient_accumulation_2_and_two_gloo_ranks_equal_a_batch_twice_as_large(
        sentiment_files, no_dropout_checkpoint, tmp_path):
    """Dropout off; the same rows in the same order; 48 rows = 6 full global batches of 8 (nothing left out):
    batch 8 == batch 4 x grad-accum 2 == torchrun 2 ranks x batch 4."""
    from tests.training.test_distributed import torchrun

    train, eval_file = sentiment_files
    runs = {}
    for name, options in (("big", dict(batch_size=8)), ("accumulated", dict(batch_size=4, grad_accum=2))):
        runs[name] = finetune(no_dropout_checkpoint, train, eval_file, tmp_path / name,
                              FinetuneArguments(**{**QUICK, "epochs": 2, "learning_rate": 1e-3, **options}))
    assert_same_run(tmp_path / "accumulated", tmp_path / "big", runs["accumulated"], runs["big"])
    ddp = str(tmp_path / "ddp")
    torchrun(2, "finetune", "--model", no_dropout_checkpoint, "--train", train, "--eval", eval_file, "--out", ddp,
             "--epochs", "2", "--batch-size", "4", "--lr", "1e-3", "--warmup-ratio", "0", "--device", "cpu",
             "--no-progress")
    with open(os.path.join(ddp, "finetune_results.json")) as f:
        assert_same_run(ddp, tmp_path / "big", json.load(f), runs["big"])


@pytest.mark.parametrize("problem_type, label, metrics", [
    ("multi_label_classification", lambda i: json.dumps(["pos", "long"] if i % 2 else ["neg"]), {"f1", "accuracy"}),
    ("regression", lambda i: str(float(i % 2)), {"mse", "pearson"})])
def test_multi_label_and_regression_fine_tune_and_load_in_transformers(problem_type, label, metrics,
                                                                        tiny_vocab_checkpoint, tmp_path):
    rows = [{"text": r["text"], "label": label(i)} for i, r in enumerate(sentiment_rows(16))]
    path = write_csv(tmp_path / "rows.csv", rows)
    results = finetune(tiny_vocab_checkpoint, path, path, tmp_path / "out", FinetuneArguments(
        problem_type=problem_type, **{**QUICK, "epochs": 1}))
    assert metrics <= set(results["best"]) and results["metric"] == ("f1" if "multi" in problem_type else "mse")
    hf = transformers.BertForSequenceClassification.from_pretrained(tmp_path / "out")
    assert hf.config.problem_type == problem_type
    assert hf.config.num_labels == (3 if "multi" in problem_type else 1)


def test_num_labels_names_the_ids_and_must_agree_with_labels(tiny_vocab_checkpoint, tmp_path):
    rows = [{"text": r["text"], "label": str(i % 3)} for i, r in enumerate(sentiment_rows(12))]
    path = write_csv(tmp_path / "rows.csv", rows)
    finetune(tiny_vocab_checkpoint, path, path, tmp_path / "out", FinetuneArguments(num_labels=3, **{**QUICK, "epochs": 1}))
    assert transformers.AutoConfig.from_pretrained(tmp_path / "out").id2label == {0: "0", 1: "1", 2: "2"}
    with pytest.raises(ValueError, match="--num-labels 2 but --labels names 3 labels"):
        FinetuneArguments(num_labels=2, labels=["a", "b", "c"]).validate()


@needs_cuda
@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_mixed_precision_fine_tuning_on_cuda(dtype, sentiment_files, tiny_vocab_checkpoint, tmp_path):
    """bf16 autocast, or fp16 autocast with the loss scaler; the master weights stay float32."""
    train, eval_file = sentiment_files
    results = finetune(tiny_vocab_checkpoint, train, eval_file, tmp_path / dtype, FinetuneArguments(
        **{**QUICK, "device": "cuda", "dtype": dtype, "epochs": 2}))
    assert all(math.isfinite(e["train_loss"]) and math.isfinite(e["eval_loss"]) for e in results["epochs"])
    from safetensors.torch import load_file

    assert {w.dtype for w in load_file(tmp_path / dtype / "model.safetensors").values()} == {torch.float32}


def test_limits_and_labels_that_cannot_train_are_refused_up_front(sentiment_files, tiny_vocab_checkpoint, tmp_path,
                                                                   capsys):
    """--max-length above the model's positions was accepted until a long row failed with Python advice; --num-labels
    0 was ignored; a training file of one class trained a one-label softmax (loss 0, accuracy 1)."""
    train, eval_file = sentiment_files
    argv = ["finetune", "--model", tiny_vocab_checkpoint, "--train", train, "--eval", eval_file, "--device", "cpu",
            "--no-progress"]
    for options, message in ((["--max-length", "100000"], "--max-length (max_length) 100000 is above the model's "
                                                          "limit of 64 tokens (max_position_embeddings in the "
                                                          f"config.json of {tiny_vocab_checkpoint}): pass "
                                                          "--max-length 64 or less"),
                             (["--num-labels", "0"], "--num-labels (num_labels) must be an int >= 1, got 0"),
                             (["--num-labels", "1"], "--num-labels (num_labels) gives one label only ('0'): "
                                                     "text-classification needs at least two classes"),
                             (["--labels", "neg"], "--labels (labels) gives one label only ('neg')")):
        assert main([*argv, *options, "--out", str(tmp_path / "out")]) == 1
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    one_class = write_csv(tmp_path / "neg.csv", [r for r in sentiment_rows(16) if r["label"] == "neg"])
    with pytest.raises(ValueError, match=rf"the training file {one_class} gives one label only \('neg'\): "
                                         r"text-classification needs at least two classes.*--problem-type regression"):
        finetune(tiny_vocab_checkpoint, one_class, one_class, tmp_path / "a", FinetuneArguments(**QUICK))
    words = write_csv(tmp_path / "o.csv", [{"tokens": "a b", "tags": "O O"}] * 8)
    with pytest.raises(ValueError, match=r"gives one label only \('O'\): token-classification needs at least two"):
        finetune(tiny_vocab_checkpoint, words, words, tmp_path / "b", FinetuneArguments(
            task="token-classification", text_column="tokens", label_column="tags", **QUICK))
    assert not os.path.exists(tmp_path / "out") and not os.path.exists(tmp_path / "a")
    results = finetune(tiny_vocab_checkpoint, train, eval_file, tmp_path / "c", FinetuneArguments(**{
        **QUICK, "epochs": 1}, max_length=64))  # the limit itself is fine (the default: 128, at most the limit)
    assert results["best"]["epoch"] == 1


@pytest.mark.parametrize("error", [OSError(errno.ENOSPC, "No space left on device"),
                                   SafetensorError("Error while serializing: I/O error: No space left on device "
                                                   "(os error 28)")], ids=["OSError", "SafetensorError"])
def test_a_full_disk_while_saving_says_so_and_keeps_what_out_held(error, sentiment_files, tiny_vocab_checkpoint,
                                                                   tmp_path, monkeypatch):
    """A second run's save over --out fails as a full disk makes it fail (simulated: the safetensors write raises what
    it raises then, as measured on a full tmpfs): one message, not a SafetensorError traceback; the first run's model
    stays whole in --out."""
    import safetensors.torch

    train, eval_file = sentiment_files
    out = tmp_path / "out"
    finetune(tiny_vocab_checkpoint, train, eval_file, out, FinetuneArguments(**{**QUICK, "epochs": 1}))
    before = {name: (out / name).read_bytes() for name in os.listdir(out)}

    def full_disk(*args, **kwargs):
        raise error

    monkeypatch.setattr(safetensors.torch, "save_file", full_disk)
    with pytest.raises(OSError, match=rf"^no space left on {out}: the save failed, and what the folder held before is "
                                      r"kept as it was; free some space there, or point --out elsewhere$") as caught:
        finetune(tiny_vocab_checkpoint, train, eval_file, out, FinetuneArguments(**{**QUICK, "epochs": 1}),
                 overwrite=True)
    assert caught.value.errno == errno.ENOSPC
    assert {name: (out / name).read_bytes() for name in os.listdir(out)} == before


def test_qa_windows_that_cannot_hold_the_context_name_the_options(tiny_vocab_checkpoint, tmp_path):
    """A question longer than a window, or a --doc-stride as long as the context part of one, was the tokenizer's
    "stride=128 must be less than..." (after a Rust panic's backtrace); the defaults fit any model."""
    squad = tmp_path / "squad.json"
    squad.write_text(json.dumps(SQUAD))
    quick = {**QUICK, "epochs": 1, "batch_size": 2}
    with pytest.raises(ValueError, match=rf"{squad} example 1: its question is 6 tokens, so a window of --max-length "
                                         r"\(max_length\) 24 tokens holds 15 context tokens, not more than the "
                                         r"--doc-stride \(doc_stride\) 16 that windows share: lower --doc-stride"):
        finetune(tiny_vocab_checkpoint, squad, squad, tmp_path / "a", FinetuneArguments(
            task="question-answering", max_length=24, doc_stride=16, **quick))
    with pytest.raises(ValueError, match=r"holds 0 context tokens.*raise --max-length or shorten the question"):
        finetune(tiny_vocab_checkpoint, squad, squad, tmp_path / "b", FinetuneArguments(
            task="question-answering", max_length=8, doc_stride=2, **quick))
    results = finetune(tiny_vocab_checkpoint, squad, squad, tmp_path / "c", FinetuneArguments(
        task="question-answering", **quick))  # windows of 64 (the model's limit), sharing 32
    assert results["best"]["epoch"] == 1

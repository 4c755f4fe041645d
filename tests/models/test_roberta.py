"""bertfast/models/roberta.py and bertfast/heads/roberta.py: RoBERTa, XLM-RoBERTa and CamemBERT checkpoints written
by transformers (random weights, small configs, a tokenizer trained in tests/tokenizer_folders.py) load through
BERT's class names and the Auto classes, and give transformers' numbers: hidden states 1e-5, logits 1e-4, on
right- and left-padded batches of mixed lengths and packed; their saves load back in transformers; the pipelines
give transformers' answers."""
from __future__ import annotations

import functools
import json

import pytest
import torch
import transformers

import bertfast
from bertfast.heads.roberta import RobertaForSequenceClassification
from bertfast.models.roberta import RobertaModel
from bertfast.cli import main
from bertfast.training.finetune import FinetuneArguments, finetune
from tests.helpers import HIDDEN_ATOL, LOGITS_ATOL, st_folder
from tests.models.parity import (TEXTS, Family, assert_fill_mask_matches, assert_padded_left_padded_and_packed,
                                 assert_token_classification_matches, compare, encoded, int8_cosine)
from tests.pipelines.test_question_answering import reference, score_diff
from tests.training.test_finetune import sentiment_rows, write_csv

FAMILIES = {"roberta": "Roberta", "xlm-roberta": "XLMRoberta", "camembert": "Camembert"}  # model_type -> prefix
HEADS = {"Model": ("last_hidden_state",), "ForMaskedLM": ("logits",), "ForSequenceClassification": ("logits",),
         "ForTokenClassification": ("logits",), "ForQuestionAnswering": ("start_logits", "end_logits"),
         "ForMultipleChoice": ("logits",)}
SIZES = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=130, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5)
DECISIVE = ("classifier", "qa_outputs", "lm_head.dense")


@pytest.fixture(scope="module")
def families(tmp_path_factory):
    return {family: Family(tmp_path_factory, family, prefix, SIZES, DECISIVE) for family, prefix in FAMILIES.items()}


@pytest.fixture
def folder(families):
    return lambda family, head: families[family].folder(head)


@pytest.mark.parametrize("head", [h for h in HEADS if h != "ForMultipleChoice"])
@pytest.mark.parametrize("family", FAMILIES)
def test_each_head_matches_transformers_padded_left_padded_and_packed(families, family, head):
    path = families[family].folder(head)
    ours = getattr(bertfast, "Bert" + head).from_pretrained(path)  # BERT's name: the family's class is picked
    assert type(ours).__name__ == "Roberta" + head and type(ours.base_model) is RobertaModel
    assert_padded_left_padded_and_packed(ours, families[family].theirs(head, path), path, HEADS[head])


def test_multiple_choice_matches_transformers(folder):
    path = folder("roberta", "ForMultipleChoice")
    ours = bertfast.AutoModelForMultipleChoice.from_pretrained(path)
    theirs = transformers.RobertaForMultipleChoice.from_pretrained(path).eval()
    batch = {k: v.view(2, 2, -1) for k, v in encoded(path).items()}
    with torch.inference_mode():
        torch.testing.assert_close(ours(**batch).logits, theirs(**batch).logits, atol=LOGITS_ATOL, rtol=0)


@pytest.mark.parametrize("head", ["ForMaskedLM", "ForSequenceClassification"])
def test_a_save_loads_back_in_transformers_with_the_same_outputs(folder, tmp_path, head):
    ours = getattr(bertfast, "AutoModel" + head).from_pretrained(folder("xlm-roberta", head))
    ours.save_pretrained(tmp_path)
    loaded = getattr(transformers, "AutoModel" + head).from_pretrained(tmp_path).eval()
    assert type(loaded).__name__ == "XLMRoberta" + head
    batch = encoded(folder("xlm-roberta", head))
    with torch.inference_mode():
        compare(ours(**batch), loaded(**batch), ("logits",), batch["attention_mask"].bool())


def test_a_base_checkpoint_gets_a_new_roberta_head(folder):
    with pytest.warns(UserWarning, match="no task head"):
        model = bertfast.AutoModelForSequenceClassification.from_pretrained(folder("camembert", "Model"),
                                                                             num_labels=4)
    assert type(model) is RobertaForSequenceClassification and model.classifier.out_proj.out_features == 4


def test_roberta_has_no_next_sentence_head(folder):
    with pytest.raises(ValueError, match="BertForNextSentencePrediction: bertfast has no ForNextSentencePrediction "
                                         "model for model_type 'roberta'"):
        bertfast.BertForNextSentencePrediction.from_pretrained(folder("roberta", "ForMaskedLM"))


def test_the_sequence_limit_is_the_table_less_the_padding_rows(folder):
    model = bertfast.AutoModel.from_pretrained(folder("roberta", "Model"))
    assert model.config.max_sequence_length == SIZES["max_position_embeddings"] - 2
    ids = torch.full((1, 129), 5)
    with pytest.raises(ValueError, match=r"sequence length 129 exceeds the model's 128 positions \(max_position_"
                                         r"embeddings 130 less the 2 rows before the first\)"):
        model(ids)


@pytest.mark.parametrize("family", FAMILIES)
def test_fill_mask_pipeline_matches_transformers(folder, family):
    assert_fill_mask_matches(folder(family, "ForMaskedLM"))


def test_text_and_token_classification_pipelines_match_transformers(folder):
    path = folder("roberta", "ForSequenceClassification")
    got = bertfast.pipeline("text-classification", model=path)(TEXTS, top_k=None)
    expected = transformers.pipeline("text-classification", model=path, device="cpu")(TEXTS, top_k=None)
    assert [[r["label"] for r in row] for row in got] == [[r["label"] for r in row] for row in expected]
    assert_token_classification_matches(folder("xlm-roberta", "ForTokenClassification"), ("simple", "first"))


def test_int8_keeps_the_hidden_states_close(folder):
    assert int8_cosine(folder("roberta", "Model")) > 0.99


def test_an_unsupported_family_is_refused_naming_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text('{"model_type": "deberta-v2", "hidden_size": 32}')
    with pytest.raises(ValueError, match=r"config.json: model_type is 'deberta-v2'; bertfast runs the architectures "
                                         r"'bert', ") as caught:
        bertfast.AutoModel.from_pretrained(tmp_path)
    assert all(f"'{name}'" in str(caught.value) for name in (*FAMILIES, "distilbert", "electra")), caught.value


def test_question_answering_pipeline_matches_the_definition(folder):
    """The QA definition of tests/pipelines/test_question_answering.py (transformers 4.x's), on a RoBERTa
    checkpoint and transformers' fast tokenizer: RoBERTa's pair template (<s> q </s></s> c </s>) and BPE offsets."""
    path = folder("roberta", "ForQuestionAnswering")
    theirs = transformers.RobertaForQuestionAnswering.from_pretrained(path, attn_implementation="eager").eval()
    tokenizer = functools.partial(transformers.AutoTokenizer.from_pretrained(path), return_token_type_ids=True)

    def model(input_ids, token_type_ids, attention_mask):  # RoBERTa takes no token types
        return theirs(input_ids=input_ids, attention_mask=attention_mask)

    ours = bertfast.pipeline("question-answering", model=path)
    context = TEXTS[3] + " " + TEXTS[0]  # longer than one 32-token window
    for options in ({"top_k": 3, "max_seq_len": 48},
                    {"top_k": 2, "max_seq_len": 32, "doc_stride": 8, "handle_impossible_answer": True}):
        expected = reference(model, tokenizer, "Where is the café?", context, **options)
        assert score_diff(ours("Where is the café?", context, **options), expected) <= LOGITS_ATOL


def test_finetune_from_a_roberta_checkpoint_lowers_the_loss_and_loads_in_transformers(folder, tmp_path, capsys):
    """`bertfast finetune` on a base RoBERTa checkpoint: a new RoBERTa classification head, trained; the saved
    folder is transformers' RobertaForSequenceClassification, and both libraries' pipelines agree on it."""
    train = write_csv(tmp_path / "train.csv", sentiment_rows(48))
    eval_file = write_csv(tmp_path / "eval.csv", sentiment_rows(12, 48))
    out = str(tmp_path / "clf")
    assert main(["finetune", "--model", folder("roberta", "Model"), "--train", train, "--eval", eval_file, "--out",
                 out, "--epochs", "4", "--batch-size", "8", "--lr", "1e-2", "--warmup-ratio", "0", "--device", "cpu",
                 "--no-progress", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert results["epochs"][-1]["train_loss"] < results["epochs"][0]["train_loss"]
    theirs = transformers.AutoModelForSequenceClassification.from_pretrained(out).eval()
    assert type(theirs).__name__ == "RobertaForSequenceClassification"
    ours = bertfast.AutoModelForSequenceClassification.from_pretrained(out)
    batch = encoded(out)
    with torch.inference_mode():
        torch.testing.assert_close(ours(**batch).logits, theirs(**batch).logits, atol=LOGITS_ATOL, rtol=0)
    texts = ["it was great", "it was awful", "a great film"]
    assert [p["label"] for p in transformers.pipeline("text-classification", model=out, device="cpu")(texts)] == \
        [p["label"] for p in bertfast.pipeline("text-classification", model=out)(texts)]


def test_onnx_exports_validate_and_their_pipelines_give_the_torch_answers(folder, tmp_path):
    """export_onnx on XLM-R checkpoints (checked against PyTorch by the export itself); the onnxruntime pipelines
    on them give the torch pipelines' results."""
    for task, head, texts in (("fill-mask", "ForMaskedLM", ["Le chat est sur la <mask>.", "<mask> and 北京"]),
                              ("text-classification", "ForSequenceClassification", TEXTS)):
        path = folder("xlm-roberta", head)
        report = bertfast.export_onnx(path, tmp_path / task, task=task)
        assert max(report.max_abs_diff["fp32"].values()) <= LOGITS_ATOL
        onnx = bertfast.pipeline(task, model=tmp_path / task, backend="onnxruntime")
        assert type(onnx.model.config).__name__ == "RobertaConfig"
        got, expected = onnx(texts), bertfast.pipeline(task, model=path)(texts)
        for a, b in zip(got, expected):
            a, b = (a, b) if isinstance(a, list) else ([a], [b])
            assert [(p.get("token"), p.get("label")) for p in a] == [(p.get("token"), p.get("label")) for p in b]
            torch.testing.assert_close(torch.tensor([p["score"] for p in a]), torch.tensor([p["score"] for p in b]),
                                       atol=1e-5, rtol=0)


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_an_xlm_r_sentence_transformers_folder_embeds_as_sentence_transformers(folder, tmp_path, pooling):
    """An XLM-R embedding folder (as multilingual-e5 / bge-m3 are) saved by sentence-transformers: its encode and
    the sentence-embedding pipeline to 1e-5, with Normalize."""
    from sentence_transformers import SentenceTransformer

    path = st_folder(tmp_path / "st", folder("xlm-roberta", "Model"), pooling, normalize=True, max_seq_length=40)
    expected = SentenceTransformer(path, device="cpu").encode(TEXTS, convert_to_tensor=True)
    got = bertfast.pipeline("sentence-embedding", model=path)(TEXTS)
    torch.testing.assert_close(got, expected, atol=HIDDEN_ATOL, rtol=0)


def test_a_peft_lora_adapter_of_a_roberta_classifier_merges_as_peft_does(folder, tmp_path):
    """PEFT's LoRA (query / value, the classifier trained whole) on transformers' RobertaForSequenceClassification,
    merged at load (from_pretrained(adapter=)) -> PEFT's merge_and_unload outputs."""
    import peft

    path = folder("roberta", "ForSequenceClassification")
    base = transformers.RobertaForSequenceClassification.from_pretrained(path).eval()
    wrapped = peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["query", "value"],
                                                        modules_to_save=["classifier"], init_lora_weights=False))
    with torch.no_grad():
        for parameter in (p for p in wrapped.parameters() if p.requires_grad):
            parameter.normal_(0.0, 0.1)
    wrapped.save_pretrained(tmp_path / "adapter")
    expected = peft.PeftModel.from_pretrained(transformers.RobertaForSequenceClassification.from_pretrained(path),
                                              tmp_path / "adapter").merge_and_unload().eval()
    ours = bertfast.AutoModelForSequenceClassification.from_pretrained(path, adapter=tmp_path / "adapter")
    batch = encoded(path)
    with torch.inference_mode():
        torch.testing.assert_close(ours(**batch).logits, expected(**batch).logits, atol=LOGITS_ATOL, rtol=0)
        plain = bertfast.AutoModelForSequenceClassification.from_pretrained(path)
        assert (ours(**batch).logits - plain(**batch).logits).abs().max() > 1e-2  # the adapter matters


def test_finetune_lora_on_roberta_writes_an_adapter_peft_loads(folder, tmp_path):
    """`finetune(lora=...)` on a RoBERTa checkpoint: the adapter (query / value row blocks of the fused qkv, the
    RoBERTa classifier whole) loads in PEFT onto transformers' model with the outputs bertfast's merge gives."""
    import peft

    train = write_csv(tmp_path / "train.csv", sentiment_rows(24))
    out = tmp_path / "lora"
    base_dir = folder("roberta", "Model")  # no classifier: a new one, trained whole; the adapter carries it
    finetune(base_dir, train, train, out, FinetuneArguments(epochs=2, batch_size=8, learning_rate=1e-2,
                                                            warmup_ratio=0.0, device="cpu", progress=False,
                                                            lora="4,8,query,value"))
    base = transformers.RobertaForSequenceClassification.from_pretrained(base_dir, num_labels=2)
    expected_model = peft.PeftModel.from_pretrained(base, str(out)).eval()
    ours = bertfast.AutoModelForSequenceClassification.from_pretrained(base_dir, adapter=out, num_labels=2)
    batch = encoded(base_dir)
    with torch.inference_mode():
        torch.testing.assert_close(ours(**batch).logits, expected_model(**batch).logits, atol=LOGITS_ATOL, rtol=0)

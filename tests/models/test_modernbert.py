"""bertfast/models/modernbert.py and bertfast/heads/modernbert.py: ModernBERT checkpoints written by transformers
(random weights, small configs with global_attn_every_n_layers=2 and local_attention=16, so that short texts already
cross the window; a byte-level BPE tokenizer trained in tests/tokenizer_folders.py) load through BERT's class names
and the Auto classes and give transformers' numbers (hidden states 1e-5, logits 1e-4) on right- and left-padded
batches and packed, and at 300 and 1,000 tokens with transformers' default window; their saves load back in
transformers; the losses and int8 agree."""
from __future__ import annotations

import json

import pytest
import torch
import transformers

import bertfast
from bertfast.models.modernbert import ModernBertConfig, ModernBertModel
from bertfast.padding import PackedBatch
from tests.helpers import HIDDEN_ATOL, LOGITS_ATOL
from tests.models.parity import (Family, assert_loss_matches, assert_padded_left_padded_and_packed, compare,
                                 encoded, int8_cosine, packed_rows)
from tests.tokenizer_folders import MODERNBERT_SPECIALS

HEADS = {"Model": ("last_hidden_state",), "ForMaskedLM": ("logits",), "ForSequenceClassification": ("logits",),
         "ForTokenClassification": ("logits",), "ForQuestionAnswering": ("start_logits", "end_logits")}
IDS = {name: MODERNBERT_SPECIALS.index(token) for name, token in (
    ("pad_token_id", "[PAD]"), ("cls_token_id", "[CLS]"), ("bos_token_id", "[CLS]"), ("sep_token_id", "[SEP]"),
    ("eos_token_id", "[SEP]"))}
SIZES = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=37,
             max_position_embeddings=2048, global_attn_every_n_layers=2, local_attention=16, **IDS)
DECISIVE = ("classifier", "head.dense")


@pytest.fixture(scope="module")
def family(tmp_path_factory):
    return Family(tmp_path_factory, "modernbert", "ModernBert", SIZES, DECISIVE)


@pytest.mark.parametrize("head", HEADS)
def test_each_head_matches_transformers_padded_left_padded_and_packed(family, head):
    path = family.folder(head)
    ours = getattr(bertfast, "Bert" + head).from_pretrained(path)  # BERT's name: the family's class is picked
    assert type(ours).__name__ == "ModernBert" + head and type(ours.base_model) is ModernBertModel
    assert ours.config.layer_types == ["full_attention", "sliding_attention", "full_attention"]
    assert_padded_left_padded_and_packed(ours, family.theirs(head, path), path, HEADS[head])


@pytest.mark.parametrize("pooling", ["cls", "mean"])
@pytest.mark.parametrize("head", ["ForSequenceClassification", "ForMultipleChoice"])
def test_pooling_heads_match_transformers(family, head, pooling):
    """classifier_pooling "cls" (sequence classification: position 0; multiple choice: the first real token) and
    "mean", right- and left-padded (multiple choice: 2 examples x 2 choices) and packed."""
    path = family.folder(head, classifier_pooling=pooling)
    ours = getattr(bertfast, "AutoModel" + head).from_pretrained(path)
    theirs = family.theirs(head, path)
    for side in ("right", "left"):
        batch = encoded(path, side)
        if head == "ForMultipleChoice":
            batch = {k: v.view(2, 2, -1) for k, v in batch.items()}
        with torch.inference_mode():
            torch.testing.assert_close(ours(**batch).logits, theirs(**batch).logits, atol=LOGITS_ATOL, rtol=0)
    if head == "ForSequenceClassification":
        batch = encoded(path)
        with torch.inference_mode():
            torch.testing.assert_close(ours(packed_rows(batch)).logits, theirs(**batch).logits, atol=LOGITS_ATOL,
                                       rtol=0)


@pytest.mark.parametrize("head", ["ForMaskedLM", "ForSequenceClassification", "ForTokenClassification",
                                  "ForQuestionAnswering", "ForMultipleChoice"])
def test_losses_match_transformers(family, head):
    assert_loss_matches(family, head)


@pytest.mark.parametrize("variant", [
    dict(norm_bias=True, attention_bias=True, mlp_bias=True, classifier_bias=True),
    dict(hidden_activation="gelu_pytorch_tanh", classifier_activation="gelu_new", decoder_bias=False),
    dict(layer_types=["sliding_attention", "sliding_attention", "full_attention"], local_attention=6,
         rope_parameters={"full_attention": {"rope_type": "default", "rope_theta": 1000.0},
                          "sliding_attention": {"rope_type": "default", "rope_theta": 50.0}}),
    dict(tie_word_embeddings=False)], ids=["biases", "tanh-no-decoder-bias", "layer-types", "untied"])
def test_config_variants_match_transformers(family, variant):
    path = family.folder("ForMaskedLM", **variant)
    assert_padded_left_padded_and_packed(bertfast.AutoModelForMaskedLM.from_pretrained(path),
                                         family.theirs("ForMaskedLM", path), path, ("logits",))


@pytest.mark.parametrize("lengths", [[300, 1000], [1000], [129, 64, 65, 1]])
def test_long_inputs_past_the_window_match_transformers(tmp_path_factory, lengths):
    """transformers' default window (local_attention 128: 64 keys either side) at 300 and 1,000 tokens, padded
    and packed: the sliding layers really attend within the band."""
    family = Family(tmp_path_factory, "modernbert", "ModernBert",
                    {**SIZES, "local_attention": 128, "num_hidden_layers": 4}, ())
    path = family.folder("Model")
    ours, theirs = bertfast.AutoModel.from_pretrained(path), family.theirs("Model", path)
    generator = torch.Generator().manual_seed(0)
    ids = torch.randint(len(MODERNBERT_SPECIALS), ours.config.vocab_size, (len(lengths), max(lengths)),
                        generator=generator)
    mask = (torch.arange(max(lengths))[None] < torch.tensor(lengths)[:, None]).long()
    ids = ids.masked_fill(mask == 0, ours.config.pad_token_id)
    real = mask.bool()
    with torch.inference_mode():
        expected = theirs(input_ids=ids, attention_mask=mask).last_hidden_state
        padded = ours(input_ids=ids, attention_mask=mask).last_hidden_state
        packed = ours(PackedBatch.from_token_lists([row[:n] for row, n in zip(ids.tolist(), lengths)]))
        shifts = [max(lengths) - n for n in lengths]  # each row's padding moved to its front
        left_ids = torch.stack([row.roll(n) for row, n in zip(ids, shifts)])
        left = ours(input_ids=left_ids, attention_mask=mask.flip(1)).last_hidden_state
        left = torch.stack([row.roll(-n, dims=0) for row, n in zip(left, shifts)])
    for got in (padded[real], packed.last_hidden_state, left[real]):
        torch.testing.assert_close(got, expected[real], atol=HIDDEN_ATOL, rtol=0)


def test_hidden_states_are_transformers(family):
    """The embeddings, each layer's output, and the final norm's output last, as transformers 5 returns them."""
    path = family.folder("Model")
    batch = encoded(path)
    mask = batch["attention_mask"].bool()
    with torch.inference_mode():
        ours = bertfast.AutoModel.from_pretrained(path)(**batch, output_hidden_states=True).hidden_states
        theirs = family.theirs("Model", path)(**batch, output_hidden_states=True).hidden_states
    assert len(ours) == len(theirs) == SIZES["num_hidden_layers"] + 1
    for got, expected in zip(ours, theirs):
        torch.testing.assert_close(got[mask], expected[mask], atol=HIDDEN_ATOL, rtol=0)


def test_attention_maps_are_transformers_eager(family):
    path = family.folder("Model")
    batch = encoded(path)
    with torch.inference_mode():
        ours = bertfast.AutoModel.from_pretrained(path)(**batch, output_attentions=True).attentions
        theirs = transformers.AutoModel.from_pretrained(path, attn_implementation="eager").eval()(
            **batch, output_attentions=True).attentions
    real = batch["attention_mask"].bool()[:, None, :, None]  # real query rows
    for got, expected in zip(ours, theirs, strict=True):
        torch.testing.assert_close(got * real, expected * real, atol=HIDDEN_ATOL, rtol=0)


@pytest.mark.parametrize("head", ["ForMaskedLM", "ForSequenceClassification", "ForQuestionAnswering"])
def test_a_save_loads_back_in_transformers_with_the_same_outputs(family, tmp_path, head):
    path = family.folder(head)
    ours = getattr(bertfast, "AutoModel" + head).from_pretrained(path)
    ours.save_pretrained(tmp_path)
    saved = json.loads((tmp_path / "config.json").read_text())
    assert saved["model_type"] == "modernbert" and saved["norm_eps"] == 1e-5 and "layer_norm_eps" not in saved
    assert saved["layer_types"] == ["full_attention", "sliding_attention", "full_attention"]
    theirs = getattr(transformers, "ModernBert" + head).from_pretrained(tmp_path).eval()
    batch = encoded(path)
    with torch.inference_mode():
        compare(ours(**batch), theirs(**batch), HEADS[head], batch["attention_mask"].bool())


def test_the_first_checkpoints_theta_fields_are_read(family, tmp_path):
    """answerdotai/ModernBERT-base's config.json names the thetas global_rope_theta / local_rope_theta and has no
    layer_types: both are derived as transformers does."""
    data = {**json.loads(open(family.folder("Model") + "/config.json").read()), "global_rope_theta": 1234.0,
            "local_rope_theta": 99.0, "global_attn_every_n_layers": 3}
    for name in ("layer_types", "rope_parameters"):
        data.pop(name)
    config = ModernBertConfig.from_dict(data)
    assert config.layer_types == ["full_attention", "sliding_attention", "sliding_attention"]
    assert (config.rope_theta(0), config.rope_theta(1)) == (1234.0, 99.0)
    theirs = transformers.ModernBertConfig(**data)
    assert theirs.layer_types == config.layer_types
    assert theirs.rope_parameters["full_attention"]["rope_theta"] == 1234.0


@pytest.mark.parametrize("change, message", [
    ({"rope_parameters": {"full_attention": {"rope_type": "yarn", "rope_theta": 1.0, "factor": 2.0}}},
     r"rope_parameters\['full_attention'\].*default rotary embedding only"),
    ({"layer_types": ["full_attention"]}, r"config.layer_types must list one of .* per layer"),
    ({"classifier_pooling": "max"}, r"config.classifier_pooling must be one of \('cls', 'mean'\)"),
    ({"hidden_activation": "silu"}, r"hidden_activation 'silu' is not supported"),
    ({"local_attention": 0}, r"config.local_attention must be an integer >= 2"),
    ({"norm_eps": -1}, r"config.norm_eps must be a finite number > 0"),
])
def test_bad_configs_are_one_line_naming_the_field(family, tmp_path, change, message):
    data = {**json.loads(open(family.folder("Model") + "/config.json").read()), **change}
    (tmp_path / "config.json").write_text(json.dumps(data))
    with pytest.raises(ValueError, match=message):
        bertfast.models.registry.read_config(tmp_path / "config.json")


def test_int8_keeps_the_hidden_states(family):
    assert int8_cosine(family.folder("Model")) >= 0.99


@pytest.mark.parametrize("layout", ["packed", "padded"])
def test_a_4096_token_text_runs_in_memory_linear_in_its_length(tmp_path_factory, layout):
    """A 4,096-token text (a global and a sliding layer, 4 heads): the peak of the bytes torch's allocator holds
    during the forward (benchmarks.long_memory.peak_bytes) stays within a budget linear in length -- one (S, S)
    score matrix of one head alone would be 64 MiB -- and the hidden states are transformers'. Padded: one row
    without padding, which the sliding layers run as one packed sequence too."""
    from benchmarks.long_memory import peak_bytes

    sizes = {**SIZES, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 2, "max_position_embeddings":
             8192, "local_attention": 128}
    path = Family(tmp_path_factory, "modernbert", "ModernBert", sizes, ()).folder("Model")
    model = bertfast.AutoModel.from_pretrained(path)
    assert model.config.layer_types == ["full_attention", "sliding_attention"]
    ids = torch.randint(len(MODERNBERT_SPECIALS), model.config.vocab_size, (4096,),
                        generator=torch.Generator().manual_seed(0))
    inputs = PackedBatch.from_token_lists([ids.tolist()]) if layout == "packed" else ids[None]
    with torch.inference_mode():
        out, peak = peak_bytes(lambda: model(inputs).last_hidden_state)
        expected = transformers.AutoModel.from_pretrained(path).eval()(ids[None]).last_hidden_state[0]
    torch.testing.assert_close(out.reshape(expected.shape), expected, atol=HIDDEN_ATOL, rtol=0)
    budget = 4096 * 8 * 1024  # 8 KiB per token (measured: 15 MiB; transformers' forward: 257 MiB)
    assert 0 < peak <= budget, f"peak {peak / 2**20:.1f} MiB > {budget / 2**20:.0f} MiB"

"""Tiny tokenizer folders of the BERT family, built without the hub: a BPE / Unigram / WordPiece model trained by
the `tokenizers` library on a short text (rotated into as many lines as it has words), saved through the
transformers fast tokenizer class of each family."""
from __future__ import annotations

import json
import os
from typing import Any

import transformers
from tokenizers import AddedToken, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

# The training text: accents, emoji, CJK, digits, punctuation, contractions.
WORDS = ("the quick brown fox jumps over the lazy dog while a café in Zürich serves crème brûlée to naïve tourists "
         "who write their résumé on a façade; 東京 and 北京 are cities, 日本語 is a language, 😀 and 🎉 are emoji, "
         "numbers like 123, 4567 and 3.14 appear too. Don't stop: it's fine, we're done, they've gone, I'm here! "
         "Tokenization splits words into pieces; encoders read those pieces and answer questions about them. "
         "Über naïveté, señor, coöperate, ÅNGSTRÖM, İstanbul, straße, ﬁne, résumé, hello world again and again. "
         "A model reads a sentence, looks at every word and its neighbours, and decides what the sentence means. "
         "Where are the cities? The answer is in the context: Paris, Berlin, Madrid, Lisboa and Roma are capitals. "
         "Le chat est sur la table, la voiture est rouge, nous mangeons du pain et du fromage à midi. "
         "Der Hund läuft schnell über die Straße, und die Kinder spielen im Garten hinter dem Haus. "
         "El niño come una manzana, la niña lee un libro, y los abuelos caminan por el parque cada mañana. "
         "今日は天気がいいです。我们明天去公园。서울은 큰 도시입니다. Привет, мир! Γειά σου κόσμε. "
         "Search engines rank documents for a query; a reranker scores each pair of query and passage again. "
         "Named entities such as Marie Curie, the United Nations and New York appear in news articles every day. "
         "Prices rose 3.5% in 2024, from $10.99 to $11.38, while the euro stayed near €1.08 per dollar. "
         "E-mail me at someone@example.com or visit https://example.org/path?query=1 before 10:30 am.")
SPECIALS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]
MODEL_MAX_LENGTH = 48


def corpus() -> list[str]:
    """The training lines: the text rotated word by word, so every word meets many neighbours."""
    words = WORDS.split()
    return [" ".join(words[i:] + words[:i]) for i in range(len(words))]


def _trained(model: Any, trainer: Any, pre_tokenizer: Any, normalizer: Any = None) -> dict[str, Any]:
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizer
    if normalizer is not None:
        tokenizer.normalizer = normalizer
    tokenizer.train_from_iterator(corpus(), trainer)
    return json.loads(tokenizer.to_str())["model"]


def bpe_files() -> dict[str, Any]:
    """vocab and merges of a byte-level BPE as RoBERTa's."""
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    model = _trained(models.BPE(), trainer, pre_tokenizers.ByteLevel(add_prefix_space=False))
    return {"vocab": model["vocab"], "merges": [tuple(merge) for merge in model["merges"]]}


def unigram_vocab() -> dict[str, Any]:
    """vocab, (piece, score) pairs, of a SentencePiece-style Unigram as XLM-R's / CamemBERT's."""
    trainer = trainers.UnigramTrainer(vocab_size=300, special_tokens=SPECIALS, unk_token="<unk>", show_progress=False)
    model = _trained(models.Unigram(), trainer, pre_tokenizers.Metaspace())
    return {"vocab": [(piece, score) for piece, score in model["vocab"]]}


def wordpiece_vocab() -> dict[str, Any]:
    """vocab, token -> id, of a lower-cased WordPiece as DistilBERT's / ELECTRA's."""
    trainer = trainers.WordPieceTrainer(vocab_size=300, show_progress=False,
                                        special_tokens=["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"])
    model = _trained(models.WordPiece(unk_token="[UNK]"), trainer, pre_tokenizers.BertPreTokenizer(),
                     normalizers.BertNormalizer(lowercase=True))
    return {"vocab": model["vocab"]}


MODERNBERT_SPECIALS = ["[UNK]", "[CLS]", "[SEP]", "[PAD]", "[MASK]"]  # ids 0 .. 4


def modernbert_tokenizer() -> dict[str, Any]:
    """The arguments of a PreTrainedTokenizerFast shaped as ModernBERT's tokenizer.json: a byte-level BPE (no prefix
    space), BERT's special tokens in the template ``[CLS] A [SEP]`` / ``[CLS] A [SEP] B [SEP]``, and a ``[MASK]``
    that absorbs the space before it (lstrip)."""
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=MODERNBERT_SPECIALS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.train_from_iterator(corpus(), trainer)
    cls, sep = (MODERNBERT_SPECIALS.index(name) for name in ("[CLS]", "[SEP]"))
    tokenizer.post_processor = processors.TemplateProcessing(
        single="[CLS]:0 $A:0 [SEP]:0", pair="[CLS]:0 $A:0 [SEP]:0 $B:0 [SEP]:0",
        special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
    return {"tokenizer_object": tokenizer, "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]",
            "pad_token": "[PAD]", "mask_token": AddedToken("[MASK]", lstrip=True, special=True)}


# family -> (its transformers fast tokenizer class, the builder of that class's vocabulary arguments)
FAMILIES = {"roberta": ("RobertaTokenizerFast", bpe_files), "xlm-roberta": ("XLMRobertaTokenizerFast", unigram_vocab),
            "camembert": ("CamembertTokenizerFast", unigram_vocab),
            "distilbert": ("DistilBertTokenizerFast", wordpiece_vocab),
            "electra": ("ElectraTokenizerFast", wordpiece_vocab),
            "modernbert": ("PreTrainedTokenizerFast", modernbert_tokenizer)}


def save_family(family: str, out: str | os.PathLike, **options: Any) -> str:
    """Save ``family``'s tokenizer (a FAMILIES key) through its transformers fast class into ``out``, with a
    config.json naming the model_type as a checkpoint folder has; return ``out``."""
    class_name, vocabulary = FAMILIES[family]
    options.setdefault("model_max_length", MODEL_MAX_LENGTH)
    tokenizer = getattr(transformers, class_name)(**vocabulary(), **options)
    tokenizer.save_pretrained(os.fspath(out))
    with open(os.path.join(out, "config.json"), "w", encoding="utf-8") as f:
        json.dump({"model_type": family}, f)
    return os.fspath(out)

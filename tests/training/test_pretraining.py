"""Pretraining data: MLM masking statistics, NSP pair semantics, the collator, and bad input."""
from __future__ import annotations

import random
from collections import Counter

import pytest
import torch

from bertfast import BertTokenizer
from bertfast.inputs import IGNORE_INDEX
from bertfast.training.pretraining import (DEMO_CORPUS, IS_NEXT, NOT_NEXT, PretrainingCollator, SentencePair,
                                           TokenMasker, create_nsp_pairs, read_documents, tokenize_documents)

RARE_WORDS = ("the unaffable quokkas hyperparameterize zymurgy near antidisestablishmentarian lighthouses",
              "photosynthesizing cyanobacteria outcompete unglamorous phytoplankton in brackish estuaries",
              "a disgruntled lexicographer misalphabetized the onomatopoeia chapter twice")


def unmasked_batch(pairs: list[SentencePair], tokenizer: BertTokenizer) -> tuple[torch.Tensor, torch.Tensor]:
    """[CLS] A [SEP] B [SEP], right-padded: built independently of the collator."""
    rows = [[tokenizer.cls_token_id] + p.tokens_a + [tokenizer.sep_token_id] + p.tokens_b + [tokenizer.sep_token_id]
            for p in pairs]
    width = max(map(len, rows))
    ids = torch.tensor([row + [tokenizer.pad_token_id] * (width - len(row)) for row in rows])
    mask = torch.tensor([[1] * len(row) + [0] * (width - len(row)) for row in rows])
    return ids, mask


def candidate_positions(ids: torch.Tensor, mask: torch.Tensor, tokenizer: BertTokenizer) -> torch.Tensor:
    return (mask == 1) & ~torch.isin(ids, torch.tensor(tokenizer.all_special_ids))


# ---------------------------------------------------------------- corpus files

def test_read_documents_splits_on_blank_lines(tmp_path):
    path = tmp_path / "corpus.txt"
    path.write_text("\n\n  First one.  \nSecond one.\n\n\n   \nOther doc.\n\nLast doc line.\nAnd more.",
                    encoding="utf-8")
    assert read_documents(path) == [["First one.", "Second one."], ["Other doc."], ["Last doc line.", "And more."]]


@pytest.mark.parametrize("text", ["", "\n \n\t\n"], ids=["empty", "blank_lines"])
def test_read_documents_rejects_an_empty_corpus(tmp_path, text):
    path = tmp_path / "corpus.txt"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ValueError, match="is empty: write one sentence per line"):
        read_documents(path)


def test_tokenize_documents_drops_sentences_and_documents_without_tokens(tokenizer):
    documents = tokenize_documents([["hello world", "\x07", "unaffable"], ["\x07"]], tokenizer)
    assert documents == [[tokenizer("hello world", add_special_tokens=False)["input_ids"],
                          tokenizer("unaffable", add_special_tokens=False)["input_ids"]]]


def test_demo_corpus_has_dozens_of_multi_sentence_documents():
    documents = read_documents(DEMO_CORPUS)
    assert len(documents) >= 36
    assert min(map(len, documents)) >= 5


# ---------------------------------------------------------------- masking

def test_masking_rates_over_many_tokens(tokenizer, demo_documents):
    masker = TokenMasker.from_tokenizer(tokenizer)
    generator = torch.Generator().manual_seed(1)
    ids, mask = unmasked_batch(create_nsp_pairs(demo_documents, 128, rng=random.Random(1)), tokenizer)
    candidates = candidate_positions(ids, mask, tokenizer)
    special = torch.tensor(tokenizer.all_special_ids)
    totals: Counter = Counter()
    random_ids = []
    while totals["candidates"] < 200_000:
        masked, labels = masker(ids, mask, generator)
        selected = labels != IGNORE_INDEX
        assert not (selected & ~candidates).any(), "a special or padding position was selected"
        assert torch.equal(labels[selected], ids[selected])
        assert torch.equal(masked[~selected], ids[~selected])
        replaced = selected & (masked != ids) & (masked != tokenizer.mask_token_id)
        assert not torch.isin(masked[replaced], special).any(), "a random replacement was a special token"
        random_ids += masked[replaced].tolist()
        totals.update(candidates=int(candidates.sum()), selected=int(selected.sum()),
                      mask=int((masked[selected] == tokenizer.mask_token_id).sum()), random=int(replaced.sum()),
                      kept=int((masked[selected] == ids[selected]).sum()))
    assert totals["selected"] / totals["candidates"] == pytest.approx(0.15, abs=0.005)
    assert totals["mask"] / totals["selected"] == pytest.approx(0.8, abs=0.01)
    assert totals["random"] / totals["selected"] == pytest.approx(0.1, abs=0.01)
    assert totals["kept"] / totals["selected"] == pytest.approx(0.1, abs=0.01)
    assert len(set(random_ids)) > 0.85 * len(random_ids), "random tokens should be spread over the whole vocabulary"


def test_max_predictions_per_seq_caps_every_sequence(tokenizer, demo_documents):
    masker = TokenMasker.from_tokenizer(tokenizer, max_predictions_per_seq=5)
    ids, mask = unmasked_batch(create_nsp_pairs(demo_documents, 128, rng=random.Random(2)), tokenizer)
    _, labels = masker(ids, mask, torch.Generator().manual_seed(2))
    counts = (labels != IGNORE_INDEX).sum(1)
    long_rows = candidate_positions(ids, mask, tokenizer).sum(1) >= 40  # 15% of 40 = 6 > the cap
    assert long_rows.sum() > 10 and (counts[long_rows] == 5).all() and (counts <= 5).all()


def test_a_short_sequence_still_gets_one_prediction(tokenizer):
    ids = torch.tensor([tokenizer.cls_token_id, 2154, 4937, tokenizer.sep_token_id])
    masker = TokenMasker.from_tokenizer(tokenizer)
    for seed in range(20):
        masked, labels = masker(ids, generator=torch.Generator().manual_seed(seed))
        assert masked.shape == labels.shape == (4,)
        assert (labels != IGNORE_INDEX).sum() == 1 and labels[0] == labels[3] == IGNORE_INDEX


def word_spans(ids: torch.Tensor, candidates: torch.Tensor, tokenizer: BertTokenizer) -> list[list[tuple[int, int]]]:
    """Per row, [start, end) of each word: a candidate token and the ## candidates right after it."""
    spans = []
    for row_ids, row_candidates in zip(ids.tolist(), candidates.tolist()):
        tokens, row = tokenizer.convert_ids_to_tokens(row_ids), []
        for j, is_candidate in enumerate(row_candidates):
            if not is_candidate:
                continue
            if row and row[-1][1] == j and tokens[j].startswith("##"):
                row[-1] = (row[-1][0], j + 1)
            else:
                row.append((j, j + 1))
        spans.append(row)
    return spans


@pytest.mark.parametrize("cap", [None, 4])
def test_whole_word_masking_takes_words_whole(tokenizer, cap):
    batch = tokenizer(list(RARE_WORDS) * 200, padding=True, return_tensors="pt")
    ids, mask = batch["input_ids"], batch["attention_mask"]
    candidates = candidate_positions(ids, mask, tokenizer)
    masker = TokenMasker.from_tokenizer(tokenizer, max_predictions_per_seq=cap, whole_word_mask=True)
    _, labels = masker(ids, mask, torch.Generator().manual_seed(3))
    selected = labels != IGNORE_INDEX
    spans = word_spans(ids, candidates, tokenizer)
    assert sum(end - start > 1 for row in spans for start, end in row) > 1000  # plenty of multi-piece words
    for row, row_spans in zip(selected.tolist(), spans):
        for start, end in row_spans:
            assert len(set(row[start:end])) == 1, "a word was masked partly"
    assert not (selected & ~candidates).any()
    if cap is None:
        assert selected.sum() / candidates.sum() == pytest.approx(0.15, abs=0.01)
    else:
        assert (selected.sum(1) <= cap).all() and selected.sum(1).float().mean() > cap - 1


def test_masking_is_reproducible_with_a_generator(tokenizer, demo_documents):
    pairs = create_nsp_pairs(demo_documents, 64, rng=random.Random(4))[:8]
    first, second, other = (PretrainingCollator(tokenizer, generator=torch.Generator().manual_seed(seed))(pairs)
                            for seed in (5, 5, 6))
    assert all(torch.equal(first[key], second[key]) for key in first)
    assert not torch.equal(first["labels"], other["labels"])


@pytest.mark.parametrize("options, match", [
    ({"mlm_probability": 0.0}, r"mlm_probability must be in \(0, 1\)"),
    ({"mlm_probability": 1.0}, r"mlm_probability must be in \(0, 1\)"),
    ({"mlm_probability": -0.2}, r"mlm_probability must be in \(0, 1\)"),
    ({"max_predictions_per_seq": 0}, "max_predictions_per_seq must be None"),
    ({"whole_word_mask": True}, "whole_word_mask needs continuation_ids"),
])
def test_masker_rejects_bad_options(options, match):
    with pytest.raises(ValueError, match=match):
        TokenMasker(vocab_size=10, mask_token_id=3, special_ids=[0, 1, 2, 3], **options)


def test_masker_rejects_bad_inputs(tokenizer):
    masker = TokenMasker.from_tokenizer(tokenizer)
    with pytest.raises(TypeError, match="integer tensor of token ids"):
        masker(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="outside \\[0, 30522\\)"):
        masker(torch.tensor([[101, 40000, 102]]))
    with pytest.raises(ValueError, match="attention_mask must be a tensor shaped like input_ids"):
        masker(torch.tensor([[101, 2000, 102]]), torch.ones(1, 4))


# ---------------------------------------------------------------- NSP pairs

def synthetic_corpus(rng: random.Random, n_docs: int, sentence_lengths: tuple[int, int]):
    """Documents whose every token is unique, and where each token comes from: token -> (doc, sentence, position)."""
    documents, where, token = [], {}, 1000
    for d in range(n_docs):
        document = []
        for s in range(rng.randint(1, 12)):
            sentence = list(range(token, token + rng.randint(*sentence_lengths)))
            where.update({t: (d, s, p) for p, t in enumerate(sentence)})
            token += len(sentence)
            document.append(sentence)
        documents.append(document)
    return documents, where


def whole_sentences(tokens: list[int], where: dict, documents) -> tuple[int, list[int]]:
    """(document, its consecutive sentences) that ``tokens`` are exactly made of; fails otherwise."""
    docs = {where[t][0] for t in tokens}
    assert len(docs) == 1, "a segment mixes documents"
    doc = docs.pop()
    sentences = sorted({where[t][1] for t in tokens})
    assert sentences == list(range(sentences[0], sentences[-1] + 1)), "a segment skips a sentence"
    assert tokens == [t for s in sentences for t in documents[doc][s]], "a segment is not whole sentences in order"
    return doc, sentences


def test_nsp_pairs_are_balanced_consecutive_and_put_unused_sentences_back():
    documents, where = synthetic_corpus(random.Random(7), 300, (4, 4))
    rng, labels = random.Random(8), []
    for _ in range(25):
        used: dict[int, list[int]] = {d: [] for d in range(len(documents))}
        for pair in create_nsp_pairs(documents, 27, short_seq_prob=0.1, rng=rng):  # 24 tokens: never truncated
            assert len(pair.tokens_a) + len(pair.tokens_b) <= 24
            doc_a, sentences_a = whole_sentences(pair.tokens_a, where, documents)
            doc_b, sentences_b = whole_sentences(pair.tokens_b, where, documents)
            assert len(documents[doc_a]) >= 2, "a one-sentence document cannot give a pair with a true next"
            used[doc_a] += sentences_a
            if pair.next_sentence_label == IS_NEXT:
                assert doc_b == doc_a and sentences_b[0] == sentences_a[-1] + 1
                used[doc_a] += sentences_b
            else:
                assert pair.next_sentence_label == NOT_NEXT and doc_b != doc_a
            labels.append(pair.next_sentence_label)
        for d, sentences in used.items():  # every sentence once, except a lone last one may be left over
            n = len(documents[d])
            assert n < 2 or sorted(sentences) in (list(range(n)), list(range(n - 1)))
    assert len(labels) > 10_000
    assert sum(labels) / len(labels) == pytest.approx(0.5, abs=0.02)


def test_nsp_truncation_trims_segment_ends_to_fit():
    documents, where = synthetic_corpus(random.Random(9), 200, (1, 30))
    ends = Counter()
    for pair in create_nsp_pairs(documents, 20, rng=random.Random(10)):
        assert 1 <= len(pair.tokens_a) and 1 <= len(pair.tokens_b) and len(pair.tokens_a) + len(pair.tokens_b) <= 17
        for segment in (pair.tokens_a, pair.tokens_b):
            first, last = where[segment[0]], where[segment[-1]]
            stream = [t for sentence in documents[first[0]] for t in sentence]
            start = stream.index(segment[0])
            assert stream[start:start + len(segment)] == segment, "truncation may only cut a segment's ends"
            ends["front_cut"] += first[2] != 0
            ends["back_cut"] += last[2] != len(documents[last[0]][last[1]]) - 1
    assert ends["front_cut"] > 100 and ends["back_cut"] > 100


def test_with_two_documents_not_next_always_draws_the_other():
    documents = [[[1, 2], [3, 4], [5, 6]], [[7], [8, 9], [10]]]
    pairs = [p for seed in range(50) for p in create_nsp_pairs(documents, 9, rng=random.Random(seed))]
    not_next = [p for p in pairs if p.next_sentence_label == NOT_NEXT]
    assert not_next and all((p.tokens_a[0] <= 6) == (p.tokens_b[0] >= 7) for p in not_next)


def test_nsp_pairs_are_reproducible(demo_documents):
    first, second = (create_nsp_pairs(demo_documents, 64, rng=random.Random(11)) for _ in range(2))
    assert first == second and first != create_nsp_pairs(demo_documents, 64, rng=random.Random(12))


@pytest.mark.parametrize("documents, max_seq_length, match", [
    ([[[1], [2]], [[3], [4]]], 4, r"too small for \[CLS\] A \[SEP\] B \[SEP\]: it must be an int >= 5"),
    ([], 16, "the corpus has no documents"),
    ([[[1]], [[2]], [[3]]], 16, "no document has two sentences or more"),
    ([[[1], [2], [3]]], 16, "the corpus has a single document"),
    ([[[1], []], [[3]]], 16, "document 0 has no sentences or an empty sentence"),
])
def test_nsp_pairs_reject_bad_input(documents, max_seq_length, match):
    with pytest.raises(ValueError, match=match):
        create_nsp_pairs(documents, max_seq_length)


def test_short_seq_prob_must_be_a_probability():
    with pytest.raises(ValueError, match=r"short_seq_prob must be in \[0, 1\]"):
        create_nsp_pairs([[[1], [2]], [[3]]], 16, short_seq_prob=1.5)


# ---------------------------------------------------------------- collator

def test_collator_pads_to_the_longest_and_returns_every_field(tokenizer):
    cls, sep, pad = tokenizer.cls_token_id, tokenizer.sep_token_id, tokenizer.pad_token_id
    pairs = [SentencePair([5000, 5001, 5002], [6000], IS_NEXT), SentencePair([7000], [8000, 8001], NOT_NEXT)]
    batch = PretrainingCollator(tokenizer, generator=torch.Generator().manual_seed(13))(pairs)
    assert set(batch) == {"input_ids", "token_type_ids", "attention_mask", "labels", "next_sentence_label"}
    assert all(t.dtype == torch.int64 for t in batch.values())
    original = torch.where(batch["labels"] != IGNORE_INDEX, batch["labels"], batch["input_ids"])
    assert original.tolist() == [[cls, 5000, 5001, 5002, sep, 6000, sep], [cls, 7000, sep, 8000, 8001, sep, pad]]
    assert batch["token_type_ids"].tolist() == [[0, 0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1, 0]]
    assert batch["attention_mask"].tolist() == [[1] * 7, [1] * 6 + [0]]
    assert batch["next_sentence_label"].tolist() == [IS_NEXT, NOT_NEXT]
    assert ((batch["labels"] != IGNORE_INDEX).sum(1) >= 1).all()


def test_collator_rejects_an_empty_batch(tokenizer):
    with pytest.raises(ValueError, match="empty list of sentence pairs"):
        PretrainingCollator(tokenizer)([])

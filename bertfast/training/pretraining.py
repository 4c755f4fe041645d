"""Pretraining data for BERT: documents -> NSP sentence pairs -> padded batches with MLM masking.

The pipeline, and when each stage runs:

- ``read_documents`` + ``tokenize_documents``: once, up front. A text file has one sentence per line and a
  blank line between documents; every sentence becomes WordPiece ids a single time.
- ``create_nsp_pairs``: once per epoch, so every epoch sees new target lengths, A/B split points and
  NotNext partners (what ``dupe_factor`` buys in BERT's ``create_pretraining_data.py``).
- ``PretrainingCollator`` (with a ``TokenMasker``): once per batch, so masks are dynamic.

Pair creation follows google-research/bert's ``create_pretraining_data.py`` with two deliberate changes,
both so that the NSP labels are exactly balanced and honest: a NotNext segment B always comes from
another document (the original could fall back to the same one), and a one-sentence chunk, which cannot
have a true continuation, yields no pair instead of a forced NotNext (forcing skews the labels towards
NotNext: about 59% on the bundled corpus at ``max_seq_length=128``).
"""
from __future__ import annotations

import os
import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from bertfast.inputs import IGNORE_INDEX
from bertfast.tokenizer import BertTokenizer


IS_NEXT, NOT_NEXT = 0, 1  # NSP labels, as in transformers: 0 = B follows A, 1 = B is from another document
MIN_SEQ_LENGTH = 5  # [CLS] A [SEP] B [SEP] with one token in each segment
MASK_FRACTION, RANDOM_FRACTION = 0.8, 0.1  # of the selected positions; the remaining 10% keep their token
DEMO_CORPUS = os.path.join(os.path.dirname(os.path.dirname(__file__)), "data", "corpus.txt")  # the bundled demo corpus

Document = list[list[int]]  # a document: its sentences, each a list of token ids


def read_documents(path: str | os.PathLike) -> list[list[str]]:
    """Sentences of every document of a text file: one sentence per line, a blank line between documents."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError as err:
        raise ValueError(f"corpus {path} is not UTF-8 text: {err}") from err
    documents: list[list[str]] = [[]]
    for line in text.splitlines():
        line = line.strip()
        if line:
            documents[-1].append(line)
        elif documents[-1]:
            documents.append([])
    documents = [doc for doc in documents if doc]
    if not documents:
        raise ValueError(f"corpus {path} is empty: write one sentence per line and a blank line between documents")
    return documents


def tokenize_documents(documents: Sequence[Sequence[str]], tokenizer: BertTokenizer) -> list[Document]:
    """WordPiece ids of every sentence, without special tokens. Sentences with no tokens are dropped, then
    documents left without sentences."""
    sentences = [sentence for doc in documents for sentence in doc]
    ids = tokenizer(sentences, add_special_tokens=False, return_attention_mask=False,
                    return_token_type_ids=False)["input_ids"]
    out: list[Document] = []
    start = 0
    for doc in documents:
        out.append([sentence for sentence in ids[start:start + len(doc)] if sentence])
        start += len(doc)
    return [doc for doc in out if doc]


@dataclass
class SentencePair:
    """One NSP example before special tokens are added."""

    tokens_a: list[int]  # segment A: consecutive sentences of one document
    tokens_b: list[int]  # segment B: A's true continuation (IS_NEXT) or sentences of another document
    next_sentence_label: int  # IS_NEXT (0) or NOT_NEXT (1)


def check_documents(documents: Sequence[Document]) -> None:
    """A corpus NSP pairs can be made from: two documents or more, one with two sentences or more."""
    if not documents:
        raise ValueError("the corpus has no documents (no sentence with a token in it)")
    for d, doc in enumerate(documents):
        if not doc or not all(doc):
            raise ValueError(f"document {d} has no sentences or an empty sentence: drop empty ones first")
    if len(documents) < 2:
        raise ValueError("the corpus has a single document, but a NotNext pair takes segment B from another "
                         "document: separate documents with a blank line")
    if max(map(len, documents)) < 2:
        raise ValueError("no document has two sentences or more, so no pair can have a true next sentence: "
                         "put one sentence per line and blank lines only between documents")


def check_pair_options(max_seq_length: int, short_seq_prob: float) -> None:
    if not isinstance(max_seq_length, int) or max_seq_length < MIN_SEQ_LENGTH:
        raise ValueError(f"max_seq_length={max_seq_length!r} is too small for [CLS] A [SEP] B [SEP]: it must be "
                         f"an int >= {MIN_SEQ_LENGTH} (3 special tokens and one token in each segment)")
    if not 0.0 <= short_seq_prob <= 1.0:
        raise ValueError(f"short_seq_prob must be in [0, 1], got {short_seq_prob!r}")


def check_masking_options(mlm_probability: float, max_predictions_per_seq: int | None) -> None:
    if not 0.0 < mlm_probability < 1.0:
        raise ValueError(f"mlm_probability must be in (0, 1), got {mlm_probability!r}: it is the fraction of "
                         "tokens selected for prediction (BERT uses 0.15)")
    if max_predictions_per_seq is not None and (not isinstance(max_predictions_per_seq, int)
                                                or max_predictions_per_seq < 1):
        raise ValueError(f"max_predictions_per_seq must be None (no cap) or a positive int, "
                         f"got {max_predictions_per_seq!r}")


def create_nsp_pairs(documents: Sequence[Document], max_seq_length: int, short_seq_prob: float = 0.1,
                     rng: random.Random | None = None) -> list[SentencePair]:
    """Sentence pairs for next-sentence prediction, document by document, in document order.

    For each document a target length is drawn: ``max_seq_length - 3``, or with probability
    ``short_seq_prob`` a uniform one in [2, max_seq_length - 3]. Sentences are gathered into a chunk until it
    holds two sentences or more and reaches the target (or the document ends). A random split puts
    sentences 1..n-1 of the chunk into A. With probability 1/2, B is the rest of the chunk (IS_NEXT);
    otherwise B is a run of sentences of another document, starting at a random sentence and long enough
    to reach the target (NOT_NEXT), and the chunk's unused sentences go back to start the next chunk. The
    longer side is then trimmed one token at a time, from its front or its back at random, until
    ``len(A) + len(B) <= max_seq_length - 3``.
    """
    check_pair_options(max_seq_length, short_seq_prob)
    check_documents(documents)
    rng = rng or random.Random()
    pairs: list[SentencePair] = []
    for index in range(len(documents)):
        pairs.extend(_document_pairs(documents, index, max_seq_length - 3, short_seq_prob, rng))
    return pairs


class PairBatches:
    """The stream of global batches. Epoch e draws its pairs with ``random.Random(f"{seed}:{e}")``, shuffles them
    and cuts them into batches of ``batch_size``, dropping the incomplete last one (so that every batch splits
    evenly over ranks and accumulation steps), so any position (epoch, batch) can be rebuilt when a run resumes."""

    def __init__(self, documents: Sequence[Document], batch_size: int, max_seq_length: int, short_seq_prob: float,
                 seed: int) -> None:
        check_pair_options(max_seq_length, short_seq_prob)
        check_documents(documents)
        self.documents, self.batch_size, self.max_seq_length = documents, batch_size, max_seq_length
        self.short_seq_prob, self.seed = short_seq_prob, seed
        pairs = len(self.epoch_pairs(0))
        if pairs < batch_size:
            raise ValueError(f"the corpus gives {pairs} sentence pairs per epoch, fewer than one global batch of "
                             f"{batch_size} (per-rank batch x ranks x gradient accumulation): use a smaller "
                             f"--batch-size, fewer ranks or a larger corpus")

    def epoch_pairs(self, epoch: int) -> list[SentencePair]:
        rng = random.Random(f"{self.seed}:{epoch}")
        pairs = create_nsp_pairs(self.documents, self.max_seq_length, self.short_seq_prob, rng)
        rng.shuffle(pairs)
        return pairs

    def epoch(self, epoch: int) -> list[list[SentencePair]]:
        pairs = self.epoch_pairs(epoch)
        return [pairs[i:i + self.batch_size] for i in range(0, len(pairs) - self.batch_size + 1, self.batch_size)]

    def __call__(self, epoch: int = 0, start: int = 0) -> Iterator[tuple[int, int, list[SentencePair]]]:
        """(epoch, batch index, pairs) from batch ``start`` of ``epoch`` on, endlessly."""
        while True:
            for index, pairs in enumerate(self.epoch(epoch)[start:], start):
                yield epoch, index, pairs
            epoch, start = epoch + 1, 0


def _document_pairs(documents: Sequence[Document], index: int, max_tokens: int, short_seq_prob: float,
                    rng: random.Random) -> list[SentencePair]:
    document = documents[index]
    target = rng.randint(2, max_tokens) if rng.random() < short_seq_prob else max_tokens
    pairs: list[SentencePair] = []
    start, length, i = 0, 0, 0  # the chunk is document[start:i + 1], holding `length` tokens
    while i < len(document):
        length += len(document[i])
        size = i - start + 1
        if i == len(document) - 1 or (size >= 2 and length >= target):
            if size >= 2:
                a_end = start + rng.randint(1, size - 1)
                tokens_a = [token for sentence in document[start:a_end] for token in sentence]
                if rng.random() < 0.5:
                    tokens_b, label = _other_document_run(documents, index, target - len(tokens_a), rng), NOT_NEXT
                    i = a_end - 1  # put the chunk's unused sentences back
                else:
                    tokens_b, label = [token for sentence in document[a_end:i + 1] for token in sentence], IS_NEXT
                _truncate_pair(tokens_a, tokens_b, max_tokens, rng)
                pairs.append(SentencePair(tokens_a, tokens_b, label))
            start, length = i + 1, 0
        i += 1
    return pairs


def _other_document_run(documents: Sequence[Document], index: int, target_length: int,
                        rng: random.Random) -> list[int]:
    """Sentences of a uniformly drawn document other than ``index``, from a random one on, up to ``target_length``
    tokens or the document's end (at least one sentence)."""
    other = rng.randrange(len(documents) - 1)
    document = documents[other + (other >= index)]
    tokens: list[int] = []
    for sentence in document[rng.randrange(len(document)):]:
        tokens.extend(sentence)
        if len(tokens) >= target_length:
            break
    return tokens


def _truncate_pair(tokens_a: list[int], tokens_b: list[int], max_tokens: int, rng: random.Random) -> None:
    """Trim the longer segment (B on a tie), front or back at random, until both fit in ``max_tokens``."""
    while len(tokens_a) + len(tokens_b) > max_tokens:
        longer = tokens_a if len(tokens_a) > len(tokens_b) else tokens_b
        del longer[0 if rng.random() < 0.5 else -1]


class TokenMasker:
    """BERT's masked-LM corruption of padded batches (B, S) or single sequences (S,).

    Candidates are the positions that are neither padding (``attention_mask == 0``) nor a special token.
    Each sequence gets a budget of ``floor(p * n + u)`` predictions (n candidates, u uniform in [0, 1): the
    expected rate is exactly ``p``), at least one when it has a candidate, at most ``max_predictions_per_seq``.
    Words (with ``whole_word_mask``, a token and the ``##`` pieces after it) are visited in random order and
    taken whole while they fit the budget; a word that would overshoot it is skipped, as in BERT's
    ``create_pretraining_data.py``. Each selected token independently becomes ``[MASK]`` (80%), a random
    non-special token of the vocabulary (10%, which may by chance be the original), or stays (10%).
    Labels hold the original ids at the selected positions and -100 elsewhere.
    """

    def __init__(self, vocab_size: int, mask_token_id: int, special_ids: Sequence[int],
                 mlm_probability: float = 0.15, max_predictions_per_seq: int | None = None,
                 whole_word_mask: bool = False, continuation_ids: Sequence[int] | None = None) -> None:
        check_masking_options(mlm_probability, max_predictions_per_seq)
        if whole_word_mask and continuation_ids is None:
            raise ValueError("whole_word_mask needs continuation_ids (the ids of the '##' word pieces); "
                             "build the masker with TokenMasker.from_tokenizer")
        self.vocab_size = vocab_size
        self.mask_token_id = mask_token_id
        self.mlm_probability = mlm_probability
        self.max_predictions_per_seq = max_predictions_per_seq
        self.whole_word_mask = whole_word_mask
        self.is_special = torch.zeros(vocab_size, dtype=torch.bool)
        self.is_special[list(special_ids)] = True
        self.is_continuation = torch.zeros(vocab_size, dtype=torch.bool)
        self.is_continuation[list(continuation_ids or [])] = True
        self.replacement_ids = (~self.is_special).nonzero().squeeze(1)  # random tokens are drawn from these

    @classmethod
    def from_tokenizer(cls, tokenizer: BertTokenizer, mlm_probability: float = 0.15,
                       max_predictions_per_seq: int | None = None, whole_word_mask: bool = False) -> "TokenMasker":
        """A masker for a tokenizer's vocabulary: its special ids, ``[MASK]`` and ``##`` pieces."""
        vocab = tokenizer.get_vocab()
        return cls(len(tokenizer), tokenizer.mask_token_id, tokenizer.all_special_ids, mlm_probability,
                   max_predictions_per_seq, whole_word_mask,
                   [i for token, i in vocab.items() if token.startswith("##")])

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """input_ids (B, S) or (S,) -> (masked input_ids, labels), same shape and device.

        ``generator`` (a CPU ``torch.Generator``) makes the masking reproducible; None uses torch's global RNG.
        """
        ids, mask = self._checked(input_ids, attention_mask)
        candidates = mask & ~self.is_special[ids]  # (B, S)
        selected = self._select(ids, candidates, generator)
        u = torch.rand(ids.shape, generator=generator)
        random_ids = self.replacement_ids[torch.randint(len(self.replacement_ids), ids.shape, generator=generator)]
        masked = torch.where(selected & (u < MASK_FRACTION), self.mask_token_id, ids)
        masked = torch.where(selected & (u >= MASK_FRACTION) & (u < MASK_FRACTION + RANDOM_FRACTION), random_ids,
                             masked)
        labels = torch.where(selected, ids, IGNORE_INDEX)
        shape, device = input_ids.shape, input_ids.device
        return masked.view(shape).to(device), labels.view(shape).to(device)

    def _checked(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
        """(B, S) int64 ids and bool mask on the CPU; a 1-D sequence becomes a batch of one."""
        if (not isinstance(input_ids, torch.Tensor) or input_ids.dtype.is_floating_point
                or input_ids.dim() not in (1, 2)):
            raise TypeError("input_ids must be an integer tensor of token ids shaped (batch, seq) or (seq,)")
        if attention_mask is not None and (not isinstance(attention_mask, torch.Tensor)
                                           or attention_mask.shape != input_ids.shape):
            raise ValueError(f"attention_mask must be a tensor shaped like input_ids {tuple(input_ids.shape)}")
        ids = input_ids.detach().to("cpu", torch.int64).reshape(-1, input_ids.shape[-1])
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.vocab_size):
            raise ValueError(f"input_ids has ids outside [0, {self.vocab_size}): was it encoded with another "
                             "vocabulary?")
        if attention_mask is None:
            return ids, torch.ones_like(ids, dtype=torch.bool)
        return ids, attention_mask.detach().to("cpu").reshape(ids.shape) != 0

    def _select(self, ids: torch.Tensor, candidates: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """(B, S) bool: the positions to predict (see the class docstring)."""
        count = candidates.sum(1)  # (B,)
        budget = torch.floor(count * self.mlm_probability + torch.rand(len(ids), generator=generator)).long()
        budget = torch.minimum(budget.clamp(min=1), count)
        if self.max_predictions_per_seq is not None:
            budget = budget.clamp(max=self.max_predictions_per_seq)
        if not self.whole_word_mask:  # every word is one token: a uniform random subset of `budget` candidates
            keys = torch.rand(ids.shape, generator=generator).masked_fill(~candidates, 2.0)  # (B, S)
            rank = keys.argsort(1).argsort(1)  # (B, S): each position's place in a random order, candidates first
            return rank < budget[:, None]
        previous = torch.nn.functional.pad(candidates[:, :-1], (1, 0))  # (B, S): is position j-1 a candidate
        starts = candidates & ~(self.is_continuation[ids] & previous)
        word_of = starts.cumsum(1) - 1  # (B, S): word index of each candidate position
        selected = torch.zeros_like(candidates)
        for row, limit in enumerate(budget.tolist()):
            positions = candidates[row].nonzero().squeeze(1)  # (N,)
            words = word_of[row, positions]  # (N,)
            lengths = torch.bincount(words).tolist() if len(words) else []
            keep = torch.zeros(len(lengths), dtype=torch.bool)
            taken = 0
            for word in torch.randperm(len(lengths), generator=generator).tolist():
                if taken == limit:
                    break
                if taken + lengths[word] <= limit:
                    keep[word] = True
                    taken += lengths[word]
            selected[row, positions[keep[words]]] = True
        return selected


class PretrainingCollator:
    """Sentence pairs -> a padded, masked batch for ``BertForPreTraining``.

    Each pair becomes ``[CLS] A [SEP] B [SEP]`` (token types 0 for ``[CLS] A [SEP]``, 1 for ``B [SEP]``), padded
    on the right to the longest in the batch, then masked by a ``TokenMasker``.
    """

    def __init__(self, tokenizer: BertTokenizer, mlm_probability: float = 0.15,
                 max_predictions_per_seq: int | None = None, whole_word_mask: bool = False,
                 generator: torch.Generator | None = None) -> None:
        self.masker = TokenMasker.from_tokenizer(tokenizer, mlm_probability, max_predictions_per_seq, whole_word_mask)
        self.cls_token_id, self.sep_token_id = tokenizer.cls_token_id, tokenizer.sep_token_id
        self.pad_token_id = tokenizer.pad_token_id
        self.generator = generator  # the masking RNG (None: torch's global RNG)

    def __call__(self, pairs: Sequence[SentencePair], seeds: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """Returns input_ids, token_type_ids, attention_mask, labels (B, S) and next_sentence_label (B,), int64.

        ``seeds`` (one per pair) masks each pair on its own with a generator seeded by its seed, so a pair's masking
        does not depend on the other pairs of the batch or the padded length (what data parallel runs need);
        None masks the padded batch with the collator's generator.
        """
        if not pairs:
            raise ValueError("cannot collate an empty list of sentence pairs")
        if seeds is not None and len(seeds) != len(pairs):
            raise ValueError(f"{len(seeds)} seeds for {len(pairs)} pairs: pass one seed per pair")
        rows = [[self.cls_token_id, *p.tokens_a, self.sep_token_id, *p.tokens_b, self.sep_token_id] for p in pairs]
        seq_len = max(map(len, rows))
        input_ids = torch.full((len(rows), seq_len), self.pad_token_id, dtype=torch.int64)
        token_type_ids = torch.zeros_like(input_ids)
        attention_mask = torch.zeros_like(input_ids)
        for r, (row, pair) in enumerate(zip(rows, pairs)):
            input_ids[r, :len(row)] = torch.tensor(row)
            attention_mask[r, :len(row)] = 1
            token_type_ids[r, len(pair.tokens_a) + 2:len(row)] = 1
        if seeds is None:
            masked, labels = self.masker(input_ids, attention_mask, self.generator)
        else:
            masked, labels = input_ids.clone(), torch.full_like(input_ids, IGNORE_INDEX)
            for r, (row, seed) in enumerate(zip(rows, seeds)):
                generator = torch.Generator().manual_seed(seed)
                masked[r, :len(row)], labels[r, :len(row)] = self.masker(input_ids[r, :len(row)], None, generator)
        return {"input_ids": masked, "token_type_ids": token_type_ids, "attention_mask": attention_mask,
                "labels": labels, "next_sentence_label": torch.tensor([p.next_sentence_label for p in pairs])}

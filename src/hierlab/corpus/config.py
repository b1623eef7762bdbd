"""Typed configuration of the corpus stage.

Every constant that the reference generator hard-coded (docs/reference-study.md#the-grammar,
#the-n-gram-process) is a field here, with the reference value as its default, so
``PcfgConfig()`` *is* the reference grammar and ``NgramConfig()`` the reference n-gram
process. Our fixes (test de-duplication done exactly,
an n-gram test split, honoured length settings) are on by default; each one that changes
the data can be switched back.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    TypeAdapter,
    model_serializer,
    model_validator,
)

_STRICT = ConfigDict(extra="forbid", validate_assignment=True)

#: PCFG fields added after corpora were published, with their defaults (= off): left out
#: of a dump while at the default, so an existing config's corpus hash (a hash of the dump)
#: and therefore its published corpora stay recognised
_LATER_PCFG_FIELDS: dict[str, Any] = {
    "repeat_source": "any", "repeat_min_distance": 1, "permuted_recall": False,
    "active_subjects": None,
}
#: the same for the n-gram process
_LATER_NGRAM_FIELDS: dict[str, Any] = {
    "copy_probability": 0.0, "copy_separator": True, "emit_eos": True,
    "copy_gap_min": 0, "copy_gap_max": 0, "copy_gap_zero_probability": 0.0,
    "latent": "none", "document_sentences": 16, "section_sentences": 8,
    "paragraph_sentences": 2, "repermute_fraction": 0.5,
}


class Lexicon(BaseModel):
    """Sizes of the four word classes. Ids are laid out S | V | O | C | EOS | [boundary]."""

    model_config = _STRICT

    subjects: int = Field(300, ge=1, description="number of subject words (ids 0..S-1)")
    verbs: int = Field(300, ge=1, description="number of verb words (ids after the subjects)")
    objects: int = Field(300, ge=1, description="number of object words (ids after the verbs)")
    connectors: int = Field(100, ge=1, description="number of connector words (after objects)")


class PcfgConfig(BaseModel):
    """The hierarchical grammar: document -> section -> paragraph -> sentence.

    A document's latent state is a rank->word permutation per role, derived from
    (seed, document index) alone. Sentences are SVO (with optional extra clauses
    ``c s v o``) or VSO, followed by EOS.
    """

    model_config = _STRICT

    kind: Literal["pcfg"] = Field("pcfg", description="selects this generator: the PCFG")
    seed: int = Field(0, ge=0, description="root seed of every random draw of this corpus")
    lexicon: Lexicon = Field(default_factory=Lexicon)
    zipf_exponent: float = Field(
        1.0, ge=0.0, description="rank law P(k) ~ 1/k^s over each role's words"
    )
    svo_probability: float = Field(0.5, ge=0.0, le=1.0, description="P(SVO branch); else VSO")
    extra_clause_probs: list[float] = Field(
        default_factory=lambda: [1 / 3, 1 / 3, 1 / 3],
        description="P(m extra clauses) for m = 0, 1, 2, ... in the SVO branch",
    )
    sections: int = Field(2, ge=1, description="sections per document")
    paragraphs_per_section: int = Field(4, ge=1, description="paragraphs per section")
    sentences_per_paragraph: int = Field(2, ge=1, description="sentences per paragraph")
    repetitions: int = Field(
        10, ge=1, description="realisations of each base document (same latent, new sentences)"
    )
    train_documents: int = Field(
        60_500_000, ge=0, description="base documents in the train split (x repetitions)"
    )
    test_documents: int = Field(100_000, ge=0, description="base documents in the test split")
    train_order: Literal["shuffled", "contiguous"] = Field(
        "shuffled",
        description="shuffled: realisations in a seeded global random order (reference train); "
        "contiguous: a latent's repetitions kept together (reference test)",
    )
    test_order: Literal["shuffled", "contiguous"] = Field(
        "contiguous", description="document order of the test split, as train_order "
        "(reference: contiguous)"
    )
    dedup: bool = Field(
        True, description="redraw train sentences that occur verbatim in the test split"
    )
    boundary_token: bool = Field(
        False, description="emit a document-boundary token before every document"
    )
    section_latent_fraction: float = Field(
        0.0, ge=0.0, le=1.0,
        description="fraction of each role's ranks re-permuted per section (our extension)",
    )
    paragraph_latent_fraction: float = Field(
        0.0, ge=0.0, le=1.0,
        description="fraction of each role's ranks re-permuted per paragraph (our extension)",
    )
    binding_probability: float = Field(
        0.0, ge=0.0, le=1.0,
        description="beta: P(a word is the one bound to the previous word of its sentence) "
        "under a per-document random map subject->verb, verb->object (SVO and clauses), "
        "verb->subject, subject->object (VSO); otherwise it is drawn from the rank law "
        "(our extension: trigger->output pairs fixed within a document, as in Bietti et al. "
        "2023). 0 = the reference grammar",
    )
    binding_level: Literal["document", "section", "paragraph"] = Field(
        "document", description="unit that draws a fresh binding map"
    )
    repeat_probability: float = Field(
        0.0, ge=0.0, le=1.0,
        description="P(a sentence re-uses an earlier sentence of its scope verbatim) "
        "(our extension: copy structure). 0 = the reference grammar",
    )
    repeat_scope: Literal["document", "paragraph"] = Field(
        "document", description="the earlier sentences a repeat is drawn from (uniformly)"
    )
    repeat_source: Literal["any", "fresh"] = Field(
        "any",
        description="sentences a repeat may copy: any earlier sentence of its scope, or only "
        "fresh (non-copied) ones, so there are no copy-of-copy chains",
    )
    repeat_min_distance: int = Field(
        1, ge=1,
        description="a repeat's source lies at least this many sentences back (2: never the "
        "sentence just before); with no eligible source the sentence is fresh",
    )
    permuted_recall: bool = Field(
        False,
        description="each paragraph is K = sentences_per_paragraph / 2 fresh sentences, then "
        "the same K sentences in a uniformly random order (our extension: copies at a new "
        "offset every time)",
    )
    active_subjects: int | None = Field(
        None, ge=1,
        description="MQAR-like in-context bindings: per paragraph A subjects are drawn "
        "uniformly without replacement and every subject of the paragraph is drawn "
        "uniformly from them; with binding_probability each is bound to a verb (S->V) "
        "and an object (S->O, also in SVO). null = off",
    )
    annotations: bool = Field(
        False, description="store per-token latent annotations (doc, section, ..., role)"
    )
    documents_per_shard: int = Field(
        100_000, ge=1, description="document realisations per shard (bounds memory)"
    )

    @model_validator(mode="after")
    def _check(self) -> PcfgConfig:
        probs = self.extra_clause_probs
        if not probs or any(p < 0 for p in probs) or abs(sum(probs) - 1.0) > 1e-6:
            raise ValueError(
                "extra_clause_probs must be a non-empty list of non-negative numbers "
                f"summing to 1, got {probs}"
            )
        if self.permuted_recall:
            spp = self.sentences_per_paragraph
            if spp < 2 or spp % 2:
                raise ValueError("permuted_recall needs an even sentences_per_paragraph >= 2, "
                                 f"got {spp}")
            if self.repeat_probability > 0:
                raise ValueError("permuted_recall and repeat_probability > 0 cannot be "
                                 "combined (the second half of each paragraph is already a "
                                 "copy); set repeat_probability: 0")
        if self.active_subjects is not None and self.active_subjects > self.lexicon.subjects:
            raise ValueError(f"active_subjects ({self.active_subjects}) must be <= "
                             f"lexicon.subjects ({self.lexicon.subjects})")
        if self.vocab_size > 65_535:
            raise ValueError(f"the vocabulary ({self.vocab_size} ids) must fit uint16")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name, default in _LATER_PCFG_FIELDS.items():
            if name in data and data[name] == default:
                del data[name]
        return data

    # ----- id layout -------------------------------------------------------------------
    @property
    def role_offsets(self) -> tuple[int, int, int, int]:
        """First id of subjects, verbs, objects, connectors."""
        lx = self.lexicon
        return (0, lx.subjects, lx.subjects + lx.verbs, lx.subjects + lx.verbs + lx.objects)

    @property
    def eos_id(self) -> int:
        """The end-of-sentence id, right after the connectors."""
        lx = self.lexicon
        return lx.subjects + lx.verbs + lx.objects + lx.connectors

    @property
    def boundary_id(self) -> int | None:
        """The document boundary id after EOS, or None without ``boundary_token``."""
        return self.eos_id + 1 if self.boundary_token else None

    @property
    def unk_id(self) -> int:
        """The tokenizer's [UNK] id, after the ids the grammar emits; never in a corpus."""
        return self.eos_id + (2 if self.boundary_token else 1)

    @property
    def pad_id(self) -> int:
        """The tokenizer's [PAD] id, the last one; never in a corpus."""
        return self.unk_id + 1

    @property
    def vocab_size(self) -> int:
        """Tokenizer length: words, EOS, optional boundary, [UNK], [PAD] (reference: 1003)."""
        return self.pad_id + 1

    @property
    def sentences_per_document(self) -> int:
        """Sections x paragraphs per section x sentences per paragraph."""
        return self.sections * self.paragraphs_per_section * self.sentences_per_paragraph

    def split_units(self, split: str) -> int:
        """How many units (document realisations) ``split`` holds, to cut it into shards.

        Args:
            split: ``train`` or ``test``.

        Returns:
            Base documents x repetitions.
        """
        docs = self.train_documents if split == "train" else self.test_documents
        return docs * self.repetitions

    @property
    def units_per_shard(self) -> int:
        """Document realisations per shard (``documents_per_shard``)."""
        return self.documents_per_shard


class NgramConfig(BaseModel):
    """The hierarchy-free baseline: a mixed-order hashed-context n-gram process
    (docs/reference-study.md#the-n-gram-process)."""

    model_config = _STRICT

    kind: Literal["ngram"] = Field(
        "ngram", description="selects this generator: the n-gram process"
    )
    seed: int = Field(0, ge=0, description="root seed of every random draw of this corpus")
    vocab_size: int = Field(
        1000, ge=3, le=65_535, description="regular tokens 0..V-2 plus EOS = V-1"
    )
    num_contexts: int | None = Field(
        None, ge=1, description="context tables; null = vocab_size (the reference)"
    )
    exponent_mean: float = Field(2.0, description="mean of each context's Zipf exponent")
    exponent_std: float = Field(1.2, ge=0.0, description="std of each context's Zipf exponent")
    exponent_floor: float = Field(1.2, description="exponents are max(Normal, floor)")
    permute_rankings: bool = Field(
        False,
        description="give every context its own token ranking (the reference ranks token 0 "
        "first in every context)",
    )
    orders: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 8, 16, 32, 64, 128],
        description="context lengths mixed before each token",
    )
    order_weights: list[float] | None = Field(
        None, description="P(order); null = i^-order_weight_exponent for i = 1..len(orders)"
    )
    order_weight_exponent: float = Field(
        1.5, ge=0.0, description="e in the default order weights i^-e"
    )
    length_distribution: Literal["uniform", "zipf"] = Field(
        "uniform", description="sentence length law over [min_length, max_length]"
    )
    min_length: int = Field(10, ge=1, description="shortest sentence (regular tokens)")
    max_length: int = Field(109, ge=1, description="longest sentence (regular tokens)")
    length_zipf_exponent: float = Field(2.0, ge=0.0, description="used when length is zipf")
    train_sentences: int = Field(5_000_000_000, ge=0, description="sentences in the train split")
    test_sentences: int = Field(
        1_000_000, ge=0, description="held-out sentences (the reference wrote none)"
    )
    annotations: bool = Field(False, description="store per-token sentence index and role")
    sentences_per_shard: int = Field(
        200_000, ge=1, description="sentences per shard (bounds a worker's memory)"
    )
    copy_probability: float = Field(
        0.0, ge=0.0, le=1.0,
        description="P(a sentence is followed at once by its verbatim copy; copies are never "
        "copied) (our extension: flat copies without any hierarchy or roles, to ask whether "
        "an induction head needs the grammar). 0 = the reference process",
    )
    copy_separator: bool = Field(
        True,
        description="emit EOS between a sentence and its copy; false: the copy runs on from "
        "its source and EOS comes after both, so no boundary token tells where the copy "
        "starts (otherwise 'the same slot after the last EOS' predicts the copy by position)",
    )
    emit_eos: bool = Field(
        True,
        description="end every sentence (and copy) with EOS; false: sentences run together "
        "with no boundary token at all (the EOS id stays in the vocabulary, unused), so "
        "nothing but token identity tells where a copy starts",
    )

    copy_gap_min: int = Field(
        0, ge=0, description="fewest fresh tokens between a sentence and its copy (the copy "
        "distance is the sentence length plus the gap)",
    )
    copy_gap_max: int = Field(
        0, ge=0, description="most fresh tokens between a sentence and its copy, drawn "
        "uniformly in [copy_gap_min, copy_gap_max]; > 0 spreads the copy distances, so that "
        "only a head that matches token identity at any distance predicts the copy",
    )
    copy_gap_zero_probability: float = Field(
        0.0, ge=0.0, le=1.0, description="P(a copy follows its sentence at once, gap 0) when "
        "copy_gap_max > 0: a mixture of short and long copy distances",
    )
    latent: Literal["none", "document", "hierarchy", "segment"] = Field(
        "none", description="latent structure of a context-free process (orders [1], one "
        "context): words are drawn as word = permutation[rank], rank ~ Zipf(exponent_mean). "
        "none: one fixed ranking; document: a uniform random permutation per document "
        "(the study's latent); hierarchy: the document's permutation, partly re-permuted per "
        "section and again per paragraph; segment: a fresh permutation per sentence "
        "(burstiness without a shared latent). Every setting has the same uniform word "
        "marginal over documents",
    )
    document_sentences: int = Field(
        16, ge=1, description="sentences (with their copies) per document of the latent"
    )
    section_sentences: int = Field(
        8, ge=1, description="sentences per section (latent: hierarchy); divides "
        "document_sentences",
    )
    paragraph_sentences: int = Field(
        2, ge=1, description="sentences per paragraph (latent: hierarchy); divides "
        "section_sentences",
    )
    repermute_fraction: float = Field(
        0.5, ge=0.0, le=1.0, description="share of the ranks whose words a section, and "
        "again a paragraph, shuffles among themselves (latent: hierarchy)",
    )

    @model_validator(mode="after")
    def _check(self) -> NgramConfig:
        if self.copy_gap_max < self.copy_gap_min:
            raise ValueError(f"copy_gap_max ({self.copy_gap_max}) must be >= copy_gap_min "
                             f"({self.copy_gap_min})")
        context_free = list(self.orders) == [1] and self.n_contexts == 1
        if (self.latent != "none" or self.copy_gap_max > 0) and not context_free:
            raise ValueError("latent and copy_gap_max need a context-free process: orders "
                             f"[1] and num_contexts 1 (got orders {self.orders}, num_contexts "
                             f"{self.num_contexts})")
        if (self.latent != "none" or self.copy_gap_max > 0) and self.emit_eos:
            raise ValueError("latent and copy_gap_max are for boundary-free streams: set "
                             "emit_eos false")
        if self.latent != "none" and self.permute_rankings:
            raise ValueError("latent replaces permute_rankings: set permute_rankings false")
        if self.latent == "hierarchy" and (
                self.document_sentences % self.section_sentences
                or self.section_sentences % self.paragraph_sentences):
            raise ValueError("latent hierarchy: paragraph_sentences must divide "
                             "section_sentences, which must divide document_sentences (got "
                             f"{self.paragraph_sentences}, {self.section_sentences}, "
                             f"{self.document_sentences})")
        if self.max_length < self.min_length:
            raise ValueError(
                f"max_length ({self.max_length}) must be >= min_length ({self.min_length})"
            )
        if not self.orders or any(o < 1 for o in self.orders):
            raise ValueError(f"orders must be a non-empty list of positive ints, got {self.orders}")
        if self.order_weights is not None and (
            len(self.order_weights) != len(self.orders)
            or any(w < 0 for w in self.order_weights)
            or sum(self.order_weights) <= 0
        ):
            raise ValueError(
                "order_weights must list one non-negative weight per order (sum > 0), "
                f"got {self.order_weights} for orders {self.orders}"
            )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data = handler(self)
        for name, default in _LATER_NGRAM_FIELDS.items():
            if name in data and data[name] == default:
                del data[name]
        return data

    @property
    def n_contexts(self) -> int:
        """The number of context tables (``num_contexts``; default: the vocabulary size)."""
        return self.num_contexts if self.num_contexts is not None else self.vocab_size

    @property
    def eos_id(self) -> int:
        """The end-of-sentence id, the last of the process's ``vocab_size`` ids."""
        return self.vocab_size - 1

    @property
    def boundary_id(self) -> None:
        """None: the n-gram process has no documents, so no boundary token."""
        return None

    @property
    def unk_id(self) -> int:
        """The tokenizer's [UNK] id, after the process's ids; never in a corpus."""
        return self.vocab_size

    @property
    def pad_id(self) -> int:
        """The tokenizer's [PAD] id, the last one; never in a corpus."""
        return self.vocab_size + 1

    @property
    def tokenizer_size(self) -> int:
        """Tokenizer length: V ids plus [UNK], [PAD] (reference: 1002)."""
        return self.vocab_size + 2

    def split_units(self, split: str) -> int:
        """How many units (sentences) ``split`` holds, to cut it into shards.

        Args:
            split: ``train`` or ``test``.

        Returns:
            The split's sentence count.
        """
        return self.train_sentences if split == "train" else self.test_sentences

    @property
    def units_per_shard(self) -> int:
        """Sentences per shard (``sentences_per_shard``)."""
        return self.sentences_per_shard

    def weights(self) -> list[float]:
        """The probability of each order in ``orders``, drawn before every token.

        Returns:
            ``order_weights`` or ``i**-order_weight_exponent`` (i = 1, 2, ...), normalised to
            sum to 1.
        """
        if self.order_weights is not None:
            w = list(self.order_weights)
        else:
            w = [(i + 1) ** -self.order_weight_exponent for i in range(len(self.orders))]
        total = sum(w)
        return [x / total for x in w]


class CopyConfig(NgramConfig):
    """A copy design: words drawn uniformly (no context, no hierarchy, no roles), each
    sentence followed by its verbatim copy, with no boundary token, so that only token
    identity tells where a copy starts. The n-gram process with these settings, under a
    kind of its own so that figures and claims show it as its own panel
    (docs/corpora.md#copy-designs); every n-gram field still applies."""

    kind: Literal["copy"] = Field(  # type: ignore[assignment]
        "copy", description="selects this generator: a copy design (the n-gram process, "
        "context-free, with copies)"
    )
    vocab_size: int = Field(
        97, ge=3, le=65_535, description="regular tokens 0..V-2 plus the (unused) EOS = V-1"
    )
    num_contexts: int | None = Field(
        1, ge=1, description="context tables; a copy design has one (context-free words)"
    )
    exponent_mean: float = Field(
        0.0, description="Zipf exponent of the word law (0 = uniform words)"
    )
    exponent_std: float = Field(0.0, ge=0.0, description="std of the Zipf exponent")
    exponent_floor: float = Field(0.0, description="exponents are max(Normal, floor)")
    orders: list[int] = Field(
        default_factory=lambda: [1], description="context lengths; a copy design has [1]"
    )
    min_length: int = Field(6, ge=1, description="shortest sentence (regular tokens)")
    max_length: int = Field(12, ge=1, description="longest sentence (regular tokens)")
    train_sentences: int = Field(300_000, ge=0, description="sentences in the train split")
    test_sentences: int = Field(3_000, ge=0, description="held-out sentences")
    sentences_per_shard: int = Field(
        100_000, ge=1, description="sentences per shard (bounds a worker's memory)"
    )
    copy_probability: float = Field(
        1.0, gt=0.0, le=1.0,
        description="P(a sentence is followed by its verbatim copy; copies are never copied)",
    )
    copy_separator: bool = Field(
        False, description="emit EOS between a sentence and its copy (needs emit_eos)"
    )
    emit_eos: bool = Field(
        False, description="end every sentence with EOS; a copy design has no boundary "
        "token, so that no position counted from a boundary gives a copy away"
    )

    @model_validator(mode="after")
    def _check_copy(self) -> CopyConfig:
        if list(self.orders) != [1] or self.n_contexts != 1:
            raise ValueError("a copy design is context-free: orders must be [1] and "
                             f"num_contexts 1 (got orders {self.orders}, num_contexts "
                             f"{self.num_contexts}); use kind ngram for a context process")
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        # every field, always: the n-gram kind leaves out fields at their old defaults to
        # keep old hashes, but a copy design's defaults differ and it has no old hashes
        return handler(self)


CorpusConfig = Annotated[PcfgConfig | NgramConfig | CopyConfig, Field(discriminator="kind")]
#: validates a corpus config of any kind (a dict or JSON with its ``kind``)
CORPUS_ADAPTER: TypeAdapter = TypeAdapter(CorpusConfig)

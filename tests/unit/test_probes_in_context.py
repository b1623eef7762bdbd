"""In-context measurements: duplicate-token start, previous-token, in-distribution repeats,
loss by position and the band ICL score, and the binding FV tasks."""

from __future__ import annotations

import logging

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from hierlab.corpus.config import PcfgConfig
from hierlab.corpus.pcfg import PcfgSampler
from hierlab.errors import DataError
from hierlab.probes import function_vectors as fv
from hierlab.probes import fv_tasks
from hierlab.probes import in_context as ic
from hierlab.probes import induction as ind
from hierlab.probes.config import InductionConfig
from hierlab.probes.hooks import HookedModel
from probes_helpers import make_run, tiny_model, tiny_probes_config

N = 8


def _force(model: torch.nn.Module, key_of) -> list:
    """Every head's reported attention: all mass on ``key_of(q)``."""

    def hook(mod, args, output):
        out, w = output
        pat = torch.zeros_like(w)
        for q in range(w.shape[-1]):
            pat[..., q, key_of(q)] = 1.0
        return out, pat

    return [layer.self_attn.register_forward_hook(hook) for layer in model.model.layers]


def test_duplicate_token_leaves_out_query_n() -> None:
    """Query n attends key 0 (the sink, which is also q - n); every other query itself.
    The old definition (queries n..2n-1) scored 1/n; from n+1 it is 0 (regression)."""
    model = tiny_model()
    hm = HookedModel(model)
    toks = ind.repeated_random_tokens(2, N, 1003, seed=0)
    handles = _force(model, lambda q: 0 if q == N else q)
    scores = ind.attention_scores(hm, toks, N, k_max=2)
    for h in handles:
        h.remove()
    assert scores["duplicate_token"].shape == (2, 2, 4)
    assert float(scores["duplicate_token"].max()) == pytest.approx(0.0, abs=1e-7)
    # a perfect duplicate-token head still scores 1
    handles = _force(model, lambda q: q - N if q >= N else q)
    scores = ind.attention_scores(hm, toks, N, k_max=2)
    for h in handles:
        h.remove()
    assert float(scores["duplicate_token"].min()) == pytest.approx(1.0, abs=1e-6)


def test_previous_token_hand_built_pattern() -> None:
    model = tiny_model()
    hm = HookedModel(model)
    windows = torch.randint(0, 1000, (3, 12), generator=torch.Generator().manual_seed(0))
    handles = _force(model, lambda q: max(q - 1, 0))
    pt = ic.previous_token_scores(hm, windows, batch_size=2)
    for h in handles:
        h.remove()
    assert pt.shape == (3, 2, 4)
    assert torch.allclose(pt, torch.ones_like(pt))
    rows = ic.previous_token_rows(pt, seed=0)
    assert [r["metric"] for r in rows].count("previous_token") == 8
    assert rows[0]["metric"] == "previous_token_max" and rows[0]["value"] == pytest.approx(1)
    # self-attention only: no previous-token attention at all
    handles = _force(model, lambda q: q)
    pt0 = ic.previous_token_scores(hm, windows)
    for h in handles:
        h.remove()
    assert float(pt0.max()) == 0.0


def test_loss_by_position_matches_direct_cross_entropy() -> None:
    hm = HookedModel(tiny_model())
    windows = torch.randint(0, 1000, (3, 20), generator=torch.Generator().manual_seed(1))
    curve = ic.loss_by_position(hm, windows, batch_size=2)
    assert curve.shape == (19,)
    with torch.no_grad():
        # token k (1-based) = index k-1, predicted from the k-1 tokens before it
        for k in (2, 11, 20):
            lg = hm.forward(windows[:, : k - 1])[:, -1].float()
            want = F.cross_entropy(lg, windows[:, k - 1]).item()
            assert curve[k - 2] == pytest.approx(want, rel=1e-4)


def test_icl_rows_bands_sign_and_recorded_positions(caplog) -> None:
    curve = np.linspace(3.0, 1.0, 63)  # positions 2..64, loss falls with position
    rows = ic.icl_rows(curve, 5, (2, 11), (55, 64), seed=0)
    by = {r["metric"]: r["value"] for r in rows if r["k"] is None}
    want = curve[53:63].mean() - curve[0:10].mean()
    assert by["icl_score"] == pytest.approx(want) and by["icl_score"] < 0  # ICL: negative
    assert (by["icl_early_lo"], by["icl_early_hi"], by["icl_late_lo"], by["icl_late_hi"]) \
        == (2, 11, 55, 64)
    lbp = [r for r in rows if r["metric"] == "loss_by_position"]
    assert [r["k"] for r in lbp] == list(range(2, 65))
    # a late band past the window is clipped, logged, and the positions used recorded
    with caplog.at_level(logging.WARNING):
        rows = ic.icl_rows(curve, 5, (10, 20), (50, 500), seed=0)
    by = {r["metric"]: r["value"] for r in rows if r["k"] is None}
    assert by["icl_late_hi"] == 64 and "icl_late_band" in caplog.text
    # a band that the window leaves empty names the field
    with pytest.raises(DataError, match="icl_late_band"):
        ic.icl_rows(curve, 5, (10, 20), (450, 512), seed=0)
    with pytest.raises(DataError, match="icl_early_band"):
        ic.resolve_bands((100, 120), (450, 512), 64)


def test_band_config_errors_name_the_field() -> None:
    assert InductionConfig().icl_late_band == (450, 512)
    with pytest.raises(ValidationError, match="icl_early_band"):
        InductionConfig(icl_early_band=(60, 40))
    with pytest.raises(ValidationError, match="icl_late_band"):
        InductionConfig(icl_late_band=(1, 40), icl_early_band=(2, 3))
    with pytest.raises(ValidationError, match="icl_early_band"):
        InductionConfig(icl_early_band=(10, 300), icl_late_band=(200, 256))
    with pytest.raises(ValidationError, match="icl_samples"):
        InductionConfig(icl_samples=16)  # replaced by position_windows


def test_document_windows_and_repeated_spans(tmp_path) -> None:
    from hierlab.corpus.shards import SplitReader, write_split

    toks = np.arange(1000, dtype=np.uint16) % 997
    starts = np.array([0, 7, 300, 555, 990], dtype=np.int64)
    write_split(tmp_path / "t", [toks[:600], toks[600:]], doc_starts=[starts[:4], starts[4:] - 600],
                manifest={"vocab_size": 1003})
    reader = SplitReader(tmp_path / "t")
    w = ic.document_windows(reader, 10, 50)
    assert w.shape == (4, 50)  # the document at 990 leaves no 50-token window
    assert [int(r[0]) for r in w] == [0, 7, 300, 555]
    assert torch.equal(w[3], torch.from_numpy(toks[555:605].astype(np.int64)))
    rep = ic.repeated_spans(reader, 2, 16, seed=3)
    assert rep.shape == (2, 32) and torch.equal(rep[:, :16], rep[:, 16:])
    assert {int(x) for x in rep[:, 0]} <= {0, 7, 300, 555, 990}
    with pytest.raises(DataError):
        ic.document_windows(reader, 2, 2000)


def test_runner_writes_in_context_rows(tmp_path) -> None:
    from hierlab.probes.runner import run_probes

    run = make_run(tmp_path, steps=(10,), corrupt=None)
    paths = run_probes(tiny_probes_config(), run, probes="induction", variant="both")
    df = pd.read_parquet(paths["induction"])
    std, ref = df[df.variant == "standard"], df[df.variant == "reference"]
    for metric, n in (("prefix_matching_indist", 8), ("duplicate_token_indist", 8),
                      ("prefix_matching_indist_max", 1), ("previous_token", 8),
                      ("previous_token_max", 1), ("icl_score", 1), ("loss_by_position", 63),
                      ("icl_late_hi", 1)):
        assert (std.metric == metric).sum() == n, metric
    assert (ref.metric == "score_indist").sum() == 3
    assert (ref.metric == "head_score_indist").sum() == 3 * 8
    # random-token rows are kept beside them
    assert {"score", "head_score", "score_max_then_mean"} <= set(ref.metric)
    lbp = std[std.metric == "loss_by_position"]
    assert lbp.k.min() == 2 and lbp.k.max() == 64 and (lbp.n_samples == 2).all()


# ---------------------------------------------------------------- binding FV tasks
def _bound_cfg(beta: float = 0.9) -> PcfgConfig:
    return PcfgConfig(lexicon={"subjects": 12, "verbs": 10, "objects": 9, "connectors": 3},
                      binding_probability=beta, train_documents=10, test_documents=2)


def test_bound_verb_episode_is_one_document_map() -> None:
    cfg = _bound_cfg()
    sampler = PcfgSampler(cfg)
    task = fv_tasks.binding_task("bound_verb", sampler)
    _, off_v, off_o, _ = cfg.role_offsets
    eos = cfg.eos_id
    assert task.chance == pytest.approx(1 / 10)
    g = torch.Generator().manual_seed(0)
    for _ in range(30):
        ids, y, zero = task.prompt(g, 5)
        demos = [ids[i : i + 4] for i in range(0, 20, 4)]
        assert all(d[3] == eos for d in demos)
        sv = {d[0]: d[1] for d in demos}
        # one map: a subject keeps its verb; the object is the bound object of that verb
        assert all(sv[d[0]] == d[1] for d in demos)
        assert all(off_v <= d[1] < off_o and off_o <= d[2] < off_o + 9 for d in demos)
        # the query repeats a demonstration's subject; the answer is its bound verb
        assert ids[20:] == [ids[-1]] and zero == [eos, ids[-1]] and y == sv[ids[-1]]
        assert y not in zero  # zero-shot: the answer is not in the prompt

    # the map is fresh per episode: the same zero-shot prompt has different answers
    g = torch.Generator().manual_seed(1)
    ys = set()
    for _ in range(40):
        ep = task.episode(g)
        ys.add(ep.sample(torch.Generator().manual_seed(5))[1])
    assert len(ys) > 3


def test_bound_object_and_deranged_labels() -> None:
    cfg = _bound_cfg()
    task = fv_tasks.binding_task("bound_object", PcfgSampler(cfg))
    g = torch.Generator().manual_seed(2)
    ids, y, zero = task.prompt(g, 4)
    demos = [ids[i : i + 4] for i in range(0, 16, 4)]
    vo = {d[1]: d[2] for d in demos}
    assert ids[17] in vo and y == vo[ids[17]] and zero == [cfg.eos_id] + ids[16:]
    assert y not in zero
    sh, ysh, _ = task.prompt(torch.Generator().manual_seed(3), 4, shuffle=True)
    demos = [sh[i : i + 4] for i in range(0, 16, 4)]
    assert len(sh) == 18 and all(d[3] == cfg.eos_id for d in demos)


def test_corpus_tasks_need_bindings(caplog) -> None:
    base = {"roles": {"subject": [0, 12], "verb": [12, 22], "object": [22, 31],
                      "connector": [31, 34]}, "eos_id": 34}
    names = ["copy_object", "bound_verb", "bound_object"]
    with caplog.at_level(logging.INFO, logger="hierlab.probes.fv_tasks"):
        plain = fv_tasks.corpus_tasks(names, {**base, "config": _bound_cfg(0.0).model_dump()})
    assert [t.name for t in plain] == ["copy_object"] and "no bindings" in caplog.text
    assert [t.name for t in fv_tasks.corpus_tasks(names, base)] == ["copy_object"]
    bound = fv_tasks.corpus_tasks(names, {**base, "config": _bound_cfg().model_dump(mode="json")})
    assert [t.name for t in bound] == names



def test_a_skipped_binding_task_is_noted_once_per_run(caplog) -> None:
    """Every checkpoint of a run asks for the tasks; the skip is logged at INFO only for the
    first one of each (run, corpus), and again for another run."""
    manifest = {"roles": {"subject": [0, 12], "verb": [12, 22], "object": [22, 31],
                          "connector": [31, 34]}, "eos_id": 34,
                "config": _bound_cfg(0.0).model_dump()}
    with caplog.at_level(logging.INFO, logger="hierlab.probes.fv_tasks"):
        for _ in range(3):  # three checkpoints of one run
            fv_tasks.corpus_tasks(["bound_verb"], manifest, run=("run-a", "pcfg"))
        fv_tasks.corpus_tasks(["bound_verb"], manifest, run=("run-b", "pcfg"))
    assert caplog.text.count("fv task bound_verb skipped") == 2


def test_fv_standard_on_binding_tasks_zero_shot_at_chance() -> None:
    """A model that only knows role syntax, not the fresh map, is at chance zero-shot: the
    zero-shot prompt is the same whatever the map, so its prediction cannot follow it."""
    cfg = _bound_cfg()
    tasks = [fv_tasks.binding_task(n, PcfgSampler(cfg)) for n in fv_tasks.BINDING_TASKS]
    hm = HookedModel(tiny_model(vocab=cfg.vocab_size))
    rows = fv.fv_standard(hm, tasks, n_shots=3, mean_prompts=4, cie_prompts=2,
                          eval_prompts=60, top_k=2, seed=0)
    by = {r["metric"]: r["value"] for r in rows if r["layer"] is None}
    for t in fv_tasks.BINDING_TASKS:
        assert {f"zero_shot_accuracy:{t}", f"icl_accuracy:{t}", f"chance:{t}"} <= set(by)
        assert any(r["metric"] == f"fv_accuracy:{t}" for r in rows)
        # a deterministic zero-shot prompt -> one prediction per query word; the answer
        # is uniform over the role, so accuracy stays near chance (0.1 / 0.11)
        assert by[f"zero_shot_accuracy:{t}"] <= 0.3


def test_in_context_figure_states_sign_and_shows_checkpoints(tmp_path) -> None:
    from hierlab.figures import FiguresConfig
    from hierlab.figures import fig_in_context as fic
    from hierlab.figures.data import RunData

    rows = []
    for model, slope in (("pcfg", -0.01), ("ngram", 0.0)):
        for step in (0, 10, 100, 1000, 5000):
            curve = 3.0 + slope * np.arange(2, 65) * step / 5000
            for r in ic.icl_rows(curve, 4, (2, 11), (50, 64), seed=0):
                rows.append({"source": "run", "model": model, "step": step,
                             "probe": "induction", "variant": "standard", **r})
    data = RunData.from_tables(pd.DataFrame(rows), kinds={"pcfg": "pcfg", "ngram": "ngram"},
                               run_dir=tmp_path)
    table = fic.build_table(data)
    lbp = table[(table.series == "loss_by_position") & (table.panel == "pcfg")]
    steps = sorted(lbp.step.unique())
    assert len(steps) == 4 and steps[0] == 0 and steps[-1] == 5000  # final + 3 earlier
    icl = table[(table.series == "icl_score") & (table.panel == "pcfg")]
    assert icl[icl.step == 5000].value.iloc[0] < 0
    assert "< 0 = in-context learning" in fic.ICL_LABEL and "late − early" in fic.ICL_LABEL
    paths = fic.draw(data, tmp_path / "figs", FiguresConfig(formats=["png"], dpi=50))
    assert {p.suffix for p in paths} == {".png", ".csv"}


def test_runner_binding_tasks_on_a_generated_corpus(tmp_path) -> None:
    """A real corpus with bindings: its manifest's config rebuilds the sampler, the binding
    tasks run, and the in-context rows come from its document offsets."""
    import json

    from corpus_helpers import tiny_pcfg
    from hierlab.corpus.generate import generate_corpus
    from hierlab.probes.runner import run_probes

    cfg = PcfgConfig.model_validate(tiny_pcfg(binding_probability=0.9, train_documents=20))
    run = tmp_path / "run"
    generate_corpus("pcfg", cfg, run / "corpus" / "pcfg")
    d = run / "models" / "pcfg" / "checkpoints" / "step-00000010"
    tiny_model(vocab=cfg.vocab_size).save_pretrained(d)
    (d / "state.json").write_text(json.dumps({"step": 10, "tokens_seen": 100}))
    pc = tiny_probes_config(fv={"tasks": ["copy_object", "bound_verb", "bound_object"],
                                "n_shots": 3, "mean_prompts": 4, "cie_prompts": 2,
                                "eval_prompts": 4},
                            induction={"samples": 2, "n": 8, "k_max": 2, "id_range": [0, 40],
                                       "position_windows": 3,
                                       "indist_samples": 2, "icl_length": 48,
                                       "icl_early_band": [4, 8], "icl_late_band": [40, 48]})
    paths = run_probes(pc, run, probes="fv,induction", variant="standard")
    fvdf = pd.read_parquet(paths["fv"])
    for t in ("bound_verb", "bound_object"):
        assert {f"zero_shot_accuracy:{t}", f"icl_accuracy:{t}", f"fv_accuracy:{t}"} \
            <= set(fvdf.metric)
    chance = fvdf[fvdf.metric == "chance:bound_verb"].value.iloc[0]
    assert chance == pytest.approx(1 / cfg.lexicon.verbs)
    ind_df = pd.read_parquet(paths["induction"])
    assert (ind_df.metric == "loss_by_position").sum() == 47
    assert {"previous_token_max", "prefix_matching_indist_max", "icl_score"} <= set(ind_df.metric)


@pytest.mark.parametrize("name", fv_tasks.BINDING_TASKS)
def test_binding_tasks_are_solved_by_an_induction_oracle(name: str) -> None:
    """Few-shot prompts hold the answer: 'find the query's last word earlier, copy the
    token after it' is always right, while the zero-shot prompt never holds the answer."""
    task = fv_tasks.binding_task(name, PcfgSampler(_bound_cfg()))
    g = torch.Generator().manual_seed(4)
    for _ in range(50):
        ids, y, zero = task.prompt(g, 6)
        last = ids[-1]
        prev = max(i for i in range(len(ids) - 1) if ids[i] == last)
        assert ids[prev + 1] == y
        assert y not in zero

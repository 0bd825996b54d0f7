"""EffectReport: escaped, self-contained HTML and the tables behind it."""
import base64
import re

import numpy as np
import pandas as pd
import pytest

from causalrec.datasets import simulate_log
from causalrec.estimate import ItemEffectEstimator
from causalrec.identify import CausalGraph
from causalrec.rank import rank_items
from causalrec.refute import refute_item_effects, sensitivity
from causalrec.reporting import EffectReport
from causalrec.reporting.effect_sections import _frame_hash
from causalrec.reporting.html import (column_decimals, figure_to_img, format_number,
                                      html_table, new_figure, script_hash)
from causalrec.reporting.items_table import SORT_SCRIPT
from causalrec.schema import InteractionLog

EVIL = "<script>alert(1)</script>"
EVIL_ESCAPED = "&lt;script&gt;alert(1)&lt;/script&gt;"
ODD = 'a "quoted" $x$ & <b>item</b>'  # '$..$' would be mathtext in a matplotlib label
NO_TEXT_ROLES = dict(item="item_id", treatment="recommended", outcome="clicked",
                     confounders=["user_activity", "hour", "tenure"],
                     categorical=["device", "user_group"])


@pytest.fixture(scope="module")
def fitted():
    """A small simulated log whose two largest items carry hostile names."""
    sim = simulate_log(n_items=16, n_users=300, n_rows=3000, seed=7)
    df = sim.data.assign(item_id=sim.data["item_id"].map(lambda i: f"item {i}"))
    df.loc[df["item_id"] == "item 0", "item_id"] = EVIL
    df.loc[df["item_id"] == "item 1", "item_id"] = ODD
    # min_ess=30 flags some of these small items as poor overlap
    estimator = ItemEffectEstimator(seed=0, min_ess=30).fit(InteractionLog(df, **NO_TEXT_ROLES))
    return df, estimator


@pytest.fixture(scope="module")
def report(fitted):
    _, estimator = fitted
    graph = CausalGraph.recommendation("recommended", "clicked",
                                       user=["user_activity", "tenure", "user_group"],
                                       context=["hour", "device"])
    return EffectReport(estimator, graph=graph, sensitivity=sensitivity(estimator.effects_),
                        title=f"Report on {EVIL}")


@pytest.fixture(scope="module")
def page(report):
    return report.to_html()


def test_hostile_item_names_appear_escaped_never_raw(fitted, page):
    _, estimator = fitted
    statuses = estimator.effects_.set_index("item")["status"]
    assert statuses[EVIL] == "ok" and statuses[ODD] == "ok"  # both reach every table
    assert EVIL not in page and "<b>item</b>" not in page
    assert EVIL_ESCAPED in page
    assert "a &quot;quoted&quot; $x$ &amp; &lt;b&gt;item&lt;/b&gt;" in page
    # the only script is the page's own sorting code, allowed by its hash
    assert page.count("<script") == 1
    assert re.search(r"<script>(.*?)</script>", page, re.S).group(1) == SORT_SCRIPT
    assert f"<title>Report on {EVIL_ESCAPED}</title>" in page


def test_report_fetches_nothing_from_outside(page):
    for pattern in ('src="http', "src='http", 'href="http', "href='http", "@import",
                    "url(http", "url(//", 'src="//', "<link", "<iframe"):
        assert pattern not in page.lower(), pattern
    sources = re.findall(r'src="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    assert "Content-Security-Policy" in page and "default-src 'none'" in page


def test_embedded_images_are_pngs_and_sections_present(page):
    images = re.findall(r'src="data:image/png;base64,([^"]+)"', page)
    # graph, propensity histograms, forest plot, popularity scatter
    assert len(images) == 4
    assert all(base64.b64decode(b).startswith(b"\x89PNG\r\n\x1a\n") for b in images)
    for anchor in ("answer", "items", "summary", "data", "graph", "overlap", "nuisance", "effects", "popularity", "ranking",
                   "refutation", "assumptions", "reproducibility"):
        assert f'id="{anchor}"' in page


def test_flagged_items_are_listed_in_the_overlap_section(fitted, page):
    _, estimator = fitted
    poor = estimator.effects_.loc[estimator.effects_["status"] == "poor_overlap", "item"]
    assert len(poor) >= 1
    overlap = page[page.index('id="overlap"'):page.index('id="effects"')]
    for name in poor:
        assert f"<td>{name}</td>" in overlap


def test_reproducibility_block_names_seed_and_input_hash(fitted, page):
    df, _ = fitted
    block = page[page.index('id="reproducibility"'):]
    assert _frame_hash(df) in block
    assert "<td>seed</td><td>0</td>" in block
    assert "<td>numpy</td><td>" + np.__version__ + "</td>" in block


def test_frame_hash_ignores_the_index_but_not_values():
    frame = pd.DataFrame({"a": [1.0, 2.0], "b": ["x", "y"]})
    assert _frame_hash(frame) == _frame_hash(frame.set_axis([10, 20]))
    assert _frame_hash(frame) != _frame_hash(frame.assign(a=[1.0, 2.5]))
    assert _frame_hash(frame) != _frame_hash(frame.rename(columns={"b": "c"}))


def test_rendering_is_deterministic(report, page):
    assert report.to_html() == page


def test_save_writes_effects_with_ranking_columns(fitted, report, page, tmp_path):
    _, estimator = fitted
    path = report.save(tmp_path)
    assert path == tmp_path / "report.html" and path.read_text(encoding="utf-8") == page
    table = pd.read_csv(tmp_path / "effects.csv")
    assert len(table) == len(estimator.effects_)
    assert set(table["item"]) == set(estimator.effects_["item"])  # hostile names round-trip
    for column in ("rank", "posterior_mean", "posterior_low", "prob_top_k", "rv", "e_value"):
        assert column in table.columns
    # the join matched each item to its own ranking row
    direct = rank_items(estimator.effects_).set_index("item")
    joined = table.set_index("item").loc[direct.index]
    np.testing.assert_allclose(joined["posterior_mean"], direct["posterior_mean"], rtol=1e-12)
    np.testing.assert_array_equal(joined["rank"].to_numpy(), direct["rank"].to_numpy())
    ranks = table["rank"].dropna().to_numpy()
    np.testing.assert_array_equal(ranks, np.arange(1, len(ranks) + 1))  # best first
    assert (table.loc[table["rank"].notna(), "status"] == "ok").all()
    parquet = pd.read_parquet(tmp_path / "effects.parquet")
    pd.testing.assert_frame_equal(parquet, table, check_dtype=False, check_exact=False)
    policies = pd.read_csv(tmp_path / "policies.csv")
    assert list(policies["policy"]) == ["causal_top_k", "naive_top_k", "logging"]


def test_report_from_an_effects_table_alone(fitted, tmp_path):
    _, estimator = fitted
    page = EffectReport(estimator.effects_).to_html()
    assert "No log was given" in page and EVIL not in page and EVIL_ESCAPED in page
    # no per-row propensities and no graph: only the forest plot and the scatter
    assert page.count("data:image/png;base64,") == 2
    EffectReport(estimator.effects_).save(tmp_path, parquet=False)
    assert (tmp_path / "effects.csv").exists() and not (tmp_path / "effects.parquet").exists()


def test_saved_csv_tables_cannot_run_formulas(fitted, tmp_path):
    _, estimator = fitted
    effects = estimator.effects_.copy()
    effects["item"] = effects["item"].astype(str)
    effects.loc[effects.index[0], "item"] = '=HYPERLINK("http://x","y")'
    EffectReport(effects).save(tmp_path, parquet=True)
    written = pd.read_csv(tmp_path / "effects.csv")
    assert '\'=HYPERLINK("http://x","y")' in set(written["item"])  # text, not a formula
    assert (written["ate"].dropna() < 0).any() or (effects["ate"].dropna() >= 0).all()
    assert pd.read_parquet(tmp_path / "effects.parquet")["item"].iloc[0].startswith("=")  # values kept


def test_report_without_any_usable_item_still_renders(fitted):
    _, estimator = fitted
    effects = estimator.effects_.assign(status="too_few_rows")
    report = EffectReport(effects)
    page = report.to_html()
    assert "No ranking: no rows with status" in page and "No item has a usable estimate" in page
    assert "rank" not in report.table().columns and len(report.table()) == len(effects)


def test_refutation_results_are_summarised(fitted):
    df, estimator = fitted
    refutation = refute_item_effects(df, **NO_TEXT_ROLES, checks=("placebo",), seed=0)
    page = EffectReport(estimator, refutation=refutation).to_html()
    section = page[page.index('id="refutation"'):page.index('id="assumptions"')]
    assert "<td>placebo</td>" in section and "share_significant" in section
    assert "No refutation or sensitivity results" not in section


def test_html_table_escapes_and_truncates():
    frame = pd.DataFrame({"<th>": [EVIL, "b", "c"], "x": [0.123456, np.nan, 3.0]})
    out = html_table(frame, max_rows=2, caption="<i>cap</i>")
    assert EVIL not in out and EVIL_ESCAPED in out and "&lt;th&gt;" in out
    assert "&lt;i&gt;cap&lt;/i&gt;" in out
    assert "1 more rows" in out and "<td>c</td>" not in out
    # one format per column: its median magnitude (1.56) to 3 significant digits
    assert '<td class=num>0.12</td>' in out and "<td class=num></td>" in out  # NaN blank
    assert '<td class=num>3.00</td>' not in out  # (third row left out)
    assert html_table(frame, max_rows=3).count("3.00") == 1


def test_figure_to_img_embeds_a_png():
    fig = new_figure(2, 2)
    fig.subplots().plot([0, 1], [1, 0])
    tag = figure_to_img(fig, alt='say "hi" <now>')
    data = re.search(r'src="data:image/png;base64,([^"]+)"', tag).group(1)
    assert base64.b64decode(data).startswith(b"\x89PNG")
    assert 'alt="say &quot;hi&quot; &lt;now&gt;"' in tag


def test_bad_inputs_raise(fitted):
    _, estimator = fitted
    with pytest.raises(TypeError, match="fitted ItemEffectEstimator or an effects DataFrame"):
        EffectReport([1, 2, 3]).to_html()
    with pytest.raises(ValueError, match="not fitted"):
        EffectReport(ItemEffectEstimator()).to_html()
    with pytest.raises(ValueError, match=r"lack required column\(s\) \['se'\]"):
        EffectReport(estimator.effects_.drop(columns="se")).to_html()
    with pytest.raises(ValueError, match="top must be a positive integer"):
        EffectReport(estimator.effects_, top=0).to_html()
    ranking = rank_items(estimator.effects_)
    with pytest.raises(ValueError, match="several rows for the same item"):
        EffectReport(estimator, ranking=pd.concat([ranking, ranking.head(1)])).to_html()
    with pytest.raises(ValueError, match="lacks the item column"):
        EffectReport(estimator, ranking=ranking.drop(columns="item")).to_html()

"""EffectReport: escaped, self-contained HTML and the tables behind it."""
import base64
import hashlib
import re
import shutil
import subprocess
from html import escape

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
from causalrec.identify.draw import graph_figure
from causalrec.reporting.first_screen import choose_items, policy_change, popularity_verdict
from causalrec.reporting.items_table import SORT_SCRIPT
from causalrec.reporting.nuisance_section import calibration_verdict
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
    with pytest.raises(ValueError, match=r"lacks? required column\(s\) \[.se.\]"):
        EffectReport(estimator.effects_.drop(columns="se")).to_html()
    with pytest.raises(ValueError, match="top must be a positive integer"):
        EffectReport(estimator.effects_, top=0).to_html()
    ranking = rank_items(estimator.effects_)
    with pytest.raises(ValueError, match="several rows for the same item"):
        EffectReport(estimator, ranking=pd.concat([ranking, ranking.head(1)])).to_html()
    with pytest.raises(ValueError, match="lacks the item column"):
        EffectReport(estimator, ranking=ranking.drop(columns="item")).to_html()


# ---------------------------------------------------------------- the first screen and table
def _section(page, anchor, following):
    return page[page.index(f'id="{anchor}"'):page.index(f'id="{following}"')]


def _items_rows(page):
    table = re.search(r'<table id="items-table".*?</table>', page, re.S).group(0)
    return re.findall(r"<tr>(.*?)</tr>", table.split("<tbody>")[1], re.S)


def test_first_screen_names_the_chosen_items_with_their_intervals(report, page):
    table = report.table()
    answer = _section(page, "answer", "items")
    more, less, (more_ok, less_ok) = choose_items(table)
    assert len(more) and len(less)
    assert more_ok == bool(table["bh_positive"].any()) and less_ok == bool(table["bh_negative"].any())
    decimals = column_decimals(pd.concat([table["posterior_mean"], table["ate"]]).dropna())
    for _, row in pd.concat([more, less]).iterrows():
        low, high = (format_number(row[c], decimals) for c in ("posterior_low", "posterior_high"))
        assert re.search(rf"\[\+?{re.escape(low)}, \+?{re.escape(high)}\]", answer), row["item"]
    # what could not be estimated: every status but ok, with its count
    for status, count in table["status"].value_counts().drop("ok", errors="ignore").items():
        assert f"<td>{status}</td><td class=num>{count}</td>" in answer
    assert 'href="items.csv"' in answer and 'href="#items"' in answer


def test_policy_change_sums_effects_times_changed_recommendations():
    more = pd.DataFrame({"posterior_mean": [0.1, 0.05], "posterior_sd": [0.02, 0.01],
                         "n_control": [100, 40], "n_treated": [5, 5]})
    less = pd.DataFrame({"posterior_mean": [-0.2], "posterior_sd": [0.05],
                         "n_control": [1, ], "n_treated": [30]})
    change = policy_change(more, less, alpha=0.05)
    assert change["change"] == pytest.approx(0.1 * 100 + 0.05 * 40 + 0.2 * 30)
    assert change["se"] == pytest.approx(np.sqrt((2.0) ** 2 + 0.4**2 + 1.5**2))
    assert change["high"] - change["change"] == pytest.approx(1.959964 * change["se"], rel=1e-6)
    assert (change["added"], change["removed"]) == (140, 30)


@pytest.mark.parametrize("direction, lead", [(1, "Here popularity picks the same top items"),
                                             (-1, "Popular items have smaller effects"),
                                             (0, "Popularity does not predict")])
def test_popularity_copy_follows_the_numbers(direction, lead):
    rng = np.random.default_rng(3)
    popularity = rng.random(60)
    effect = direction * popularity if direction else rng.random(60)
    table = pd.DataFrame({"treated_mean": popularity, "posterior_mean": effect,
                          "rank": pd.Series(-effect).rank(method="first").to_numpy()})
    verdict = popularity_verdict(table, "treated_mean", k=10)
    assert verdict["text"].startswith(lead), verdict["text"]
    assert verdict["low"] <= verdict["rho"] <= verdict["high"]
    if direction == 0:  # independent columns: the interval covers 0
        assert verdict["low"] < 0 < verdict["high"]


def test_full_table_holds_every_item_and_matches_its_csv(fitted, report, page, tmp_path):
    _, estimator = fitted
    rows = _items_rows(page)
    assert len(rows) == len(estimator.effects_)
    cells = "".join(rows)
    for name in estimator.effects_["item"].astype(str):
        assert f"<td>{escape(name)}</td>" in cells
    report.save(tmp_path)
    items = pd.read_csv(tmp_path / "items.csv")
    expected = report.items()
    assert list(items.columns) == list(expected.columns) and len(items) == len(expected)
    assert set(items["item"]) == set(estimator.effects_["item"])
    np.testing.assert_allclose(items["ate"], expected["ate"].astype(float), rtol=1e-12)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "items.parquet"), expected,
                                  check_dtype=False)
    section = _section(page, "items", "summary")
    assert 'href="items.csv"' in section and 'href="items.parquet"' in section


def test_csp_allows_exactly_the_inline_script(page):
    csp = re.search(r'http-equiv="Content-Security-Policy" content="([^"]+)"', page).group(1)
    assert "default-src 'none'" in csp and "connect-src" not in csp
    allowed = re.search(r"script-src ([^;]+)", csp).group(1).split()
    scripts = re.findall(r"<script>(.*?)</script>", page, re.S)
    assert allowed == [script_hash(s) for s in scripts] and len(scripts) == 1
    digest = base64.b64encode(hashlib.sha256(scripts[0].encode()).digest()).decode()
    assert allowed[0] == f"'sha256-{digest}'"
    assert 'onclick' not in page.lower() and "unsafe-inline' 'sha" not in csp  # no inline handlers


def test_number_format_is_one_per_column():
    assert column_decimals([0.0123, -0.0456, 0.0789]) == 4  # 3 significant digits of ~0.05
    assert column_decimals([12.0, 340.0]) == 0 and column_decimals([]) == 0
    assert column_decimals([1.5e-6, 0.2, 0.9]) is None  # p-values: significant digits per cell
    assert format_number(1234567.891, 1) == "1,234,567.9" and format_number(0.000123) == "0.000123"
    out = html_table(pd.DataFrame({"ate": [0.01234, 0.5], "ci_low": [-0.2, 0.1]}))
    assert "<td class=num>0.012</td>" in out and "<td class=num>-0.200</td>" in out  # shared


def test_graph_labels_fit_their_boxes_at_any_length():
    long_name = "a_confounder_with_a_very_long_name_that_would_overflow_any_circle"
    graph = CausalGraph.recommendation("recommended", "clicked", user=[long_name, "age"],
                                       context=["hour"])
    fig, boxes = graph_figure(graph, title="t")
    renderer = fig.canvas.get_renderer()
    fig.canvas.draw()
    extents = {node: (text.get_window_extent(renderer), text.get_bbox_patch().get_window_extent(renderer))
               for node, text in boxes.items()}
    for node, (text, box) in extents.items():
        assert box.x0 <= text.x0 and text.x1 <= box.x1 and box.y0 <= text.y0 and text.y1 <= box.y1
        assert 0 <= box.x0 and box.x1 <= fig.bbox.x1, node  # inside the picture
    nodes = list(extents)
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            assert not extents[a][1].overlaps(extents[b][1]), (a, b)


# ---------------------------------------------------------------- diagnostics that agree
def _sample_log():
    from causalrec.datasets import load_sample

    sample = load_sample()  # as the demo fits it: text confounder, fitted propensity
    return InteractionLog(sample.data, **dict(sample.roles, propensity=None))


def _simulated_log(seed):
    sim = simulate_log(n_items=30, n_users=500, n_rows=6000, seed=seed)
    return InteractionLog(sim.data, **dict(sim.roles, propensity=None, text=[]))


@pytest.mark.parametrize("make_log", [_sample_log, lambda: _simulated_log(1),
                                      lambda: _simulated_log(2)],
                         ids=["bundled sample", "simulated seed 1", "simulated seed 2"])
def test_no_diagnostic_contradicts_another(make_log):
    estimator = ItemEffectEstimator(seed=0).fit(make_log())
    report = EffectReport(estimator)
    page, table, items = report.to_html(), report.table(), report.items()
    effects = estimator.effects_
    ok = effects["status"] == "ok"
    # overlap: the verdict is the estimator's threshold on its own column, everywhere
    limited = ok & (effects["share_outside_support"] > estimator.max_clipped)
    assert set(items.loc[items["overlap"] == "limited", "item"]) == set(effects.loc[limited, "item"])
    overlap = _section(page, "overlap", "nuisance")
    n_limited, n_ok = int(limited.sum()), int(ok.sum())
    assert f"{n_limited} of the {n_ok} estimated (&#x27;ok&#x27;) items have limited" in overlap
    n_flagged = n_limited + int(effects["status"].isin(["poor_overlap", "no_overlap"]).sum())
    assert (f"Items with overlap problems ({n_flagged} items)" in overlap) == (n_flagged > 0)
    answer = _section(page, "answer", "items")
    assert (f"{n_limited} of the {n_ok} ranked items have limited overlap" in answer) == (n_limited > 0)
    assert "No item is flagged" not in page
    # the first screen's overlap column is the same verdict
    more, less, _ = choose_items(table)
    for name in pd.concat([more, less])["item"]:
        verdict = items.set_index("item").loc[name, "overlap"]
        assert re.search(rf"<td>{re.escape(escape(str(name)))}</td>.*?<td>{verdict} \(", answer, re.S)
    # calibration: the text reports the rule's own count, and warns exactly when it flags
    rule = calibration_verdict(estimator.propensity_calibration_, estimator.alpha)
    nuisance = _section(page, "nuisance", "effects")
    assert f"{rule['flagged']} of {rule['bins']} bins beyond" in nuisance
    assert ("miscalibrated" in nuisance) == (rule["flagged"] > 0)
    # the calls: summary cards, first screen and ranking agree
    helps = int(table["bh_positive"].sum())
    assert f'<div class="value">{helps}</div><div class="label">items that help' in page
    if helps:
        assert f"Recommend more: {helps} item(s)" in answer


# ---------------------------------------------------------------- in a real browser
CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser"))), None)


def _chromium(tmp_path, *args) -> subprocess.CompletedProcess:
    """Headless Chromium, offline and without a profile of its own."""
    return subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu",
         "--disable-background-networking", "--disable-component-update", "--no-first-run",
         f"--user-data-dir={tmp_path / 'chromium-profile'}", *args],
        capture_output=True, text=True, timeout=120, check=True)


def _rendered_rows(dom):
    """(header names, [(hidden, {column: (data-v or None, text)})]) of the items table."""
    table = re.search(r'<table id="items-table".*?</table>', dom, re.S).group(0)
    head, body = table.split("<tbody>")
    names = [re.sub(r"<[^>]+>", "", h) for h in re.findall(r"<th[^>]*>(.*?)</th>", head)]
    rows = []
    for attrs, row in re.findall(r"<tr([^>]*)>(.*?)</tr>", body, re.S):
        cells = re.findall(r"<td([^>]*)>(.*?)</td>", row, re.S)
        values = {name: (re.search(r'data-v="([^"]*)"', a).group(1) if "data-v" in a else None, text)
                  for name, (a, text) in zip(names, cells)}
        rows.append(("hidden" in attrs, values))
    return head, rows


@pytest.mark.skipif(CHROMIUM is None, reason="needs Chromium (apt-get install chromium)")
def test_browser_renders_the_first_screen_and_sorts_the_table(report, tmp_path):
    path = report.save(tmp_path / "out").resolve()
    dom = _chromium(tmp_path, "--dump-dom", path.as_uri() + "#sort=ate-desc").stdout
    answer = dom[dom.index('id="answer"'):dom.index('id="items"')]
    more, less, _ = choose_items(report.table())
    for name in pd.concat([more, less])["item"]:
        assert f"<td>{escape(str(name), quote=False)}</td>" in answer
    assert answer.count("95% interval") >= 2 and re.search(r"\[[+-]?\d", answer)
    head, rows = _rendered_rows(dom)
    assert re.search(r'<th class="num" aria-sort="descending">ate</th>', head)  # the script ran
    ate = [float(v) if v is not None else None for _, r in rows for v in [r["ate"][0]]]
    finite = [v for v in ate if v is not None]
    assert len(rows) == len(report.table()) and finite == sorted(finite, reverse=True)
    assert all(v is None for v in ate[len(finite):])  # blanks last
    assert finite != [v for v in report.table()["ate"] if np.isfinite(v)]  # order changed

    dom = _chromium(tmp_path, "--dump-dom", path.as_uri() + "#q=poor_overlap").stdout
    _, rows = _rendered_rows(dom)
    shown = [r for hidden, r in rows if not hidden]
    poor = int((report.table()["status"] == "poor_overlap").sum())
    assert poor and len(shown) == poor and all(r["status"][1] == "poor_overlap" for r in shown)
    assert f'<span id="items-count">{poor}</span>' in dom

    shot = tmp_path / "first_screen.png"
    _chromium(tmp_path, "--hide-scrollbars", f"--screenshot={shot}", "--window-size=1280,900",
              path.as_uri())
    from PIL import Image

    image = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert image.shape == (900, 1280) and image.std() > 10  # a page was drawn, not a blank

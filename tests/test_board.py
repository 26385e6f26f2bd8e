"""Tests for keras_gated.board: the "Timesteps" TensorBoard dashboard.

The routes are asked over HTTP from a real `tensorboard` server (its Python
loader and its Rust one) on logs written by a real `fit` with the logger,
and their values compared with what the event files hold; the page is
opened in headless Chromium.
"""

import argparse
import os
import shutil

import keras
import numpy as np
import pytest
import tensorflow as tf
from board_harness import TensorBoardServer
from board_harness import chromium
from board_harness import missing_browser
from board_harness import open_dashboard
from board_harness import renders
from board_harness import wait_until
from tensorboard.backend.event_processing.event_accumulator import (
    EventAccumulator,
)

import keras_gated
from keras_gated import summaries
from keras_gated.board import data
from keras_gated.board import plugin

TIMESTEPS = 30
FEATURES = 8
RUNS = {"ours_lstm": 8, "builtin_bigru": 8, "builtin_simplernn": 8}
LSTM_UNITS = 8


def test_parse_tag_keeps_slashes_in_layer_names():
    assert data.parse_tag("timestep_gradients/bidi/backward/inputs") == (
        "timestep_gradients",
        "bidi/backward",
        "inputs",
    )
    assert data.parse_tag("gate_sequence/lstm/forget") == (
        "gate_sequence",
        "lstm",
        "forget",
    )
    assert data.parse_tag("gradient_norm/lstm/inputs") is None
    assert data.parse_tag("gate_mean/forget") is None


def test_catalogue_lists_layers_and_what_they_logged():
    tags = {
        "b": {
            "timestep_gradients/bidi/forward/inputs": 4,
            "timestep_gradients/bidi/forward/hidden": 6,
            "gate_mean/bidi/forward/update": 6,
            "gate_mean/bidi/forward/reset": 6,
            "gate_mean/bidi/forward/candidate": 6,
            "gate_saturation_per_timestep/bidi/forward/update": 6,
            "gate_sequence/bidi/forward/update": 3,
            "unrelated/tag": 9,
        },
        "a": {"timestep_gradients/rnn/inputs": 2},
        "empty": {"unrelated/tag": 1},
    }
    assert data.catalogue(tags) == [
        {
            "run": "a",
            "max_step": 2,
            "layers": [
                {
                    "layer": "rnn",
                    "quantities": ["inputs"],
                    "gates": [],
                    "sequences": [],
                }
            ],
        },
        {
            "run": "b",
            "max_step": 9,
            "layers": [
                {
                    "layer": "bidi/forward",
                    "quantities": ["hidden", "inputs"],
                    # The GRU's order, z, r, h, as in its weights.
                    "gates": ["update", "reset", "candidate"],
                    "sequences": ["update"],
                }
            ],
        },
    ]


def loop_block_mean(matrix, row_starts, column_starts):
    rows = list(row_starts) + [matrix.shape[0]]
    columns = list(column_starts) + [matrix.shape[1]]
    out = np.empty((len(row_starts), len(column_starts)))
    for i in range(len(row_starts)):
        for j in range(len(column_starts)):
            block = matrix[rows[i] : rows[i + 1], columns[j] : columns[j + 1]]
            finite = block[np.isfinite(block)]
            out[i, j] = finite.mean() if finite.size else np.nan
    return out


@pytest.mark.parametrize(
    "shape, limits",
    [((7, 10), (3, 4)), ((1000, 37), (300, 500)), ((5, 5), (9, 9))],
)
def test_block_mean_against_loops(shape, limits):
    rng = np.random.default_rng(0)
    matrix = rng.lognormal(size=shape)
    matrix[rng.random(shape) < 0.1] = np.nan
    matrix[0, :] = np.inf  # Not finite: left out like NaN.
    matrix[-1, :] = np.nan

    reduced, row_starts, column_starts = data.block_mean(matrix, *limits)

    assert len(row_starts) == min(shape[0], limits[0])
    assert len(column_starts) == min(shape[1], limits[1])
    assert row_starts[0] == 0 and column_starts[0] == 0
    sizes = np.diff(list(row_starts) + [shape[0]])
    assert sizes.max() - sizes.min() <= 1
    np.testing.assert_allclose(
        reduced, loop_block_mean(matrix, row_starts, column_starts), rtol=1e-12
    )
    if shape[0] <= limits[0] and shape[1] <= limits[1]:
        np.testing.assert_array_equal(
            reduced, np.where(np.isfinite(matrix), matrix, np.nan)
        )


def test_json_values_keep_float32_values_and_null_what_is_not_finite():
    values = np.array([[1e-30, np.nan], [np.inf, 0.1]], "float32")
    converted = data.json_values(values)
    assert converted[0][1] is None and converted[1][0] is None
    assert np.float32(converted[0][0]) == values[0, 0]
    assert np.float32(converted[1][1]) == values[1, 1]
    assert data.at_step([0, 5, 10], 7) == 1
    assert data.at_step([0, 5, 10], None) == 2
    assert data.at_step([3, 5], 1) == 0


def test_rows_by_step_and_of_changing_lengths():
    steps, arrays = data.by_step([(5, "b"), (0, "a"), (5, "c"), (2, "d")])
    assert steps == [0, 2, 5] and arrays == ["a", "d", "c"]
    answer = data.heatmap(
        [0, 1], [np.array([1.0, 2.0]), np.array([3.0, 4.0, 5.0])], 10, 10
    )
    assert answer["shape"] == [2, 3]
    assert answer["values"] == [[1.0, 2.0, None], [3.0, 4.0, 5.0]]


def test_package_data_ships_the_static_files():
    import configparser
    import glob

    config = configparser.ConfigParser()
    config.read(os.path.join(os.path.dirname(__file__), os.pardir, "setup.cfg"))
    patterns = config["options.package_data"]["keras_gated.board"].split()
    board = os.path.dirname(plugin.__file__)
    shipped = {
        os.path.relpath(path, plugin.STATIC_DIR)
        for pattern in patterns
        for path in glob.glob(os.path.join(board, pattern))
    }
    vendor = os.path.dirname(plugin.STATIC_FILES["/echarts.esm.min.mjs"])
    assert set(plugin.STATIC_FILES.values()) <= shipped
    assert {f"{vendor}/LICENSE", f"{vendor}/NOTICE"} <= shipped


def test_loader_keeps_every_step_unless_the_user_chose():
    flags = argparse.Namespace(samples_per_plugin={"images": 5})
    plugin.TimestepsLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"images": 5, "keras_gated": 0}
    flags = argparse.Namespace(samples_per_plugin={"keras_gated": 50})
    plugin.TimestepsLoader().fix_flags(flags)
    assert flags.samples_per_plugin == {"keras_gated": 50}


def test_entry_point_names_the_loader():
    from importlib.metadata import entry_points

    found = {
        point.name: point.load()
        for point in entry_points(group="tensorboard_plugins")
    }
    assert found["keras_gated"] is plugin.TimestepsLoader
    for route, name in plugin.STATIC_FILES.items():
        assert os.path.isfile(os.path.join(plugin.STATIC_DIR, name)), route
    vendor = os.path.dirname(
        os.path.join(
            plugin.STATIC_DIR, plugin.STATIC_FILES["/echarts.esm.min.mjs"]
        )
    )
    assert {"LICENSE", "NOTICE", "LICENSE-zrender"} <= set(os.listdir(vendor))


def fit_logged_runs(root):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, TIMESTEPS, FEATURES)).astype("float32")
    y = rng.normal(size=(64, 1)).astype("float32")
    layers = {
        "ours_lstm": keras_gated.LSTM(LSTM_UNITS, name="lstm"),
        "builtin_bigru": keras.layers.Bidirectional(
            keras.layers.GRU(4), name="bidi"
        ),
        # Standard-normal inputs saturate its tanh units: the vanishing
        # gradient, beside the LSTM's, on one chart.
        "builtin_simplernn": keras.layers.SimpleRNN(8, name="rnn"),
    }
    for run, layer in layers.items():
        model = keras.Sequential(
            [keras.Input((TIMESTEPS, FEATURES)), layer, keras.layers.Dense(1)]
        )
        model.compile(optimizer="adam", loss="mse")
        logger = keras_gated.TimestepGradientLogger(
            os.path.join(root, run),
            (x[:8], y[:8]),
            epoch_freq=None,
            batch_freq=1,
            images=False,
            image_freq=3,
        )
        model.fit(x, y, batch_size=16, epochs=2, callbacks=[logger], verbose=0)


@pytest.fixture(scope="module")
def logs(tmp_path_factory):
    root = tmp_path_factory.mktemp("board")
    fit_logged_runs(str(root / "runs"))
    plain = root / "plain" / "run"
    with tf.summary.create_file_writer(str(plain)).as_default():
        tf.summary.scalar("loss", 1.0, step=0)
    return root


def logged(root, run, tag):
    """`(steps, arrays)` of a tensor tag as the event files hold it."""
    events = EventAccumulator(
        str(root / "runs" / run), size_guidance={"tensors": 0}
    )
    events.Reload()
    series = events.Tensors(tag)
    return [e.step for e in series], [
        tf.make_ndarray(e.tensor_proto) for e in series
    ]


def as_array(values):
    return np.array(
        [np.nan if v is None else v for v in np.ravel(values)], "float64"
    ).reshape(np.shape(values))


@pytest.fixture(scope="module", params=["false", "true"])
def server(request, logs):
    tensorboard = TensorBoardServer(str(logs / "runs"), load_fast=request.param)
    tensorboard.wait_for(RUNS)
    yield tensorboard
    tensorboard.close()


def test_plugin_is_listed_active_as_timesteps(server):
    status, listing = server.get("/data/plugins_listing")
    assert status == 200
    assert listing["keras_gated"]["enabled"] is True
    assert listing["keras_gated"]["tab_name"] == "Timesteps"
    status, body = server.get("/data/plugin/keras_gated/index.js")
    assert status == 200 and b"export async function render" in body
    status, body = server.get("/data/plugin/keras_gated/echarts.esm.min.mjs")
    assert status == 200 and b"Apache" in body[:1000]


def test_runs_route_lists_every_layer_and_tag(server, logs):
    runs = {run["run"]: run for run in server.plugin("runs")["runs"]}
    assert set(runs) == set(RUNS)
    for name, run in runs.items():
        events = EventAccumulator(str(logs / "runs" / name))
        events.Reload()
        tags = {
            tag
            for tag in events.Tags()["tensors"]
            if events.SummaryMetadata(tag).plugin_data.plugin_name
            == summaries.TENSOR_PLUGIN
        }
        served = {
            f"{kind}/{layer['layer']}/{item}"
            for layer in run["layers"]
            for kind, key in (
                ("timestep_gradients", "quantities"),
                ("gate_mean", "gates"),
                ("gate_sequence", "sequences"),
            )
            for item in layer[key]
        }
        assert served == {t for t in tags if "saturation" not in t}
    assert [layer["layer"] for layer in runs["builtin_bigru"]["layers"]] == [
        "bidi/backward",
        "bidi/forward",
    ]
    assert "cell" in runs["ours_lstm"]["layers"][0]["quantities"]


@pytest.mark.parametrize("step", [None, 0, 5])
def test_profile_route_serves_the_logged_values(server, logs, step):
    params = {} if step is None else {"step": step}
    answer = server.plugin("profile", quantity="inputs", **params)
    assert answer["steps"] == list(range(9))
    layers = {(s["run"], s["layer"]): s for s in answer["series"]}
    assert set(layers) == {
        ("ours_lstm", "lstm"),
        ("builtin_bigru", "bidi/forward"),
        ("builtin_bigru", "bidi/backward"),
        ("builtin_simplernn", "rnn"),
    }
    for (run, layer), series in layers.items():
        steps, arrays = logged(logs, run, f"timestep_gradients/{layer}/inputs")
        assert len(steps) == 9  # Every logged step, not 10 random ones.
        expected = arrays[-1 if step is None else steps.index(step)]
        assert series["step"] == (8 if step is None else step)
        assert series["timesteps"] == list(range(TIMESTEPS))
        np.testing.assert_array_equal(np.float32(series["values"]), expected)


def test_heatmap_and_sequence_routes_serve_the_logged_arrays(server, logs):
    tag = "gate_saturation_per_timestep/bidi/backward/update"
    answer = server.plugin("heatmap", run="builtin_bigru", tag=tag)
    steps, arrays = logged(logs, "builtin_bigru", tag)
    assert answer["steps"] == steps and answer["shape"] == [9, TIMESTEPS]
    np.testing.assert_array_equal(as_array(answer["values"]), np.stack(arrays))

    answer = server.plugin("sequence", run="ours_lstm", layer="lstm", step=4)
    steps, arrays = logged(logs, "ours_lstm", "gate_sequence/lstm/forget")
    # Written at every 3rd log and at the end of training.
    assert answer["steps"] == steps == [0, 3, 6, 8]
    assert answer["step"] == 3
    assert set(answer["gates"]) == set(keras_gated.LSTM_GATES)
    forget = answer["gates"]["forget"]
    assert forget["shape"] == [LSTM_UNITS, TIMESTEPS]
    np.testing.assert_array_equal(np.float32(forget["values"]), arrays[1])


def test_routes_answer_bad_requests_clearly(server):
    status, body = server.get("/data/plugin/keras_gated/profile")
    assert status == 400 and "quantity" in body
    status, body = server.get(
        "/data/plugin/keras_gated/profile", quantity="inputs", step="soon"
    )
    assert status == 400 and "step" in body and "soon" in body
    status, body = server.get(
        "/data/plugin/keras_gated/heatmap",
        run="ours_lstm",
        tag="timestep_gradients/lstm/nope",
    )
    assert status == 404 and "timestep_gradients/lstm/nope" in body
    status, body = server.get(
        "/data/plugin/keras_gated/heatmap", run="ours_lstm", tag="nope"
    )
    assert status == 400 and "nope" in body
    answer = server.plugin("profile", quantity="no_such_quantity")
    assert answer["series"] == []
    # A probe sequence is (units, timesteps) per step: not a heatmap row.
    status, body = server.get(
        "/data/plugin/keras_gated/heatmap",
        run="ours_lstm",
        tag="gate_sequence/lstm/forget",
    )
    assert status == 400 and "gate_sequence/lstm/forget" in body


def test_logs_without_keras_gated_data_leave_the_tab_out(logs):
    tensorboard = TensorBoardServer(str(logs / "plain"))
    try:
        wait_until(
            lambda: tensorboard.get("/data/plugins_listing")[1]["scalars"][
                "enabled"
            ],
            timeout=60,
            interval=0.5,
        )
        listing = tensorboard.get("/data/plugins_listing")[1]
        assert listing["keras_gated"]["enabled"] is False
        assert tensorboard.plugin("runs") == {"runs": []}
    finally:
        tensorboard.close()


@pytest.mark.parametrize("load_fast", ["false", "true"])
def test_a_thousand_logged_steps_are_all_served(tmp_path, load_fast):
    # The logger's own writer and tags; 1000 steps of a T=50 profile.
    rng = np.random.default_rng(1)
    rows = rng.lognormal(size=(1000, 50)).astype("float32")
    writer = summaries.SummaryWriter(tmp_path / "runs" / "long")
    for step, row in enumerate(rows):
        writer.tensors({"timestep_gradients/lstm/inputs": row}, step)
    writer.close()
    tensorboard = TensorBoardServer(str(tmp_path / "runs"), load_fast=load_fast)
    try:
        tensorboard.wait_for({"long": 999})
        answer = tensorboard.plugin("profile", quantity="inputs", step=500)
        assert answer["steps"] == list(range(1000))
        np.testing.assert_array_equal(
            np.float32(answer["series"][0]["values"]), rows[500]
        )
        heatmap = tensorboard.plugin(
            "heatmap", run="long", tag="timestep_gradients/lstm/inputs"
        )
        # Steps logged while TensorBoard runs are served too: the plugin's
        # cache of converted series follows the data.
        writer.tensors({"timestep_gradients/lstm/inputs": rows[0] * 2}, 1000)
        writer.close()
        tensorboard.wait_for({"long": 1000})
        answer = tensorboard.plugin("profile", quantity="inputs")
        assert answer["steps"] == list(range(1001))
        np.testing.assert_array_equal(
            np.float32(answer["series"][0]["values"]), rows[0] * 2
        )
    finally:
        tensorboard.close()
    # 1000 rows reduced to 300 block means over consecutive steps.
    assert heatmap["shape"] == [1000, 50]
    reduced, row_starts, _ = data.block_mean(rows, plugin.MAX_ROWS, 500)
    assert heatmap["steps"] == row_starts.tolist()
    np.testing.assert_allclose(as_array(heatmap["values"]), reduced, rtol=1e-12)
    assert len(heatmap["steps"]) == plugin.MAX_ROWS


def chart_option(driver, chart):
    return driver.execute_script(
        "const option = window.timestepsDashboard.charts[arguments[0]]"
        ".chart.getOption(); return {"
        " series: option.series.map(s => ({name: s.name, data: s.data}))};",
        chart,
    )


def hovered_values(driver):
    """`(timestep, {line name: value})` of the profile chart's tooltip, or
    `None` while none shows. Its text: the timestep, then each line's name
    and value on lines of their own."""
    text = driver.execute_script(
        "return document.getElementById('profile-chart').innerText"
    )
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(lines) < 3:
        return None
    values = {
        name: float(value)
        for name, value in zip(lines[1::2], lines[2::2])
        if " · " in name
    }
    if not lines[0].startswith("timestep "):
        return None
    return int(lines[0].split()[1]), values


def screenshot(driver, tmp_path, name):
    driver.switch_to.default_content()
    path = tmp_path / f"{name}.png"
    driver.save_screenshot(str(path))
    keep = os.environ.get("KERAS_GATED_SCREENSHOTS")
    if keep:
        os.makedirs(keep, exist_ok=True)
        shutil.copy(path, os.path.join(keep, f"dashboard_{name}.png"))
    assert path.stat().st_size > 10_000
    driver.switch_to.frame(driver.find_elements("css selector", "iframe")[0])


def require_browser():
    """Skips, saying why, where no browser can run; fails instead where
    `make test` installed one (KERAS_GATED_REQUIRE_BROWSER)."""
    reason = missing_browser()
    if reason:
        if os.environ.get("KERAS_GATED_REQUIRE_BROWSER"):
            pytest.fail(f"the browser test must run here, but {reason}")
        pytest.skip(f"browser test skipped: {reason}")


def test_dashboard_in_headless_chromium(logs, tmp_path):
    require_browser()
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import Select

    tensorboard = TensorBoardServer(str(logs / "runs"), load_fast="auto")
    driver = chromium()
    try:
        tensorboard.wait_for(RUNS)
        open_dashboard(driver, tensorboard.url)
        wait_until(lambda: renders(driver, "profile-chart"))
        option = chart_option(driver, "profile-chart")
        names = [s["name"] for s in option["series"]]
        assert sorted(names) == [
            "builtin_bigru · bidi/backward",
            "builtin_bigru · bidi/forward",
            "builtin_simplernn · rnn",
            "ours_lstm · lstm",
        ]
        latest = renders(driver, "profile-chart")
        assert {s["step"] for s in latest["series"]} == {8}
        _, arrays = logged(logs, "ours_lstm", "timestep_gradients/lstm/inputs")
        drawn = option["series"][names.index("ours_lstm · lstm")]["data"]
        np.testing.assert_array_equal(
            np.float32([y for _, y in drawn]), arrays[-1]
        )
        screenshot(driver, tmp_path, "profile")

        # Hovering shows each line's value at the timestep under the mouse.
        ActionChains(driver).move_to_element(
            driver.find_element("id", "profile-chart")
        ).perform()
        timestep, shown = wait_until(lambda: hovered_values(driver))
        assert set(shown) == set(names)
        for name, value in shown.items():
            drawn = option["series"][names.index(name)]["data"]
            # Seven significant digits of the value at that timestep.
            np.testing.assert_allclose(value, drawn[timestep][1], rtol=5e-7)

        # Move the step slider to the first step: the lines change.
        driver.find_element("id", "profile-step").send_keys(Keys.HOME)
        wait_until(lambda: renders(driver, "profile-chart")["count"] > 1)
        moved = chart_option(driver, "profile-chart")["series"]
        drawn = moved[names.index("ours_lstm · lstm")]["data"]
        np.testing.assert_array_equal(
            np.float32([y for _, y in drawn]), arrays[0]
        )
        assert not np.array_equal(arrays[0], arrays[-1])
        label = driver.find_element("id", "profile-step-label").text
        assert label == "step 0"

        driver.find_element("id", "view-heatmap").click()
        drawn = wait_until(lambda: renders(driver, "heatmap-chart"))
        assert drawn["shape"] == [9, TIMESTEPS]
        cells = chart_option(driver, "heatmap-chart")["series"][0]["data"]
        assert len(cells) == 9 * TIMESTEPS
        screenshot(driver, tmp_path, "heatmap")

        driver.find_element("id", "view-gates").click()
        for gate in ("update", "reset", "candidate"):
            for kind in ("mean", "saturation", "sequence"):
                chart = f"{kind}-{gate}"
                wait_until(lambda chart=chart: renders(driver, chart))
        screenshot(driver, tmp_path, "gates")
        # Another layer: its charts replace the first layer's.
        Select(driver.find_element("id", "gates-layer")).select_by_value(
            "bidi/forward"
        )
        wait_until(
            lambda: (
                renders(driver, "mean-update")["tag"]
                == "gate_mean/bidi/forward/update"
            )
        )
        wait_until(
            lambda: (
                renders(driver, "sequence-update")["layer"] == "bidi/forward"
            )
        )
        assert driver.execute_script(
            "return window.timestepsDashboard.charts['mean-update']"
            ".chart.getDom().isConnected"
        )
        errors = [
            entry
            for entry in driver.get_log("browser")
            if entry["level"] == "SEVERE"
        ]
        assert errors == []
    finally:
        driver.quit()
        tensorboard.close()


def test_dashboard_follows_new_steps_and_runs(tmp_path):
    require_browser()
    rng = np.random.default_rng(2)
    rows = rng.lognormal(size=(6, 20)).astype("float32")
    tag = "timestep_gradients/lstm/inputs"
    writer = summaries.SummaryWriter(tmp_path / "runs" / "live")
    for step in range(3):
        writer.tensors({tag: rows[step]}, step)
    tensorboard = TensorBoardServer(str(tmp_path / "runs"))
    driver = chromium()
    try:
        tensorboard.wait_for({"live": 2})
        open_dashboard(driver, tensorboard.url)
        wait_until(lambda: renders(driver, "profile-chart"))
        assert renders(driver, "profile-chart")["series"][0]["step"] == 2

        # Training goes on: the Refresh button (or the timer) follows it.
        for step in range(3, 5):
            writer.tensors({tag: rows[step]}, step)
        tensorboard.wait_for({"live": 4})
        driver.find_element("id", "refresh").click()
        wait_until(
            lambda: renders(driver, "profile-chart")["series"][0]["step"] == 4
        )
        drawn = chart_option(driver, "profile-chart")["series"][0]["data"]
        np.testing.assert_array_equal(
            np.float32([y for _, y in drawn]), rows[4]
        )
        assert driver.find_element("id", "profile-step-label").text == "step 4"

        # A new run: the view is rebuilt with it on the chart.
        other = summaries.SummaryWriter(tmp_path / "runs" / "second")
        other.tensors({tag: rows[5]}, 0)
        other.close()
        tensorboard.wait_for({"live": 4, "second": 0})
        driver.find_element("id", "refresh").click()
        wait_until(lambda: len(renders(driver, "profile-chart")["series"]) == 2)
        names = [
            s["name"] for s in chart_option(driver, "profile-chart")["series"]
        ]
        assert sorted(names) == ["live · lstm", "second · lstm"]
    finally:
        writer.close()
        driver.quit()
        tensorboard.close()

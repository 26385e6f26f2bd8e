"""How fast the "Timesteps" dashboard draws its first chart on big logs.

Writes 5 runs x 1000 logged steps x T=1000 timesteps with the logger's own
writer and tag layout (one layer per run; the ten LSTM quantities, or the
five of a GRU or SimpleRNN; gate means and saturation per timestep every
step; 64-unit probe sequences every 10th step), starts `tensorboard
--logdir` on them, waits until every step is loaded, and opens the tab in
headless Chromium. The values are synthetic (decaying profiles with noise):
what is measured is moving and drawing this much data, not training.

Prints, as medians over `--repeats` tries:
- "tab switch": TensorBoard already open on another tab, the time from
  selecting Timesteps to the Profile chart's first complete drawing;
- "page load": the time from opening TensorBoard's URL at the tab;
- the plugin's routes as answered over HTTP: the first answer, which
  converts the series it reads, and the median of the next ones, which
  find them in the plugin's cache.

    python benchmarks/bench_board.py [--logdir DIR] [--load-fast auto]
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "tests"))

from board_harness import TensorBoardServer  # noqa: E402
from board_harness import chromium  # noqa: E402
from board_harness import missing_browser  # noqa: E402
from board_harness import wait_until  # noqa: E402

from keras_gated import summaries  # noqa: E402

LSTM = (
    "inputs hidden cell kernel recurrent_kernel bias retention "
    "retention_q50 retention_q90 retention_max"
).split()
GRU = "inputs hidden kernel recurrent_kernel bias".split()
RUNS = {
    "simple_rnn": ("rnn", GRU, ["pre_activation"]),
    "lstm": ("lstm", LSTM, ["input", "forget", "candidate", "output"]),
    "gru": ("gru", GRU, ["update", "reset", "candidate"]),
    "gated_lstm": ("lstm", LSTM, ["input", "forget", "candidate", "output"]),
    "gated_gru": ("gru", GRU, ["update", "reset", "candidate"]),
}


def write_logs(root, steps, timesteps, units=64, sequence_freq=10):
    rng = np.random.default_rng(0)
    decay = np.linspace(-6.0, 0.0, timesteps)
    for run, (layer, quantities, gates) in RUNS.items():
        writer = summaries.SummaryWriter(os.path.join(root, run))
        for step in range(steps):
            tensors = {}
            for index, quantity in enumerate(quantities):
                noise = rng.normal(0, 0.1, timesteps)
                shift = (step / steps) * 2.0 - index * 0.1
                tensors[f"timestep_gradients/{layer}/{quantity}"] = (
                    10.0 ** (decay * (1 - step / (2 * steps)) + shift + noise)
                ).astype("float32")
            for gate in gates:
                mean = rng.uniform(0.2, 0.8, timesteps).astype("float32")
                tensors[f"gate_mean/{layer}/{gate}"] = mean
                tensors[f"gate_saturation_per_timestep/{layer}/{gate}"] = (
                    rng.uniform(0, 0.3, timesteps).astype("float32")
                )
            writer.tensors(tensors, step)
            if step % sequence_freq == 0 or step == steps - 1:
                writer.tensors(
                    {
                        f"gate_sequence/{layer}/{gate}": rng.uniform(
                            0, 1, (units, timesteps)
                        ).astype("float32")
                        for gate in gates
                    },
                    step,
                )
        writer.close()
        print(f"wrote {run}: {steps} steps x {timesteps} timesteps", flush=True)


def first_chart_seconds(driver, url, switch):
    """Seconds to the Profile chart's first drawing; see the docstring."""
    if switch:
        driver.get(f"{url}/#scalars")
        wait_until(
            lambda: (
                driver.execute_script("return document.readyState")
                == "complete"
            ),
            timeout=60,
        )
        time.sleep(2.0)  # TensorBoard's own start-up requests settle.
        start = time.perf_counter()
        driver.execute_script("window.location.hash = 'keras_gated'")
    else:
        driver.get("about:blank")
        start = time.perf_counter()
        driver.get(f"{url}/#keras_gated")

    def drawn():
        frames = driver.find_elements("css selector", "iframe")
        if not frames:
            return False
        driver.switch_to.frame(frames[0])
        try:
            return driver.execute_script(
                "const d = window.timestepsDashboard;"
                " return d && d.renders['profile-chart'] ? true : false"
            )
        finally:
            driver.switch_to.default_content()

    wait_until(drawn, timeout=120, interval=0.01)
    seconds = time.perf_counter() - start
    driver.switch_to.frame(driver.find_elements("css selector", "iframe")[0])
    module_at, drawn_at = driver.execute_script(
        "const d = window.timestepsDashboard;"
        " return [d.moduleAt, d.firstChartAt]"
    )
    driver.switch_to.default_content()
    return seconds, (drawn_at - module_at) / 1000


def time_routes(server, repeats):
    runs = server.plugin("runs")["runs"]
    layer = runs[0]["layers"][0]["layer"]
    routes = {
        "runs": ("runs", {}),
        "profile (latest step, 5 runs)": ("profile", {"quantity": "inputs"}),
        "profile (step 500, 5 runs)": (
            "profile",
            {"quantity": "inputs", "step": 500},
        ),
        "heatmap (1000 x 1000)": (
            "heatmap",
            {
                "run": runs[0]["run"],
                "tag": f"timestep_gradients/{layer}/inputs",
            },
        ),
        "sequence (64 units)": (
            "sequence",
            {"run": runs[0]["run"], "layer": layer},
        ),
    }
    for name, (route, params) in routes.items():
        times = []
        for _ in range(repeats + 1):
            start = time.perf_counter()
            server.plugin(route, **params)
            times.append(time.perf_counter() - start)
        # The first answer converts the series; later ones find them in the
        # plugin's cache until new steps arrive.
        print(
            f"  route {name}: first {times[0] * 1000:.0f} ms, then median "
            f"{statistics.median(times[1:]) * 1000:.0f} ms"
        )


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--logdir", default="/tmp/keras_gated_board_bench")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--timesteps", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--load-fast", default="auto")
    args = parser.parse_args()
    reason = missing_browser()
    if reason:
        sys.exit(f"bench_board needs a browser: {reason}")
    marker = os.path.join(args.logdir, f"done-{args.steps}-{args.timesteps}")
    if not os.path.exists(marker):
        write_logs(args.logdir, args.steps, args.timesteps)
        open(marker, "w").close()
    start = time.perf_counter()
    server = TensorBoardServer(args.logdir, load_fast=args.load_fast)
    driver = None
    try:
        server.wait_for({run: args.steps - 1 for run in RUNS}, timeout=1800)
        print(
            f"TensorBoard (--load_fast={args.load_fast}) loaded every step "
            f"in {time.perf_counter() - start:.1f} s"
        )
        time_routes(server, args.repeats)
        driver = chromium()
        for switch, name in ((True, "tab switch"), (False, "page load")):
            times, ours = zip(
                *[
                    first_chart_seconds(driver, server.url, switch)
                    for _ in range(args.repeats)
                ]
            )
            print(
                f"first chart, {name}: median {statistics.median(times):.2f} s"
                f" (min {min(times):.2f}, max {max(times):.2f}); from the "
                f"dashboard's module start: {statistics.median(ours):.2f} s"
            )
    finally:
        if driver is not None:
            driver.quit()
        server.close()


if __name__ == "__main__":
    main()

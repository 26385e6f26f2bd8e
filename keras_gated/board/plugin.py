"""The "Timesteps" TensorBoard plugin: routes over the logger's tensors.

TensorBoard finds `TimestepsLoader` through the `tensorboard_plugins`
entry point of the installed package. The plugin reads the raw tensor
summaries of `keras_gated.TimestepGradientLogger` (plugin name
`keras_gated`) through TensorBoard's data provider, so it works with the
Python loader and with the Rust one of `--load_fast`, and answers in JSON
(`keras_gated.board.data` shapes the answers). The page is one ES module,
`static/index.js`, drawing with Apache ECharts vendored at a pinned
version in `static/vendor/` with its licence.
"""

import collections
import json
import os
import threading

import numpy as np
from tensorboard import errors
from tensorboard import plugin_util
from tensorboard.backend import http_util
from tensorboard.data import provider
from tensorboard.plugins import base_plugin
from werkzeug import wrappers

from keras_gated import summaries
from keras_gated.board import data

PLUGIN_NAME = summaries.TENSOR_PLUGIN
STATIC_DIR = os.path.join(os.path.dirname(__file__), "static")
ECHARTS_VERSION = "6.1.0"
# Files the page loads, by route; nothing else under static/ is served.
STATIC_FILES = {
    "/index.js": "index.js",
    "/echarts.esm.min.mjs": f"vendor/echarts-{ECHARTS_VERSION}/"
    "echarts.esm.min.mjs",
}
# More than any run logs: the data provider returns every kept step.
_ALL_STEPS = 1 << 30
# The most points a route sends for one vector, and rows and columns for
# one heatmap; larger data is reduced to block means on the server.
MAX_POINTS = 2000
MAX_ROWS = 300
MAX_COLUMNS = 500
MAX_UNITS = 256


# The most float values the plugin keeps converted (256 MiB of float32).
CACHE_VALUES = 1 << 26


class SeriesCache:
    """Converted series by key, valid while their `version` is unchanged.

    Thread-safe (TensorBoard serves requests from several threads); holds
    at most `limit` values in all, dropping the least recently used.
    """

    def __init__(self, limit):
        self.limit = limit
        self._entries = collections.OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def get(self, key, version):
        """The series stored under `key` at `version`, or `None`."""
        with self._lock:
            entry = self._entries.get(key)
            if entry is None or entry[0] != version:
                return None
            self._entries.move_to_end(key)
            return entry[1]

    def store(self, key, version, series):
        size = sum(int(np.size(array)) for array in series[1])
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:
                self._size -= old[2]
            self._entries[key] = (version, series, size)
            self._size += size
            while self._size > self.limit and len(self._entries) > 1:
                _, (_, _, dropped) = self._entries.popitem(last=False)
                self._size -= dropped


class TimestepsLoader(base_plugin.TBLoader):
    """Loads the plugin and keeps every logged step of its tensors.

    TensorBoard keeps 10 random steps per tag of a plugin it has no size
    for; `fix_flags` adds `keras_gated=0` (0: keep all) to
    `--samples_per_plugin` unless the user gave the plugin a number.
    """

    def fix_flags(self, flags):
        samples = getattr(flags, "samples_per_plugin", None)
        if isinstance(samples, dict):
            samples.setdefault(PLUGIN_NAME, 0)

    def load(self, context):
        return TimestepsPlugin(context)


def _argument(request, name, parse=str, default=None):
    value = request.args.get(name)
    if value is None:
        if default is None:
            raise errors.InvalidArgumentError(f"Missing argument: {name}")
        return default
    try:
        return parse(value)
    except ValueError:
        raise errors.InvalidArgumentError(
            f"Argument {name} must be {parse.__name__}. Received: {value!r}"
        ) from None


def _json(request, payload):
    return http_util.Respond(
        request,
        json.dumps(payload, separators=(",", ":"), allow_nan=False),
        "application/json",
    )


class TimestepsPlugin(base_plugin.TBPlugin):
    """The "Timesteps" dashboard: profiles, heatmaps and gates per timestep.

    Routes (under `/data/plugin/keras_gated/`), all JSON:

    - `runs`: `data.catalogue` of every run with the logger's tensors.
    - `profile?quantity=Q[&step=S]`: for every run and layer that logged
      `timestep_gradients/<layer>/Q`, its vector at its latest step at or
      before S (its first when it has none that early; default: its
      latest), with the union of the logged steps for the step slider.
    - `heatmap?run=R&tag=T`: the vectors of a per-timestep tag
      (`timestep_gradients`, `gate_mean`, `gate_saturation_per_timestep`)
      over its logged steps, `data.heatmap`, reduced to at most 300 x 500
      block means.
    - `sequence?run=R&layer=L[&step=S]`: the probe sequence's gates of one
      layer, `(units, timesteps)` each, at the latest logged step at or
      before S, with the steps that have one.
    """

    plugin_name = PLUGIN_NAME

    def __init__(self, context):
        self._data_provider = context.data_provider
        self._cache = SeriesCache(CACHE_VALUES)

    def get_plugin_apps(self):
        apps = {
            "/runs": self._serve_runs,
            "/profile": self._serve_profile,
            "/heatmap": self._serve_heatmap,
            "/sequence": self._serve_sequence,
        }
        for route in STATIC_FILES:
            apps[route] = self._serve_static
        return apps

    def is_active(self):
        return False  # TensorBoard asks the data provider instead.

    def data_plugin_names(self):
        return (PLUGIN_NAME,)

    def frontend_metadata(self):
        return base_plugin.FrontendMetadata(
            es_module_path="/index.js", tab_name="Timesteps"
        )

    @wrappers.Request.application
    def _serve_static(self, request):
        name = STATIC_FILES[request.path[request.path.rindex("/") :]]
        with open(os.path.join(STATIC_DIR, name), "rb") as file:
            content = file.read()
        return http_util.Respond(
            request, content, "application/javascript", expires=3600
        )

    def _provider_arguments(self, request):
        return {
            "ctx": plugin_util.context(request.environ),
            "experiment_id": plugin_util.experiment_id(request.environ),
            "plugin_name": PLUGIN_NAME,
        }

    def _tags(self, request):
        """`{run: {tag: (max_step, max_wall_time)}}` of the plugin's data."""
        listed = self._data_provider.list_tensors(
            **self._provider_arguments(request)
        )
        return {
            run: {
                tag: (series.max_step, series.max_wall_time)
                for tag, series in by_tag.items()
            }
            for run, by_tag in listed.items()
        }

    def _read(self, request, listed, wanted):
        """`{run: {tag: (steps, arrays)}}` of the `wanted` `(run, tag)`s.

        A series is read from the data provider once and kept until its
        latest step or time changes in `listed` (the `_tags` answer), so
        moving the step slider does not convert every step again.
        """
        wanted = [(r, t) for r, t in wanted if t in listed.get(r, {})]
        experiment = plugin_util.experiment_id(request.environ)
        found = {
            (run, tag): self._cache.get(
                (experiment, run, tag), listed[run][tag]
            )
            for run, tag in wanted
        }
        missing = [key for key, series in found.items() if series is None]
        if missing:
            read = self._data_provider.read_tensors(
                **self._provider_arguments(request),
                downsample=_ALL_STEPS,
                run_tag_filter=provider.RunTagFilter(
                    runs={r for r, _ in missing}, tags={t for _, t in missing}
                ),
            )
            for run, tag in missing:
                series = read.get(run, {}).get(tag) or []
                found[run, tag] = data.by_step(
                    (datum.step, datum.numpy) for datum in series
                )
                self._cache.store(
                    (experiment, run, tag), listed[run][tag], found[run, tag]
                )
        by_run = {}
        for (run, tag), series in found.items():
            if series[0]:
                by_run.setdefault(run, {})[tag] = series
        return by_run

    @wrappers.Request.application
    def _serve_runs(self, request):
        steps = {
            run: {tag: latest for tag, (latest, _) in by_tag.items()}
            for run, by_tag in self._tags(request).items()
        }
        return _json(request, {"runs": data.catalogue(steps)})

    @wrappers.Request.application
    def _serve_profile(self, request):
        quantity = _argument(request, "quantity")
        step = _argument(request, "step", int, default=-1)
        listed = self._tags(request)
        read = self._read(
            request,
            listed,
            [
                (run, tag)
                for run, by_tag in listed.items()
                for tag in by_tag
                if (data.parse_tag(tag) or ())[::2]
                == (data.PROFILE_KIND, quantity)
            ],
        )
        all_steps = data.union_of_steps(
            series for by_tag in read.values() for series in by_tag.values()
        )
        series = []
        for run in sorted(read):
            for tag in sorted(read[run]):
                steps, values = read[run][tag]
                index = data.at_step(steps, None if step < 0 else step)
                series.append(
                    {
                        "run": run,
                        "layer": data.parse_tag(tag)[1],
                        "step": steps[index],
                    }
                    | data.profile(values[index], MAX_POINTS)
                )
        return _json(
            request,
            {"quantity": quantity, "steps": all_steps, "series": series},
        )

    @wrappers.Request.application
    def _serve_heatmap(self, request):
        run = _argument(request, "run")
        tag = _argument(request, "tag")
        if (data.parse_tag(tag) or ("",))[0] not in data.VECTOR_KINDS:
            raise errors.InvalidArgumentError(
                "tag must be a per-timestep vector of the logger, "
                f"<kind>/<layer>/<name> with kind one of "
                f"{', '.join(data.VECTOR_KINDS)}. Received: tag={tag!r}"
            )
        found = self._read(request, self._tags(request), [(run, tag)])
        found = found.get(run, {})
        if tag not in found:
            raise errors.NotFoundError(f"No data for run {run!r}, tag {tag!r}")
        steps, values = found[tag]
        payload = data.heatmap(steps, values, MAX_ROWS, MAX_COLUMNS)
        return _json(request, {"run": run, "tag": tag} | payload)

    @wrappers.Request.application
    def _serve_sequence(self, request):
        run = _argument(request, "run")
        layer = _argument(request, "layer")
        step = _argument(request, "step", int, default=-1)
        listed = self._tags(request)
        wanted = [
            (run, tag)
            for tag in listed.get(run, {})
            if (data.parse_tag(tag) or ())[:2]
            == (data.GATE_SEQUENCE_KIND, layer)
        ]
        found = self._read(request, listed, wanted).get(run, {})
        if not found:
            raise errors.NotFoundError(
                f"No gate sequences for run {run!r}, layer {layer!r}"
            )
        steps = data.union_of_steps(found.values())
        chosen = steps[data.at_step(steps, None if step < 0 else step)]
        gates = {}
        for tag, (tag_steps, values) in sorted(found.items()):
            index = data.at_step(tag_steps, chosen)
            reduced, units, timesteps = data.block_mean(
                np.atleast_2d(values[index]), MAX_UNITS, MAX_COLUMNS
            )
            gates[data.parse_tag(tag)[2]] = {
                "values": data.json_values(reduced),
                "units": units.tolist(),
                "timesteps": timesteps.tolist(),
                "shape": list(values[index].shape),
            }
        return _json(
            request,
            {"run": run, "layer": layer, "steps": steps, "step": chosen}
            | {"gates": gates},
        )

"""The "Timesteps" TensorBoard dashboard of keras_gated.

Installed with the package and found by TensorBoard through the
`tensorboard_plugins` entry point: `tensorboard --logdir logs` shows a
"Timesteps" tab for runs written by `keras_gated.TimestepGradientLogger`.
`plugin.py` holds the TensorBoard plugin and its JSON routes, `data.py`
the plain functions they answer with, `static/` the page (one ES module
and the vendored Apache ECharts).
"""

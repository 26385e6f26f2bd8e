"""Probes: the instruments behind the per-timestep gradients.

`probe_states` adds perturbations to the states (dL/dh_t, dL/dc_t);
`probe_pre_activations` adds them to the input half of the gate
pre-activations and records what the step's weights multiplied (the
per-timestep contributions to the weight gradients,
`keras_gated.decomposition`).
"""

import contextlib

from keras import ops


class ProbedStates:
    """`probe_states` for a sequence layer with `state_names`."""

    _probes = None
    _step_probe = None

    @contextlib.contextmanager
    def probe_states(self, perturbations):
        """Adds tensors to the states at every step, while active.

        The instrument behind the per-timestep gradient norms: with zero
        `perturbations` the outputs are unchanged, and the gradient of a
        loss with respect to `perturbations[name][:, t]` is the total
        derivative dL/dh_t (or dL/dc_t), through the recurrence and through
        everything after the layer.

        Args:
            perturbations: dict mapping state names (`"hidden"`, and
                `"cell"` for the LSTM) to tensors or variables of shape
                `(batch, timesteps, units)`, in the input's time order
                (also with `go_backwards=True`). The cell adds them where it
                computes the states (c_t before h_t = o_t * tanh(c_t)); at
                a masked step, to the carried-over states, so dL/dh_t at a
                padded step is the gradient of the state carried through
                it, not zero.

        Example:

        >>> lstm = keras_gated.LSTM(4)
        >>> x = np.random.rand(2, 6, 3).astype("float32")
        >>> probe = {"hidden": tf.zeros((2, 6, 4)), "cell": tf.zeros((2, 6, 4))}
        >>> with tf.GradientTape() as tape:
        ...     tape.watch(probe)
        ...     with lstm.probe_states(probe):
        ...         loss = tf.reduce_sum(lstm(x))
        >>> tape.gradient(loss, probe)["cell"].shape
        TensorShape([2, 6, 4])
        """
        unknown = set(perturbations) - set(self.state_names)
        if unknown:
            raise ValueError(
                f"Layer '{self.name}' has states {self.state_names}. "
                f"Received perturbations for {sorted(unknown)}."
            )
        self._probes = dict(perturbations)
        try:
            yield
        finally:
            self._probes = None

    @contextlib.contextmanager
    def probe_pre_activations(self, perturbation, record):
        """Adds a tensor to the gate pre-activations at every step, while
        active, and records what the step's weights multiplied.

        The instrument behind the per-timestep weight-gradient
        contributions: with a zero `perturbation` the outputs are
        unchanged, and the gradient of a loss with respect to
        `perturbation[:, t]` is dL/dz_t, the gradient of the input half
        x_t W + b of the pre-activations at step t (zero at a masked step).
        The layer projects the inputs of every step ahead of its loop
        while this is active.

        Args:
            perturbation: `(batch, timesteps, n_gates * units)`, gate
                blocks in weight order, in the input's time order.
            record: a dict that each call fills with time-major tensors
                in processing order: `"inputs"` `(timesteps, batch,
                features)`, `"mask"` (`(timesteps, batch)` or None),
                `"input_mask"` and `"recurrent_mask"` (the dropout masks or
                None), `"initial_state"` (h_0), and `"sequences"`, the
                dict of `(timesteps, batch, units)` sequences with
                `"hidden"` and every gate of `cell.gate_names`.
        """
        # A closure: Keras would track (and copy) a dict set on a layer.
        self._step_probe = lambda: (perturbation, record)
        try:
            yield
        finally:
            self._step_probe = None

    def _time_major_probe(self, probe):
        probe = ops.transpose(ops.cast(probe, self.compute_dtype), (1, 0, 2))
        return ops.flip(probe, axis=0) if self.go_backwards else probe

    def _probe_tensors(self):
        """The active state probes as time-major tensors in processing
        order."""
        return {
            name: self._time_major_probe(probe)
            for name, probe in (self._probes or {}).items()
        }

    def _step_probe_tensor(self):
        """The active pre-activation probe, time-major in processing order,
        or None."""
        if self._step_probe is None:
            return None
        return self._time_major_probe(self._step_probe()[0])

    def _record_step(self, **tensors):
        """Fills the active pre-activation probe's record."""
        if self._step_probe is not None:
            self._step_probe()[1].update(tensors)

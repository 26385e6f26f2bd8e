"""State probes: the instrument behind the per-timestep state gradients."""

import contextlib

from keras import ops


class ProbedStates:
    """`probe_states` for a sequence layer with `state_names`."""

    _probes = None

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

    def _probe_tensors(self):
        """The active probes as time-major tensors in processing order."""
        tensors = {}
        for name, probe in (self._probes or {}).items():
            probe = ops.transpose(
                ops.cast(probe, self.compute_dtype), (1, 0, 2)
            )
            tensors[name] = (
                ops.flip(probe, axis=0) if self.go_backwards else probe
            )
        return tensors

"""``OnnxPolicy``: the exported policy on onnxruntime, the class the ROS 2 policy node and ``sim2real eval`` run.

Needs numpy and onnxruntime only (no torch), so it runs on a robot's onboard computer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sim2real.export.contract import ContractError, check_contract, describe_contract, env_contract, from_metadata

OBS_INPUT, AGENT_INPUT = "obs", "agent"
ACTION_OUTPUT, COMMAND_OUTPUT = "action", "command"


class OnnxPolicy:
    """A sim2real ONNX policy on a single-threaded onnxruntime session.

    The graph holds the observation normalisation, the agent id, the deterministic action (clipped to its
    bounds) and, for the drones, the physical command. The contract stored in the model is checked against
    whatever the caller declares, and a bundle directory is verified (hashes, files, contract) before loading.

    Args:
        path: ``policy.onnx`` or a bundle directory holding one (then the bundle is verified first).
        env_id, obs_layout, action_type, num_agents, obs_dim: what the caller will feed; each one given is
            compared with the model's contract and a mismatch raises ContractError.
        declared: more contract keys to check (see ``sim2real.export.contract``), e.g. ``command``.

    Raises:
        FileNotFoundError: no such file.
        ContractError: not a sim2real policy, a missing metadata key, or a declared value that differs.
        sim2real.export.bundle.BundleError: a bundle that fails verification.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        env_id: str | None = None,
        obs_layout: Any = None,
        action_type: str | None = None,
        num_agents: int | None = None,
        obs_dim: int | None = None,
        declared: dict[str, Any] | None = None,
    ) -> None:
        path = Path(path)
        self.manifest: dict[str, Any] | None = None
        if path.is_dir():
            from sim2real.export.bundle import POLICY_FILE, verify_bundle

            self.manifest = verify_bundle(path)
            path = path / POLICY_FILE
        self.path = path
        self.session = open_session(path)
        self.metadata: dict[str, str] = dict(self.session.get_modelmeta().custom_metadata_map)
        self.contract = from_metadata(self.metadata, source=str(path))
        self.model_version = self.metadata.get("model_version")
        given = {"env_id": env_id, "obs_layout": obs_layout, "action_type": action_type}
        given |= {"num_agents": num_agents, "obs_dim": obs_dim, **(declared or {})}
        check_contract(self.contract, {k: v for k, v in given.items() if v is not None}, source=str(path))

        self.num_agents = int(self.contract["num_agents"])
        self.obs_dim = int(self.contract["obs_dim"])
        self.discrete = self.contract["action_type"] == "discrete"
        inputs = {i.name: i.shape for i in self.session.get_inputs()}
        outputs = {o.name: o.shape for o in self.session.get_outputs()}
        if OBS_INPUT not in inputs or ACTION_OUTPUT not in outputs:
            raise ContractError(
                f"{path} needs an input {OBS_INPUT!r} and an output {ACTION_OUTPUT!r}; it has inputs "
                f"{list(inputs)} and outputs {list(outputs)}"
            )
        width = {"obs": (inputs[OBS_INPUT], self.obs_dim)}
        if not self.discrete:
            width["action"] = (outputs[ACTION_OUTPUT], int(self.contract["action_dim"]))
        for name, (shape, want) in width.items():
            if len(shape) != 2 or shape[1] != want:
                raise ContractError(
                    f"{path}: the graph's {name} shape {shape} disagrees with its contract ([batch, {want}])"
                )
        self.uses_agent_id = AGENT_INPUT in inputs
        self.has_command = COMMAND_OUTPUT in outputs
        self._outputs = [ACTION_OUTPUT] + ([COMMAND_OUTPUT] if self.has_command else [])
        self._agent_ids: dict[tuple, np.ndarray] = {}

    # ------------------------------------------------------------------ checks
    def check_env(self, env: Any, env_id: str) -> None:
        """Raise ContractError if a sim2real env (registered as ``env_id``) does not match this policy."""
        check_contract(self.contract, env_contract(env, env_id), source=str(self.path))

    def check(self, **declared: Any) -> None:
        """Compare any contract keys (``env_id=..., num_agents=...``) with the model; ContractError on a mismatch."""
        check_contract(self.contract, declared, source=str(self.path))

    # ------------------------------------------------------------------ inference
    def act(self, obs: np.ndarray, agent_ids: np.ndarray | None = None) -> np.ndarray:
        """Actions for observations ``[N, D]`` or ``[E, N, D]``: ``[..., N, A]`` float32 (or ``[..., N]`` int64).

        Rows on the second-to-last axis are agents ``0..N-1`` unless ``agent_ids [N]`` says otherwise (a
        robot running its own copy of the policy passes its own index with ``obs [1, D]``). Policies trained
        without an agent id (``uses_agent_id`` False) ignore ``agent_ids``.
        """
        return self.run(obs, agent_ids)[0]

    def command(self, obs: np.ndarray, agent_ids: np.ndarray | None = None) -> np.ndarray:
        """Physical commands ``[..., N, A]`` (m/s or RPM, see ``contract['command']``) for :meth:`act`'s inputs."""
        if not self.has_command:
            raise ContractError(f"{self.path} has no physical command output (env {self.contract['env_id']!r})")
        return self.run(obs, agent_ids)[1]

    __call__ = act

    def run(self, obs: np.ndarray, agent_ids: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
        """``(action, command)`` for :meth:`act`'s inputs; ``command`` is None when the model has none."""
        obs = np.asarray(obs, dtype=np.float32)
        if obs.ndim < 2 or obs.shape[-1] != self.obs_dim:
            raise ValueError(
                f"obs must be [num_agents, {self.obs_dim}] or [batch, num_agents, {self.obs_dim}], got {obs.shape}"
            )
        lead = obs.shape[:-1]
        feed = {OBS_INPUT: obs.reshape(-1, self.obs_dim)}
        if self.uses_agent_id:
            feed[AGENT_INPUT] = self._agent_feed(lead, agent_ids)
        outputs = self.session.run(self._outputs, feed)
        action = outputs[0].reshape(*lead, *outputs[0].shape[1:])
        command = outputs[1].reshape(*lead, *outputs[1].shape[1:]) if self.has_command else None
        return action, command

    def _agent_feed(self, lead: tuple[int, ...], agent_ids: Any) -> np.ndarray:
        """The ``agent`` input ``[prod(lead)]`` int64: ids along the agent axis, tiled over the batch (cached)."""
        if agent_ids is None:
            ids = None
        elif isinstance(agent_ids, (list, tuple)):
            ids = tuple(agent_ids)
        else:
            ids = tuple(np.ravel(agent_ids).tolist())
        key = (lead, ids)
        feed = self._agent_ids.get(key)
        if feed is None:
            feed = self._build_agent_feed(lead, ids)
            if len(self._agent_ids) >= 256:
                self._agent_ids.clear()
            self._agent_ids[key] = feed
        return feed

    def _build_agent_feed(self, lead: tuple[int, ...], ids: tuple | None) -> np.ndarray:
        n = lead[-1]
        if ids is None:
            if n != self.num_agents:
                raise ValueError(
                    f"obs has {n} agents on its agent axis but the policy was trained with {self.num_agents} "
                    "(it appends a one-hot agent id): pass agent_ids to say which agents the rows are"
                )
            ids = tuple(range(n))
        valid = all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) and 0 <= i < self.num_agents for i in ids
        )
        if len(ids) != n or not valid:
            raise ValueError(
                f"agent_ids must be {n} integer indices in [0, {self.num_agents}) (one per row on the agent "
                f"axis), got {list(ids)}"
            )
        return np.ascontiguousarray(np.broadcast_to(np.asarray(ids, dtype=np.int64), lead).ravel())

    def describe(self) -> str:
        """A few lines: env, agents, observation fields, action and command."""
        return describe_contract(self.contract, self.model_version)


def open_session(path: str | Path) -> Any:
    """A single-threaded onnxruntime CPU session; ContractError if the file is missing or not loadable ONNX."""
    try:
        import onnxruntime as ort
    except ImportError as err:
        raise ImportError("running ONNX policies needs onnxruntime: pip install 'sim2real[deploy]'") from err
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no policy file at {path}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as err:  # onnxruntime raises its own exception types for unreadable files
        raise ContractError(f"{path} is not a loadable ONNX model (onnxruntime {ort.__version__}): {err}") from err

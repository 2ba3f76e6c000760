# One command sets up and runs the demo, one sets up and runs the tests. Both create .venv on first use.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: setup demo test lint bench bench-train bench-robust bench-ros clean

# The ROS 2 workspace packages install editable too (their nodes run as console scripts); colcon builds the
# same packages for distro ROS 2 on robots (ros2_ws/README.md).
ROS_PACKAGES := ros2_ws/src/s2r_ros ros2_ws/src/s2r_bench

$(BIN)/.installed: pyproject.toml constraints.txt $(addsuffix /setup.py,$(ROS_PACKAGES))
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]" $(addprefix -e ,$(ROS_PACKAGES))
	touch $@

setup: $(BIN)/.installed

demo: setup
	$(BIN)/sim2real demo --out runs/demo

lint: setup
	$(BIN)/ruff check sim2real tests benchmarks ros2_ws

test: lint
	$(BIN)/python -m pytest

bench: setup
	$(BIN)/python benchmarks/sim_throughput.py --out benchmarks/results/sim_throughput.json
	$(BIN)/python benchmarks/physics_parity.py --out benchmarks/results/physics_parity.json
	$(BIN)/python benchmarks/perturb_overhead.py --out benchmarks/results/perturb_overhead.json
	$(BIN)/python benchmarks/onnx_latency.py --out benchmarks/results/onnx_latency.json

# Training wall-clock benchmarks (about 15 minutes: 1 + 5 + 5 minutes of training plus evaluation).
bench-train: setup
	$(BIN)/python benchmarks/train_drones.py --task hover1 --out benchmarks/results/train_hover1.json
	$(BIN)/python benchmarks/train_drones.py --task hover4 --out benchmarks/results/train_hover4.json
	$(BIN)/python benchmarks/train_drones.py --task hover4-random --out benchmarks/results/train_hover4_random.json
	$(BIN)/python benchmarks/train_drones.py --task nav4 --out benchmarks/results/train_nav4.json

# Robustness of six training methods x 3 seeds on 4-drone hover, standard suite on PyBullet (two workers).
bench-robust: setup
	$(BIN)/python benchmarks/robustness_drones.py --out benchmarks/results/robustness_drones.json

# ROS 2 bench loop: latency and rate at 100 Hz for 4 and 16 drones with and without the perturbation hop, at
# normal and real-time scheduling, and bench against simulation tracking error (about 7 minutes); and the
# policy node's controller step without ROS.
bench-ros: setup
	$(BIN)/python benchmarks/controller_step.py --out benchmarks/results/controller_step.json
	$(BIN)/python benchmarks/ros_loop.py --out benchmarks/results/ros_loop.json

clean:
	rm -rf $(VENV) runs .pytest_cache .ruff_cache *.egg-info

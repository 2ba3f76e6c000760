"""Perturbation specs: the three forms agree, round-trip, and invalid specs are rejected naming the field."""

from __future__ import annotations

import pytest
import yaml

from sim2real.envs import make
from sim2real.perturb import KINDS, SpecError, StreamPerturber, apply, parse_spec

STRING = "obs.gaussian(std=0.05,fields=pos)+agents.malicious(rate=0.05,mode=random,agents=random:2,start=10)"


def test_string_dict_and_yaml_forms_agree(tmp_path):
    from_string = parse_spec(STRING)
    assert [p.kind for p in from_string.perturbations] == ["obs.gaussian", "agents.malicious"]
    assert from_string.perturbations[0].params["fields"] == ["pos"]
    assert from_string.perturbations[1].agents == "random:2"
    assert from_string.perturbations[1].start == 10
    as_dict = from_string.to_dict()
    assert parse_spec(as_dict) == from_string
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(as_dict))
    assert parse_spec(path) == from_string
    nested = {
        "perturbations": [
            {"kind": "obs.gaussian", "std": 0.05, "fields": "pos"},
            {"kind": "agents.malicious", "rate": 0.05, "agents": {"random": 2}, "schedule": {"start": 10}},
        ]
    }
    assert parse_spec(nested) == from_string


def test_every_kind_documents_its_parameters():
    for name, cls in KINDS.items():
        assert cls.kind == name and cls.summary and cls.channel
        for pname, param in cls.params.items():
            assert param.doc, f"{name}.{pname} has no doc"


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("obs.gausian(std=1)", "unknown kind 'obs.gausian'"),
        ("obs.gaussian(stdev=1)", "unknown parameter 'stdev'"),
        ("obs.gaussian()", "missing required parameter 'std'"),
        ("obs.gaussian(std=-1)", "(obs.gaussian).std: -1.0 is below the minimum 0.0"),
        ("obs.dropout(rate=1.5)", "(obs.dropout).rate: 1.5 is above the maximum 1.0"),
        ("obs.dropout(rate=0.1,mode=freeze)", "(obs.dropout).mode: 'freeze' is not allowed; choose one of hold, zero"),
        ("agents.malicious(mode=evil)", "choose one of random, frozen, inverted, adversarial"),
        ("obs.delay(steps=1.5)", "(obs.delay).steps: expected an integer"),
        ("obs.gaussian(std=1,agents=some)", "(obs.gaussian).agents: 'some' is not an agent selector"),
        ("obs.gaussian(std=1,start=5,end=5)", "(obs.gaussian).end: 5 must be after start 5"),
        ("obs.clip(low=1,high=0)", "(obs.clip).low: 1.0 is above high 0.0"),
        ("dynamics.mass(scale=[1.2,0.8])", "(dynamics.mass).scale: range low 1.2 is above high 0.8"),
        ("timing.loss(rate=0.5,burst=0.5)", "(timing.loss).burst: 0.5 is below the minimum 1.0"),
        ("agents.malicious(k=3,agents=[0,1])", "(agents.malicious).k: 3 malicious agents but only 2 selected"),
        ("obs.gaussian(std=1,name=a)+obs.bias(value=1,name=a)", "names must be unique"),
        ("obs.gaussian(std=1", "unbalanced brackets"),
        ("obs.gaussian(std)", "needs the form key=value"),
    ],
)
def test_invalid_specs_name_the_field(spec, message):
    with pytest.raises(SpecError) as err:
        parse_spec(spec)
    assert message in str(err.value)


def test_yaml_errors_name_the_entry(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("perturbations:\n  - kind: obs.gaussian\n    std: 0.1\n  - kind: obs.bias\n    valu: 1\n")
    with pytest.raises(SpecError, match=r"perturbations\[1\] \(obs.bias\): unknown parameter 'valu'"):
        parse_spec(path)
    with pytest.raises(SpecError, match="does not exist"):
        parse_spec(tmp_path / "missing.yaml")
    with pytest.raises(SpecError, match="unknown key"):
        parse_spec({"perturbation": []})


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("obs.gaussian(std=1,fields=[foo])", "'foo' is neither a field nor a sensor"),
        ("obs.gaussian(std=1,agents=[7])", "names agent 7 but there are 4 agents"),
        ("obs.gaussian(std=1,agents=random:5)", "asks for more agents than the 4 there are"),
        ("obs.gaussian(std=1,agents=fraction:0.1)", "selects none"),
        ("action.stuck(dims=[3])", "actions have 3 dims"),
        ("obs.bias(value=[1,2],fields=vel)", "2 numbers for 3 hit columns"),
        ("agents.malicious(k=5)", "the swarm has 4"),
    ],
)
def test_binding_checks_the_env(spec, message):
    env = make("drone-hover", num_drones=4, action_type="vel")
    with pytest.raises(SpecError, match=message):
        apply(env, spec)
    env.close()


def test_dynamics_are_rejected_on_a_message_stream():
    with pytest.raises(SpecError, match="need a drone simulator env"):
        StreamPerturber("dynamics.mass(scale=1.2)", {"pos": 3})
    with pytest.raises(SpecError, match="no command"):
        StreamPerturber("action.noise(std=0.1)", {"pos": 3})

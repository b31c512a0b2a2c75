"""Shared by the deployment tests: deploy/template.yaml, parsed with CloudFormation's short forms."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

TEMPLATE = Path(__file__).resolve().parents[2] / "deploy" / "template.yaml"


class _CfnLoader(yaml.SafeLoader):
    """YAML loader that turns CloudFormation short forms (!Ref, !Sub, !If ...) into long forms."""


def _cfn_tag(loader: yaml.Loader, suffix: str, node: yaml.Node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "Condition":
        return {"Condition": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


_CfnLoader.add_multi_constructor("!", _cfn_tag)


@pytest.fixture(scope="module")
def template() -> dict:
    return yaml.load(TEMPLATE.read_text(), Loader=_CfnLoader)


NO_VALUE = object()


def resolve(value, conditions: dict[str, bool], names: dict[str, str]):
    """A template value as CloudFormation would make it: Fn::If decided by ``conditions``,
    AWS::NoValue dropped, Ref / Fn::GetAtt / Fn::Sub placeholders taken from ``names`` (keyed
    ``Name`` or ``Name.Attribute``, as written in Fn::Sub), Fn::Join joined."""
    if isinstance(value, dict) and len(value) == 1:
        (key, argument), = value.items()
        if key == "Fn::If":
            name, when_true, when_false = argument
            return resolve(when_true if conditions[name] else when_false, conditions, names)
        if key == "Ref":
            return NO_VALUE if argument == "AWS::NoValue" else names[argument]
        if key == "Fn::GetAtt":
            return names[".".join(argument) if isinstance(argument, list) else argument]
        if key == "Fn::Sub":
            assert isinstance(argument, str), "Fn::Sub with a variable map is not used here"
            return re.sub(r"\$\{([^}!]+)\}", lambda m: names[m.group(1)], argument)
        if key == "Fn::Join":
            separator, parts = argument
            parts = [resolve(part, conditions, names) for part in parts]
            return separator.join(p for p in parts if p is not NO_VALUE)
    if isinstance(value, dict):
        resolved = {k: resolve(v, conditions, names) for k, v in value.items()}
        return {k: v for k, v in resolved.items() if v is not NO_VALUE}
    if isinstance(value, list):
        return [v for v in (resolve(item, conditions, names) for item in value) if v is not NO_VALUE]
    return value

#!/usr/bin/env python3
"""Writes prometheusrule.yaml (a Prometheus Operator PrometheusRule) from
alerts.yaml, so that the two carry the same rules:

    python3 deploy/observability/prometheusrule.py          # rewrite it
    python3 deploy/observability/prometheusrule.py --check  # exit 1 if stale

deploy/check.py compares the two as well. Needs PyYAML.
"""

import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "alerts.yaml"
TARGET = HERE / "prometheusrule.yaml"

HEADER = """\
# Generated from alerts.yaml by prometheusrule.py; edit alerts.yaml and rerun
# `python3 deploy/observability/prometheusrule.py`. deploy/check.py fails
# while the two carry different rules.
#
# The Prometheus Operator picks this up if its ruleSelector matches these
# labels (kube-prometheus-stack's default wants `release: <its release>`:
# add that label, or set ruleSelectorNilUsesHelmValues=false).
"""


class Dumper(yaml.SafeDumper):
    pass


def _str(dumper, value):
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


Dumper.add_representer(str, _str)


def render() -> str:
    groups = yaml.safe_load(SOURCE.read_text())["groups"]
    rule = {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "PrometheusRule",
        "metadata": {
            "name": "airlock",
            "labels": {"app.kubernetes.io/name": "airlock", "app.kubernetes.io/component": "alerts"},
        },
        "spec": {"groups": groups},
    }
    return HEADER + yaml.dump(rule, Dumper=Dumper, sort_keys=False, width=1000, allow_unicode=True)


def main() -> int:
    text = render()
    if sys.argv[1:] == ["--check"]:
        if TARGET.read_text() != text:
            print(f"{TARGET.name} is stale; run python3 {Path(__file__).relative_to(HERE.parent.parent)}")
            return 1
        return 0
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Renders the Helm chart offline, as `helm lint --strict` and `helm template` would, with Helm's
own engine (the Go SDK, bound by the PyPI package helm-python-sdk: no helm binary, no cluster).

    render.py CHART_DIR RELEASE NAMESPACE OUT_FILE [VALUES_JSON]

Fails (exit 1) if the values break values.schema.json, if lint finds a warning or an error, or if
a template fails; otherwise writes every rendered manifest (NOTES.txt aside) to OUT_FILE as one
multi-document YAML file, for the schema validator. docs/deploy.md uses it to preview a release.
"""

import json
import sys

import helm_python


def main() -> int:
    if len(sys.argv) not in (5, 6):
        print(__doc__, file=sys.stderr)
        return 2
    chart_dir, release, namespace, out_file = sys.argv[1:5]
    values = json.loads(sys.argv[5]) if len(sys.argv) == 6 else {}
    chart = helm_python.Chart.load(chart_dir)
    chart.validate_schema(values)
    report = helm_python.lint(chart_dir, values, strict=True, namespace=namespace)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + [
        {"severity": 3, "path": "", "error": e} for e in report["errors"]
    ]
    for m in problems:
        print(f"helm lint: {m['path']}: {m['error']}", file=sys.stderr)
    if problems:
        return 1
    rendered = chart.render(values, name=release, namespace=namespace, is_install=True)
    documents = [
        text.strip()
        for path, text in sorted(rendered.items())
        if not path.endswith("NOTES.txt") and text.strip()
    ]
    with open(out_file, "w", encoding="utf-8") as out:
        out.write("\n---\n".join(documents) + "\n")
    print(f"rendered {len(documents)} templates of {chart_dir} as release {release} into {out_file}")
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except helm_python.HelmError as e:
        print(f"helm: {e}", file=sys.stderr)
        sys.exit(1)

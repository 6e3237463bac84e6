"""Write requirements.lock / requirements-dev.lock from two `pip install --dry-run --report` files (make lock)."""

import json
import sys

for report, target, label in (
    (sys.argv[1], "requirements.lock", "runtime"),
    (sys.argv[2], "requirements-dev.lock", "runtime + development"),
):
    with open(report) as handle:
        installs = json.load(handle)["install"]
    pins = sorted(
        f"{item['metadata']['name'].lower()}=={item['metadata']['version']}"
        for item in installs
        if item["metadata"]["name"].lower() != "ayrshare-connect"
    )
    with open(target, "w") as handle:
        handle.write(f"# Fully pinned {label} dependency set, resolved from pyproject.toml (see Makefile: lock).\n")
        handle.write("\n".join(pins) + "\n")
    print(f"{target}: {len(pins)} packages")

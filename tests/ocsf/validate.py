#!/usr/bin/env python3
"""Validates OCSF events (JSON lines) against the published OCSF class definitions
(PyPI ocsf-json-schema: the schema server's exports turned into JSON Schema), each
against its class and the profiles its metadata names. Usage: validate.py FILE...

Prints one JSON object: {"classes": {class_uid: count}, "errors": [...]}; exits 1
when any event does not validate."""

import json
import sys

from jsonschema import Draft202012Validator
from ocsf_json_schema import OcsfJsonSchemaEmbedded, get_ocsf_schema

schemas = {}
validators = {}


def validator(version, class_uid, profiles):
    key = (version, class_uid, tuple(sorted(profiles)))
    if key not in validators:
        if version not in schemas:
            schemas[version] = OcsfJsonSchemaEmbedded(get_ocsf_schema(version))
        s = schemas[version]
        name = s.lookup_class_name_from_uid(class_uid)
        validators[key] = Draft202012Validator(s.get_class_schema(name, list(profiles)))
    return validators[key]


def main():
    classes, errors = {}, []
    for path in sys.argv[1:]:
        with open(path) as f:
            for n, line in enumerate(f, 1):
                if not line.strip():
                    continue
                ev = json.loads(line)
                meta = ev.get("metadata", {})
                try:
                    v = validator(meta.get("version"), ev.get("class_uid"), meta.get("profiles", []))
                except Exception as e:  # an unknown class or version is an error too
                    errors.append(f"{path}:{n}: {e!r}")
                    continue
                for err in v.iter_errors(ev):
                    errors.append(f"{path}:{n}: {'/'.join(map(str, err.path))}: {err.message}")
                classes[ev.get("class_uid")] = classes.get(ev.get("class_uid"), 0) + 1
    print(json.dumps({"classes": classes, "errors": errors[:50], "error_count": len(errors)}))
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()

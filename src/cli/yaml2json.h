/* YAML to JSON for `legion pod apply -f` (libyaml): manifests are mostly
 * written in YAML, and the API takes JSON. */
#pragma once

#include <stddef.h>

#include <jansson.h>

#include "common/util.h"

/* Parse every document of a YAML stream into a JSON array of documents
 * (empty documents are skipped). Plain scalars are typed as YAML 1.2's core
 * schema does (null, true/false, integers, floats), quoted ones and `!!str`
 * are strings; mapping keys must be scalars and unique. Anchors and aliases
 * are rejected. -EINVAL with err giving the line and the reason. */
int lg_yaml_to_json(const char *buf, size_t len, json_t **ret, struct lg_error *err);

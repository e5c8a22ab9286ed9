/* CPU and memory as the API's specs write them (apps, pool groups, session
 * pools): one reading for every module that accepts them, so that what the
 * API validates is what the node is given. Pure functions; negative errno
 * on failure. (Kubernetes quantities of pods are src/kube's
 * lg_kube_quantity_*: a different grammar.) */
#pragma once

#include <jansson.h>
#include <stdint.h>

#include "common/util.h"

/* 2 or 0.5 CPUs, or "500m" -> millicores, above 0 and at most 1024 CPUs. */
int lg_spec_cpu(const json_t *v, uint64_t *ret);
/* 1048576, "256Mi", "1G" -> bytes, from 4 MiB to 64 GiB (-ERANGE outside). */
int lg_spec_memory(const json_t *v, uint64_t *ret);

/* -EINVAL when obj has fields not in allowed (NULL-terminated), with err
 * naming them: "unknown fields in <what>: `a`, `b`". */
int lg_spec_only_fields(const json_t *obj, const char *what, const char *const *allowed, struct lg_error *err);

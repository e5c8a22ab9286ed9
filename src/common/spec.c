/* CPU and memory fields of API specs (see spec.h). */
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>

#include "common/spec.h"
#include "common/util.h"

int lg_spec_cpu(const json_t *v, uint64_t *ret) {
        if (json_is_integer(v) && json_integer_value(v) > 0 && json_integer_value(v) <= 1024) {
                *ret = (uint64_t) json_integer_value(v) * 1000;
                return 0;
        }
        /* jansson holds no NaN or infinity; the comparisons refuse them
         * anyway. */
        if (json_is_real(v) && json_real_value(v) > 0 && json_real_value(v) <= 1024) {
                *ret = (uint64_t) (json_real_value(v) * 1000 + 0.5);
                return *ret ? 0 : -EINVAL;
        }
        if (!json_is_string(v))
                return -EINVAL;
        return lg_parse_millis(json_string_value(v), 1024000, ret);
}

int lg_spec_memory(const json_t *v, uint64_t *ret) {
        if (json_is_integer(v) && json_integer_value(v) > 0) {
                *ret = (uint64_t) json_integer_value(v);
        } else if (!json_is_string(v) || lg_parse_size(json_string_value(v), ret) < 0) {
                return -EINVAL;
        }
        return *ret >= (4u << 20) && *ret <= (64ull << 30) ? 0 : -ERANGE;
}

int lg_spec_only_fields(const json_t *obj, const char *what, const char *const *allowed, struct lg_error *err) {
        char bad[512] = "";
        size_t off = 0;
        const char *k;
        json_t *v;
        json_object_foreach((json_t *) obj, k, v) {
                bool ok = false;
                for (size_t i = 0; allowed[i] && !ok; i++)
                        ok = !strcmp(k, allowed[i]);
                if (!ok && off < sizeof(bad) - 1)
                        off += (size_t) snprintf(bad + off, sizeof(bad) - off, "%s`%.64s`", off ? ", " : "", k);
        }
        if (!off)
                return 0;
        return lg_error_setm(err, EINVAL, "unknown field%s in %s: %s", strchr(bad, ',') ? "s" : "", what, bad);
}

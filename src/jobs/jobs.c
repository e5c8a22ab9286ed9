/* The jobs library (jobs.h): Job records in the store, the submit spec
 * (checked field by field and normalized, every default filled in), the
 * node's capacity for jobs and the Pending queue (admitted in submit
 * order; waitingFor says what a job waits for), the lifecycle common to
 * every engine (Starting, Running, the final phases with their reasons,
 * finishedAt once the last sandbox is gone), the deadline, periodic
 * metering writes, stop, delete, logs and watches. Role sandboxes are in
 * jobs-run.c, the engines' own rules in engine-*.c, adoption after a
 * restart in jobs-restore.c. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "common/spec.h"
#include "jobs/engine.h"
#include "jobs/jobpool.h"
#include "jobs/jobs-internal.h"

#define DEFAULT_LOG_MAX (10ull << 20)
#define METER_MS 10000
#define NAME_MAX_LEN 53
#define MAX_DURATION_MAX (366ll * 86400)
#define KEEP_ALIVE_MAX (30ll * 86400)
#define ARGS_BYTES_MAX (256u << 10)

struct lg_jobs_watch {
        lg_jobs *jobs;
        struct lg_jobs_watch *next;
        char ns[LG_STORE_NAME_MAX + 1], name[LG_STORE_NAME_MAX + 1];
        lg_jobs_watch_cb cb;
        void *ud;
        bool dirty;
};

/* ---- time ---------------------------------------------------------------------- */

int64_t jobs_now_ms(void) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        return (int64_t) ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void jobs_format_ms(int64_t ms, char *buf, size_t cap) {
        char s[40];
        if (lg_store_format_time(ms / 1000, s, sizeof(s)) < 0) {
                snprintf(buf, cap, "%s", "");
                return;
        }
        s[strlen(s) - 1] = '\0'; /* the Z */
        snprintf(buf, cap, "%s.%03dZ", s, (int) (ms % 1000));
}

int jobs_parse_ms(const char *s, int64_t *ret) {
        char base[32];
        size_t n = s ? strlen(s) : 0;
        int frac = 0;
        if (n == 24 && s[19] == '.' && s[23] == 'Z') {
                for (int i = 20; i < 23; i++) {
                        if (s[i] < '0' || s[i] > '9')
                                return -EINVAL;
                        frac = frac * 10 + (s[i] - '0');
                }
                snprintf(base, sizeof(base), "%.19sZ", s);
        } else if (n == 20) {
                snprintf(base, sizeof(base), "%s", s);
        } else {
                return -EINVAL;
        }
        int64_t t;
        int r = lg_store_parse_time(base, &t);
        if (r < 0)
                return r;
        *ret = t * 1000 + frac;
        return 0;
}

const char *job_phase_name(enum job_phase p) {
        static const char *const names[] = {"Pending", "Starting", "Running", "Succeeded", "Failed", "Stopped"};
        return names[p];
}

int job_phase_parse(const char *s, enum job_phase *ret) {
        for (int p = JOB_PENDING; s && p <= JOB_STOPPED; p++)
                if (!strcmp(s, job_phase_name((enum job_phase) p))) {
                        *ret = (enum job_phase) p;
                        return 0;
                }
        return -EINVAL;
}

/* ---- quantities in messages ------------------------------------------------------ */

static void fmt_cpu(uint64_t millis, char *buf, size_t cap) {
        if (millis % 1000 == 0)
                snprintf(buf, cap, "%llu vCPU", (unsigned long long) (millis / 1000));
        else
                snprintf(buf, cap, "%.3g vCPU", (double) millis / 1000.0);
}

static void fmt_mem(uint64_t bytes, char *buf, size_t cap) {
        if (bytes >= (1ull << 30))
                snprintf(buf, cap, "%.3g GiB", (double) bytes / (double) (1ull << 30));
        else
                snprintf(buf, cap, "%.3g MiB", (double) bytes / (double) (1ull << 20));
}

/* ---- capacity ------------------------------------------------------------------- */

int jobs_capacity_take(lg_jobs *jobs, uint64_t cpu_millis, uint64_t memory_bytes, char *waiting, size_t cap,
                       struct lg_error *err) {
        char c[32], m[32], cc[32], mc[32];
        fmt_cpu(cpu_millis, c, sizeof(c));
        fmt_mem(memory_bytes, m, sizeof(m));
        if (cpu_millis > jobs->cpu_cap || memory_bytes > jobs->mem_cap) {
                fmt_cpu(jobs->cpu_cap, cc, sizeof(cc));
                fmt_mem(jobs->mem_cap, mc, sizeof(mc));
                return lg_error_setm(err, E2BIG,
                                     "job needs %s and %s; this node gives jobs at most %s and %s "
                                     "(legiond --job-cpu, --job-memory)",
                                     c, m, cc, mc);
        }
        uint64_t free_cpu = jobs->cpu_cap - jobs->cpu_used, free_mem = jobs->mem_cap - jobs->mem_used;
        if (cpu_millis > free_cpu || memory_bytes > free_mem) {
                fmt_cpu(free_cpu, cc, sizeof(cc));
                fmt_mem(free_mem, mc, sizeof(mc));
                if (waiting)
                        snprintf(waiting, cap, "%s and %s (free now: %s, %s)", c, m, cc, mc);
                return lg_error_setm(err, EAGAIN, "%s and %s (free now: %s, %s)", c, m, cc, mc);
        }
        jobs->cpu_used += cpu_millis;
        jobs->mem_used += memory_bytes;
        return 0;
}

static void capacity_give_quiet(lg_jobs *jobs, uint64_t cpu_millis, uint64_t memory_bytes) {
        jobs->cpu_used -= cpu_millis < jobs->cpu_used ? cpu_millis : jobs->cpu_used;
        jobs->mem_used -= memory_bytes < jobs->mem_used ? memory_bytes : jobs->mem_used;
}

void jobs_capacity_give(lg_jobs *jobs, uint64_t cpu_millis, uint64_t memory_bytes) {
        capacity_give_quiet(jobs, cpu_millis, memory_bytes);
        jobs_kick(jobs);
}

static uint64_t default_memory_capacity(void) {
        FILE *f = fopen("/proc/meminfo", "re");
        unsigned long long kib = 0;
        char line[256];
        while (f && fgets(line, sizeof(line), f))
                if (sscanf(line, "MemTotal: %llu kB", &kib) == 1)
                        break;
        if (f)
                fclose(f);
        return kib ? kib * 1024 / 4 * 3 : (4ull << 30);
}

/* ---- spec ------------------------------------------------------------------------- */

static bool printable_string(const json_t *v, size_t max) {
        if (!json_is_string(v))
                return false;
        const char *s = json_string_value(v);
        size_t n = json_string_length(v);
        if (n != strlen(s) || n > max)
                return false; /* a NUL inside, or too long */
        for (size_t i = 0; i < n; i++)
                if ((unsigned char) s[i] < 0x20 || s[i] == 0x7f)
                        return false;
        return true;
}

static void shown(const json_t *v, char *buf, size_t cap) {
        char *text = json_dumps(v, JSON_ENCODE_ANY | JSON_COMPACT);
        lg_printable(text ? text : "?", buf, cap > 80 ? 80 : cap);
        free(text);
}

static int bad_value(struct lg_error *err, const char *field, const json_t *v, const char *why) {
        char s[96];
        shown(v, s, sizeof(s));
        return lg_error_setm(err, EINVAL, "bad `%s`: %s (%s)", field, s, why);
}

/* An integer field in [lo, hi]; absent = def. */
static int int_field(json_t *spec, const char *field, long long lo, long long hi, long long def,
                     struct lg_error *err) {
        json_t *v = json_object_get(spec, field);
        if (!v) {
                json_object_set_new(spec, field, json_integer(def));
                return 0;
        }
        if (!json_is_integer(v))
                return bad_value(err, field, v, "an integer is wanted");
        if (json_integer_value(v) < lo || json_integer_value(v) > hi) {
                char why[96];
                snprintf(why, sizeof(why), "from %lld to %lld", lo, hi);
                return bad_value(err, field, v, why);
        }
        return 0;
}

/* {"cpu", "memory"} with defaults, normalized to strings. */
static int resources_field(json_t *spec, const char *field, const char *const *extra, struct lg_error *err) {
        json_t *o = json_object_get(spec, field);
        if (!o) {
                o = json_object();
                json_object_set_new(spec, field, o);
        }
        if (!json_is_object(o))
                return bad_value(err, field, o, "an object is wanted");
        const char *allowed[8] = {"cpu", "memory"};
        size_t n = 2;
        for (size_t i = 0; extra && extra[i] && n < 7; i++)
                allowed[n++] = extra[i];
        allowed[n] = NULL;
        int r = lg_spec_only_fields(o, field, allowed, err);
        if (r < 0)
                return r;
        char name[64];
        uint64_t v;
        json_t *cpu = json_object_get(o, "cpu"), *mem = json_object_get(o, "memory");
        snprintf(name, sizeof(name), "%s.cpu", field);
        if (!cpu)
                json_object_set_new(o, "cpu", json_string("1"));
        else if (lg_spec_cpu(cpu, &v) < 0)
                return bad_value(err, name, cpu, "CPUs as \"2\", \"0.5\" or \"500m\", at most 1024");
        else if (!json_is_string(cpu)) {
                char s[32];
                snprintf(s, sizeof(s), "%llum", (unsigned long long) v);
                json_object_set_new(o, "cpu", json_string(s));
        }
        snprintf(name, sizeof(name), "%s.memory", field);
        if (!mem)
                json_object_set_new(o, "memory", json_string("1Gi"));
        else if (lg_spec_memory(mem, &v) < 0)
                return bad_value(err, name, mem, "bytes as \"512Mi\" or \"8g\", from 4 MiB to 64 GiB");
        else if (!json_is_string(mem))
                json_object_set_new(o, "memory", json_sprintf("%llu", (unsigned long long) v));
        return 0;
}

void jobs_spec_resources(const json_t *spec, const char *field, uint64_t *cpu_millis, uint64_t *memory_bytes) {
        const json_t *o = json_object_get(spec, field);
        if (lg_spec_cpu(json_object_get(o, "cpu"), cpu_millis) < 0)
                *cpu_millis = 1000;
        if (lg_spec_memory(json_object_get(o, "memory"), memory_bytes) < 0)
                *memory_bytes = 1ull << 30;
}

static int strings_field(json_t *spec, const char *field, size_t max_n, size_t *bytes, struct lg_error *err) {
        json_t *a = json_object_get(spec, field);
        if (!a)
                return 0;
        if (!json_is_array(a) || json_array_size(a) > max_n)
                return bad_value(err, field, a, "an array of strings is wanted");
        size_t i;
        json_t *x;
        json_array_foreach(a, i, x) {
                if (!json_is_string(x) || json_string_length(x) != strlen(json_string_value(x))) {
                        char name[64];
                        snprintf(name, sizeof(name), "%s[%zu]", field, i);
                        return bad_value(err, name, x, "a string without NUL is wanted");
                }
                *bytes += json_string_length(x) + 1;
        }
        if (*bytes > ARGS_BYTES_MAX)
                return lg_error_setm(err, EINVAL, "bad `%s`: more than 256 KiB of command line", field);
        return 0;
}

static bool env_name_ok(const char *k) {
        if (!*k || (*k >= '0' && *k <= '9') || strlen(k) > 255)
                return false;
        for (const char *p = k; *p; p++)
                if (!((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_'))
                        return false;
        return true;
}

static int master_field(json_t *spec, struct lg_error *err) {
        json_t *m = json_object_get(spec, "master");
        if (!m || json_is_null(m)) {
                json_object_del(spec, "master");
                return 0;
        }
        if (!json_is_object(m))
                return bad_value(err, "master", m, "{\"name\": N} or {\"address\": \"tcp://IP:PORT\"}");
        static const char *const allowed[] = {"name", "address", NULL};
        int r = lg_spec_only_fields(m, "master", allowed, err);
        if (r < 0)
                return r;
        json_t *name = json_object_get(m, "name"), *addr = json_object_get(m, "address");
        if (!!name == !!addr)
                return bad_value(err, "master", m, "one of `name` or `address`");
        if (name && (!json_is_string(name) || !lg_store_valid_name(json_string_value(name))))
                return bad_value(err, "master.name", name, "a DNS-1123 name");
        if (addr) {
                unsigned a, b, c, d, port;
                char tail;
                if (!printable_string(addr, 64) ||
                    sscanf(json_string_value(addr), "tcp://%u.%u.%u.%u:%u%c", &a, &b, &c, &d, &port, &tail) != 5 ||
                    a > 255 || b > 255 || c > 255 || d > 255 || port < 1 || port > 65535)
                        return bad_value(err, "master.address", addr, "tcp://IP:PORT");
                char canon[64];
                snprintf(canon, sizeof(canon), "tcp://%u.%u.%u.%u:%u", a, b, c, d, port);
                if (strcmp(canon, json_string_value(addr)))
                        return bad_value(err, "master.address", addr, "tcp://IP:PORT");
        }
        return 0;
}

/* The spec as stored: checked, every default filled in. */
int jobs_spec_normalize(lg_jobs *jobs, const json_t *in, json_t **ret, struct lg_error *err) {
        if (!json_is_object(in))
                return lg_error_setm(err, EINVAL, "the job spec must be a JSON object");
        static const char *const allowed[] = {
                "name", "engine", "image", "package", "file", "command", "args", "env", "driver", "executors",
                "completions", "parallelism", "retries", "master", "keepAlive", "keepAliveSeconds", "masterName",
                "masterResources", "maxDurationSeconds", NULL};
        int r = lg_spec_only_fields(in, "the job spec", allowed, err);
        if (r < 0)
                return r;
        json_t *spec = json_deep_copy(in);
        if (!spec)
                return lg_error_set(err, ENOMEM, "job spec");
        json_t *v;

        /* name */
        v = json_object_get(spec, "name");
        if (!v || (json_is_string(v) && !*json_string_value(v))) {
                char hex[9], name[16];
                lg_random_hex(hex, 4);
                snprintf(name, sizeof(name), "job-%s", hex);
                json_object_set_new(spec, "name", json_string(name));
        } else if (!json_is_string(v) || json_string_length(v) > NAME_MAX_LEN ||
                   !lg_store_valid_name(json_string_value(v))) {
                r = bad_value(err, "name", v, "a DNS-1123 name of at most 53 characters");
                goto fail;
        }
        /* engine */
        v = json_object_get(spec, "engine");
        if (!v)
                json_object_set_new(spec, "engine", json_string("dask"));
        else if (!json_is_string(v) || !jobs_engine_find(json_string_value(v))) {
                r = bad_value(err, "engine", v, "\"dask\" or \"indexed\"");
                goto fail;
        }
        const struct jobs_engine *eng = jobs_engine_find(json_string_value(json_object_get(spec, "engine")));
        /* image, package, file */
        v = json_object_get(spec, "image");
        if (!v)
                json_object_set_new(spec, "image", json_string(""));
        else if (!printable_string(v, 512)) {
                r = bad_value(err, "image", v, "an image reference");
                goto fail;
        }
        v = json_object_get(spec, "package");
        if (v) {
                const char *s = json_is_string(v) ? json_string_value(v) : "";
                if (!strncmp(s, "sha256:", 7))
                        s += 7;
                if (!json_is_string(v) || !lg_digest_valid(s)) {
                        r = bad_value(err, "package", v, "sha256:<64 hex digits>");
                        goto fail;
                }
                json_object_set_new(spec, "package", json_sprintf("sha256:%s", s));
        }
        v = json_object_get(spec, "file");
        if (v) {
                const char *s = json_is_string(v) ? json_string_value(v) : "";
                if (!printable_string(v, 1024) || !*s || *s == '/' || !strcmp(s, "..") || !strncmp(s, "../", 3) ||
                    strstr(s, "/../") || (strlen(s) >= 3 && !strcmp(s + strlen(s) - 3, "/.."))) {
                        r = bad_value(err, "file", v, "a relative path inside the job's files");
                        goto fail;
                }
        }
        size_t bytes = 0;
        if ((r = strings_field(spec, "command", 4096, &bytes, err)) < 0 ||
            (r = strings_field(spec, "args", 4096, &bytes, err)) < 0)
                goto fail;
        if (!json_object_get(spec, "args"))
                json_object_set_new(spec, "args", json_array());
        v = json_object_get(spec, "command");
        if (v && json_array_size(v) == 0) {
                r = bad_value(err, "command", v, "at least the program");
                goto fail;
        }
        /* env */
        v = json_object_get(spec, "env");
        if (!v) {
                json_object_set_new(spec, "env", json_object());
        } else {
                if (!json_is_object(v) || json_object_size(v) > 1024) {
                        r = bad_value(err, "env", v, "an object of at most 1024 strings");
                        goto fail;
                }
                const char *k;
                json_t *x;
                json_object_foreach(v, k, x) {
                        char name[300];
                        snprintf(name, sizeof(name), "env.%.255s", k);
                        if (!env_name_ok(k)) {
                                r = lg_error_setm(err, EINVAL, "bad `env`: the name `%.64s` is not [A-Za-z_][A-Za-z0-9_]*",
                                                  k);
                                goto fail;
                        }
                        if (!json_is_string(x) || json_string_length(x) != strlen(json_string_value(x))) {
                                r = bad_value(err, name, x, "a string without NUL is wanted");
                                goto fail;
                        }
                        bytes += strlen(k) + json_string_length(x) + 2;
                }
                if (bytes > ARGS_BYTES_MAX) {
                        r = lg_error_setm(err, EINVAL, "bad `env`: more than 256 KiB of command line and environment");
                        goto fail;
                }
        }
        /* resources */
        static const char *const count_field[] = {"count", NULL};
        if ((r = resources_field(spec, "driver", NULL, err)) < 0 ||
            (r = resources_field(spec, "executors", count_field, err)) < 0 ||
            (r = resources_field(spec, "masterResources", NULL, err)) < 0)
                goto fail;
        if ((r = int_field(json_object_get(spec, "executors"), "count", 1, 256, 2, err)) < 0) {
                lg_error_wrap(err, r, "executors");
                goto fail;
        }
        /* masters, lifetime */
        if ((r = master_field(spec, err)) < 0)
                goto fail;
        v = json_object_get(spec, "keepAlive");
        if (!v)
                json_object_set_new(spec, "keepAlive", json_false());
        else if (!json_is_boolean(v)) {
                r = bad_value(err, "keepAlive", v, "true or false");
                goto fail;
        }
        if ((r = int_field(spec, "keepAliveSeconds", 1, KEEP_ALIVE_MAX, 600, err)) < 0 ||
            (r = int_field(spec, "maxDurationSeconds", 0, MAX_DURATION_MAX, 0, err)) < 0)
                goto fail;
        v = json_object_get(spec, "masterName");
        if (!v)
                json_object_set_new(spec, "masterName", json_string(""));
        else if (!json_is_string(v) || (*json_string_value(v) && !lg_store_valid_name(json_string_value(v)))) {
                r = bad_value(err, "masterName", v, "a DNS-1123 name");
                goto fail;
        }
        r = eng->normalize(jobs, spec, err);
        if (r < 0)
                goto fail;
        *ret = spec;
        return 0;
fail:
        json_decref(spec);
        return r;
}

/* ---- jobs in memory ------------------------------------------------------------------- */

static struct job *find_job(lg_jobs *jobs, const char *ns, const char *name) {
        for (struct job *j = jobs->jobs; j; j = j->next)
                if (!strcmp(j->ns, ns) && !strcmp(j->name, name))
                        return j;
        return NULL;
}

void job_log_dir(const struct job *j, char *buf, size_t cap) {
        snprintf(buf, cap, "%s/%s/%s", j->jobs->jobs_dir, j->ns, j->name);
}

static void on_deadline(uv_timer_t *t);
static void on_meter(uv_timer_t *t);

static void job_free(struct job *j) {
        for (size_t i = 0; i < j->n_roles; i++)
                role_free(j->roles[i]);
        free(j->roles);
        json_decref(j->spec);
        lg_image_free(j->img);
        free(j->files_dir);
        free(j->eng_state); /* one allocation, the engine's */
        free(j);
}

static void job_maybe_free(struct job *j) {
        if (j->unlinked && j->handles_closed && j->handles == 0 && j->busy == 0 && !j->jobs->freeing)
                job_free(j);
}

static void job_handle_closed(uv_handle_t *h) {
        struct job *j = h->data;
        j->handles--;
        job_maybe_free(j);
}

/* Out of the list for good: its memory goes once nothing is under way. */
static void job_retire(struct job *j) {
        if (j->unlinked)
                return;
        lg_jobs *jobs = j->jobs;
        for (struct job **pp = &jobs->jobs; *pp; pp = &(*pp)->next)
                if (*pp == j) {
                        *pp = j->next;
                        break;
                }
        j->unlinked = true;
        j->handles_closed = true;
        uv_timer_t *timers[] = {&j->deadline, &j->meter, &j->engine_timer};
        for (size_t i = 0; i < ARRAY_SIZE(timers); i++) {
                uv_timer_stop(timers[i]);
                uv_close((uv_handle_t *) timers[i], job_handle_closed);
        }
}

struct job *job_new(lg_jobs *jobs, const char *ns, const char *name, const char *uid, const json_t *spec) {
        struct job *j = calloc(1, sizeof(*j));
        if (!j)
                return NULL;
        j->jobs = jobs;
        snprintf(j->ns, sizeof(j->ns), "%s", ns);
        snprintf(j->name, sizeof(j->name), "%s", name);
        snprintf(j->uid, sizeof(j->uid), "%s", uid);
        j->spec = json_deep_copy(spec);
        j->eng = jobs_engine_find(json_string_value(json_object_get(spec, "engine")));
        if (!j->spec || !j->eng) {
                json_decref(j->spec);
                free(j);
                return NULL;
        }
        uv_timer_t *timers[] = {&j->deadline, &j->meter, &j->engine_timer};
        for (size_t i = 0; i < ARRAY_SIZE(timers); i++) {
                uv_timer_init(jobs->loop, timers[i]);
                timers[i]->data = j;
                j->handles++;
        }
        /* Appended: the list is in submit order, the queue's order. */
        struct job **pp = &jobs->jobs;
        while (*pp)
                pp = &(*pp)->next;
        *pp = j;
        return j;
}

/* ---- status ------------------------------------------------------------------------------ */

static json_t *job_status_json(const struct job *j) {
        char t[40];
        json_t *s = json_pack("{s:s}", "phase", job_phase_name(j->phase));
        if (!s)
                return NULL;
        if (j->reason[0])
                json_object_set_new(s, "reason", json_string(j->reason));
        if (j->message[0])
                json_object_set_new(s, "message", json_string(j->message));
        if (j->waiting[0] && j->phase == JOB_PENDING)
                json_object_set_new(s, "waitingFor", json_string(j->waiting));
        jobs_format_ms(j->submitted_ms, t, sizeof(t));
        json_object_set_new(s, "submittedAt", json_string(t));
        if (j->started_ms) {
                jobs_format_ms(j->started_ms, t, sizeof(t));
                json_object_set_new(s, "startedAt", json_string(t));
        }
        if (j->finished_ms) {
                jobs_format_ms(j->finished_ms, t, sizeof(t));
                json_object_set_new(s, "finishedAt", json_string(t));
        }
        if (j->eng->wants_master)
                json_object_set_new(s, "master",
                                    json_pack("{s:s, s:s, s:b, s:b}", "name", j->master.name, "address",
                                              j->master.address, "reused", j->master.reused, "kept", j->master.kept));
        json_object_set_new(s, "roles", roles_json(j));
        if (j->eng->status)
                j->eng->status(j, s);
        json_object_set_new(s, "usage", usage_json(j, j->finished_ms ? j->finished_ms : jobs_now_ms()));
        return s;
}

static void notify_cb(uv_idle_t *h);

static void watches_mark(lg_jobs *jobs, const char *ns, const char *name) {
        bool any = false;
        for (lg_jobs_watch *w = jobs->watches; w; w = w->next)
                if (!strcmp(w->ns, ns) && !strcmp(w->name, name))
                        any = w->dirty = true;
        if (any && !jobs->notify_armed) {
                jobs->notify_armed = true;
                uv_idle_start(&jobs->notify, notify_cb);
        }
}

/* The watches of changed jobs, told on a loop turn of their own. */
static void notify_cb(uv_idle_t *h) {
        lg_jobs *jobs = h->data;
        uv_idle_stop(h);
        jobs->notify_armed = false;
        for (;;) {
                lg_jobs_watch *w = jobs->watches;
                while (w && !w->dirty)
                        w = w->next;
                if (!w)
                        break;
                w->dirty = false;
                struct lg_resource *r = NULL;
                if (lg_store_get(jobs->store, LG_KEY(JOBS_KIND, w->ns, w->name), &r, NULL) >= 0)
                        w->cb(r, w->ud); /* may remove any watch: the search starts again */
                lg_resource_free(r);
        }
}

void job_changed(struct job *j) {
        lg_jobs *jobs = j->jobs;
        if (j->deleted || jobs->freeing || j->detached)
                return;
        json_t *s = job_status_json(j);
        if (!s)
                return;
        struct lg_error err = {0};
        int r = lg_store_update_status(jobs->store, LG_KEY(JOBS_KIND, j->ns, j->name), 0, s, NULL, &err);
        json_decref(s);
        if (r == -ENOENT)
                j->deleted = true;
        else if (r > 0)
                watches_mark(jobs, j->ns, j->name);
}

/* finishedAt once a final job has nothing left; then it leaves memory. */
static void job_settle(struct job *j) {
        if (j->unlinked || j->busy > 0 || j->master_acquiring)
                return;
        if (!job_final(j) && !j->deleted)
                return;
        if (job_live_roles(j) > 0)
                return;
        if (!j->done_written && !j->deleted) {
                j->finished_ms = jobs_now_ms();
                j->done_written = true;
                job_changed(j);
        }
        job_retire(j);
}

void job_unbusy(struct job *j) {
        j->busy--;
        if (j->jobs->freeing)
                return;
        job_settle(j);
        job_maybe_free(j);
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

static void release_capacity(struct job *j, bool kick) {
        if (!j->holds_capacity)
                return;
        j->holds_capacity = false;
        if (kick)
                jobs_capacity_give(j->jobs, j->need_cpu, j->need_mem);
        else
                capacity_give_quiet(j->jobs, j->need_cpu, j->need_mem);
}

void job_finish(struct job *j, enum job_phase phase, const char *reason, const char *fmt, ...) {
        if (job_final(j))
                return;
        bool was_pending = j->phase == JOB_PENDING;
        j->phase = phase;
        snprintf(j->reason, sizeof(j->reason), "%s", reason);
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(j->message, sizeof(j->message), fmt, ap);
        va_end(ap);
        j->waiting[0] = '\0';
        uv_timer_stop(&j->deadline);
        uv_timer_stop(&j->meter);
        uv_timer_stop(&j->engine_timer);
        if (j->eng->stop)
                j->eng->stop(j);
        /* Newest first: executors go before the master they talk to. */
        for (size_t i = j->n_roles; i > 0; i--)
                role_kill(j->roles[i - 1]);
        if (j->master_acquiring) {
                j->master_acquiring = false;
                jobs_master_cancel(j->jobs, j->ns, j->name);
        }
        if (j->master_held) {
                j->master_held = false;
                jobs_master_release(j->jobs, j->ns, j->master.name, j->name);
        }
        release_capacity(j, true);
        if (was_pending)
                jobs_kick(j->jobs); /* the jobs it held back in the queue */
        job_changed(j);
        job_settle(j);
}

void job_requeue(struct job *j, const char *waiting) {
        uv_timer_stop(&j->deadline);
        uv_timer_stop(&j->meter);
        release_capacity(j, false); /* no kick: the master's release kicks */
        j->phase = JOB_PENDING;
        j->started_ms = 0;
        snprintf(j->waiting, sizeof(j->waiting), "%s", waiting);
        job_changed(j);
}

void job_set_running(struct job *j) {
        if (j->phase != JOB_STARTING)
                return;
        j->phase = JOB_RUNNING;
        job_changed(j);
}

void job_arm_timers(struct job *j) {
        long long max = json_integer_value(json_object_get(j->spec, "maxDurationSeconds"));
        if (max > 0) {
                int64_t left = (int64_t) max * 1000 - (jobs_now_ms() - j->started_ms);
                uv_timer_start(&j->deadline, on_deadline, left > 0 ? (uint64_t) left : 0, 0);
        }
        uv_timer_start(&j->meter, on_meter, METER_MS, METER_MS);
}

static void on_deadline(uv_timer_t *t) {
        struct job *j = t->data;
        long long max = json_integer_value(json_object_get(j->spec, "maxDurationSeconds"));
        job_finish(j, JOB_FAILED, "DeadlineExceeded", "the job ran longer than its maxDurationSeconds (%lld s)", max);
}

/* Usage grows while roles run: written every 10 s. */
static void on_meter(uv_timer_t *t) { job_changed(t->data); }

/* Admitted when what it needs is free: Starting, the engine makes its
 * roles. false: it waits (waitingFor says for what). */
static bool try_admit(struct job *j) {
        lg_jobs *jobs = j->jobs;
        char waiting[256];
        if (j->phase != JOB_PENDING)
                return true;
        int r = jobs_capacity_take(jobs, j->need_cpu, j->need_mem, waiting, sizeof(waiting), NULL);
        if (r < 0) {
                if (strcmp(waiting, j->waiting)) {
                        snprintf(j->waiting, sizeof(j->waiting), "%s", waiting);
                        job_changed(j);
                }
                return false;
        }
        j->holds_capacity = true;
        j->phase = JOB_STARTING;
        j->waiting[0] = '\0';
        j->started_ms = jobs_now_ms();
        j->admitted_ns = lg_now_ns();
        job_arm_timers(j);
        job_changed(j);
        j->eng->start(j);
        return true;
}

/* The queue, in submit order: a job that waits for capacity holds back
 * the ones after it (no overtaking by smaller jobs); a job requeued for
 * a busy master does not. */
static void kick_cb(uv_idle_t *h) {
        lg_jobs *jobs = h->data;
        uv_idle_stop(h);
        jobs->kick_armed = false;
        for (struct job *j = jobs->jobs; j; j = j->next) {
                if (j->phase != JOB_PENDING)
                        continue;
                bool master_wait = !strncmp(j->waiting, "master ", 7);
                if (!try_admit(j) && !master_wait)
                        break;
        }
}

void jobs_kick(lg_jobs *jobs) {
        if (jobs->kick_armed || jobs->freeing)
                return;
        jobs->kick_armed = true;
        uv_idle_start(&jobs->kick, kick_cb);
}

/* ---- rootfs and files ------------------------------------------------------------------ */

int jobs_image_resolve(lg_jobs *jobs, const char *image, struct lg_image **ret, struct lg_error *err) {
        *ret = NULL;
        if (!image || !*image)
                return 0;
        if (!jobs->images)
                return lg_error_setm(err, ENOENT, "image `%s`: this node runs jobs on the host rootfs only", image);
        int r = lg_image_get(jobs->images, image, ret, err);
        if (r == -ENOENT) {
                char s[200];
                lg_printable(image, s, sizeof(s));
                return lg_error_setm(err, ENOENT, "image `%s` is not in the store (legion image pull)", s);
        }
        return r;
}

int jobs_package_dir(lg_jobs *jobs, const char *package, char *buf, size_t cap, struct lg_error *err) {
        const char *hex = !strncmp(package, "sha256:", 7) ? package + 7 : package;
        if (!lg_digest_valid(hex))
                return lg_error_setm(err, EINVAL, "bad package digest");
        int r = -ENOENT;
        if (jobs->packages)
                r = lg_blob_extracted_path(jobs->packages, hex, buf, cap);
        else if (jobs->packages_dir)
                r = snprintf(buf, cap, "%s/%s", jobs->packages_dir, hex) < (int) cap ? 0 : -ENAMETOOLONG;
        struct stat st;
        if (r < 0 || stat(buf, &st) < 0 || !S_ISDIR(st.st_mode))
                return lg_error_setm(err, ENOENT, "package sha256:%.12s... was not uploaded (POST .../packages)", hex);
        return 0;
}

/* ---- the library ----------------------------------------------------------------------- */

int lg_jobs_new(const struct lg_jobs_config *cfg, lg_jobs **ret, struct lg_error *err) {
        if (!cfg->loop || !cfg->store || !cfg->agent || !cfg->run_dir || !cfg->jobs_dir)
                return lg_error_setm(err, EINVAL, "jobs: loop, store, agent, run_dir and jobs_dir are required");
        lg_jobs *jobs = calloc(1, sizeof(*jobs));
        if (!jobs)
                return lg_error_set(err, ENOMEM, "jobs");
        jobs->loop = cfg->loop;
        jobs->store = cfg->store;
        jobs->agent = cfg->agent;
        jobs->net = cfg->net;
        jobs->images = cfg->images;
        jobs->packages = cfg->packages;
        jobs->warm = cfg->warm;
        jobs->log_max_bytes = cfg->log_max_bytes ? cfg->log_max_bytes : DEFAULT_LOG_MAX;
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        jobs->cpu_cap = cfg->cpu_capacity_millis ? cfg->cpu_capacity_millis
                                                 : 4000ull * (uint64_t) (ncpu > 0 ? ncpu : 1);
        jobs->mem_cap = cfg->memory_capacity_bytes ? cfg->memory_capacity_bytes : default_memory_capacity();
        if (asprintf(&jobs->state_root, "%s/" JOBS_SANDBOX_DIR, cfg->run_dir) < 0)
                jobs->state_root = NULL;
        jobs->jobs_dir = strdup(cfg->jobs_dir);
        jobs->packages_dir = cfg->packages_dir ? strdup(cfg->packages_dir) : NULL;
        jobs->runtimes_dir = cfg->runtimes_dir ? strdup(cfg->runtimes_dir) : NULL;
        if (!jobs->state_root || !jobs->jobs_dir || (cfg->packages_dir && !jobs->packages_dir) ||
            (cfg->runtimes_dir && !jobs->runtimes_dir)) {
                lg_jobs_free(jobs);
                return lg_error_set(err, ENOMEM, "jobs");
        }
        int r = lg_mkdir_p(jobs->state_root, 0700);
        if (r >= 0)
                r = lg_mkdir_p(jobs->jobs_dir, 0750);
        if (r < 0) {
                lg_error_set(err, -r, "mkdir `%s`", jobs->state_root);
                lg_jobs_free(jobs);
                return r;
        }
        /* Sandboxes a previous legiond left that cannot be adopted. */
        lg_sandbox_gc(jobs->state_root, NULL);
        uv_idle_init(jobs->loop, &jobs->kick);
        jobs->kick.data = jobs;
        uv_idle_init(jobs->loop, &jobs->notify);
        jobs->notify.data = jobs;
        jobs->handles_open = true;
        struct lg_jobpool_config pc = {.loop = jobs->loop, .agent = jobs->agent, .net = jobs->net,
                                       .state_root = jobs->state_root, .runtimes_dir = jobs->runtimes_dir,
                                       .logs_dir = jobs->jobs_dir, .log_max_bytes = jobs->log_max_bytes};
        r = lg_jobpool_new(&pc, &jobs->pool, err);
        if (r >= 0 && jobs->warm) {
                struct lg_jobpool_rootfs host = {0};
                r = lg_jobpool_set(jobs->pool, "default", &host, jobs->warm, err);
        }
        if (r >= 0)
                r = jobs_masters_new(jobs, err);
        if (r < 0) {
                lg_jobs_free(jobs);
                return r;
        }
        *ret = jobs;
        return 0;
}

static void lib_handle_closed(uv_handle_t *h) {
        lg_jobs *jobs = h->data;
        jobs->pending_reqs--;
}

void lg_jobs_free(lg_jobs *jobs) {
        if (!jobs)
                return;
        if (jobs->handles_open) {
                /* Every role's sandbox goes (the records stay as they are). */
                for (struct job *j = jobs->jobs; j; j = j->next)
                        for (size_t i = 0; !j->detached && i < j->n_roles; i++)
                                role_kill(j->roles[i]);
                jobs->freeing = true;
                jobs_masters_free(jobs);
                for (struct job *j = jobs->jobs; j; j = j->next) {
                        j->unlinked = true;
                        uv_timer_t *timers[] = {&j->deadline, &j->meter, &j->engine_timer};
                        for (size_t i = 0; i < ARRAY_SIZE(timers); i++) {
                                uv_timer_stop(timers[i]);
                                uv_close((uv_handle_t *) timers[i], job_handle_closed);
                        }
                        if (j->eng->stop)
                                j->eng->stop(j);
                }
                jobs->pending_reqs += 2;
                uv_close((uv_handle_t *) &jobs->kick, lib_handle_closed);
                uv_close((uv_handle_t *) &jobs->notify, lib_handle_closed);
                /* Starts, destroys, status requests and handles under way
                 * call back into the jobs: wait for them. */
                while (jobs->pending_reqs > 0)
                        uv_run(jobs->loop, UV_RUN_ONCE);
                for (struct job *j = jobs->jobs; j;) {
                        struct job *next = j->next;
                        while (j->handles > 0)
                                uv_run(jobs->loop, UV_RUN_ONCE);
                        job_free(j);
                        j = next;
                }
        }
        /* After the starts came back: the pool would abandon them. */
        lg_jobpool_free(jobs->pool);
        while (jobs->watches) {
                lg_jobs_watch *w = jobs->watches;
                jobs->watches = w->next;
                free(w);
        }
        for (size_t i = 0; i < jobs->n_claimed; i++)
                free(jobs->claimed[i]);
        free(jobs->claimed);
        free(jobs->state_root);
        free(jobs->jobs_dir);
        free(jobs->packages_dir);
        free(jobs->runtimes_dir);
        free(jobs);
}

void lg_jobs_detach_all(lg_jobs *jobs) {
        if (!jobs)
                return;
        for (struct job *j = jobs->jobs; j; j = j->next) {
                j->detached = true;
                uv_timer_stop(&j->deadline);
                uv_timer_stop(&j->meter);
                uv_timer_stop(&j->engine_timer);
                for (size_t i = 0; i < j->n_roles; i++)
                        role_detach(j->roles[i]);
        }
        jobs_masters_detach_all(jobs);
}

void jobs_claim(lg_jobs *jobs, const char *id) {
        char *c = strdup(id);
        if (!c || lg_grow((void **) &jobs->claimed, &jobs->cap_claimed, jobs->n_claimed, sizeof(char *), 16) < 0) {
                free(c);
                return;
        }
        jobs->claimed[jobs->n_claimed++] = c;
}

bool jobs_claimed(const lg_jobs *jobs, const char *id) {
        for (size_t i = 0; i < jobs->n_claimed; i++)
                if (!strcmp(jobs->claimed[i], id))
                        return true;
        return false;
}

void jobs_master_lost(lg_jobs *jobs, const char *ns, const char *job, const char *why) {
        struct job *j = find_job(jobs, ns, job);
        if (j && !job_final(j))
                job_finish(j, JOB_FAILED, "MasterLost", "%s", why);
}

/* ---- jobs: the API ------------------------------------------------------------------------ */

/* What a job of spec holds while it runs; own: with its own master. */
static void job_need(const json_t *spec, uint64_t *cpu, uint64_t *mem) {
        const struct jobs_engine *eng = jobs_engine_find(json_string_value(json_object_get(spec, "engine")));
        bool own = eng->wants_master && eng->wants_master(spec);
        eng->need(spec, own, cpu, mem);
}

int lg_jobs_submit(lg_jobs *jobs, const char *ns, const json_t *in, struct lg_resource **ret, struct lg_error *err) {
        if (!ns || !lg_store_valid_name(ns))
                return lg_error_setm(err, EINVAL, "bad namespace");
        json_t *spec = NULL;
        int r = jobs_spec_normalize(jobs, in, &spec, err);
        if (r < 0)
                return r;
        const char *name = json_string_value(json_object_get(spec, "name"));
        const char *engine = json_string_value(json_object_get(spec, "engine"));
        struct lg_image *img = NULL;
        char files[4096] = "";
        const char *package = json_string_value(json_object_get(spec, "package"));
        const char *master = json_string_value(json_object_get(json_object_get(spec, "master"), "name"));
        struct lg_resource *stored = NULL;
        uint64_t cpu = 0, mem = 0;
        _cleanup_store_tx_ lg_store *tx = NULL;
        if (!strcmp(engine, "dask") && !jobs->net) {
                r = lg_error_setm(err, ENETUNREACH, "the dask engine needs the node network (legiond --network on)");
                goto out;
        }
        if ((r = jobs_image_resolve(jobs, json_string_value(json_object_get(spec, "image")), &img, err)) < 0)
                goto out;
        if (package && (r = jobs_package_dir(jobs, package, files, sizeof(files), err)) < 0)
                goto out;
        if (master && lg_store_get(jobs->store, LG_KEY(JOBS_MASTER_KIND, ns, master), NULL, NULL) < 0) {
                r = lg_error_setm(err, ENOENT, "master `%s` not found in namespace `%s`", master, ns);
                goto out;
        }
        job_need(spec, &cpu, &mem);
        if (cpu > jobs->cpu_cap || mem > jobs->mem_cap) {
                r = jobs_capacity_take(jobs, cpu, mem, NULL, 0, err); /* -E2BIG, the message */
                goto out;
        }
        char now[40];
        int64_t now_ms = jobs_now_ms();
        jobs_format_ms(now_ms, now, sizeof(now));
        json_t *status = json_pack("{s:s, s:s}", "phase", "Pending", "submittedAt", now);
        const struct lg_resource_key *key = LG_KEY(JOBS_KIND, ns, name);
        if ((r = lg_store_begin(jobs->store, err)) >= 0) {
                tx = jobs->store;
                r = lg_store_create(jobs->store, key, NULL, spec, status, &stored, err);
        }
        json_decref(status);
        if (r == -EEXIST)
                r = lg_error_setm(err, EEXIST, "job `%s` exists in namespace `%s`", name, ns);
        /* The package stays while the job does (GC keeps it). */
        if (r >= 0 && package && (r = lg_store_blob_ref(jobs->store, package + 7, key, err)) < 0)
                r = lg_error_wrap(err, r == -ENOENT ? -ENOENT : r, "package");
        if (r >= 0)
                r = lg_store_commit(TAKE_PTR(tx), err);
        if (r < 0)
                goto out;
        struct job *j = job_new(jobs, ns, name, stored->uid, spec);
        if (!j) {
                r = lg_error_set(err, ENOMEM, "job");
                lg_store_delete(jobs->store, key, 0, NULL, NULL);
                goto out;
        }
        j->img = TAKE_PTR(img);
        j->files_dir = files[0] ? strdup(files) : NULL;
        j->submitted_ms = now_ms;
        j->need_cpu = cpu;
        j->need_mem = mem;
        j->own_master = j->eng->wants_master && j->eng->wants_master(spec);
        /* First in the queue: now; else behind the others. */
        bool queued = false;
        for (struct job *o = jobs->jobs; o && o != j; o = o->next)
                queued = queued || o->phase == JOB_PENDING;
        if (queued)
                jobs_kick(jobs);
        else
                try_admit(j);
        r = 0;
        if (ret) {
                lg_resource_free(stored);
                stored = NULL;
                r = lg_store_get(jobs->store, key, ret, err);
        }
out:
        lg_resource_free(stored);
        lg_image_free(img);
        json_decref(spec);
        return r;
}

int lg_jobs_get(lg_jobs *jobs, const char *ns, const char *name, struct lg_resource **ret, struct lg_error *err) {
        int r = lg_store_get(jobs->store, LG_KEY(JOBS_KIND, ns, name), ret, err);
        if (r == -ENOENT)
                return lg_error_setm(err, ENOENT, "job `%s` not found in namespace `%s`", name, ns);
        return r;
}

int lg_jobs_list(lg_jobs *jobs, const char *ns, struct lg_resource_list *ret, struct lg_error *err) {
        return lg_store_list(jobs->store, JOBS_KIND, ns, NULL, ret, err);
}

int lg_jobs_stop(lg_jobs *jobs, const char *ns, const char *name, const char *why, struct lg_error *err) {
        struct job *j = find_job(jobs, ns, name);
        if (!j) {
                /* Final already (or unknown). */
                return lg_jobs_get(jobs, ns, name, NULL, err);
        }
        if (!job_final(j))
                job_finish(j, JOB_STOPPED, "Stopped", "%s", why && *why ? why : "stopped by the user");
        return 0;
}

int lg_jobs_delete(lg_jobs *jobs, const char *ns, const char *name, struct lg_error *err) {
        int r = lg_jobs_stop(jobs, ns, name, NULL, err);
        if (r < 0)
                return r;
        r = lg_store_delete(jobs->store, LG_KEY(JOBS_KIND, ns, name), 0, NULL, err);
        if (r < 0)
                return r;
        struct job *j = find_job(jobs, ns, name);
        if (j) {
                j->deleted = true;
                job_settle(j);
        }
        char dir[4096];
        snprintf(dir, sizeof(dir), "%s/%s/%s", jobs->jobs_dir, ns, name);
        lg_rm_rf(dir);
        snprintf(dir, sizeof(dir), "%s/%s", jobs->jobs_dir, ns);
        rmdir(dir); /* only when no other job of the namespace has logs */
        return 0;
}

json_t *lg_job_to_json(const struct lg_resource *r) {
        char t[40];
        lg_store_format_time(r->created_at, t, sizeof(t));
        return json_pack("{s:s, s:s, s:s, s:s, s:O, s:O}", "name", r->name, "namespace", r->namespace, "uid", r->uid,
                         "createdAt", t, "spec", r->spec, "status", r->status);
}

/* A role of the job's spec: -ENOENT for one it does not have. */
static int role_known(const json_t *spec, const char *role, unsigned index) {
        const char *engine = json_string_value(json_object_get(spec, "engine"));
        bool dask = engine && !strcmp(engine, "dask");
        if (!role)
                return -ENOENT;
        if (!strcmp(role, "driver") || !strcmp(role, "master"))
                return dask ? 0 : -ENOENT;
        if (!strcmp(role, "executor"))
                return dask && index < json_integer_value(json_object_get(json_object_get(spec, "executors"), "count"))
                               ? 0
                               : -ENOENT;
        if (!strcmp(role, "index"))
                return !dask && index < json_integer_value(json_object_get(spec, "completions")) ? 0 : -ENOENT;
        return -ENOENT;
}

int lg_jobs_log_path(lg_jobs *jobs, const char *ns, const char *name, const char *role, unsigned index, char *buf,
                     size_t cap) {
        struct lg_resource *r = NULL;
        int ret = lg_store_get(jobs->store, LG_KEY(JOBS_KIND, ns, name), &r, NULL);
        if (ret < 0)
                return ret;
        ret = role_known(r->spec, role, index);
        /* A Master served it (kept or reused): the master's log is that one's. */
        const json_t *m = json_object_get(r->status, "master");
        char master[LG_STORE_NAME_MAX + 1] = "";
        if (ret >= 0 && !strcmp(role, "master") && json_is_true(json_object_get(m, "kept")))
                snprintf(master, sizeof(master), "%s", json_string_value(json_object_get(m, "name")) ?: "");
        lg_resource_free(r);
        if (ret < 0)
                return ret;
        /* Its Master deleted: the link the job kept of that log (engine-dask.c). */
        if (master[0] && jobs_master_log_path(jobs, ns, master, buf, cap) == 0 && access(buf, F_OK) == 0)
                return 0;
        int n;
        if (!strcmp(role, "executor") || !strcmp(role, "index"))
                n = snprintf(buf, cap, "%s/%s/%s/%s-%u.log", jobs->jobs_dir, ns, name, role, index);
        else
                n = snprintf(buf, cap, "%s/%s/%s/%s.log", jobs->jobs_dir, ns, name, role);
        return n < 0 || (size_t) n >= cap ? -ENAMETOOLONG : 0;
}

int lg_jobs_log_active(lg_jobs *jobs, const char *ns, const char *name, const char *role, unsigned index) {
        struct job *j = find_job(jobs, ns, name);
        if (!j)
                return lg_store_get(jobs->store, LG_KEY(JOBS_KIND, ns, name), NULL, NULL) < 0 ? -ENOENT : 0;
        if (role_known(j->spec, role, index) < 0)
                return -ENOENT;
        bool indexed = !strcmp(role, "executor") || !strcmp(role, "index");
        const struct role *last = NULL;
        for (size_t i = 0; i < j->n_roles; i++) {
                const struct role *x = j->roles[i];
                if (!strcmp(x->kind, role) && (!indexed || x->index == index))
                        last = x;
        }
        if (last && (last->starting || last->adopting || last->has_sb))
                return 1;
        if (job_final(j))
                return 0;
        /* Not started yet, or (an index) may be tried again. */
        if (!last)
                return 1;
        return !strcmp(role, "index") && strcmp(last->exit, "Exited(0)") ? 1 : 0;
}

int lg_jobs_watch_add(lg_jobs *jobs, const char *ns, const char *name, lg_jobs_watch_cb cb, void *userdata,
                      lg_jobs_watch **ret, struct lg_error *err) {
        int r = lg_jobs_get(jobs, ns, name, NULL, err);
        if (r < 0)
                return r;
        lg_jobs_watch *w = calloc(1, sizeof(*w));
        if (!w)
                return lg_error_set(err, ENOMEM, "watch");
        w->jobs = jobs;
        snprintf(w->ns, sizeof(w->ns), "%s", ns);
        snprintf(w->name, sizeof(w->name), "%s", name);
        w->cb = cb;
        w->ud = userdata;
        w->next = jobs->watches;
        jobs->watches = w;
        /* The state now comes first (on the next loop turn). */
        watches_mark(jobs, ns, name);
        *ret = w;
        return 0;
}

void lg_jobs_watch_remove(lg_jobs_watch *w) {
        if (!w)
                return;
        for (lg_jobs_watch **pp = &w->jobs->watches; *pp; pp = &(*pp)->next)
                if (*pp == w) {
                        *pp = w->next;
                        break;
                }
        free(w);
}

/* ---- warm pools (jobpool.h) ---------------------------------------------------------------- */

int lg_jobs_pool_set(lg_jobs *jobs, const char *name, const json_t *spec, struct lg_error *err) {
        static const char *const allowed[] = {"image", "ready", "kind", NULL};
        if (!json_is_object(spec))
                return lg_error_setm(err, EINVAL, "the pool spec must be a JSON object");
        int r = lg_spec_only_fields(spec, "the pool spec", allowed, err);
        if (r < 0)
                return r;
        const json_t *image = json_object_get(spec, "image"), *ready = json_object_get(spec, "ready");
        if (image && !printable_string(image, 512))
                return bad_value(err, "image", image, "an image reference");
        if (!json_is_integer(ready) || json_integer_value(ready) < 0 || json_integer_value(ready) > 256)
                return bad_value(err, "ready", ready ? ready : json_null(), "an integer from 0 to 256");
        /* "dask-executor": sandboxes already running Python with
         * distributed imported, for dask-worker roles (jobpool.h). */
        const json_t *kind = json_object_get(spec, "kind");
        const char *k = kind ? json_string_value(kind) : "plain";
        if (!k || (strcmp(k, "plain") && strcmp(k, "dask-executor")))
                return bad_value(err, "kind", kind, "\"plain\" or \"dask-executor\"");
        struct lg_image *img = NULL;
        r = jobs_image_resolve(jobs, json_string_value(image), &img, err);
        if (r < 0)
                return r;
        struct lg_jobpool_rootfs rf = {0};
        if (img)
                rf = (struct lg_jobpool_rootfs){.image_id = img->id,
                                                .layers = (const char *const *) img->layer_dirs,
                                                .n_layers = img->n_layers};
        if (!strcmp(k, "dask-executor"))
                r = lg_jobpool_set_dask(jobs->pool, name, &rf, (unsigned) json_integer_value(ready), err);
        else
                r = lg_jobpool_set(jobs->pool, name, &rf, (unsigned) json_integer_value(ready), err);
        lg_image_free(img);
        return r;
}

int lg_jobs_pool_delete(lg_jobs *jobs, const char *name, struct lg_error *err) {
        int r = lg_jobpool_delete(jobs->pool, name);
        if (r == -ENOENT)
                return lg_error_setm(err, ENOENT, "job pool `%s` not found", name);
        return r < 0 ? lg_error_set(err, -r, "delete job pool `%s`", name) : r;
}

json_t *lg_jobs_pools_json(lg_jobs *jobs) { return lg_jobpool_json(jobs->pool); }

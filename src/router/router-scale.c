/* The router's scaling: when to start instances for a queue, and the
 * tick that samples concurrency, retires idle instances and keeps
 * minInstances (router.h says the rules; router-internal.h). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "router/router-internal.h"

/* Instances of the current revision, and the slots they will offer. */
void router_capacity(const struct app *a, unsigned *live, unsigned *free_slots) {
        *live = 0;
        *free_slots = 0;
        for (struct rinst *ri = a->instances; ri; ri = ri->next) {
                if (ri->state != R_READY && ri->state != R_STARTING)
                        continue;
                (*live)++;
                *free_slots += concurrency(a) - (ri->active < concurrency(a) ? ri->active : concurrency(a));
        }
}

/* ---- scaling out ---------------------------------------------------------
 * A request that finds no free slot waits in the queue, and capacity
 * already on its way counts: the free slots of instances still starting
 * (as Knative's activator counts capacity in flight). Beyond that, an
 * instance is started only when waiting for it beats waiting for a slot:
 * when the queue, worked off by the ready and starting instances at the
 * observed time per request (each starting one from when it should be
 * ready), would take longer to drain than a new instance takes to be ready
 * (the start times seen so far, with a placeholder when the provider has
 * one waiting, else without). A burst that the placeholders answer within
 * milliseconds so starts no instance that would come up after it is over;
 * slow requests start as many as their queue needs. The time per request
 * is known from requests answered and from the age of the oldest one in
 * flight (service_ns), which grows: re-checked every RECHECK_MS while a
 * queue waits. */

/* At most this many instances of one app start at once: instances started
 * together share the CPUs and are all late; more start as these come up. */
#define MAX_STARTING 4
#define RECHECK_MS 5
/* Start times assumed before any was seen. */
#define DEFAULT_START_WARM_NS (20 * 1000000ull)
#define DEFAULT_START_COLD_NS (500 * 1000000ull)

static uint64_t start_expect_ns(const lg_router *r, bool placeholder) {
        if (placeholder)
                return r->start_warm_ns ? r->start_warm_ns : DEFAULT_START_WARM_NS;
        return r->start_cold_ns ? r->start_cold_ns : DEFAULT_START_COLD_NS;
}

static int cmp_u64(const void *x, const void *y) {
        uint64_t a = *(const uint64_t *) x, b = *(const uint64_t *) y;
        return a < b ? -1 : a > b;
}

/* Time per request, for deciding on a start expected to take expect ns;
 * 0 when nothing is known. Evidence: the median of the recent request
 * times, from 3 on (an instance's first requests are left out: on a
 * loaded machine they are several times slower, and counting them made a
 * burst of quick requests look slow); and the oldest request in flight,
 * whose age is a lower bound -- always for a placeholder (cheap, ready in
 * milliseconds), else once it is older than the start would take. */
static uint64_t service_ns(const struct app *a, uint64_t now, uint64_t expect, bool placeholder) {
        uint64_t s = 0;
        unsigned n = a->service_n < SERVICE_SAMPLES ? a->service_n : SERVICE_SAMPLES;
        if (n >= 3) {
                uint64_t v[SERVICE_SAMPLES];
                memcpy(v, a->service, n * sizeof(v[0]));
                qsort(v, n, sizeof(v[0]), cmp_u64);
                s = v[n / 2];
        }
        uint64_t age = a->fhead ? now - a->fhead->sent : 0;
        if ((placeholder || age >= expect) && age > s)
                s = age;
        return s;
}

/* From now, how long until the queue is worked off: each slot takes a
 * request every svc ns, those of starting instances from when they are
 * expected ready. */
static uint64_t drain_ns(const struct app *a, uint64_t now, uint64_t svc) {
        uint64_t at[64];
        size_t n = 0;
        double slots = 0, conc = concurrency(a);
        for (const struct rinst *ri = a->instances; ri; ri = ri->next) {
                if (ri->state == R_READY && ri->gen == a->gen)
                        slots += conc;
                else if (ri->state == R_STARTING && n < ARRAY_SIZE(at))
                        at[n++] = ri->expect_ready_ns > now ? ri->expect_ready_ns - now : 0;
        }
        qsort(at, n, sizeof(at[0]), cmp_u64);
        double work = (double) a->queued * (double) svc; /* slot-ns */
        double t = 0;
        for (size_t i = 0; i <= n; i++) {
                double until = i < n ? (double) at[i] : INFINITY;
                if (slots > 0 && work <= slots * (until - t))
                        return (uint64_t) (t + work / slots);
                if (i == n)
                        break;
                work -= slots * (until - t);
                t = until;
                slots += conc;
        }
        return UINT64_MAX; /* no capacity at all */
}

void router_on_recheck(uv_timer_t *h);

void router_scale_up(struct app *a) {
        lg_router *r = a->router;
        unsigned live, free_slots, starting = 0;
        router_capacity(a, &live, &free_slots);
        for (struct rinst *ri = a->instances; ri; ri = ri->next)
                starting += ri->state == R_STARTING;
        if (a->queued <= free_slots || live >= max_instances(a) || starting >= MAX_STARTING || a->removed)
                return;
        uint64_t now = lg_now_ns();
        unsigned warm = r->provider->placeholders ? r->provider->placeholders(r->provider_data, a->pool) : 0;
        while (a->queued > free_slots && live < max_instances(a) && starting < MAX_STARTING) {
                uint64_t expect = start_expect_ns(r, warm > 0);
                uint64_t svc = service_ns(a, now, expect, warm > 0);
                /* Someone has to serve the queue; beyond that, start one
                 * only if the queue would still be there when it is ready. */
                if (live > 0 && drain_ns(a, now, svc) <= expect) {
                        if (!uv_is_active((uv_handle_t *) &r->recheck))
                                uv_timer_start(&r->recheck, router_on_recheck, RECHECK_MS, 0);
                        return;
                }
                if (router_start_instance(a, expect) < 0)
                        break;
                warm -= warm > 0;
                live++;
                starting++;
                free_slots += concurrency(a);
        }
}

void router_on_recheck(uv_timer_t *h) {
        lg_router *r = h->data;
        for (struct app *a = r->apps; a; a = a->next)
                if (a->qhead && !a->removed)
                        router_scale_up(a);
}

/* Each tick (a second by default): record concurrency, keep minInstances,
 * retire idle ones beyond what the stable window needs. */
void router_on_tick(uv_timer_t *t) {
        lg_router *r = t->data;
        uint64_t now = now_ms();
        for (struct app *a = r->apps, *next; a; a = next) {
                next = a->next;
                if (a->removed)
                        continue;
                a->samples[a->sample_pos] = a->peak_this_second;
                a->sample_pos = (a->sample_pos + 1) % STABLE_WINDOW;
                if (a->sample_n < STABLE_WINDOW)
                        a->sample_n++;
                a->peak_this_second = a->active + a->queued;
                uint64_t sum = 0;
                /* The window is the idle timeout when that is shorter: an
                 * app that may idle 1 s must not be kept warm for 60. */
                uint64_t idle_ticks = (idle_timeout_ms(a) + r->tick_ms - 1) / r->tick_ms;
                unsigned window = idle_ticks < STABLE_WINDOW ? (unsigned) idle_ticks : STABLE_WINDOW;
                unsigned used = a->sample_n < window ? a->sample_n : window;
                sum = 0;
                for (unsigned i = 0; i < used; i++)
                        sum += a->samples[(a->sample_pos + STABLE_WINDOW - 1 - i) % STABLE_WINDOW];
                double avg = used ? (double) sum / used : 0;
                unsigned stable = (unsigned) ceil(avg / concurrency(a));
                unsigned keep = stable > a->cfg.min_instances ? stable : a->cfg.min_instances;

                unsigned live = 0, free_slots;
                router_capacity(a, &live, &free_slots);
                for (struct rinst *ri = a->instances; ri && a->st.failures; ri = ri->next)
                        if (ri->state == R_READY && (!ri->ready_at || now - ri->ready_at >= EARLY_EXIT_MS))
                                router_streak_end(a, ri, "is up for 60 s");
                for (struct rinst *ri = a->instances, *rn; ri && live > keep; ri = rn) {
                        rn = ri->next;
                        if (ri->state != R_READY || ri->active > 0 ||
                            now - ri->last_used < idle_timeout_ms(a))
                                continue;
                        char why[64];
                        snprintf(why, sizeof(why), "idle for %.3g s", idle_timeout_ms(a) / 1e3);
                        router_inst_kill(ri, why);
                        live--;
                }
                while (live < a->cfg.min_instances && live < max_instances(a)) {
                        if (router_start_instance(a, start_expect_ns(r, false)) < 0)
                                break;
                        live++;
                }
        }
}

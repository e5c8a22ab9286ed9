/* The cost of a sandbox's nft elements (src/net/nft.c) on the start path:
 * lg_nft_sandbox_add and lg_nft_sandbox_del, p50/p99 over --calls calls,
 * with 10, 1,000 and 10,000 other sandboxes' elements in the table; the CPU
 * time they take in user space (libnftables' parsing, evaluation and cache
 * building, and ours) and in the kernel (the cache dumps and the commit);
 * next to a peer in the same run: the same transaction by an `nft -f -`
 * process (what the start path must not do).
 *
 * Root. Runs in a network namespace of its own (unshare): it touches no
 * table of the host's. Usage: nft-elements [--calls N] */
#include <arpa/inet.h>
#include <sched.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "net/net-internal.h"

static int cmp_u64(const void *a, const void *b) {
        uint64_t x = *(const uint64_t *) a, y = *(const uint64_t *) b;
        return x < y ? -1 : x > y;
}

static void report(const char *what, unsigned others, uint64_t *ns, size_t n) {
        qsort(ns, n, sizeof(*ns), cmp_u64);
        printf("%-34s %6u others  p50 %7.1f us  p99 %7.1f us\n", what, others, ns[n / 2] / 1e3,
               ns[(n * 99) / 100] / 1e3);
}

static double tv_us(const struct timeval *b, const struct timeval *a) {
        return (double) (b->tv_sec - a->tv_sec) * 1e6 + (double) (b->tv_usec - a->tv_usec);
}

static void ip_of(unsigned i, char ip[LG_NET_IP_MAX]) {
        snprintf(ip, LG_NET_IP_MAX, "10.252.%u.%u", 1 + i / 250, 1 + i % 250);
}

int main(int argc, char **argv) {
        size_t calls = 1000;
        if (argc == 3 && strcmp(argv[1], "--calls") == 0)
                calls = strtoul(argv[2], NULL, 10);
        if (calls == 0 || calls > 100000 || geteuid() != 0 || unshare(CLONE_NEWNET) < 0) {
                fprintf(stderr, "usage (root): nft-elements [--calls 1..100000]\n");
                return 2;
        }
        struct lg_error err = {0};
        struct lg_nft_config cfg = {.table = "bnft", .cidr = "10.252.0.0/16", .gateway = "10.252.0.1",
                                    .link_prefix = "bnf"};
        uint64_t *t_add = calloc(calls, sizeof(uint64_t)), *t_del = calloc(calls, sizeof(uint64_t)),
                 *t_cli = calloc(calls, sizeof(uint64_t));
        if (!t_add || !t_del || !t_cli)
                return 1;
        const unsigned others[] = {10, 1000, 10000};
        for (size_t o = 0; o < sizeof(others) / sizeof(others[0]); o++) {
                lg_nft *nft = NULL;
                if (lg_nft_open(&cfg, &nft, &err) < 0) {
                        fprintf(stderr, "%s\n", err.msg);
                        return 1;
                }
                char ip[LG_NET_IP_MAX];
                for (unsigned i = 0; i < others[o]; i++) {
                        ip_of(i, ip);
                        if (lg_nft_sandbox_add(nft, ip, 0x4c000001 + i % 7, 1 + i % 5, &err) < 0) {
                                fprintf(stderr, "%s\n", err.msg);
                                return 1;
                        }
                }
                struct rusage ru0, ru1;
                getrusage(RUSAGE_SELF, &ru0);
                for (size_t c = 0; c < calls; c++) {
                        ip_of(others[o] + (unsigned) c % 1000, ip);
                        uint64_t t0 = lg_now_ns();
                        int r = lg_nft_sandbox_add(nft, ip, 0x4c000002, 3, &err);
                        uint64_t t1 = lg_now_ns();
                        if (r >= 0)
                                r = lg_nft_sandbox_del(nft, ip, &err);
                        uint64_t t2 = lg_now_ns();
                        if (r < 0) {
                                fprintf(stderr, "%s\n", err.msg);
                                return 1;
                        }
                        t_add[c] = t1 - t0;
                        t_del[c] = t2 - t1;
                }
                getrusage(RUSAGE_SELF, &ru1);
                /* The peer: the same add (and its del, untimed) by the CLI. */
                for (size_t c = 0; c < calls; c++) {
                        ip_of(others[o] + (unsigned) c % 1000, ip);
                        char text[512];
                        snprintf(text, sizeof(text),
                                 "nft -f - <<'E'\n"
                                 "add element inet bnft ns_of { %s : 0x4c000002 }\n"
                                 "add element inet bnft ns_members { 0x4c000002 . %s }\n"
                                 "add element inet bnft policy_of { %s : 0x3 }\nE\n",
                                 ip, ip, ip);
                        uint64_t t3 = lg_now_ns();
                        int st = system(text);
                        uint64_t t4 = lg_now_ns();
                        if (st != 0 || lg_nft_sandbox_add(nft, ip, 0x4c000002, 3, &err) < 0 ||
                            lg_nft_sandbox_del(nft, ip, &err) < 0) {
                                fprintf(stderr, "peer: %d %s\n", st, err.msg);
                                return 1;
                        }
                        t_cli[c] = t4 - t3;
                }
                unsigned rules, elements;
                if (lg_nft_count(nft, &rules, &elements, &err) < 0) {
                        fprintf(stderr, "%s\n", err.msg);
                        return 1;
                }
                report("lg_nft_sandbox_add", others[o], t_add, calls);
                report("lg_nft_sandbox_del", others[o], t_del, calls);
                printf("%-34s %6u others  user %5.1f us, system %5.1f us per add+del\n", "cpu", others[o],
                       tv_us(&ru1.ru_utime, &ru0.ru_utime) / (double) calls,
                       tv_us(&ru1.ru_stime, &ru0.ru_stime) / (double) calls);
                report("peer: the same add by `nft -f -`", others[o], t_cli, calls);
                printf("%-34s %6u others  rules %u, elements %u\n", "table", others[o], rules, elements);
                lg_nft_drop_table(nft, &err);
                lg_nft_close(nft);
        }
        free(t_add);
        free(t_del);
        free(t_cli);
        return 0;
}

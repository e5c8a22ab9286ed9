/* Links, addresses, routes and rules through netlink (libmnl): see
 * net-internal.h.
 *
 * Every call opens its own NETLINK_ROUTE socket (and closes it), so calls
 * from several threads share nothing. Changes are sent in batches: several
 * requests, each with NLM_F_ACK, in one sendmsg, then one ack read per
 * request; the kernel runs them in order and answers each, so one round
 * trip does a whole step (a veth attach is three: create the pair, set up
 * eth0 inside, the host end up with its route). The first failing request
 * of a batch names the error.
 *
 * Work inside a sandbox's network namespace (eth0) runs on a socket opened
 * after setns(CLONE_NEWNET) of the calling thread; the thread goes back to
 * its own namespace before the call returns. */
#include "net/net-internal.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <net/if.h>
#include <sched.h>
#include <stdarg.h>
#include <string.h>
#include <sys/socket.h>

#include <libmnl/libmnl.h>
#include <linux/fib_rules.h>
#include <linux/if_addr.h>
#include <linux/if_link.h>
#include <linux/neighbour.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>

#define NL_BATCH_MAX 64       /* requests per sendmsg: their acks must fit the receive buffer */
#define NL_BUF_SIZE (64 * 1024)
#define NL_MSG_ROOM 4096      /* room kept for the message being written */
#define NL_DUMP_TRIES 5       /* a dump interrupted by changes is read again */

/* ---- one socket and its batch ---- */

struct nl {
        struct mnl_socket *sock;
        uint32_t portid, seq;   /* seq: the next request's */
        uint32_t seq0;          /* the batch's first request */
        unsigned n;             /* requests in the batch */
        size_t len;             /* bytes of finished requests */
        struct nlmsghdr *cur;   /* the request being written (not in len yet) */
        const char *step[NL_BATCH_MAX];
        int ok_errno[NL_BATCH_MAX]; /* an error this request may meet (0: none) */
        char out[NL_BUF_SIZE] __attribute__((aligned(8)));
        char in[NL_BUF_SIZE] __attribute__((aligned(8)));
};

static void nl_close(struct nl *nl) {
        if (!nl)
                return;
        if (nl->sock)
                mnl_socket_close(nl->sock);
        free(nl);
}

static void nl_closep(struct nl **nl) { nl_close(*nl); }
#define _cleanup_nl_ _cleanup_(nl_closep)

/* A NETLINK_ROUTE socket in the calling thread's network namespace. */
static int nl_open(struct nl **ret, struct lg_error *err) {
        _cleanup_nl_ struct nl *nl = calloc(1, sizeof(*nl));
        if (!nl)
                return lg_error_set(err, ENOMEM, "netlink");
        nl->sock = mnl_socket_open2(NETLINK_ROUTE, SOCK_CLOEXEC);
        if (!nl->sock)
                return lg_error_set(err, errno, "netlink socket");
        int one = 1;
        /* Acks without a copy of the request, with the kernel's reason. */
        (void) mnl_socket_setsockopt(nl->sock, NETLINK_CAP_ACK, &one, sizeof(one));
        (void) mnl_socket_setsockopt(nl->sock, NETLINK_EXT_ACK, &one, sizeof(one));
        if (mnl_socket_bind(nl->sock, 0, MNL_SOCKET_AUTOPID) < 0)
                return lg_error_set(err, errno, "netlink bind");
        nl->portid = mnl_socket_get_portid(nl->sock);
        nl->seq = nl->seq0 = 1;
        *ret = TAKE_PTR(nl);
        return 0;
}

static void nl_finish_cur(struct nl *nl) {
        if (nl->cur) {
                nl->len += MNL_ALIGN(nl->cur->nlmsg_len);
                nl->cur = NULL;
        }
}

static bool nl_full(struct nl *nl) {
        nl_finish_cur(nl);
        return nl->n >= NL_BATCH_MAX || nl->len + NL_MSG_ROOM > sizeof(nl->out);
}

/* A new request in the batch (the caller checks nl_full() first when it
 * adds an unknown number). step names it in errors; ok_errno is an error
 * that counts as success (ENOENT for a delete of what may be gone). */
static struct nlmsghdr *nl_msg(struct nl *nl, uint16_t type, uint16_t flags, const char *step, int ok_errno) {
        nl_finish_cur(nl);
        struct nlmsghdr *nlh = mnl_nlmsg_put_header(nl->out + nl->len);
        nlh->nlmsg_type = type;
        nlh->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK | flags;
        nlh->nlmsg_seq = nl->seq++;
        nl->step[nl->n] = step;
        nl->ok_errno[nl->n] = ok_errno;
        nl->n++;
        nl->cur = nlh;
        return nlh;
}

/* The kernel's reason in an error ack (NETLINK_EXT_ACK), or NULL. */
static const char *nl_ext_msg(const struct nlmsghdr *nlh) {
        if (!(nlh->nlmsg_flags & NLM_F_ACK_TLVS))
                return NULL;
        const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
        size_t off = sizeof(*e);
        if (!(nlh->nlmsg_flags & NLM_F_CAPPED))
                off += e->msg.nlmsg_len - sizeof(e->msg);
        if (MNL_NLMSG_HDRLEN + off > nlh->nlmsg_len)
                return NULL;
        const struct nlattr *attr;
        mnl_attr_for_each_payload((const void *) ((const char *) e + off), nlh->nlmsg_len - MNL_NLMSG_HDRLEN - off) {
                if (mnl_attr_get_type(attr) == NLMSGERR_ATTR_MSG &&
                    mnl_attr_validate(attr, MNL_TYPE_NUL_STRING) == 0)
                        return mnl_attr_get_str(attr);
        }
        return NULL;
}

/* Send the batch and read an ack for each request; messages that are not
 * acks (the answer to a GET, an NLM_F_ECHO copy) go to cb. 0, or the
 * first failed request's -errno with err naming its step. The batch is
 * empty afterwards either way. */
static int nl_run(struct nl *nl, mnl_cb_t cb, void *data, struct lg_error *err) {
        nl_finish_cur(nl);
        unsigned n = nl->n;
        uint32_t seq0 = nl->seq0;
        size_t len = nl->len;
        nl->n = 0;
        nl->len = 0;
        nl->seq0 = nl->seq;
        if (n == 0)
                return 0;
        if (mnl_socket_sendto(nl->sock, nl->out, len) < 0)
                return lg_error_set(err, errno, "netlink send (%s)", nl->step[0]);

        int first_err = 0;
        unsigned first_i = 0, acked = 0;
        char ext[256] = "";
        while (acked < n) {
                ssize_t r = mnl_socket_recvfrom(nl->sock, nl->in, sizeof(nl->in));
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return lg_error_set(err, errno, "netlink receive (%s)", nl->step[0]);
                }
                int left = (int) r;
                for (struct nlmsghdr *nlh = (struct nlmsghdr *) nl->in; mnl_nlmsg_ok(nlh, left);
                     nlh = mnl_nlmsg_next(nlh, &left)) {
                        uint32_t i = nlh->nlmsg_seq - seq0;
                        if (nlh->nlmsg_seq < seq0 || i >= n)
                                continue; /* not ours: a notification */
                        if (nlh->nlmsg_type != NLMSG_ERROR) {
                                if (cb && cb(nlh, data) < MNL_CB_OK && !first_err) {
                                        first_err = errno ? -errno : -EIO;
                                        first_i = i;
                                }
                                continue;
                        }
                        if (nlh->nlmsg_len < MNL_NLMSG_HDRLEN + sizeof(struct nlmsgerr))
                                return lg_error_set(err, EBADMSG, "netlink ack (%s)", nl->step[i]);
                        const struct nlmsgerr *e = mnl_nlmsg_get_payload(nlh);
                        acked++;
                        if (e->error < 0 && -e->error != nl->ok_errno[i] &&
                            (!first_err || i < first_i)) {
                                first_err = e->error;
                                first_i = i;
                                const char *m = nl_ext_msg(nlh);
                                snprintf(ext, sizeof(ext), "%s", m ? m : "");
                        }
                }
        }
        if (first_err) {
                if (ext[0])
                        return lg_error_set(err, -first_err, "%s (%s)", nl->step[first_i], ext);
                return lg_error_set(err, -first_err, "%s", nl->step[first_i]);
        }
        return 0;
}

/* A dump: cb sees every message; it returns MNL_CB_OK or MNL_CB_ERROR
 * with errno set. -EINTR when the kernel says the dump was interrupted by
 * a change (NLM_F_DUMP_INTR): the caller reads it again.
 *
 * The answer is read here to its end (NLMSG_DONE or an error) whatever
 * happens on the way, not with mnl_cb_run: libmnl stops at the first
 * message flagged NLM_F_DUMP_INTR without calling cb, which left the rest
 * of the dump in the socket, to be read by the next dump on it (the retry)
 * as messages of another sequence number: EPROTO, "list the links:
 * Protocol error", whenever links came or went during a dump. Read to its
 * end, an interrupted dump also shows cb every object that stayed. */
static int nl_dump(struct nl *nl, mnl_cb_t cb, void *data, struct lg_error *err) {
        nl_finish_cur(nl);
        const char *step = nl->step[0];
        uint32_t seq = nl->seq0;
        size_t len = nl->len;
        nl->n = 0;
        nl->len = 0;
        nl->seq0 = nl->seq;
        if (mnl_socket_sendto(nl->sock, nl->out, len) < 0)
                return lg_error_set(err, errno, "netlink send (%s)", step);
        bool intr = false, done = false;
        int first_err = 0;
        while (!done) {
                ssize_t r = mnl_socket_recvfrom(nl->sock, nl->in, sizeof(nl->in));
                if (r < 0) {
                        if (errno == EINTR)
                                continue;
                        return lg_error_set(err, errno, "netlink receive (%s)", step);
                }
                int left = (int) r;
                for (struct nlmsghdr *nlh = (struct nlmsghdr *) nl->in; !done && mnl_nlmsg_ok(nlh, left);
                     nlh = mnl_nlmsg_next(nlh, &left)) {
                        if (nlh->nlmsg_seq != seq || (nlh->nlmsg_pid && nlh->nlmsg_pid != nl->portid))
                                continue; /* not this dump's */
                        if (nlh->nlmsg_flags & NLM_F_DUMP_INTR)
                                intr = true;
                        if (nlh->nlmsg_type == NLMSG_DONE || nlh->nlmsg_type == NLMSG_ERROR) {
                                /* The end; both may carry an error (an int, or a struct nlmsgerr). */
                                done = true;
                                const int *e = mnl_nlmsg_get_payload(nlh);
                                if (nlh->nlmsg_len >= MNL_NLMSG_HDRLEN + sizeof(int) && *e < 0 && !first_err)
                                        first_err = *e;
                                continue;
                        }
                        if (nlh->nlmsg_type < NLMSG_MIN_TYPE || first_err)
                                continue; /* NOOP or OVERRUN; or cb failed: read on to the end only */
                        errno = 0;
                        if (cb(nlh, data) < MNL_CB_OK)
                                first_err = errno ? -errno : -EIO;
                }
        }
        if (first_err)
                return lg_error_set(err, -first_err, "%s", step);
        if (intr)
                return lg_error_setm(err, EINTR, "%s: interrupted by a change", step);
        return 0;
}

/* Queue a dumped object back as its own delete (type) on del, as
 * `ip route flush` and `ip rule flush` do: every attribute given, so the
 * kernel deletes exactly that one. Full batches are sent on the way; their
 * first error stays in *del_r. */
static void nl_send_back(struct nl *del, int *del_r, struct lg_error *err, const struct nlmsghdr *nlh,
                         uint16_t type, const char *step, int ok_errno) {
        if (nlh->nlmsg_len > NL_MSG_ROOM)
                return;
        if (nl_full(del) && *del_r >= 0)
                *del_r = nl_run(del, NULL, NULL, err);
        struct nlmsghdr *d = nl_msg(del, type, 0, step, ok_errno);
        uint32_t seq = d->nlmsg_seq;
        memcpy(d, nlh, nlh->nlmsg_len);
        d->nlmsg_type = type;
        d->nlmsg_flags = NLM_F_REQUEST | NLM_F_ACK;
        d->nlmsg_seq = seq;
        d->nlmsg_pid = 0;
}

/* ---- small helpers ---- */

static int parse_ip(const char *ip, struct in_addr *a, struct lg_error *err) {
        if (!ip || inet_pton(AF_INET, ip, a) != 1)
                return lg_error_setm(err, EINVAL, "`%s` is not an IPv4 address", ip ? ip : "(null)");
        return 0;
}

static int check_ifname(const char *ifname, struct lg_error *err) {
        if (!ifname || !ifname[0] || strlen(ifname) >= IFNAMSIZ || strchr(ifname, '/'))
                return lg_error_setm(err, EINVAL, "`%s` is not a link name", ifname ? ifname : "(null)");
        return 0;
}

static const uint8_t host_mac[6] = {0xee, 0xee, 0xee, 0xee, 0xee, 0xee};

static struct ifinfomsg *put_ifinfo(struct nlmsghdr *nlh, int index, unsigned flags, unsigned change) {
        struct ifinfomsg *ifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifi));
        ifi->ifi_family = AF_UNSPEC;
        ifi->ifi_index = index;
        ifi->ifi_flags = flags;
        ifi->ifi_change = change;
        return ifi;
}

/* IFLA_AF_SPEC { AF_INET6 { IFLA_INET6_ADDR_GEN_MODE none } }: the link
 * gets no IPv6 link-local address when it comes up. Not accepted by
 * RTM_NEWLINK when it creates the link (EAFNOSUPPORT), hence a separate
 * RTM_SETLINK before the one that brings the link up. */
static void put_no_ipv6_ll(struct nlmsghdr *nlh) {
        struct nlattr *spec = mnl_attr_nest_start(nlh, IFLA_AF_SPEC);
        struct nlattr *in6 = mnl_attr_nest_start(nlh, AF_INET6);
        mnl_attr_put_u8(nlh, IFLA_INET6_ADDR_GEN_MODE, IN6_ADDR_GEN_MODE_NONE);
        mnl_attr_nest_end(nlh, in6);
        mnl_attr_nest_end(nlh, spec);
}

/* RTM_NEWROUTE for table, with its attributes but the destination. */
static struct rtmsg *put_route(struct nlmsghdr *nlh, uint32_t table, unsigned char scope) {
        struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
        rtm->rtm_family = AF_INET;
        rtm->rtm_table = table < 256 ? table : RT_TABLE_UNSPEC;
        rtm->rtm_protocol = LG_NL_PROTO;
        rtm->rtm_scope = scope;
        rtm->rtm_type = RTN_UNICAST;
        mnl_attr_put_u32(nlh, RTA_TABLE, table);
        return rtm;
}

/* An address body: ip/32 on link index (IFA_ADDRESS too when adding). */
static void put_ifaddr(struct nlmsghdr *nlh, int index, const struct in_addr *ip, bool add) {
        struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
        ifa->ifa_family = AF_INET;
        ifa->ifa_prefixlen = 32;
        ifa->ifa_scope = RT_SCOPE_UNIVERSE;
        ifa->ifa_index = index;
        mnl_attr_put(nlh, IFA_LOCAL, sizeof(*ip), ip);
        if (add)
                mnl_attr_put(nlh, IFA_ADDRESS, sizeof(*ip), ip);
}

/* Enter the network namespace nsfd on the calling thread, run fn, come
 * back. A thread that could not come back would do the host's next
 * netlink work inside a sandbox: that cannot be reported and cannot be
 * allowed, so it aborts. */
static int in_netns(int nsfd, int (*fn)(void *data, struct lg_error *err), void *data, struct lg_error *err) {
        _cleanup_close_ int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
        if (self < 0)
                return lg_error_set(err, errno, "open /proc/thread-self/ns/net");
        if (setns(nsfd, CLONE_NEWNET) < 0)
                return lg_error_set(err, errno, "enter the network namespace");
        int r = fn(data, err);
        if (setns(self, CLONE_NEWNET) < 0)
                abort();
        return r;
}

static int open_netns(pid_t pid, struct lg_error *err) {
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/ns/net", (int) pid);
        int fd = pid > 0 ? open(path, O_RDONLY | O_CLOEXEC) : (errno = ESRCH, -1);
        if (fd < 0)
                return lg_error_set(err, errno, "open %s", path);
        return fd;
}

/* ---- a link's answer ---- */

struct link_info {
        int index, link;       /* link: IFLA_LINK (a veth's peer), 0 if none */
        char name[IFNAMSIZ];
        char kind[32];
};

static int link_attr_cb(const struct nlattr *attr, void *data) {
        const struct nlattr **tb = data;
        int type = mnl_attr_get_type(attr);
        if (type <= IFLA_MAX)
                tb[type] = attr;
        return MNL_CB_OK;
}

static void link_parse(const struct nlmsghdr *nlh, struct link_info *li) {
        const struct ifinfomsg *ifi = mnl_nlmsg_get_payload(nlh);
        const struct nlattr *tb[IFLA_MAX + 1] = {0};
        memset(li, 0, sizeof(*li));
        li->index = ifi->ifi_index;
        mnl_attr_parse(nlh, sizeof(*ifi), link_attr_cb, tb);
        if (tb[IFLA_IFNAME] && mnl_attr_validate(tb[IFLA_IFNAME], MNL_TYPE_NUL_STRING) == 0)
                snprintf(li->name, sizeof(li->name), "%s", mnl_attr_get_str(tb[IFLA_IFNAME]));
        if (tb[IFLA_LINK] && mnl_attr_validate(tb[IFLA_LINK], MNL_TYPE_U32) == 0)
                li->link = (int) mnl_attr_get_u32(tb[IFLA_LINK]);
        bool has_link = tb[IFLA_LINK] != NULL;
        if (tb[IFLA_LINKINFO]) {
                const struct nlattr *attr;
                mnl_attr_for_each_nested(attr, tb[IFLA_LINKINFO]) {
                        if (mnl_attr_get_type(attr) == IFLA_INFO_KIND &&
                            mnl_attr_validate(attr, MNL_TYPE_STRING) == 0)
                                snprintf(li->kind, sizeof(li->kind), "%.*s",
                                         (int) mnl_attr_get_payload_len(attr),
                                         (const char *) mnl_attr_get_payload(attr));
                }
        }
        /* Link indexes are per namespace: a veth's peer may have the
         * same index as the veth, and then IFLA_LINK is left out. */
        if (!has_link && strcmp(li->kind, "veth") == 0)
                li->link = li->index;
}

static int link_one_cb(const struct nlmsghdr *nlh, void *data) {
        if (nlh->nlmsg_type == RTM_NEWLINK)
                link_parse(nlh, data);
        return MNL_CB_OK;
}

/* RTM_GETLINK of one link, by name (index 0) or index. -ENODEV if none. */
static int link_get(struct nl *nl, const char *name, int index, struct link_info *li, struct lg_error *err) {
        struct nlmsghdr *nlh = nl_msg(nl, RTM_GETLINK, 0, "find the link", 0);
        put_ifinfo(nlh, index, 0, 0);
        if (name)
                mnl_attr_put_strz(nlh, IFLA_IFNAME, name);
        mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
        memset(li, 0, sizeof(*li));
        int r = nl_run(nl, link_one_cb, li, err);
        if (r >= 0 && li->index == 0)
                return lg_error_setm(err, ENODEV, "find the link: no answer");
        return r;
}

/* ---- veth attach ---- */

struct attach {
        const char *host_if;
        struct in_addr ip, src;
        int host_index, peer_index; /* from the NLM_F_ECHO copy of the new host end */
};

/* The copy of the new host end (kernels >= 6.3 send it for NLM_F_ECHO):
 * its index and, as IFLA_LINK, eth0's index inside the namespace. */
static int attach_echo_cb(const struct nlmsghdr *nlh, void *data) {
        struct attach *a = data;
        if (nlh->nlmsg_type != RTM_NEWLINK)
                return MNL_CB_OK;
        struct link_info li;
        link_parse(nlh, &li);
        if (strcmp(li.name, a->host_if) == 0) {
                a->host_index = li.index;
                a->peer_index = li.link;
        }
        return MNL_CB_OK;
}

/* Inside the sandbox's namespace: eth0 (no IPv6, up) with ip/32, the
 * gateway's permanent neighbour entry and the two routes. */
static int attach_inside(void *data, struct lg_error *err) {
        struct attach *a = data;
        _cleanup_nl_ struct nl *nl = NULL;
        int r = nl_open(&nl, err);
        if (r < 0)
                return r;
        int eth0 = a->peer_index;
        if (eth0 <= 0) {
                /* No echo (kernel < 6.3): look eth0 up. */
                eth0 = (int) if_nametoindex("eth0");
                if (eth0 == 0)
                        return lg_error_set(err, errno, "find eth0");
        }
        struct in_addr gw;
        inet_pton(AF_INET, LG_NL_GATEWAY, &gw);

        struct nlmsghdr *nlh = nl_msg(nl, RTM_SETLINK, 0, "turn IPv6 off on eth0", 0);
        put_ifinfo(nlh, eth0, 0, 0);
        put_no_ipv6_ll(nlh);

        nlh = nl_msg(nl, RTM_SETLINK, 0, "set eth0 up", 0);
        put_ifinfo(nlh, eth0, IFF_UP, IFF_UP);

        nlh = nl_msg(nl, RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, "add the address to eth0", 0);
        put_ifaddr(nlh, eth0, &a->ip, true);

        nlh = nl_msg(nl, RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, "add the gateway's neighbour entry", 0);
        struct ndmsg *ndm = mnl_nlmsg_put_extra_header(nlh, sizeof(*ndm));
        ndm->ndm_family = AF_INET;
        ndm->ndm_ifindex = eth0;
        ndm->ndm_state = NUD_PERMANENT;
        mnl_attr_put(nlh, NDA_DST, sizeof(gw), &gw);
        mnl_attr_put(nlh, NDA_LLADDR, sizeof(host_mac), host_mac);

        nlh = nl_msg(nl, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, "add the route to the gateway", 0);
        struct rtmsg *rtm = put_route(nlh, RT_TABLE_MAIN, RT_SCOPE_LINK);
        rtm->rtm_dst_len = 32;
        mnl_attr_put(nlh, RTA_DST, sizeof(gw), &gw);
        mnl_attr_put_u32(nlh, RTA_OIF, eth0);

        nlh = nl_msg(nl, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, "add the default route", 0);
        rtm = put_route(nlh, RT_TABLE_MAIN, RT_SCOPE_UNIVERSE);
        rtm->rtm_flags = RTNH_F_ONLINK;
        mnl_attr_put(nlh, RTA_GATEWAY, sizeof(gw), &gw);
        mnl_attr_put_u32(nlh, RTA_OIF, eth0);
        return nl_run(nl, NULL, NULL, err);
}

/* The host's route to a sandbox: ip/32 out of its host end (index),
 * from src. Without a preferred source the kernel would take the first
 * address it finds on any link (the host end has none): the host's
 * external address, depending on the order of its links, in every
 * sandbox's view of who called it. */
static void put_host_route(struct nlmsghdr *nlh, int index, const struct in_addr *ip, const struct in_addr *src) {
        struct rtmsg *rtm = put_route(nlh, RT_TABLE_MAIN, RT_SCOPE_LINK);
        rtm->rtm_dst_len = 32;
        mnl_attr_put(nlh, RTA_DST, sizeof(*ip), ip);
        mnl_attr_put(nlh, RTA_PREFSRC, sizeof(*src), src);
        mnl_attr_put_u32(nlh, RTA_OIF, index);
}

int lg_nl_veth_attach(pid_t pid, const char *host_if, const char *ip, const char *src, struct lg_error *err) {
        struct attach a = {.host_if = host_if};
        int r = check_ifname(host_if, err);
        if (r < 0)
                return r;
        if ((r = parse_ip(ip, &a.ip, err)) < 0 || (r = parse_ip(src, &a.src, err)) < 0)
                return r;
        _cleanup_close_ int nsfd = open_netns(pid, err);
        if (nsfd < 0)
                return lg_error_wrap(err, nsfd, "attach `%s` to pid %d", host_if, (int) pid);
        _cleanup_nl_ struct nl *nl = NULL;
        r = nl_open(&nl, err);
        if (r < 0)
                return lg_error_wrap(err, r, "attach `%s` to pid %d", host_if, (int) pid);

        /* The pair, down, its peer eth0 made directly in the namespace. */
        struct nlmsghdr *nlh = nl_msg(nl, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL | NLM_F_ECHO, "create the veth", 0);
        put_ifinfo(nlh, 0, 0, 0);
        mnl_attr_put_strz(nlh, IFLA_IFNAME, host_if);
        mnl_attr_put(nlh, IFLA_ADDRESS, sizeof(host_mac), host_mac);
        struct nlattr *linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
        mnl_attr_put_strz(nlh, IFLA_INFO_KIND, "veth");
        struct nlattr *info = mnl_attr_nest_start(nlh, IFLA_INFO_DATA);
        struct nlattr *peer = mnl_attr_nest_start(nlh, VETH_INFO_PEER);
        struct ifinfomsg *pifi = mnl_nlmsg_put_extra_header(nlh, sizeof(*pifi)); /* the peer's header */
        pifi->ifi_family = AF_UNSPEC;
        mnl_attr_put_strz(nlh, IFLA_IFNAME, "eth0");
        mnl_attr_put_u32(nlh, IFLA_NET_NS_FD, (uint32_t) nsfd);
        mnl_attr_nest_end(nlh, peer);
        mnl_attr_nest_end(nlh, info);
        mnl_attr_nest_end(nlh, linkinfo);
        r = nl_run(nl, attach_echo_cb, &a, err);
        if (r < 0)
                return lg_error_wrap(err, r, "attach `%s` to pid %d", host_if, (int) pid);
        /* From here on the pair is ours: a failure deletes it. */
        if (!a.host_index) {
                /* No echo (kernel < 6.3). */
                a.host_index = (int) if_nametoindex(host_if);
                if (!a.host_index) {
                        r = lg_error_set(err, errno, "find the host end");
                        goto fail;
                }
        }

        r = in_netns(nsfd, attach_inside, &a, err);
        if (r < 0)
                goto fail;

        /* The host end without IPv6 (before it is up: eth0 is, so it would
         * get its link-local address at once), up, and the route to ip. */
        nlh = nl_msg(nl, RTM_SETLINK, 0, "turn IPv6 off on the host end", 0);
        put_ifinfo(nlh, a.host_index, 0, 0);
        put_no_ipv6_ll(nlh);
        nlh = nl_msg(nl, RTM_SETLINK, 0, "set the host end up", 0);
        put_ifinfo(nlh, a.host_index, IFF_UP, IFF_UP);
        nlh = nl_msg(nl, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_EXCL, "add the host route", 0);
        put_host_route(nlh, a.host_index, &a.ip, &a.src);
        r = nl_run(nl, NULL, NULL, err);
        if (r < 0)
                goto fail;
        return 0;

fail:
        /* Deleting the host end deletes eth0 and every address, route and
         * neighbour made on either; a failure of this is not the error to
         * report. */
        nlh = nl_msg(nl, RTM_DELLINK, 0, "delete the veth", 0);
        put_ifinfo(nlh, a.host_index, 0, 0);
        if (!a.host_index)
                mnl_attr_put_strz(nlh, IFLA_IFNAME, host_if);
        (void) nl_run(nl, NULL, NULL, NULL);
        return lg_error_wrap(err, r, "attach `%s` (%s) to pid %d", host_if, ip, (int) pid);
}

int lg_nl_host_route_set(const char *host_if, const char *ip, const char *src, struct lg_error *err) {
        struct in_addr a, s;
        int r;
        if ((r = parse_ip(ip, &a, err)) < 0 || (r = parse_ip(src, &s, err)) < 0)
                return r;
        int index = lg_nl_ifindex(host_if, err);
        if (index < 0)
                return index;
        _cleanup_nl_ struct nl *nl = NULL;
        r = nl_open(&nl, err);
        if (r < 0)
                return r;
        /* Replace: the route the host end has (an identical one stays as
         * it is), never a second one beside it. */
        struct nlmsghdr *nlh = nl_msg(nl, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, "set the host route", 0);
        put_host_route(nlh, index, &a, &s);
        r = nl_run(nl, NULL, NULL, err);
        if (r < 0)
                return lg_error_wrap(err, r, "route %s dev `%s` src %s", ip, host_if, src);
        return 0;
}

int lg_nl_link_delete(const char *ifname, struct lg_error *err) {
        int r = check_ifname(ifname, err);
        if (r < 0)
                return r;
        _cleanup_nl_ struct nl *nl = NULL;
        r = nl_open(&nl, err);
        if (r < 0)
                return r;
        struct nlmsghdr *nlh = nl_msg(nl, RTM_DELLINK, 0, "delete the link", 0);
        put_ifinfo(nlh, 0, 0, 0);
        mnl_attr_put_strz(nlh, IFLA_IFNAME, ifname);
        r = nl_run(nl, NULL, NULL, err);
        if (r < 0)
                return lg_error_wrap(err, r, "`%s`", ifname);
        return 0;
}

/* ---- addresses ---- */

/* The IPv4 addresses of one link: fn per address, with its prefix length. */
struct addr_walk {
        int index;
        void (*fn)(const struct in_addr *ip, unsigned prefix_len, void *data);
        void *data;
};

static int addr_walk_cb(const struct nlmsghdr *nlh, void *data) {
        struct addr_walk *w = data;
        const struct ifaddrmsg *ifa = mnl_nlmsg_get_payload(nlh);
        if (nlh->nlmsg_type != RTM_NEWADDR || ifa->ifa_family != AF_INET || (int) ifa->ifa_index != w->index)
                return MNL_CB_OK;
        const struct nlattr *attr;
        mnl_attr_for_each(attr, nlh, sizeof(*ifa)) {
                if (mnl_attr_get_type(attr) == IFA_LOCAL && mnl_attr_get_payload_len(attr) == 4) {
                        struct in_addr ip;
                        memcpy(&ip, mnl_attr_get_payload(attr), 4);
                        w->fn(&ip, ifa->ifa_prefixlen, w->data);
                }
        }
        return MNL_CB_OK;
}

/* Dump the addresses of link index into fn; reset(data) before each try
 * (a dump interrupted by a change is read again). */
static int addrs_list(struct nl *nl, int index, void (*reset)(void *data),
                      void (*fn)(const struct in_addr *ip, unsigned prefix_len, void *data), void *data,
                      struct lg_error *err) {
        struct addr_walk w = {index, fn, data};
        int r = 0;
        for (int i = 0; i < NL_DUMP_TRIES; i++) {
                struct nlmsghdr *nlh = nl_msg(nl, RTM_GETADDR, NLM_F_DUMP, "list the addresses", 0);
                struct ifaddrmsg *ifa = mnl_nlmsg_put_extra_header(nlh, sizeof(*ifa));
                ifa->ifa_family = AF_INET;
                reset(data);
                r = nl_dump(nl, addr_walk_cb, &w, err);
                if (r != -EINTR)
                        break;
        }
        return r;
}

/* ---- veth read ---- */

struct read_ctx {
        struct link_info eth0;
        struct in_addr ip;
        bool have_ip;
};

static void read_reset(void *data) { ((struct read_ctx *) data)->have_ip = false; }

static void read_addr(const struct in_addr *ip, unsigned prefix_len, void *data) {
        struct read_ctx *c = data;
        (void) prefix_len;
        if (!c->have_ip) {
                c->ip = *ip;
                c->have_ip = true;
        }
}

static int read_inside(void *data, struct lg_error *err) {
        struct read_ctx *c = data;
        _cleanup_nl_ struct nl *nl = NULL;
        int r = nl_open(&nl, err);
        if (r < 0)
                return r;
        r = link_get(nl, "eth0", 0, &c->eth0, err);
        if (r == -ENODEV)
                return lg_error_setm(err, ENOENT, "no eth0");
        if (r < 0)
                return r;
        r = addrs_list(nl, c->eth0.index, read_reset, read_addr, c, err);
        if (r < 0)
                return r;
        if (!c->have_ip)
                return lg_error_setm(err, ENOENT, "eth0 has no address");
        return 0;
}

int lg_nl_veth_read(pid_t pid, char ip[LG_NET_IP_MAX], char host_if[LG_NET_IFNAME_MAX], struct lg_error *err) {
        _cleanup_close_ int nsfd = open_netns(pid, err);
        if (nsfd < 0)
                return lg_error_wrap(err, nsfd, "read the veth of pid %d", (int) pid);
        struct read_ctx c = {0};
        int r = in_netns(nsfd, read_inside, &c, err);
        if (r < 0)
                return lg_error_wrap(err, r, "read the veth of pid %d", (int) pid);
        if (c.eth0.link <= 0 || c.eth0.link == c.eth0.index)
                return lg_error_setm(err, ENOENT, "read the veth of pid %d: eth0 is not a veth", (int) pid);

        _cleanup_nl_ struct nl *nl = NULL;
        r = nl_open(&nl, err);
        if (r < 0)
                return r;
        struct link_info host;
        r = link_get(nl, NULL, c.eth0.link, &host, err);
        /* The peer must be here and point back at eth0: an index alone
         * could name an unrelated host link. */
        if (r == -ENODEV || (r >= 0 && host.link != c.eth0.index))
                return lg_error_setm(err, ENOENT, "read the veth of pid %d: its peer is not a host link", (int) pid);
        if (r < 0)
                return lg_error_wrap(err, r, "read the veth of pid %d", (int) pid);
        inet_ntop(AF_INET, &c.ip, ip, LG_NET_IP_MAX);
        snprintf(host_if, LG_NET_IFNAME_MAX, "%s", host.name);
        return 0;
}

/* ---- lists ---- */

struct names {
        struct link_info *v;
        size_t n, cap;
        const char *prefix; /* links_list: keep only these */
        char skip[IFNAMSIZ + 2];
};

static void names_free(struct names *ns) { free(ns->v); }

static int links_collect_cb(const struct nlmsghdr *nlh, void *data) {
        struct names *ns = data;
        if (nlh->nlmsg_type != RTM_NEWLINK)
                return MNL_CB_OK;
        struct link_info li;
        link_parse(nlh, &li);
        if (ns->prefix && (strncmp(li.name, ns->prefix, strlen(ns->prefix)) != 0 || strcmp(li.name, ns->skip) == 0))
                return MNL_CB_OK;
        for (size_t i = 0; i < ns->n; i++)
                if (ns->v[i].index == li.index) { /* seen by an earlier pass (links_dump) */
                        ns->v[i] = li;
                        return MNL_CB_OK;
                }
        if (lg_grow((void **) &ns->v, &ns->cap, ns->n, sizeof(*ns->v), 64) < 0) {
                errno = ENOMEM;
                return MNL_CB_ERROR;
        }
        ns->v[ns->n++] = li;
        return MNL_CB_OK;
}

/* Every host link (or those named prefix*), read again when a change
 * interrupted the dump. On a host where links come and go all the time
 * (other legionds' sandboxes, a benchmark) every pass can be interrupted:
 * then the links of all passes together are the answer, not an error (the
 * error made legiond's start and --stop-all fail under load). Each pass
 * read to its end saw every link that stayed through it (kernels from 6.7
 * resume a link dump at the next ifindex; older ones at a position in a
 * hash bucket, which can skip a link when one before it goes, and NL_DUMP_TRIES
 * passes make that unlikely); a link that went meanwhile is one more name,
 * as one gone right after a whole dump is. */
static int links_dump(struct nl *nl, struct names *ns, struct lg_error *err) {
        int r = 0;
        ns->n = 0;
        for (int i = 0; i < NL_DUMP_TRIES; i++) {
                struct nlmsghdr *nlh = nl_msg(nl, RTM_GETLINK, NLM_F_DUMP, "list the links", 0);
                put_ifinfo(nlh, 0, 0, 0);
                mnl_attr_put_u32(nlh, IFLA_EXT_MASK, RTEXT_FILTER_SKIP_STATS);
                r = nl_dump(nl, links_collect_cb, ns, err);
                if (r != -EINTR)
                        return r;
        }
        return 0;
}

int lg_nl_links_list(const char *prefix, lg_nl_link_cb cb, void *data, struct lg_error *err) {
        if (!prefix || !prefix[0] || strlen(prefix) >= IFNAMSIZ - 1)
                return lg_error_setm(err, EINVAL, "links list: bad prefix");
        _cleanup_nl_ struct nl *nl = NULL;
        int r = nl_open(&nl, err);
        if (r < 0)
                return r;
        _cleanup_(names_free) struct names ns = {.prefix = prefix};
        snprintf(ns.skip, sizeof(ns.skip), "%s0", prefix);
        r = links_dump(nl, &ns, err);
        if (r < 0)
                return r;
        for (size_t i = 0; i < ns.n; i++) {
                r = cb(ns.v[i].name, data);
                if (r < 0)
                        return r;
        }
        return 0;
}

struct route {
        struct in_addr dst;
        int oif;
};

struct routes {
        struct route *v;
        size_t n, cap;
        uint32_t table;  /* only routes of this table */
        bool host_only;  /* only /32 with an out interface (routes_list) */
        struct nl *del;  /* table_flush: delete each here (batches of NL_BATCH_MAX) */
        struct lg_error *err;
        int del_r;
};

static void routes_free(struct routes *rs) { free(rs->v); }

static int route_attr_cb(const struct nlattr *attr, void *data) {
        const struct nlattr **tb = data;
        int type = mnl_attr_get_type(attr);
        if (type <= RTA_MAX)
                tb[type] = attr;
        return MNL_CB_OK;
}

static int routes_collect_cb(const struct nlmsghdr *nlh, void *data) {
        struct routes *rs = data;
        const struct rtmsg *rtm = mnl_nlmsg_get_payload(nlh);
        if (nlh->nlmsg_type != RTM_NEWROUTE || rtm->rtm_family != AF_INET || rtm->rtm_protocol != LG_NL_PROTO)
                return MNL_CB_OK;
        const struct nlattr *tb[RTA_MAX + 1] = {0};
        mnl_attr_parse(nlh, sizeof(*rtm), route_attr_cb, tb);
        uint32_t table = rtm->rtm_table;
        if (tb[RTA_TABLE] && mnl_attr_validate(tb[RTA_TABLE], MNL_TYPE_U32) == 0)
                table = mnl_attr_get_u32(tb[RTA_TABLE]);
        if (table != rs->table)
                return MNL_CB_OK;
        if (rs->del) {
                nl_send_back(rs->del, &rs->del_r, rs->err, nlh, RTM_DELROUTE, "delete a route", ESRCH);
                return MNL_CB_OK;
        }
        if (rtm->rtm_dst_len != 32 || rtm->rtm_type != RTN_UNICAST || !tb[RTA_DST] || !tb[RTA_OIF] ||
            mnl_attr_get_payload_len(tb[RTA_DST]) != 4 || mnl_attr_validate(tb[RTA_OIF], MNL_TYPE_U32) < 0)
                return MNL_CB_OK;
        if (lg_grow((void **) &rs->v, &rs->cap, rs->n, sizeof(*rs->v), 64) < 0) {
                errno = ENOMEM;
                return MNL_CB_ERROR;
        }
        memcpy(&rs->v[rs->n].dst, mnl_attr_get_payload(tb[RTA_DST]), 4);
        rs->v[rs->n].oif = (int) mnl_attr_get_u32(tb[RTA_OIF]);
        rs->n++;
        return MNL_CB_OK;
}

static int routes_dump(struct nl *nl, struct routes *rs, struct lg_error *err) {
        int r = 0;
        for (int i = 0; i < NL_DUMP_TRIES; i++) {
                struct nlmsghdr *nlh = nl_msg(nl, RTM_GETROUTE, NLM_F_DUMP, "list the routes", 0);
                struct rtmsg *rtm = mnl_nlmsg_put_extra_header(nlh, sizeof(*rtm));
                rtm->rtm_family = AF_INET;
                rs->n = 0;
                r = nl_dump(nl, routes_collect_cb, rs, err);
                if (r != -EINTR || rs->del)
                        return r;
        }
        /* Interrupted on every pass (routes come and go with other sandboxes
         * all the time): the last pass is the answer. A route dump resumes at
         * the next key of the table, so it saw every route that stayed. */
        return 0;
}

static int link_index_cmp(const void *a, const void *b) {
        const struct link_info *x = a, *y = b;
        return (x->index > y->index) - (x->index < y->index);
}

int lg_nl_routes_list(lg_nl_route_cb cb, void *data, struct lg_error *err) {
        _cleanup_nl_ struct nl *nl = NULL;
        int r = nl_open(&nl, err);
        if (r < 0)
                return r;
        _cleanup_(routes_free) struct routes rs = {.table = RT_TABLE_MAIN, .host_only = true};
        _cleanup_(names_free) struct names ns = {0};
        /* Routes first: a link made between the dumps is only one more
         * name; a link gone between them drops its routes (they went with it). */
        r = routes_dump(nl, &rs, err);
        if (r < 0)
                return r;
        r = links_dump(nl, &ns, err);
        if (r < 0)
                return r;
        if (ns.n > 0)
                qsort(ns.v, ns.n, sizeof(*ns.v), link_index_cmp);
        for (size_t i = 0; i < rs.n; i++) {
                struct link_info key = {.index = rs.v[i].oif};
                const struct link_info *li = ns.n ? bsearch(&key, ns.v, ns.n, sizeof(*ns.v), link_index_cmp) : NULL;
                if (!li)
                        continue;
                char ip[LG_NET_IP_MAX];
                inet_ntop(AF_INET, &rs.v[i].dst, ip, sizeof(ip));
                r = cb(ip, li->name, data);
                if (r < 0)
                        return r;
        }
        return 0;
}

/* ---- the dummy link, ifindex ---- */

struct dummy_addrs {
        int index;
        struct in_addr keep;
        bool has_keep;
        struct in_addr drop[16];
        unsigned n_drop;
};

static void dummy_reset(void *data) {
        struct dummy_addrs *d = data;
        d->has_keep = false;
        d->n_drop = 0;
}

static void dummy_addr(const struct in_addr *ip, unsigned prefix_len, void *data) {
        struct dummy_addrs *d = data;
        if (ip->s_addr == d->keep.s_addr && prefix_len == 32)
                d->has_keep = true;
        else if (d->n_drop < ARRAY_SIZE(d->drop))
                d->drop[d->n_drop++] = *ip;
}

int lg_nl_dummy_ensure(const char *ifname, const char *ip, struct lg_error *err) {
        struct dummy_addrs d = {0};
        int r = check_ifname(ifname, err);
        if (r < 0)
                return r;
        r = parse_ip(ip, &d.keep, err);
        if (r < 0)
                return r;
        _cleanup_nl_ struct nl *nl = NULL;
        r = nl_open(&nl, err);
        if (r < 0)
                return r;
        struct link_info li;
        r = link_get(nl, ifname, 0, &li, err);
        if (r >= 0 && strcmp(li.kind, "dummy") != 0 && strcmp(li.kind, "bridge") != 0)
                return lg_error_setm(err, EEXIST, "link `%s` exists and is not a dummy link", ifname);
        if (r < 0 && r != -ENODEV)
                return lg_error_wrap(err, r, "`%s`", ifname);
        if (r == -ENODEV) {
                /* A kernel without the dummy driver (CONFIG_DUMMY off):
                 * a bridge without ports holds an address as well. */
                static const char *const kinds[] = {"dummy", "bridge"};
                for (size_t i = 0; i < ARRAY_SIZE(kinds); i++) {
                        struct nlmsghdr *nlh = nl_msg(nl, RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL,
                                                      "create the dummy link", 0);
                        put_ifinfo(nlh, 0, 0, 0); /* down until IPv6 is off */
                        mnl_attr_put_strz(nlh, IFLA_IFNAME, ifname);
                        struct nlattr *linkinfo = mnl_attr_nest_start(nlh, IFLA_LINKINFO);
                        mnl_attr_put_strz(nlh, IFLA_INFO_KIND, kinds[i]);
                        mnl_attr_nest_end(nlh, linkinfo);
                        r = nl_run(nl, NULL, NULL, err);
                        if (r != -EOPNOTSUPP)
                                break;
                }
                if (r < 0)
                        return lg_error_wrap(err, r, "`%s`", ifname);
                r = link_get(nl, ifname, 0, &li, err);
                if (r < 0)
                        return lg_error_wrap(err, r, "`%s`", ifname);
        }
        d.index = li.index;
        r = addrs_list(nl, d.index, dummy_reset, dummy_addr, &d, err);
        if (r < 0)
                return lg_error_wrap(err, r, "`%s`", ifname);

        /* No IPv6 link-local address (sandboxes must not find the host
         * over IPv6), up (it may have been set down), only ip/32 (a
         * previous CIDR's gateway goes). */
        struct nlmsghdr *nlh = nl_msg(nl, RTM_SETLINK, 0, "turn IPv6 off on the dummy link", 0);
        put_ifinfo(nlh, d.index, 0, 0);
        put_no_ipv6_ll(nlh);
        nlh = nl_msg(nl, RTM_SETLINK, 0, "set the dummy link up", 0);
        put_ifinfo(nlh, d.index, IFF_UP, IFF_UP);
        for (unsigned i = 0; i < d.n_drop; i++) {
                nlh = nl_msg(nl, RTM_DELADDR, 0, "delete an old address", EADDRNOTAVAIL);
                put_ifaddr(nlh, d.index, &d.drop[i], false);
        }
        if (!d.has_keep) {
                nlh = nl_msg(nl, RTM_NEWADDR, NLM_F_CREATE | NLM_F_REPLACE, "add the address", 0);
                put_ifaddr(nlh, d.index, &d.keep, true);
        }
        r = nl_run(nl, NULL, NULL, err);
        if (r < 0)
                return lg_error_wrap(err, r, "`%s`", ifname);
        return 0;
}

int lg_nl_ifindex(const char *ifname, struct lg_error *err) {
        int r = check_ifname(ifname, err);
        if (r < 0)
                return r;
        unsigned idx = if_nametoindex(ifname);
        if (idx == 0)
                return lg_error_set(err, errno == ENXIO ? ENODEV : errno, "link `%s`", ifname);
        return (int) idx;
}

/* ---- rules ---- */

struct rules {
        struct nl *del;   /* deletes go here */
        bool by_mark;
        uint32_t mark;
        uint32_t keep_table; /* with by_mark: the rule of this table stays (0: none) */
        bool kept;
        struct lg_error *err;
        int del_r;
};

static int rule_attr_cb(const struct nlattr *attr, void *data) {
        const struct nlattr **tb = data;
        int type = mnl_attr_get_type(attr);
        if (type <= FRA_MAX)
                tb[type] = attr;
        return MNL_CB_OK;
}

static uint32_t attr_u32(const struct nlattr *a, uint32_t def) {
        return a && mnl_attr_validate(a, MNL_TYPE_U32) == 0 ? mnl_attr_get_u32(a) : def;
}

static int rules_cb(const struct nlmsghdr *nlh, void *data) {
        struct rules *rs = data;
        const struct fib_rule_hdr *frh = mnl_nlmsg_get_payload(nlh);
        if (nlh->nlmsg_type != RTM_NEWRULE || frh->family != AF_INET)
                return MNL_CB_OK;
        const struct nlattr *tb[FRA_MAX + 1] = {0};
        mnl_attr_parse(nlh, sizeof(*frh), rule_attr_cb, tb);
        if (!tb[FRA_PROTOCOL] || mnl_attr_get_u8(tb[FRA_PROTOCOL]) != LG_NL_PROTO)
                return MNL_CB_OK;
        if (rs->by_mark) {
                if (attr_u32(tb[FRA_FWMARK], 0) != rs->mark)
                        return MNL_CB_OK;
                uint32_t table = attr_u32(tb[FRA_TABLE], frh->table);
                if (rs->keep_table && table == rs->keep_table && attr_u32(tb[FRA_PRIORITY], 0) == LG_NL_RULE_PREF &&
                    attr_u32(tb[FRA_FWMASK], 0) == 0xffffffffu && !rs->kept) {
                        rs->kept = true;
                        return MNL_CB_OK;
                }
        }
        nl_send_back(rs->del, &rs->del_r, rs->err, nlh, RTM_DELRULE, "delete a rule", ENOENT);
        return MNL_CB_OK;
}

/* Dump the IPv4 rules on nl and delete ours (those of rs->mark, but the
 * one to keep) through a second socket. */
static int rules_prune(struct nl *nl, struct rules *rs, struct lg_error *err) {
        _cleanup_nl_ struct nl *del = NULL;
        int r = nl_open(&del, err);
        if (r < 0)
                return r;
        rs->del = del;
        rs->err = err;
        struct nlmsghdr *nlh = nl_msg(nl, RTM_GETRULE, NLM_F_DUMP, "list the rules", 0);
        struct fib_rule_hdr *frh = mnl_nlmsg_put_extra_header(nlh, sizeof(*frh));
        frh->family = AF_INET;
        r = nl_dump(nl, rules_cb, rs, err);
        /* An interrupted dump still saw every rule that stayed. */
        if (r < 0 && r != -EINTR)
                return r;
        if (rs->del_r < 0)
                return rs->del_r;
        return nl_run(del, NULL, NULL, err);
}

int lg_nl_rule_set(uint32_t mark, uint32_t table, struct lg_error *err) {
        if (mark == 0 || table == 0 || table == RT_TABLE_UNSPEC || table >= RT_TABLE_MAX)
                return lg_error_setm(err, EINVAL, "rule: bad mark %#x or table %u", mark, table);
        _cleanup_nl_ struct nl *nl = NULL;
        int r = nl_open(&nl, err);
        if (r < 0)
                return r;
        /* Add first, then delete what it replaces: the mark is never
         * without its rule (its traffic never takes the main table). */
        struct nlmsghdr *nlh = nl_msg(nl, RTM_NEWRULE, NLM_F_CREATE | NLM_F_EXCL, "add the rule", EEXIST);
        struct fib_rule_hdr *frh = mnl_nlmsg_put_extra_header(nlh, sizeof(*frh));
        frh->family = AF_INET;
        frh->action = FR_ACT_TO_TBL;
        frh->table = table < 256 ? table : RT_TABLE_UNSPEC;
        mnl_attr_put_u32(nlh, FRA_TABLE, table);
        mnl_attr_put_u32(nlh, FRA_FWMARK, mark);
        mnl_attr_put_u32(nlh, FRA_FWMASK, 0xffffffffu);
        mnl_attr_put_u32(nlh, FRA_PRIORITY, LG_NL_RULE_PREF);
        mnl_attr_put_u8(nlh, FRA_PROTOCOL, LG_NL_PROTO);
        r = nl_run(nl, NULL, NULL, err);
        if (r >= 0) {
                struct rules rs = {.by_mark = true, .mark = mark, .keep_table = table};
                r = rules_prune(nl, &rs, err);
        }
        if (r < 0)
                return lg_error_wrap(err, r, "rule fwmark %#x table %u", mark, table);
        return 0;
}

int lg_nl_rule_delete(uint32_t mark, struct lg_error *err) {
        _cleanup_nl_ struct nl *nl = NULL;
        int r = nl_open(&nl, err);
        if (r < 0)
                return r;
        struct rules rs = {.by_mark = true, .mark = mark};
        r = rules_prune(nl, &rs, err);
        if (r < 0)
                return lg_error_wrap(err, r, "rule fwmark %#x", mark);
        return 0;
}

int lg_nl_rules_flush(struct lg_error *err) {
        _cleanup_nl_ struct nl *nl = NULL;
        int r = nl_open(&nl, err);
        if (r < 0)
                return r;
        struct rules rs = {0};
        r = rules_prune(nl, &rs, err);
        if (r < 0)
                return lg_error_wrap(err, r, "flush the rules");
        return 0;
}

/* ip/prefix_len parsed into a, and a socket to send its request on. */
static int prefix_open(const char *ip, unsigned prefix_len, struct in_addr *a, struct nl **nl, struct lg_error *err) {
        int r = parse_ip(ip, a, err);
        if (r < 0)
                return r;
        if (prefix_len > 32)
                return lg_error_setm(err, EINVAL, "%s/%u: bad prefix length", ip, prefix_len);
        return nl_open(nl, err);
}

/* `to ip/prefix_len lookup main`, added (one there already is fine) or
 * deleted (a missing one is fine). */
static int rule_to_main(bool add, const char *ip, unsigned prefix_len, struct lg_error *err) {
        struct in_addr a;
        _cleanup_nl_ struct nl *nl = NULL;
        int r = prefix_open(ip, prefix_len, &a, &nl, err);
        if (r < 0)
                return r;
        struct nlmsghdr *nlh = nl_msg(nl, add ? RTM_NEWRULE : RTM_DELRULE, add ? NLM_F_CREATE | NLM_F_EXCL : 0,
                                      add ? "add the rule" : "delete the rule", add ? EEXIST : ENOENT);
        struct fib_rule_hdr *frh = mnl_nlmsg_put_extra_header(nlh, sizeof(*frh));
        frh->family = AF_INET;
        frh->action = FR_ACT_TO_TBL;
        frh->table = RT_TABLE_MAIN;
        frh->dst_len = (uint8_t) prefix_len;
        mnl_attr_put_u32(nlh, FRA_TABLE, RT_TABLE_MAIN);
        mnl_attr_put(nlh, FRA_DST, 4, &a);
        mnl_attr_put_u32(nlh, FRA_PRIORITY, LG_NL_RULE_PREF - 1);
        mnl_attr_put_u8(nlh, FRA_PROTOCOL, LG_NL_PROTO);
        r = nl_run(nl, NULL, NULL, err);
        if (r < 0)
                return lg_error_wrap(err, r, "rule to %s/%u lookup main", ip, prefix_len);
        return 0;
}

int lg_nl_rule_to_main(const char *ip, unsigned prefix_len, struct lg_error *err) {
        return rule_to_main(true, ip, prefix_len, err);
}

int lg_nl_rule_to_main_delete(const char *ip, unsigned prefix_len, struct lg_error *err) {
        return rule_to_main(false, ip, prefix_len, err);
}

/* ---- the pod CIDR's unreachable route ---- */

/* `unreachable ip/prefix_len proto LG_NL_PROTO` in the main table: set
 * (replacing the one there: a restart makes no second) or deleted (ours
 * only: the kernel matches protocol and type; a missing one is fine). */
static int unreachable(bool add, const char *ip, unsigned prefix_len, struct lg_error *err) {
        struct in_addr a;
        _cleanup_nl_ struct nl *nl = NULL;
        int r = prefix_open(ip, prefix_len, &a, &nl, err);
        if (r < 0)
                return r;
        struct nlmsghdr *nlh = nl_msg(nl, add ? RTM_NEWROUTE : RTM_DELROUTE, add ? NLM_F_CREATE | NLM_F_REPLACE : 0,
                                      add ? "add the route" : "delete the route", add ? 0 : ESRCH);
        /* Scope nowhere in a delete: any scope matches. */
        struct rtmsg *rtm = put_route(nlh, RT_TABLE_MAIN, add ? RT_SCOPE_UNIVERSE : RT_SCOPE_NOWHERE);
        rtm->rtm_type = RTN_UNREACHABLE;
        rtm->rtm_dst_len = (unsigned char) prefix_len;
        mnl_attr_put(nlh, RTA_DST, sizeof(a), &a);
        r = nl_run(nl, NULL, NULL, err);
        if (r < 0)
                return lg_error_wrap(err, r, "unreachable %s/%u", ip, prefix_len);
        return 0;
}

int lg_nl_unreachable_set(const char *ip, unsigned prefix_len, struct lg_error *err) {
        return unreachable(true, ip, prefix_len, err);
}

int lg_nl_unreachable_delete(const char *ip, unsigned prefix_len, struct lg_error *err) {
        return unreachable(false, ip, prefix_len, err);
}

/* ---- route tables ---- */

static int check_table(uint32_t table, struct lg_error *err) {
        if (table == RT_TABLE_UNSPEC || table == RT_TABLE_MAIN || table == RT_TABLE_LOCAL ||
            table == RT_TABLE_DEFAULT || table >= RT_TABLE_MAX)
                return lg_error_setm(err, EINVAL, "route table %u is not one to change", table);
        return 0;
}

int lg_nl_table_default_route(uint32_t table, const char *ifname, const char *gateway, struct lg_error *err) {
        int r = check_table(table, err);
        if (r < 0)
                return r;
        struct in_addr gw = {0};
        bool has_gw = gateway && gateway[0];
        if (has_gw && (r = parse_ip(gateway, &gw, err)) < 0)
                return r;
        r = lg_nl_ifindex(ifname, err);
        if (r < 0)
                return r;
        int oif = r;
        _cleanup_nl_ struct nl *nl = NULL;
        r = nl_open(&nl, err);
        if (r < 0)
                return r;
        struct nlmsghdr *nlh = nl_msg(nl, RTM_NEWROUTE, NLM_F_CREATE | NLM_F_REPLACE, "add the default route", 0);
        put_route(nlh, table, has_gw ? RT_SCOPE_UNIVERSE : RT_SCOPE_LINK);
        if (has_gw)
                mnl_attr_put(nlh, RTA_GATEWAY, 4, &gw);
        mnl_attr_put_u32(nlh, RTA_OIF, oif);
        r = nl_run(nl, NULL, NULL, err);
        if (r < 0)
                return lg_error_wrap(err, r, "table %u: default via `%s` dev `%s`", table,
                                     has_gw ? gateway : "(on-link)", ifname);
        return 0;
}

/* Only our routes (protocol LG_NL_PROTO) go: a table an admin named may
 * hold routes of theirs. */
int lg_nl_table_flush(uint32_t table, struct lg_error *err) {
        int r = check_table(table, err);
        if (r < 0)
                return r;
        _cleanup_nl_ struct nl *nl = NULL, *del = NULL;
        r = nl_open(&nl, err);
        if (r >= 0)
                r = nl_open(&del, err);
        if (r < 0)
                return r;
        _cleanup_(routes_free) struct routes rs = {.table = table, .del = del, .err = err};
        r = routes_dump(nl, &rs, err);
        if (rs.del_r < 0)
                r = rs.del_r;
        else if (r >= 0 || r == -EINTR) /* an interrupted dump still saw every route that stayed */
                r = nl_run(del, NULL, NULL, err);
        if (r < 0)
                return lg_error_wrap(err, r, "flush table %u", table);
        return 0;
}

int lg_nl_enable_forwarding(struct lg_error *err) {
        char cur[8];
        if (lg_read_file_at(AT_FDCWD, "/proc/sys/net/ipv4/ip_forward", cur, sizeof(cur)) > 0 && strcmp(cur, "1") == 0)
                return 0;
        int r = lg_write_file_at(AT_FDCWD, "/proc/sys/net/ipv4/ip_forward", "1", false);
        if (r < 0)
                return lg_error_set(err, -r, "write /proc/sys/net/ipv4/ip_forward");
        return 0;
}

/* The workload hand-off: how the owner gives a created sandbox's waiting
 * first process its command line, environment, working directory,
 * hostname, user and log at start, over the sync socket.
 *
 * The payload is a control-protocol payload (src/common/proto.h: NUL-ended
 * "key=value" fields, "op=launch" first). The sync socket is SOCK_SEQPACKET,
 * whose records are limited by the socket buffer, so the payload travels
 * as a header record ('L', 3 bytes of padding, its length as a 32-bit
 * integer; the log fd beside it as SCM_RIGHTS) and then records of at most
 * CHUNK bytes.
 *
 * The receiving side runs in the sandbox's first process between clone and
 * exec, possibly forked from a multi-threaded owner: system calls only (the
 * buffers are mmap()ed), no malloc, no stdio, nothing that takes a lock. */
#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>

#include "common/proto.h"
#include "sandbox/sandbox-internal.h"

#define CHUNK (64u << 10)
#define HDR_LEN 8

int lg_launch_send(int sync_fd, const struct lg_msg *m, int log_fd) {
        if (m->len == 0 || m->len > LG_PROTO_MAX)
                return -EMSGSIZE;
        char hdr[HDR_LEN] = {'L'};
        uint32_t len = (uint32_t) m->len;
        memcpy(hdr + 4, &len, sizeof(len));
        struct iovec iov = {hdr, sizeof(hdr)};
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } cm;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
        if (log_fd >= 0) {
                memset(&cm, 0, sizeof(cm));
                mh.msg_control = cm.buf;
                mh.msg_controllen = sizeof(cm.buf);
                struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
                c->cmsg_level = SOL_SOCKET;
                c->cmsg_type = SCM_RIGHTS;
                c->cmsg_len = CMSG_LEN(sizeof(int));
                memcpy(CMSG_DATA(c), &log_fd, sizeof(int));
        }
        ssize_t n;
        do
                n = sendmsg(sync_fd, &mh, MSG_NOSIGNAL);
        while (n < 0 && errno == EINTR);
        if (n != (ssize_t) sizeof(hdr))
                return n < 0 ? -errno : -EIO;
        for (size_t off = 0; off < m->len;) {
                size_t k = m->len - off < CHUNK ? m->len - off : CHUNK;
                do
                        n = send(sync_fd, m->buf + off, k, MSG_NOSIGNAL);
                while (n < 0 && errno == EINTR);
                if (n != (ssize_t) k)
                        return n < 0 ? -errno : -EIO;
                off += k;
        }
        return 0;
}

/* The value of a "key=" field, or NULL. */
static const char *field(const char *f, const char *key) {
        size_t k = strlen(key);
        return !strncmp(f, key, k) && f[k] == '=' ? f + k + 1 : NULL;
}

static int parse_u64(const char *s, uint64_t *ret) {
        uint64_t v = 0;
        if (!*s)
                return -1;
        for (; *s; s++) {
                if (*s < '0' || *s > '9' || v > (UINT64_MAX - 9) / 10)
                        return -1;
                v = v * 10 + (uint64_t) (*s - '0');
        }
        *ret = v;
        return 0;
}

int lg_launch_recv(int sync_fd, struct lg_child_launch *ret, struct lg_child_error *e) {
        char hdr[HDR_LEN];
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } cm;
        struct iovec iov = {hdr, sizeof(hdr)};
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = cm.buf,
                            .msg_controllen = sizeof(cm.buf)};
        ssize_t n;
        memset(ret, 0, sizeof(*ret));
        ret->log_fd = -1;
        do
                n = recvmsg(sync_fd, &mh, MSG_CMSG_CLOEXEC);
        while (n < 0 && errno == EINTR);
        if (n == 0)
                return 0; /* the owner went away (destroy of a sandbox never started) */
        if (n < 0)
                return lg_child_fail(e, errno, "read the launch");
        for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c))
                if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_RIGHTS && c->cmsg_len == CMSG_LEN(sizeof(int)))
                        memcpy(&ret->log_fd, CMSG_DATA(c), sizeof(int));
        uint32_t len;
        memcpy(&len, hdr + 4, sizeof(len));
        if (n != HDR_LEN || hdr[0] != 'L' || (mh.msg_flags & (MSG_TRUNC | MSG_CTRUNC)) || len == 0 ||
            len > LG_PROTO_MAX)
                return lg_child_fail(e, EPROTO, "malformed launch header");
        char *buf = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (buf == MAP_FAILED)
                return lg_child_fail(e, errno, "map %u bytes for the launch", len);
        for (size_t got = 0; got < len;) {
                do
                        n = recv(sync_fd, buf + got, len - got, 0);
                while (n < 0 && errno == EINTR);
                if (n <= 0)
                        return lg_child_fail(e, n < 0 ? errno : EPROTO, "read the launch");
                got += (size_t) n;
        }
        if (buf[len - 1] != '\0')
                return lg_child_fail(e, EPROTO, "malformed launch");

        size_t nargs = 0, nenv = 0;
        for (const char *f = buf; f < buf + len; f += strlen(f) + 1) {
                nargs += field(f, "arg") != NULL;
                nenv += field(f, "env") != NULL;
        }
        size_t vlen = (nargs + 1 + nenv + 1) * sizeof(char *);
        char **v = mmap(NULL, vlen, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        if (v == MAP_FAILED)
                return lg_child_fail(e, errno, "map the launch's vectors");
        char **argv = v, **envp = v + nargs + 1;
        size_t ia = 0, ie = 0;
        bool op = false;
        for (char *f = buf; f < buf + len; f += strlen(f) + 1) {
                const char *val;
                if ((val = field(f, "op")))
                        op = !strcmp(val, "launch");
                else if ((val = field(f, "arg")))
                        argv[ia++] = (char *) val;
                else if ((val = field(f, "env")))
                        envp[ie++] = (char *) val;
                else if ((val = field(f, "hostname")))
                        ret->hostname = val;
                else if ((val = field(f, "cwd")))
                        ret->cwd = val;
                else if ((val = field(f, "setids")))
                        ret->setids = !strcmp(val, "1");
                else if ((val = field(f, "nofile")) && parse_u64(val, &ret->nofile) < 0)
                        return lg_child_fail(e, EPROTO, "malformed launch nofile");
        }
        argv[ia] = envp[ie] = NULL;
        if (!op || ia == 0 || !ret->hostname || !ret->cwd || !ret->nofile)
                return lg_child_fail(e, EPROTO, "incomplete launch");
        ret->argv = argv;
        ret->envp = envp;
        return 1;
}

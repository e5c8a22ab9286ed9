/* Helper of tests/e2e/test_lazy_fetcher.py (built by meson as
 * tests/lazy-test-tool):
 *   lazy-test-tool mount DIR SOCKFD
 * mounts the fetcher's FUSE filesystem at DIR with lg_lazy_fuse_mount and
 * sends the /dev/fuse fd over the unix socket SOCKFD (SCM_RIGHTS), so that
 * the test keeps the connection as legiond does, across fetchers;
 *   lazy-test-tool build TREE OUT
 * makes the lazy form of TREE with lg_lazy_build (OUT/meta.erofs, blob,
 * chunks; 64 KiB chunks), as convert does. */
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>

#include "lazy/fuse-proto.h"
#include "lazy/lazy.h"

static int send_fd(int sock, int fd) {
        char c = 'F';
        struct iovec iov = {&c, 1};
        union {
                struct cmsghdr h;
                char buf[CMSG_SPACE(sizeof(int))];
        } u;
        memset(&u, 0, sizeof(u));
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
        struct cmsghdr *cm = CMSG_FIRSTHDR(&mh);
        cm->cmsg_level = SOL_SOCKET;
        cm->cmsg_type = SCM_RIGHTS;
        cm->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(cm), &fd, sizeof(int));
        return sendmsg(sock, &mh, 0) == 1 ? 0 : -1;
}

int main(int argc, char **argv) {
        if (argc == 4 && !strcmp(argv[1], "mount")) {
                int fd;
                struct lg_error err = {0};
                if (lg_lazy_fuse_mount(argv[2], &fd, &err) < 0) {
                        fprintf(stderr, "lazy-test-tool: %s\n", err.msg);
                        return 1;
                }
                if (send_fd(atoi(argv[3]), fd) < 0) {
                        perror("lazy-test-tool: send fd");
                        return 1;
                }
                return 0;
        }
        if (argc == 4 && !strcmp(argv[1], "build")) {
                struct lg_error err = {0};
                if (lg_lazy_build(argv[2], argv[3], LG_CHUNK_SIZE_DEFAULT, NULL, NULL, &err) < 0) {
                        fprintf(stderr, "lazy-test-tool: %s\n", err.msg);
                        return 1;
                }
                return 0;
        }
        fputs("usage: lazy-test-tool mount DIR SOCKFD | build TREE OUT\n", stderr);
        return 2;
}

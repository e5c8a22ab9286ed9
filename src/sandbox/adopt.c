/* Detachable sandboxes: the attach socket, the record an adopting owner
 * reads, adoption, detaching and the list of sandboxes left by an owner
 * that is gone (sandbox.h says what each guarantees).
 *
 * Adoption trusts nothing it reads without checking it against the
 * kernel: the recorded pid must still name the process with the recorded
 * start time (a pidfd opened first, so the check cannot race a reuse of
 * the pid), and legion-init must answer op=attached on the socket. */
#include <dirent.h>
#include <fcntl.h>
#include <poll.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/un.h>
#include <sys/wait.h>

#include "sandbox/sandbox-internal.h"

/* A socket, and the address of dir's attach socket in a form that fits in
 * sun_path however long dir is: through an O_PATH fd of dir (*dfd, to
 * keep open while the address is used). */
static int attach_socket(const char *dir, int *dfd, struct sockaddr_un *a, struct lg_error *err) {
        *dfd = open(dir, O_PATH | O_DIRECTORY | O_CLOEXEC);
        if (*dfd < 0)
                return lg_error_set(err, errno, "open `%s`", dir);
        memset(a, 0, sizeof(*a));
        a->sun_family = AF_UNIX;
        snprintf(a->sun_path, sizeof(a->sun_path), "/proc/self/fd/%d/" LG_ATTACH_SOCKET, *dfd);
        int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
        return fd >= 0 ? fd : lg_error_set(err, errno, "socket");
}

int lg_attach_listen(const char *dir, struct lg_error *err) {
        _cleanup_close_ int dfd = -1;
        struct sockaddr_un a;
        _cleanup_close_ int fd = attach_socket(dir, &dfd, &a, err);
        if (fd < 0)
                return fd;
        /* Root's alone before anyone can connect: connect() needs write
         * permission on the socket, and listen() comes after the chmod. */
        if (bind(fd, (struct sockaddr *) &a, sizeof(a)) < 0 ||
            fchmodat(dfd, LG_ATTACH_SOCKET, 0600, 0) < 0 || listen(fd, 4) < 0)
                return lg_error_set(err, errno, "attach socket in `%s`", dir);
        return TAKE_FD(fd);
}

int lg_sandbox_write_record(const lg_sandbox *sb) {
        struct lg_state_record rec = {
                .pid = sb->pid,
                .host_uid = sb->host_uid,
                .worker_control = sb->worker_control,
                .capture_logs = sb->capture_logs,
                .n_extra = sb->n_extra,
                .log_max = sb->log_max,
                .nofile = sb->nofile,
                .limits = sb->limits,
        };
        int r = lg_process_start_time(sb->pid, &rec.start);
        return r < 0 ? r : lg_state_write_record(sb->dir, &rec);
}

bool lg_pidfd_alive(int pidfd) {
        return syscall(SYS_pidfd_send_signal, pidfd, 0, NULL, 0) == 0;
}

int lg_adopted_wait(int pidfd, siginfo_t *si, int flags) {
        memset(si, 0, sizeof(*si));
        for (;;) {
                struct pollfd pfd = {pidfd, POLLIN, 0};
                int n = poll(&pfd, 1, (flags & WNOHANG) ? 0 : -1);
                if (n < 0 && errno == EINTR)
                        continue;
                if (n < 0)
                        return -errno;
                if (n == 0)
                        return 0; /* still running */
                break;
        }
        /* Should this process be its reaper after all (a subreaper above
         * the owner that died), reap it and take the real status. */
        if (waitid(P_PIDFD, (id_t) pidfd, si, WEXITED | WNOHANG) == 0 && si->si_pid)
                return 0;
        memset(si, 0, sizeof(*si));
        si->si_pid = 1;
        si->si_code = CLD_KILLED;
        si->si_status = SIGKILL;
        return 0;
}

/* Connect to legion-init's attach socket and read its op=attached. */
static int attach(const char *dir, int *ret, struct lg_error *err) {
        _cleanup_close_ int dfd = -1;
        struct sockaddr_un a;
        _cleanup_close_ int fd = attach_socket(dir, &dfd, &a, err);
        if (fd < 0)
                return fd;
        if (connect(fd, (struct sockaddr *) &a, sizeof(a)) < 0)
                return lg_error_set(err, errno, "connect to its legion-init");
        struct pollfd pfd = {fd, POLLIN, 0};
        int n;
        do
                n = poll(&pfd, 1, LG_SANDBOX_ADOPT_TIMEOUT_MS);
        while (n < 0 && errno == EINTR);
        if (n <= 0)
                return lg_error_set(err, n < 0 ? errno : ETIMEDOUT, "wait for its legion-init to answer");
        struct lg_msg m;
        lg_msg_init(&m);
        int r = lg_msg_recv(fd, &m);
        const char *op = r == 1 ? lg_msg_get(&m, "op") : NULL;
        bool ok = op && !strcmp(op, "attached");
        lg_msg_free(&m);
        if (!ok)
                return lg_error_set(err, r < 0 ? -r : EPROTO, "its legion-init did not answer op=attached");
        *ret = TAKE_FD(fd);
        return 0;
}

/* The pidfd of the recorded legion-init, if it is still that process. */
static int open_init_pidfd(const struct lg_state_record *rec, struct lg_error *err) {
        int fd = (int) syscall(SYS_pidfd_open, rec->pid, 0);
        if (fd < 0)
                return lg_error_set(err, errno == ESRCH ? ESRCH : errno, "its legion-init (pid %d) is gone",
                                    (int) rec->pid);
        unsigned long long now;
        if (lg_process_start_time(rec->pid, &now) < 0 || now != rec->start) {
                close(fd);
                return lg_error_set(err, ESRCH, "its legion-init (pid %d) is gone", (int) rec->pid);
        }
        return fd;
}

static int adopt(lg_sandbox *sb, struct lg_error *err) {
        struct lg_state_record rec;
        int r = lg_state_read_record(sb->dir, &rec);
        if (r < 0)
                return lg_error_set(err, r == -ENOENT ? ENOTSUP : -r, "it is not detachable or its record is damaged");
        sb->pidfd = open_init_pidfd(&rec, err);
        if (sb->pidfd < 0)
                return sb->pidfd;
        sb->pid = rec.pid;
        r = attach(sb->dir, &sb->control_fd, err);
        if (r < 0)
                return r;
        char desc[PATH_MAX + 128];
        r = lg_state_read(sb->dir, desc, sizeof(desc), &sb->slot);
        if (r < 0)
                return lg_error_set(err, -r, "its owner record is damaged");
        r = lg_state_open_cgroup(desc, &sb->cg);
        if (r < 0)
                return lg_error_set(err, -r, "open its cgroup");
        /* gc now sees a live owner: this process. */
        r = lg_state_write_owner(sb->dir, desc, sb->slot);
        if (r < 0)
                return lg_error_set(err, -r, "write its owner record");
        sb->has_slot = rec.host_uid == LG_UID_BASE + sb->slot * LG_UID_RANGE;
        sb->host_uid = rec.host_uid;
        sb->limits = rec.limits;
        sb->worker_control = rec.worker_control;
        sb->capture_logs = rec.capture_logs;
        sb->n_extra = rec.n_extra;
        sb->log_max = rec.log_max;
        sb->nofile = rec.nofile;
        sb->detachable = sb->adopted = sb->started = true;
        return 0;
}

int lg_sandbox_adopt(const char *state_root, const char *id, lg_sandbox **ret, struct lg_error *err) {
        char root[PATH_MAX];
        if (!id || !lg_sandbox_valid_id(id))
                return lg_error_set(err, EINVAL, "invalid sandbox id `%s`", id ? id : "");
        int r = lg_state_root(state_root, root, sizeof(root));
        if (r < 0)
                return lg_error_set(err, r, "state directory must be an absolute path");
        lg_sandbox *sb = calloc(1, sizeof(*sb));
        if (!sb)
                return lg_error_set(err, ENOMEM, "allocate sandbox");
        sb->pidfd = sb->sync_fd = sb->control_fd = -1;
        lg_msg_init(&sb->launch);
        snprintf(sb->id, sizeof(sb->id), "%s", id);
        snprintf(sb->state_root, sizeof(sb->state_root), "%s", root);
        snprintf(sb->dir, sizeof(sb->dir), "%s/sandboxes/%s", root, id);
        struct stat st;
        if (stat(sb->dir, &st) < 0) {
                r = lg_error_set(err, errno, "no sandbox `%s`", id);
                free(sb);
                return r;
        }
        struct lg_error why = {0};
        r = adopt(sb, &why);
        if (r >= 0) {
                *ret = sb;
                return 0;
        }
        /* Not adoptable: destroyed, so that nothing of it is left behind
         * (its uid range once its legion-init is reaped, as in destroy). */
        bool zombie = false;
        if (sb->pidfd >= 0) {
                siginfo_t si;
                syscall(SYS_pidfd_send_signal, sb->pidfd, SIGKILL, NULL, 0);
                lg_adopted_wait(sb->pidfd, &si, 0);
                zombie = lg_pidfd_alive(sb->pidfd);
                close(sb->pidfd);
        }
        if (sb->control_fd >= 0)
                close(sb->control_fd);
        lg_cgroup_free(sb->cg);
        lg_state_remove(sb->dir, !zombie);
        free(sb);
        return lg_error_setm(err, why.code, "sandbox `%s` cannot be adopted, destroyed: %s", id, why.msg);
}

int lg_sandbox_detach(lg_sandbox *sb) {
        if (!sb)
                return 0;
        if (!sb->detachable || !sb->started || sb->exited)
                return lg_sandbox_destroy(sb);
        close(sb->pidfd);
        if (sb->control_fd >= 0)
                close(sb->control_fd);
        lg_cgroup_free(sb->cg);
        lg_msg_free(&sb->launch);
        free(sb);
        return 0;
}

int lg_sandbox_list(const char *state_root, char ***ret, struct lg_error *err) {
        char root[PATH_MAX], path[PATH_MAX * 2];
        int r = lg_state_root(state_root, root, sizeof(root));
        if (r < 0)
                return lg_error_set(err, r, "state directory must be an absolute path");
        size_t n = 0, cap = 8;
        char **ids = calloc(cap + 1, sizeof(char *));
        if (!ids)
                return lg_error_set(err, ENOMEM, "allocate list");
        snprintf(path, sizeof(path), "%s/sandboxes", root);
        DIR *d = opendir(path);
        if (!d && errno != ENOENT) {
                free(ids);
                return lg_error_set(err, errno, "open `%s`", path);
        }
        struct dirent *de;
        while (d && (de = readdir(d))) {
                if (de->d_name[0] == '.' || !lg_sandbox_valid_id(de->d_name))
                        continue;
                snprintf(path, sizeof(path), "%s/sandboxes/%s", root, de->d_name);
                /* Its owner is gone (0); a sandbox without an owner record
                 * is still being made by someone, or gc's to remove. */
                if (lg_state_owner_alive(path) != 0)
                        continue;
                char **more = n < cap ? ids : realloc(ids, (cap * 2 + 1) * sizeof(char *));
                if (more && more != ids) {
                        ids = more;
                        cap *= 2;
                }
                if (!more || !(ids[n] = strdup(de->d_name))) {
                        r = -ENOMEM;
                        break;
                }
                ids[++n] = NULL;
        }
        if (d)
                closedir(d);
        if (r < 0) {
                lg_strv_free(ids);
                return lg_error_set(err, -r, "list `%s`", root);
        }
        *ret = ids;
        return (int) n;
}

void lg_sandbox_list_free(char **ids) { lg_strv_free(ids); }

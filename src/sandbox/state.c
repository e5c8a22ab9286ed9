/* On-disk state of sandboxes, under a state root (/run/legion by default):
 *
 *   <root>/sandboxes/<id>/owner   "pid starttime\ncgroup\nslot\n" of the owner
 *   <root>/sandboxes/<id>/mnt     scratch mount point (mounted only inside
 *                                 the sandbox's mount namespace)
 *   <root>/sandboxes/<id>/std{out,err}.log   captured output
 *   <root>/sandboxes/<id>/sandbox  a detachable sandbox's record: its
 *                                 legion-init (pid, start time), uid, the
 *                                 launch options and cgroup limits
 *   <root>/sandboxes/<id>/control.sock   where a new owner attaches
 *   /run/legion/uids/<slot>       a taken host uid range, holding the id:
 *                                 one registry per host, whatever the root
 *
 * The owner record is what lets gc tell a sandbox whose owner is alive (never
 * touched) from one left by an owner that died (cleaned). A pid alone could
 * be reused, so the owner's start time is recorded beside it. A detachable
 * sandbox whose owner is gone is not garbage while its legion-init runs:
 * it waits to be adopted (adopt.c), and its uid range is held in the name
 * of its legion-init, not of the owner that allocated it. */
#include <dirent.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <time.h>
#include <string.h>
#include <sys/stat.h>

#include "sandbox/cgroup.h"
#include "sandbox/sandbox-internal.h"

int lg_state_root(const char *spec_root, char *buf, size_t len) {
        const char *root = spec_root;
        if (!root || !*root)
                root = getenv("LEGION_RUN_DIR");
        if (!root || !*root)
                root = "/run/legion";
        if (root[0] != '/')
                return -EINVAL;
        if (strlen(root) > 2048)
                return -ENAMETOOLONG;
        if ((size_t) snprintf(buf, len, "%s", root) >= len)
                return -ENAMETOOLONG;
        return 0;
}

/* Field 22 of /proc/<pid>/stat: start time in clock ticks since boot. */
int lg_process_start_time(pid_t pid, unsigned long long *ret) {
        char path[64], buf[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int) pid);
        ssize_t n = lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf));
        if (n < 0)
                return (int) n;
        /* The command name may contain spaces and ')': skip past the last.
         * p then stands on the blank before field 3; 19 more blanks lead
         * to the one before field 22. */
        char *p = strrchr(buf, ')');
        if (!p)
                return -EINVAL;
        p++;
        for (int field = 3; field < 22 && p; field++)
                p = strchr(p + 1, ' ');
        if (!p)
                return -EINVAL;
        *ret = strtoull(p + 1, NULL, 10);
        return 0;
}

int lg_state_write_owner(const char *dir, const char *cgroup_desc, unsigned slot) {
        unsigned long long start = 0;
        int r = lg_process_start_time(getpid(), &start);
        if (r < 0)
                return r;
        char buf[PATH_MAX + 128];
        snprintf(buf, sizeof(buf), "%d %llu\n%s\n%u\n", (int) getpid(), start, cgroup_desc, slot);
        int dfd = open(dir, O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0)
                return -errno;
        r = lg_write_file_at(dfd, "owner", buf, true);
        close(dfd);
        return r;
}

int lg_state_read(const char *dir, char *cgroup_desc, size_t len, unsigned *slot) {
        char path[PATH_MAX], buf[PATH_MAX + 128];
        snprintf(path, sizeof(path), "%s/owner", dir);
        ssize_t n = lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf));
        if (n < 0)
                return (int) n;
        char *l2 = strchr(buf, '\n');
        if (!l2)
                return -EINVAL;
        *l2++ = '\0';
        char *l3 = strchr(l2, '\n');
        if (!l3)
                return -EINVAL;
        *l3++ = '\0';
        snprintf(cgroup_desc, len, "%s", l2);
        char *end;
        unsigned long s = strtoul(l3, &end, 10);
        if (end == l3 || s >= LG_UID_SLOTS)
                return -EINVAL;
        *slot = (unsigned) s;
        return 0;
}

/* 1 if the recorded owner still runs, 0 if it is gone, -errno if the record
 * cannot be read (a sandbox still being created has none yet). */
int lg_state_owner_alive(const char *dir) {
        char path[PATH_MAX], buf[256];
        snprintf(path, sizeof(path), "%s/owner", dir);
        ssize_t n = lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf));
        if (n < 0)
                return (int) n;
        int pid;
        unsigned long long start, now;
        if (sscanf(buf, "%d %llu", &pid, &start) != 2 || pid <= 0)
                return -EINVAL;
        if (lg_process_start_time(pid, &now) < 0)
                return 0;
        return now == start;
}

/* Slots are files created with O_EXCL, so owners in different processes
 * never hand out the same range. The search starts where the last one in
 * this process ended, so a busy node does not rescan taken slots. */
/* Host uid ranges must be unique on the host, not per state root: two
 * owners with different state roots (legiond and a `legion sandbox run`)
 * share one registry. It lives in /run so that it goes with a reboot, as the
 * sandboxes do. */
static const char *uid_dir(void) {
        const char *d = getenv("LEGION_UID_DIR");
        return d && d[0] == '/' ? d : "/run/legion/uids";
}

int lg_uid_slot_alloc(const char *id, unsigned *ret) {
        static _Atomic unsigned hint;
        char dir[PATH_MAX], name[16];
        snprintf(dir, sizeof(dir), "%s", uid_dir());
        int dfd = open(dir, O_DIRECTORY | O_CLOEXEC);
        if (dfd < 0 && errno == ENOENT) {
                int r = lg_mkdir_p(dir, 0700);
                if (r < 0)
                        return r;
                dfd = open(dir, O_DIRECTORY | O_CLOEXEC);
        }
        if (dfd < 0)
                return -errno;
        unsigned start = atomic_load(&hint);
        for (unsigned i = 0; i < LG_UID_SLOTS; i++) {
                unsigned slot = (start + i) % LG_UID_SLOTS;
                snprintf(name, sizeof(name), "%u", slot);
                int fd = openat(dfd, name, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
                if (fd < 0) {
                        if (errno == EEXIST)
                                continue;
                        int r = -errno;
                        close(dfd);
                        return r;
                }
                /* Who holds it: gc frees slots whose holder is gone. */
                char rec[128];
                unsigned long long start = 0;
                lg_process_start_time(getpid(), &start);
                snprintf(rec, sizeof(rec), "%d %llu\n%s\n", (int) getpid(), start, id);
                (void) lg_write_all(fd, rec, strlen(rec));
                close(fd);
                close(dfd);
                atomic_store(&hint, slot + 1);
                *ret = slot;
                return 0;
        }
        close(dfd);
        return -EUSERS; /* every uid range is taken */
}

int lg_uid_slot_hold(unsigned slot, pid_t pid, const char *id) {
        char path[PATH_MAX], rec[128];
        unsigned long long start = 0;
        int r = lg_process_start_time(pid, &start);
        if (r < 0)
                return r;
        snprintf(path, sizeof(path), "%s/%u", uid_dir(), slot);
        snprintf(rec, sizeof(rec), "%d %llu\n%s\n", (int) pid, start, id);
        return lg_write_file_at(AT_FDCWD, path, rec, true);
}

void lg_uid_slot_free(unsigned slot) {
        char path[PATH_MAX];
        snprintf(path, sizeof(path), "%s/%u", uid_dir(), slot);
        unlink(path);
}

/* Marks in used (one bit per slot) the ranges that some process on the
 * host still has a uid of: a holder that died leaves processes dying, or
 * zombies that their reaper (the host's init, for orphans) takes its time
 * to reap, and each still holds its uid. */
static void slots_with_processes(uint8_t *used) {
        DIR *d = opendir("/proc");
        if (!d)
                return;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] < '0' || de->d_name[0] > '9')
                        continue;
                char path[300], buf[2048];
                snprintf(path, sizeof(path), "/proc/%s/status", de->d_name);
                if (lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) <= 0)
                        continue;
                char *u = strstr(buf, "\nUid:");
                unsigned uid;
                if (!u || sscanf(u, "\nUid: %u", &uid) != 1 || uid < LG_UID_BASE)
                        continue;
                unsigned slot = (uid - LG_UID_BASE) / LG_UID_RANGE;
                if (slot < LG_UID_SLOTS)
                        used[slot / 8] |= (uint8_t) (1u << (slot % 8));
        }
        closedir(d);
}

/* Free uid ranges whose holder is gone (it died before it could record a
 * sandbox, or it was a detachable sandbox's legion-init; the slot file
 * names the holder the same way an owner record does), once no process
 * has a uid of them any more. */
static void gc_uid_slots(void) {
        DIR *d = opendir(uid_dir());
        if (!d)
                return;
        _cleanup_free_ uint8_t *used = calloc((LG_UID_SLOTS + 7) / 8, 1);
        if (!used) {
                closedir(d);
                return;
        }
        slots_with_processes(used);
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] < '0' || de->d_name[0] > '9')
                        continue;
                char path[PATH_MAX], buf[256];
                snprintf(path, sizeof(path), "%s/%s", uid_dir(), de->d_name);
                int pid;
                unsigned long long start, now;
                if (lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf)) <= 0 ||
                    sscanf(buf, "%d %llu", &pid, &start) != 2)
                        continue;
                unsigned slot = (unsigned) strtoul(de->d_name, NULL, 10);
                if (slot < LG_UID_SLOTS && (used[slot / 8] & (1u << (slot % 8))))
                        continue;
                if (lg_process_start_time(pid, &now) < 0 || now != start)
                        unlink(path);
        }
        closedir(d);
}

int lg_state_open_cgroup(const char *desc, lg_cgroup **ret) {
        int ver;
        char root[PATH_MAX], parent[256], name[128];
        *ret = NULL;
        if (sscanf(desc, "%d %4095s %255s %127s", &ver, root, parent, name) != 4)
                return -EINVAL;
        if (ver == 0)
                return 0; /* made without limits: no cgroup */
        return lg_cgroup_open(root, (enum lg_cgroup_version) ver, parent, name, ret);
}

int lg_state_remove(const char *dir, bool free_slot) {
        char desc[PATH_MAX + 128];
        unsigned slot = 0;
        int ret = 0;
        if (lg_state_read(dir, desc, sizeof(desc), &slot) == 0) {
                lg_cgroup *cg = NULL;
                if (lg_state_open_cgroup(desc, &cg) == 0 && cg) {
                        ret = lg_cgroup_destroy(cg);
                        lg_cgroup_free(cg);
                }
                if (free_slot)
                        lg_uid_slot_free(slot);
        }
        int r = lg_rm_rf(dir);
        return ret < 0 ? ret : r;
}

/* One line, versioned, written to a temporary file and renamed so that a
 * crash never leaves half a record. */
int lg_state_write_record(const char *dir, const struct lg_state_record *rec) {
        char buf[512], tmp[PATH_MAX + 32], path[PATH_MAX + 32];
        const struct lg_cgroup_limits *l = &rec->limits;
        snprintf(buf, sizeof(buf), "1 %d %llu %u %d %d %zu %llu %llu %llu %llu %llu %llu %llu\n", (int) rec->pid,
                 rec->start, (unsigned) rec->host_uid, rec->worker_control, rec->capture_logs, rec->n_extra,
                 (unsigned long long) rec->log_max, (unsigned long long) rec->nofile,
                 (unsigned long long) l->memory_max, (unsigned long long) l->cpu_quota_us,
                 (unsigned long long) l->cpu_period_us, (unsigned long long) l->cpu_weight,
                 (unsigned long long) l->pids_max);
        snprintf(tmp, sizeof(tmp), "%s/.sandbox.tmp", dir);
        snprintf(path, sizeof(path), "%s/sandbox", dir);
        int r = lg_write_file_at(AT_FDCWD, tmp, buf, true);
        if (r >= 0 && rename(tmp, path) < 0)
                r = -errno;
        return r;
}

int lg_state_read_record(const char *dir, struct lg_state_record *rec) {
        char path[PATH_MAX + 32], buf[512];
        snprintf(path, sizeof(path), "%s/sandbox", dir);
        ssize_t n = lg_read_file_at(AT_FDCWD, path, buf, sizeof(buf));
        if (n < 0)
                return (int) n;
        int ver, pid, wc, cl;
        unsigned uid;
        unsigned long long v[7];
        memset(rec, 0, sizeof(*rec));
        if (sscanf(buf, "%d %d %llu %u %d %d %zu %llu %llu %llu %llu %llu %llu %llu", &ver, &pid, &rec->start, &uid,
                   &wc, &cl, &rec->n_extra, &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6]) != 14 ||
            ver != 1 || pid <= 1 || rec->n_extra > 16)
                return -EINVAL;
        rec->pid = pid;
        rec->host_uid = uid;
        rec->worker_control = wc;
        rec->capture_logs = cl;
        rec->log_max = v[0];
        rec->nofile = v[1];
        rec->limits = (struct lg_cgroup_limits){v[2], v[3], v[4], v[5], v[6]};
        return 0;
}

int lg_state_adoptable(const char *dir) {
        struct lg_state_record rec;
        unsigned long long now;
        if (lg_state_read_record(dir, &rec) < 0)
                return 0;
        return lg_process_start_time(rec.pid, &now) == 0 && now == rec.start;
}

int lg_sandbox_gc(const char *spec_root, struct lg_error *err) {
        char root[PATH_MAX], path[PATH_MAX * 2];
        int r = lg_state_root(spec_root, root, sizeof(root));
        if (r < 0)
                return lg_error_set(err, r, "state directory must be an absolute path");
        snprintf(path, sizeof(path), "%s/sandboxes", root);
        DIR *d = opendir(path);
        if (!d)
                return errno == ENOENT ? 0 : lg_error_set(err, errno, "open `%s`", path);
        int cleaned = 0, ret = 0;
        struct dirent *de;
        while ((de = readdir(d))) {
                if (de->d_name[0] == '.')
                        continue;
                snprintf(path, sizeof(path), "%s/sandboxes/%s", root, de->d_name);
                int alive = lg_state_owner_alive(path);
                /* No record yet: a sandbox being created right now, or one
                 * whose owner died before writing it; only the latter is old. */
                if (alive == -ENOENT) {
                        struct stat st;
                        if (stat(path, &st) < 0 || time(NULL) - st.st_mtime < 60)
                                continue;
                } else if (alive != 0 || lg_state_adoptable(path)) {
                        continue;
                }
                /* Its uid range goes below, once no process has it. */
                r = lg_state_remove(path, false);
                if (r < 0 && ret == 0)
                        ret = lg_error_set(err, r, "clean up sandbox `%s`", de->d_name);
                cleaned++;
        }
        closedir(d);
        gc_uid_slots();
        return ret < 0 ? ret : cleaned;
}

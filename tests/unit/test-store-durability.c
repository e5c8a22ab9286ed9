/* Durability of the store against kill -9: a child process writes to the
 * store as fast as it can and acknowledges every write that returned
 * (through a pipe, after the commit); the parent SIGKILLs it at a random
 * moment (during open and migration, between writes, inside a commit),
 * reopens the store and checks that every acknowledged write is there, that
 * transactions landed whole or not at all, that the event log matches the
 * resources, and that SQLite's integrity check passes. Several rounds on the
 * same file, alternating synchronous=FULL and NORMAL (both must survive a
 * process kill; only FULL also survives a power cut, which a test cannot
 * cause). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include <fcntl.h>
#include <signal.h>
#include <sqlite3.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>

#include "store/store.h"

#define ROUNDS 20
#define MAX_ITEMS 200000
/* Keep every event, so that the log can be checked against the versions. */
#define EVENTS_KEEP 10000000

/* Item i: "r-i" alone when i is even; when odd, "r-i", "t-i" and the spec
 * of "progress" = {"last": i} in one transaction. */
static int write_item(lg_store *st, int i, struct lg_error *err) {
        char name[32], twin[32];
        snprintf(name, sizeof(name), "r-%d", i);
        snprintf(twin, sizeof(twin), "t-%d", i);
        json_t *spec = json_pack("{s:i}", "i", i);
        json_t *progress = json_pack("{s:i}", "last", i);
        int r;
        if (i % 2 == 0) {
                r = lg_store_create(st, LG_KEY("App", "dur", name), NULL, spec, NULL, NULL, err);
        } else if ((r = lg_store_begin(st, err)) >= 0) {
                _cleanup_store_tx_ lg_store *tx = st;
                if ((r = lg_store_create(st, LG_KEY("App", "dur", name), NULL, spec, NULL, NULL, err)) >= 0 &&
                    (r = lg_store_create(st, LG_KEY("Job", "dur", twin), NULL, spec, NULL, NULL, err)) >= 0 &&
                    (r = lg_store_apply(st, LG_KEY("Counter", "dur", "progress"), NULL, progress, NULL, err)) >= 0)
                        r = lg_store_commit(TAKE_PTR(tx), err);
        }
        json_decref(spec);
        json_decref(progress);
        return r;
}

static _Noreturn void child(const char *path, int ackfd, int start, enum lg_store_sync sync) {
        struct lg_error err = {0};
        lg_store *st;
        if (lg_store_open(path, &(struct lg_store_options){.sync = sync, .events_keep = EVENTS_KEEP}, &st, &err) < 0) {
                fprintf(stderr, "child: %s\n", err.msg);
                _exit(2);
        }
        for (int i = start; i < MAX_ITEMS; i++) {
                if (write_item(st, i, &err) < 0) {
                        fprintf(stderr, "child: item %d: %s\n", i, err.msg);
                        _exit(3);
                }
                if (lg_write_all(ackfd, &i, sizeof(i)) < 0)
                        _exit(4);
        }
        lg_store_close(st);
        _exit(0);
}

static int64_t query_one(const char *path, const char *sql) {
        sqlite3 *db;
        sqlite3_stmt *s;
        assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
        if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK)
                fail_msg("%s: %s", sql, sqlite3_errmsg(db));
        assert_int_equal(sqlite3_step(s), SQLITE_ROW);
        int64_t v = sqlite3_column_int64(s, 0);
        sqlite3_finalize(s);
        sqlite3_close(db);
        return v;
}

static bool exists(lg_store *st, const char *kind, const char *fmt, int i) {
        char name[32];
        snprintf(name, sizeof(name), fmt, i);
        struct lg_error err = {0};
        int r = lg_store_get(st, LG_KEY(kind, "dur", name), NULL, &err);
        if (r < 0 && r != -ENOENT)
                fail_msg("get %s: %s", name, err.msg);
        return r == 0;
}

/* Check the reopened store; returns the first index not written yet. */
static int verify(const char *path, const bool *acked, int upto) {
        struct lg_error err = {0};
        lg_store *st;
        if (lg_store_open(path, &(struct lg_store_options){.events_keep = EVENTS_KEEP}, &st, &err) < 0)
                fail_msg("reopen: %s", err.msg);
        if (lg_store_check(st, &err) < 0)
                fail_msg("check: %s", err.msg);

        int next = 0, last_txn = -1;
        for (int i = 0; i < upto + 2; i++) {
                bool r = exists(st, "App", "r-%d", i);
                if (acked[i] && !r)
                        fail_msg("acknowledged item %d is lost", i);
                if (i % 2 == 1 && exists(st, "Job", "t-%d", i) != r)
                        fail_msg("transaction %d landed in part", i);
                if (r) {
                        next = i + 1;
                        if (i % 2 == 1)
                                last_txn = i;
                }
        }
        /* Nothing beyond the one write in flight at the kill. */
        for (int i = next; i < next + 8; i++)
                assert_false(exists(st, "App", "r-%d", i));
        if (last_txn >= 0) {
                struct lg_resource *p = NULL;
                if (lg_store_get(st, LG_KEY("Counter", "dur", "progress"), &p, &err) < 0)
                        fail_msg("progress: %s", err.msg);
                assert_int_equal(json_integer_value(json_object_get(p->spec, "last")), last_txn);
                lg_resource_free(p);
        }
        int64_t rv;
        assert_int_equal(lg_store_current_rv(st, &rv, &err), 0);
        lg_store_close(st);

        /* One event per resource version, every object's version logged. */
        if (rv > 0) {
                assert_int_equal(query_one(path, "SELECT count(*) FROM events"), rv);
                assert_int_equal(query_one(path, "SELECT max(resource_version) FROM events"), rv);
        }
        assert_int_equal(query_one(path,
                                   "SELECT count(*) FROM resources r LEFT JOIN events e "
                                   "ON e.resource_version = r.resource_version AND e.name = r.name "
                                   "WHERE e.resource_version IS NULL"),
                         0);
        return next;
}

static void test_kill9(void **state) {
        (void) state;
        char dir[] = "/tmp/lg-store-dur-XXXXXX";
        assert_non_null(mkdtemp(dir));
        char path[128];
        snprintf(path, sizeof(path), "%s/legion.db", dir);
        bool *acked = calloc(MAX_ITEMS + 16, sizeof(bool));
        unsigned seed = (unsigned) time(NULL) ^ (unsigned) getpid();
        print_message("seed %u\n", seed);

        int next = 0, total_acked = 0, kills = 0;
        for (int round = 0; round < ROUNDS; round++) {
                int fds[2];
                assert_int_equal(pipe2(fds, O_CLOEXEC), 0);
                pid_t pid = fork();
                assert_true(pid >= 0);
                if (pid == 0) {
                        close(fds[0]);
                        child(path, fds[1], next, round % 2 ? LG_STORE_SYNC_NORMAL : LG_STORE_SYNC_FULL);
                }
                close(fds[1]);
                /* Round 0 may die inside the migration that creates the schema. */
                long us = round == 0 ? rand_r(&seed) % 3000 : 2000 + rand_r(&seed) % 150000;
                nanosleep(&(struct timespec){us / 1000000, (us % 1000000) * 1000}, NULL);
                kill(pid, SIGKILL);
                int status;
                assert_int_equal(waitpid(pid, &status, 0), pid);
                if (WIFSIGNALED(status))
                        kills++;
                else if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
                        fail_msg("child failed: status %d", status);
                int i, last = -1, n = 0;
                while (read(fds[0], &i, sizeof(i)) == (ssize_t) sizeof(i)) {
                        assert_true(i >= next && i < MAX_ITEMS);
                        acked[i] = true;
                        last = i;
                        n++;
                }
                total_acked += n;
                close(fds[0]);
                next = verify(path, acked, last > next ? last : next);
                assert_true(next >= last + 1);
                print_message("round %d (%s): killed after %ld us, %d acknowledged, %d items in all\n",
                              round, round % 2 ? "NORMAL" : "FULL", us, n, next);
        }
        assert_true(kills >= ROUNDS - 1);
        assert_true(total_acked > 0);
        free(acked);
        lg_rm_rf(dir);
}

int main(void) {
        const struct CMUnitTest tests[] = {
                cmocka_unit_test(test_kill9),
        };
        return cmocka_run_group_tests(tests, NULL, NULL);
}
